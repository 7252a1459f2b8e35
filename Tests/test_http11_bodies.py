"""Request bodies: chunked (extensions, trailers) and Content-Length bodies drained before the
next pipelined request, `Expect: 100-continue`, 411, `--max-body` → 413, and the
request-smuggling defences (Content-Length with Transfer-Encoding, duplicate or invalid
lengths → 400 and close)."""

import time

import pytest

from http11util import (assert_closed, Conn, connection_tokens, data, get_req, root_fixture,
                        running_server, server_fixture)

FILES = {
    "/static/x": b"x marks the spot\n",
    "/static/small.txt": data("bodies-small", 3000),
    "/dynamic/d.bin": data("bodies-dyn", 6000),
}

# Looks like a request: if the server parsed the body as the next request it would answer 404.
DECOY = b"GET /static/decoy-not-there HTTP/1.1\r\nHost: x\r\n\r\n"


root = root_fixture(FILES)


srv = server_fixture("h11-bodies")


@pytest.fixture(scope="module")
def small_body_srv(root):
    with running_server(root.root, args=["--max-body", "1000"], name="h11-maxbody") as s:
        yield s


def assert_405(r):
    assert r.status == 405, r
    allow = {m.strip() for m in (r.header("allow") or "").split(",")}
    assert {"GET", "HEAD"} <= allow, f"405 without a proper Allow: {r!r}"
    assert "POST" not in allow, r
    assert r.content_length == len(r.body), r


def assert_x(r):
    assert r.status == 200, r
    assert r.body == FILES["/static/x"], r


def chunked(parts, ext=True, trailers=b"X-Trailer: yes\r\nX-Other: 1\r\n"):
    out = b""
    for i, p in enumerate(parts):
        e = f";ext{i}=v{i};flag;q=\"a b\"".encode() if ext else b""
        out += f"{len(p):x}".encode() + e + b"\r\n" + p + b"\r\n"
    return out + b"0;last=1\r\n" + trailers + b"\r\n"


# ---- drained bodies ----------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/static/x", "/dynamic/d.bin"])
def test_chunked_body_with_extensions_and_trailers_is_drained(srv, path):
    body = chunked([b"hello", DECOY, b"A" * 5000, b"z"])
    req = (f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").encode() + body
    with Conn(srv.port) as c:
        c.send(req + get_req("/static/x"))  # the next request follows in the same write
        assert_405(c.final_response())
        r = c.final_response()
        assert_x(r)
        assert c.buf == b"", f"stray bytes: {c.buf[:200]!r}"
        # and once more, sent separately
        assert_x(c.request(get_req("/static/x")))


def test_chunked_body_sent_in_pieces_is_drained(srv):
    body = chunked([DECOY, b"B" * 3000])
    with Conn(srv.port) as c:
        c.send(b"POST /static/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 7):
            c.send(body[i:i + 7])
        c.send(get_req("/static/small.txt"))
        assert_405(c.final_response())
        r = c.final_response()
        assert r.status == 200 and r.body == FILES["/static/small.txt"], r


def test_content_length_body_then_pipelined_get(srv):
    body = DECOY + b"q" * 2000
    req = f"POST /static/x HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    with Conn(srv.port) as c:
        c.send(req + get_req("/dynamic/d.bin"))
        assert_405(c.final_response())
        r = c.final_response()
        assert r.status == 200 and r.body == FILES["/dynamic/d.bin"], r
        assert c.buf == b""


def test_get_with_body_then_pipelined_get(srv):
    req = f"GET /static/x HTTP/1.1\r\nHost: x\r\nContent-Length: {len(DECOY)}\r\n\r\n".encode() + DECOY
    with Conn(srv.port) as c:
        c.send(req + get_req("/static/small.txt"))
        assert_x(c.final_response())
        r = c.final_response()
        assert r.status == 200 and r.body == FILES["/static/small.txt"], r


# ---- Expect ------------------------------------------------------------------------------

@pytest.mark.parametrize("method,status", [("POST", 405), ("PUT", 405), ("GET", 200)])
def test_expect_100_continue_on_file_answered_at_once(srv, method, status):
    head = (f"{method} /static/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
            "Expect: 100-continue\r\n\r\n").encode()
    with Conn(srv.port, timeout=2.5) as c:
        t0 = time.monotonic()
        c.send(head)  # the body is never sent
        r = c.final_response(timeout=2.0)
        elapsed = time.monotonic() - t0
        assert elapsed < 2.0, f"final response took {elapsed:.2f}s"
        assert r.status == status, r
        if status == 405:
            assert_405(r)
        else:
            assert_x(r)
        # README: the connection then closes (the unread body cannot be skipped), and
        # `Connection: close` is sent exactly when the server is going to close
        assert "close" in connection_tokens(r), f"no Connection: close: {r!r}"
        assert_closed(c, 5, "after answering Expect: 100-continue with the final status")


def test_expect_100_continue_ignored_on_http10(srv):
    # RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request MUST be ignored
    with Conn(srv.port) as c:
        r = c.request(b"GET /static/x HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n\r\n")
        assert_x(r)
        assert "keep-alive" in connection_tokens(r), r
        assert_x(c.request(b"GET /static/x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))


def test_unknown_expectation_417(srv):
    with Conn(srv.port) as c:
        c.send(b"GET /static/x HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n")
        r = c.final_response()
    assert r.status == 417, r
    assert b"x marks the spot" not in r.body


# ---- 411 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_http10_body_method_without_length_411(srv, method):
    with Conn(srv.port) as c:
        c.send(f"{method} /static/x HTTP/1.0\r\n\r\n".encode())
        r = c.final_response(timeout=5)
        assert r.status == 411, r
        assert r.content_length == len(r.body), r
        assert_closed(c, 5, "after 411 on HTTP/1.0")


# ---- --max-body -------------------------------------------------------------------------

def test_body_under_max_body_is_drained(small_body_srv):
    body = b"u" * 900
    req = f"POST /static/x HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    with Conn(small_body_srv.port) as c:
        c.send(req + get_req("/static/x"))
        assert_405(c.final_response())
        assert_x(c.final_response())


@pytest.mark.parametrize("send_body", [False, True], ids=["head-only", "with-body"])
def test_content_length_over_max_body_413(small_body_srv, send_body):
    n = 50000
    req = f"POST /static/x HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n".encode()
    with Conn(small_body_srv.port) as c:
        c.send(req)
        if send_body:
            try:
                c.send(b"v" * n)
            except (BrokenPipeError, ConnectionResetError):
                pass
        r = c.final_response(timeout=5)
        assert r.status == 413, r
        assert r.content_length == len(r.body), r
        assert "close" in connection_tokens(r), f"413 without Connection: close: {r!r}"
        closed, _ = c.closed_within(5)
        assert closed, "connection not closed after 413"


def test_chunked_body_over_max_body_413(small_body_srv):
    body = chunked([b"w" * 600, b"w" * 600, b"w" * 600], ext=False, trailers=b"")
    req = b"POST /static/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    with Conn(small_body_srv.port) as c:
        try:
            c.send(req + get_req("/static/x"))
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.final_response(timeout=5)
        assert r.status == 413, r
        closed, extra = c.closed_within(5)
        assert closed, "connection not closed after 413"
        assert extra == b"", f"the pipelined request was answered after 413: {extra[:200]!r}"


# ---- smuggling -----------------------------------------------------------------------------

SMUGGLING = {
    "cl-and-te": b"POST /static/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-and-cl": b"POST /static/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Length: 5\r\n\r\n0\r\n\r\n",
    "get-cl-and-te": b"GET /static/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two-differing-cl": b"POST /static/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                        b"Content-Length: 6\r\n\r\nhello!",
    "cl-abc": b"POST /static/x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "cl-minus-1": b"POST /static/x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "cl-plus-5": b"POST /static/x HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
    "cl-list-differing": b"POST /static/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!",
    "get-cl-abc": b"GET /static/x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    # RFC 9112 §6.3: Transfer-Encoding whose final coding is not chunked → 400 and close
    "te-gzip": b"POST /static/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
    "te-chunked-identity": b"POST /static/x HTTP/1.1\r\nHost: x\r\n"
                           b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "te-xchunked": b"POST /static/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    # RFC 9112 §5.1: whitespace between a field name and the colon MUST be rejected with 400
    "cl-space-before-colon": b"POST /static/x HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
    "te-space-before-colon": b"POST /static/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n"
                             b"Content-Length: 5\r\n\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("name", list(SMUGGLING))
def test_smuggling_defences_400_and_close(srv, name):
    with Conn(srv.port) as c:
        # a request follows: it must never be answered
        c.send(SMUGGLING[name] + get_req("/static/small.txt"))
        r = c.final_response(timeout=5)
        assert r.status == 400, f"{name}: {r!r}"
        assert b"x marks the spot" not in r.body
        assert "close" in connection_tokens(r), f"{name}: 400 without Connection: close: {r!r}"
        closed, extra = c.closed_within(5)
        assert closed, f"{name}: connection not closed after 400"
        assert extra == b"", f"{name}: the following request was answered: {extra[:200]!r}"
