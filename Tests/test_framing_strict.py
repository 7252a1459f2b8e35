"""Strict request framing (issue 10, defects 3, 4 and 5): where a request and its body end must
never be read differently from a front end that follows RFC 9112, so every framing leniency of
http-parser is refused with 400 and a close (README, "HTTP behaviour" → "Framing"):

- chunked bodies: a bare LF or CR in a chunk extension, extensions that are not the RFC's
  grammar, chunk sizes that are not hex or do not fit, anything but CRLF after a size line or
  after chunk data, malformed trailers, extensions and trailers past --max-header-bytes (413);
- heads: a bare CR, obs-fold (also in Transfer-Encoding and Content-Length), whitespace before
  the first field, control characters in the request line;
- Transfer-Encoding: codings aws does not implement before chunked → 501 and close; lists that
  cannot be framed, and Transfer-Encoding on HTTP/1.0 → 400 and close;
- plugin routes: a malformed body is answered 400 and the connection closed (it used to be
  closed without an answer), the plugin sees on_abort and on_end; when the plugin's head is
  already out the connection closes at once.

Every case sends a second request after the bad one on the same connection: it must never be
answered (that would be the smuggled request)."""

import time

import pytest

import awstest
import pluginutil as pu
from http11util import (Conn, connection_tokens, get_req, root_fixture, running_server,
                        server_fixture)

FILES = {"/static/x": b"x marks the spot\n"}
HEAD_CHUNKED = b"POST /static/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
# What a smuggled request would fetch: its body must never appear.
SMUGGLED = get_req("/static/x")


root = root_fixture(FILES)


srv = server_fixture("framing")


@pytest.fixture(scope="module")
def plugin_srv():
    folder = pu.plugin_folder({"echo": pu.example_plugin("echo"), "body": pu.test_plugin("body")})
    with pu.running_server(folder, name="framing-plugins") as s:
        yield s


def refused(port: int, request: bytes, status: int = 400, what: str = ""):
    """Sends `request` and a GET after it on one connection: the answer must be `status` with
    Connection: close, then the close, and nothing else."""
    with Conn(port, timeout=10) as c:
        try:
            c.send(request + SMUGGLED)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.final_response(timeout=5)
        assert r.status == status, f"{what}: {r!r}"
        assert b"x marks the spot" not in r.body, what
        assert "close" in connection_tokens(r), f"{what}: {status} without Connection: close: {r!r}"
        closed, extra = c.closed_within(5)
        assert closed, f"{what}: the connection stayed open after {status}"
        assert extra == b"", f"{what}: something followed the {status}: {extra[:300]!r}"
        return r


# ---- defect 3: chunked framing -------------------------------------------------------------

BAD_CHUNKED = {
    # The case: nginx ends the size line at the LF, http-parser took ";\nxx" as the
    # extension — the two read different bodies from the same bytes.
    "bare-lf-in-extension": b"2;\nxx\r\nab\r\n0\r\n\r\n",
    "bare-lf-in-extension-name": b"2;a\nb\r\nab\r\n0\r\n\r\n",
    "bare-cr-in-extension": b"2;a\rb\r\nab\r\n0\r\n\r\n",
    "lf-in-quoted-extension": b"2;a=\"x\ny\"\r\nab\r\n0\r\n\r\n",
    "extension-without-name": b"2;=x\r\nab\r\n0\r\n\r\n",
    "extension-with-space-inside": b"2;a b\r\nab\r\n0\r\n\r\n",
    "extension-nul": b"2;a=\x00\r\nab\r\n0\r\n\r\n",
    # http-parser took any byte after the size line's CR as its LF
    "cr-not-followed-by-lf": b"5\rXhello\r\n0\r\n\r\n",
    # ... and any two bytes after chunk data as its CRLF
    "two-bytes-after-data": b"2\r\nabXY0\r\n\r\n",
    "bare-lf-after-data": b"2\r\nab\n\n0\r\n\r\n",
    "bare-lf-ends-trailers": b"0\r\n\n",
    "bare-lf-in-trailer": b"0\r\nX: y\nZ: w\r\n\r\n",
    "obs-fold-in-trailer": b"0\r\nX: y\r\n folded\r\n\r\n",
    "space-before-colon-in-trailer": b"0\r\nTransfer-Encoding : gzip\r\n\r\n",
    "trailer-without-colon": b"0\r\nX\r\n\r\n",
}


@pytest.mark.parametrize("name", list(BAD_CHUNKED))
def test_malformed_chunked_framing_is_400_and_close(srv, name):
    refused(srv.port, HEAD_CHUNKED + BAD_CHUNKED[name], what=name)


def test_chunk_extension_past_max_header_bytes_is_413(srv):
    # An extension that never ends is no longer read forever: extensions and trailers of a
    # body together may take --max-header-bytes (32 KiB by default).
    ext = b";" + b"e" * 40_000
    refused(srv.port, HEAD_CHUNKED + b"1" + ext + b"\r\nz\r\n0\r\n\r\n", status=413, what="long extension")


def test_well_formed_extensions_and_trailers_still_pass(srv):
    body = (b"5 ; a = b ; c=\"x;\\\"y\" ;d\r\nhello\r\n"   # BWS, token and quoted values, an escape
            b"3  \r\n!!!\r\n"                                # whitespace after the size
            b"0;last\r\nX-Trailer: yes\r\nY:\r\n\r\n")
    with Conn(srv.port) as c:
        c.send(HEAD_CHUNKED + body + get_req("/static/x"))
        first = c.final_response(timeout=5)
        assert first.status == 405, first   # a POST to a file, once its body is read
        second = c.final_response(timeout=5)
        assert second.status == 200 and second.body == FILES["/static/x"], second


# ---- defect 3: heads -----------------------------------------------------------------------

BAD_HEADS = {
    # a CR that is not followed by LF: http-parser took the next byte as the LF
    "bare-cr-after-empty-value": b"GET /static/x HTTP/1.1\r\nHost: x\r\nX:\rContent-Length: 5\r\n\r\nhello",
    "bare-cr-ends-head": b"GET /static/x HTTP/1.1\r\nHost: x\r\n\rX",
    # obs-fold (RFC 9112 §5.2: reject, or replace by SP — a front end may do either)
    "obs-fold": b"GET /static/x HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n b\r\n\r\n",
    "obs-fold-in-transfer-encoding": b"POST /static/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"
                                     b"0\r\n\r\n",
    "obs-fold-in-content-length": b"POST /static/x HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n 5\r\n\r\nhello",
    "whitespace-before-first-field": b"GET /static/x HTTP/1.1\r\n Host: x\r\n\r\n",
    "tab-in-request-line": b"GET /static/x\tHTTP/1.1 HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("name", list(BAD_HEADS))
def test_ambiguous_head_is_400_and_close(srv, name):
    refused(srv.port, BAD_HEADS[name], what=name)


# Found by fuzzing (Tests/Fuzz, "http1": the same bytes whole and in pieces must tell the same
# story): when a head has a bad byte, the scanner saw it before the parser had read what comes
# earlier, so a head arriving in one piece was a 400 where the same head in pieces was a 501 (an
# unknown method) or a 414 (an over-long line). The first fault in the stream answers now.
FIRST_FAULT_FIRST = {
    "unknown-method-then-nul": (b"GEP /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    "long-line-then-tab": (b"GET /" + b"a" * 9000 + b"\tb HTTP/1.1\r\nHost: x\r\n\r\n", 414),
}


@pytest.mark.parametrize("name", list(FIRST_FAULT_FIRST))
def test_first_fault_in_the_stream_answers_however_the_bytes_arrive(srv, name):
    request, status = FIRST_FAULT_FIRST[name]
    refused(srv.port, request, status=status, what=f"{name}, in one piece")
    with Conn(srv.port, timeout=10) as c:
        c.send(request[:4])
        time.sleep(0.2)  # a second segment (if both still arrive together, the answer is the same)
        try:
            c.send(request[4:])
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.final_response(timeout=5)
        assert r.status == status, f"{name}, in two pieces: {r!r}"


def test_bare_lf_heads_are_still_served(srv):
    """RFC 9112 §2.2 lets a server take a bare LF as a line end; nginx does, and so do classic
    clients. Kept, on purpose: a compliant front end cannot pass such bytes on differently."""
    with Conn(srv.port) as c:
        c.send(b"GET /static/x HTTP/1.1\nHost: x\n\nGET /static/x HTTP/1.1\r\nHost: x\n\r\n")
        for _ in range(2):
            r = c.final_response(timeout=5)
            assert r.status == 200 and r.body == FILES["/static/x"], r


# ---- defect 5: transfer codings ------------------------------------------------------------

def te_request(*fields: str, version: str = "HTTP/1.1", path: str = "/static/x") -> bytes:
    head = f"POST {path} {version}\r\nHost: x\r\n" + "".join(f"Transfer-Encoding: {f}\r\n" for f in fields)
    return head.encode() + b"\r\n5\r\nhello\r\n0\r\n\r\n"


NOT_IMPLEMENTED = {
    "gzip-chunked": te_request("gzip, chunked"),
    "identity-chunked": te_request("identity, chunked"),
    "deflate-gzip-chunked": te_request("deflate,gzip,chunked"),
    "two-fields-gzip-then-chunked": te_request("gzip", "chunked"),
}


@pytest.mark.parametrize("name", list(NOT_IMPLEMENTED))
def test_unknown_transfer_coding_is_501_and_close(srv, name):
    """RFC 9112 §6.1: a coding the server does not implement → 501. The body is chunked at the
    end and could be skipped, but it is not read: the connection closes."""
    refused(srv.port, NOT_IMPLEMENTED[name], status=501, what=name)


UNFRAMEABLE = {
    "chunked-twice": te_request("chunked, chunked"),
    "two-fields-chunked": te_request("chunked", "chunked"),
    "two-fields-chunked-then-gzip": te_request("chunked", "gzip"),
    "chunked-with-parameter": te_request("chunked;x=1"),
    "empty": te_request(""),
    "not-a-list": te_request("gz ip, chunked"),
    # RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing
    "http10-chunked": te_request("chunked", version="HTTP/1.0"),
}


@pytest.mark.parametrize("name", list(UNFRAMEABLE))
def test_unframeable_transfer_encoding_is_400_and_close(srv, name):
    refused(srv.port, UNFRAMEABLE[name], what=name)


def test_unknown_transfer_coding_on_a_plugin_route_is_501(plugin_srv):
    refused(plugin_srv.port, te_request("gzip, chunked", path="/echo"), status=501, what="/echo")


# ---- defect 4: malformed chunked bodies on plugin routes -----------------------------------

BAD_BODIES = {
    "size-zz": b"zz\r\nab\r\n0\r\n\r\n",
    "size-minus-1": b"-1\r\nab\r\n0\r\n\r\n",
    "size-0x5": b"0x5\r\nhello\r\n0\r\n\r\n",
    "size-2^64+5": b"10000000000000005\r\nhello\r\n0\r\n\r\n",
    "data-longer-than-chunk": b"2\r\nabcdef\r\n0\r\n\r\n",
    "missing-crlf-after-data": b"2\r\nab0\r\n\r\n",
    "bare-lf-in-extension": b"2;\nxx\r\nab\r\n0\r\n\r\n",
}


def stats(port: int) -> dict:
    r, complete = pu.http(port, "GET", "/body/stats", timeout=5)
    assert r.status == 200 and complete, r
    return {k: int(v) for k, v in (f.split("=") for f in r.body.decode().split())}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_malformed_body_on_buffered_plugin_route_is_400(plugin_srv, name):
    """The echo example buffers the body (on_request runs once it is complete): the host
    answers 400 and closes; the plugin never saw the request."""
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    refused(plugin_srv.port, head + BAD_BODIES[name], what=name)


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_malformed_body_on_streaming_plugin_route_is_400_with_abort_and_end(plugin_srv, name):
    """/body/count (test plugin body.c) took the request in on_request and answers at the last
    piece of the body: nothing was sent, so the host answers 400, closes, and the plugin gets
    on_abort then on_end."""
    before = stats(plugin_srv.port)
    head = b"POST /body/count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    refused(plugin_srv.port, head + BAD_BODIES[name], what=name)
    after = stats(plugin_srv.port)
    assert after["aborts"] == before["aborts"] + 1, f"{name}: on_abort not called once: {before} → {after}"
    assert after["ends"] == before["ends"] + 1, f"{name}: on_end not called once: {before} → {after}"


def test_malformed_body_after_plugin_head_closes_at_once(plugin_srv):
    """/body/early sends its head and a first chunk from on_request, then waits for the body:
    once the body turns out malformed the response can never end properly, so the connection
    closes at once (not after --body-timeout), without a 400 spliced into the response, and the
    plugin gets on_abort and on_end."""
    before = stats(plugin_srv.port)
    with awstest.connect(plugin_srv.port, timeout=5) as s:
        s.sendall(b"POST /body/early HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        got = b""
        deadline = time.monotonic() + 5
        while b"started\n\r\n" not in got:
            assert time.monotonic() < deadline, f"no head and first chunk: {got!r}"
            b = s.recv(65536)
            assert b, f"closed before the first chunk: {got!r}"
            got += b
        head = awstest.parse_response(got, head_request=True)
        assert head.status == 200 and "chunked" in (head.header("transfer-encoding") or ""), head
        start = time.monotonic()
        s.sendall(b"zz\r\n")
        try:
            rest = awstest.recv_until_eof(s, timeout=5)
        except ConnectionResetError:
            rest = b
        assert time.monotonic() - start < 4, "the connection was not closed at once"
    assert b"HTTP/1.1" not in rest, f"a response was spliced into the chunked body: {rest!r}"
    assert not rest.endswith(b"0\r\n\r\n"), f"the broken response was ended as if complete: {rest!r}"
    after = stats(plugin_srv.port)
    assert after["aborts"] == before["aborts"] + 1 and after["ends"] == before["ends"] + 1, (before, after)


def test_well_formed_bodies_on_plugin_routes_still_pass(plugin_srv):
    body = b"5;a=b\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
    with Conn(plugin_srv.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        r = c.final_response(timeout=5)
        assert r.status == 200 and r.body == b"hello world", r
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        r = c.final_response(timeout=5)
        assert r.status == 200 and r.body == b"abc", r
