"""HTTP/1.1 connection management and request semantics.

Keep-alive (100 requests on one connection), pipelining (10 requests in one write while a
2 MiB sendfile / AIO transfer is in progress), HTTP/1.0 vs 1.1 persistence, `Connection: close`,
the uniqueness and spelling of response headers; OPTIONS, TRACE, unknown methods,
absolute-form targets, Host handling (`--strict-host`), directory redirects, index files and
`--autoindex` listings with escaped names.
"""

import pytest

from awstest import parse_response, raw_request, recv_until_eof
from http11util import (CANONICAL, MIB, assert_closed, Conn, connection_tokens, count_header, data,
                        get_req, root_fixture, running_server, server_fixture)

FILES = {
    "/static/small.txt": data("small.txt", 3 * 1024 + 17),
    "/static/small2.bin": data("small2.bin", 5000),
    "/static/big.bin": data("static-big", 2 * MIB + 123),
    "/static/x": b"x marks the spot\n",
    "/dynamic/small.bin": data("dyn-small", 4 * 1024 + 1),
    "/dynamic/big.bin": data("dynamic-big", 2 * MIB + 4099),
    "/sub/index.html": b"<!doctype html><title>sub index</title>\n",
    "/sub/other.txt": b"other\n",
    "/noindex/plain.txt": b"plain\n",
    "/noindex/a<b>&c.txt": b"escaped name\n",
    "/noindex/q\"'.txt": b"quotes\n",
    "/noindex/sp ace%20.txt": b"space and percent\n",
    "/noindex/\u00fcn\u00ef.txt": b"utf-8 name\n",
    "/noindex/#hash?.txt": b"hash and question mark\n",
}


root = root_fixture(FILES)


srv = server_fixture("h11-conn")


@pytest.fixture(scope="module")
def strict_srv(root):
    with running_server(root.root, args=["--strict-host", "--autoindex"], name="h11-strict") as s:
        yield s


def check_ok(r, path, head=False):
    assert r.status == 200, f"{path}: {r!r}"
    assert r.content_length == len(FILES[path]), f"{path}: {r!r}"
    if not head:
        assert r.body == FILES[path], f"{path}: wrong bytes ({len(r.body)} bytes)"


# ---- keep-alive ------------------------------------------------------------------------

def test_100_requests_on_one_connection(srv):
    paths = ["/static/small.txt", "/dynamic/small.bin", "/static/small2.bin", "/static/x"]
    with Conn(srv.port) as c:
        for i in range(100):
            path = paths[i % len(paths)]
            r = c.request(get_req(path))
            check_ok(r, path)
            assert r.version == "HTTP/1.1", r
            assert "close" not in connection_tokens(r), f"request {i + 1}: server announced close: {r!r}"
            assert c.buf == b"", f"request {i + 1}: stray bytes after the response: {c.buf[:100]!r}"


def test_pipelined_requests_in_one_write(srv):
    seq = [
        ("GET", "/static/small.txt", 200),
        ("GET", "/static/big.bin", 200),       # sendfile in progress while the rest waits
        ("GET", "/dynamic/small.bin", 200),
        ("GET", "/static/nope.txt", 404),
        ("GET", "/dynamic/big.bin", 200),      # AIO transfer in progress
        ("HEAD", "/static/small2.bin", 200),
        ("GET", "/static/x", 200),
        ("GET", "/dynamic/nope.bin", 404),
        ("GET", "/static/big.bin", 200),
        ("GET", "/dynamic/small.bin", 200),
    ]
    payload = b"".join(get_req(p, method=m) for m, p, _ in seq)
    with Conn(srv.port, timeout=15) as c:
        c.send(payload)  # one write
        for i, (method, path, status) in enumerate(seq):
            r = c.final_response(head=(method == "HEAD"))
            assert r.status == status, f"pipelined response {i + 1} ({method} {path}): {r!r}"
            if status == 200:
                check_ok(r, path, head=(method == "HEAD"))
            else:
                assert r.content_length == len(r.body) > 0, r
        assert c.buf == b"", f"stray bytes after the 10 pipelined responses: {c.buf[:100]!r}"
        # the connection is still usable
        check_ok(c.request(get_req("/static/x")), "/static/x")


@pytest.mark.parametrize("path", ["/static/big.bin", "/dynamic/big.bin"])
def test_pipelined_request_arrives_during_large_transfer(srv, path):
    """The next requests are written only after part of a 2 MiB response has been read, so
    they arrive while the sendfile / AIO transfer is still going."""
    with Conn(srv.port, timeout=10, rcvbuf=128 * 1024) as c:
        c.send(get_req(path))
        while len(c.buf) < 200_000:
            assert c._recv(), "EOF in the middle of the transfer"
        c.send(get_req("/static/x", method="HEAD") + get_req("/static/nope") +
               get_req(path, extra="Range: bytes=131070-131075\r\n") + get_req("/dynamic/small.bin"))
        check_ok(c.final_response(), path)
        check_ok(c.final_response(head=True), "/static/x", head=True)
        assert c.final_response().status == 404
        r = c.final_response()
        assert r.status == 206 and r.body == FILES[path][131070:131076], r
        check_ok(c.final_response(), "/dynamic/small.bin")
        assert c.buf == b""


def test_300_pipelined_requests(srv):
    """~12 KiB of pipelined requests in one write: more than one read's worth of input."""
    with Conn(srv.port, timeout=10) as c:
        c.send(b"".join(get_req(p) for p in ["/static/x", "/dynamic/small.bin", "/static/small2.bin"] * 100))
        for i in range(300):
            path = ["/static/x", "/dynamic/small.bin", "/static/small2.bin"][i % 3]
            r = c.final_response()
            assert r.status == 200 and r.body == FILES[path], f"response {i + 1}: {r!r}"
        assert c.buf == b""


def test_request_head_sent_byte_by_byte(srv):
    import time
    req = get_req("/dynamic/small.bin", extra="Range: bytes=4000-4096\r\nX-Padding: abc\r\n")
    with Conn(srv.port) as c:
        for b in req:
            c.send(bytes([b]))
            time.sleep(0.0005)
        r = c.final_response()
        assert r.status == 206 and r.body == FILES["/dynamic/small.bin"][4000:4097], r
        check_ok(c.request(get_req("/static/x")), "/static/x")


# ---- HTTP/1.0, Connection: close ---------------------------------------------------------

def test_http10_closes_by_default(srv):
    with Conn(srv.port) as c:
        c.send(b"GET /static/small.txt HTTP/1.0\r\n\r\n")
        r = c.final_response()
        check_ok(r, "/static/small.txt")
        assert "keep-alive" not in connection_tokens(r), r
        assert_closed(c, 5, "HTTP/1.0 without keep-alive")


def test_http10_keep_alive(srv):
    with Conn(srv.port) as c:
        for path in ("/static/small.txt", "/dynamic/small.bin"):
            r = c.request(b"GET " + path.encode() + b" HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            check_ok(r, path)
            assert "keep-alive" in connection_tokens(r), f"HTTP/1.0 keep-alive not confirmed: {r!r}"
        # without the token the connection ends after the response
        r = c.request(b"GET /static/x HTTP/1.0\r\n\r\n")
        check_ok(r, "/static/x")
        assert_closed(c, 5, "HTTP/1.0 request without keep-alive on a kept-alive connection")


@pytest.mark.parametrize("path", ["/static/small.txt", "/dynamic/small.bin", "/static/nope"])
def test_connection_close_http11(srv, path):
    with Conn(srv.port) as c:
        c.send(get_req(path, close=True))
        r = c.final_response()
        if path in FILES:
            check_ok(r, path)
        else:
            assert r.status == 404, r
        assert connection_tokens(r) == {"close"}, f"missing Connection: close: {r!r}"
        assert_closed(c, 5, f"Connection: close on {path}")


def test_connection_close_is_case_insensitive_token(srv):
    with Conn(srv.port) as c:
        c.send(get_req("/static/x", extra="Connection: foo, CLOSE\r\n"))
        r = c.final_response()
        check_ok(r, "/static/x")
        assert "close" in connection_tokens(r), r
        assert_closed(c, 5, "Connection: foo, CLOSE")


# ---- response headers -------------------------------------------------------------------

HEADER_CASES = [
    ("GET", "/static/small.txt", "", 200),
    ("GET", "/dynamic/small.bin", "", 200),
    ("HEAD", "/static/small.txt", "", 200),
    ("GET", "/static/small.txt", "Range: bytes=0-9\r\n", 206),
    ("GET", "/dynamic/small.bin", "Range: bytes=10-\r\n", 206),
    ("GET", "/static/nope", "", 404),
    ("POST", "/static/x", "Content-Length: 0\r\n", 405),
    ("GET", "/static", "", 301),
]


@pytest.mark.parametrize("method,path,extra,status", HEADER_CASES,
                         ids=[f"{m}-{p}-{s}" for m, p, _, s in HEADER_CASES])
def test_headers_unique_and_canonical(srv, method, path, extra, status):
    with Conn(srv.port) as c:
        r = c.request(get_req(path, method=method, extra=extra), head=(method == "HEAD"))
    assert r.status == status, r
    for name in ("Date", "Server", "Content-Length"):
        assert count_header(r, name) == 1, f"{name} appears {count_header(r, name)} times: {r!r}"
    for name, _ in r.raw_headers:
        want = CANONICAL.get(name.lower())
        assert want is None or name == want, f"header {name!r} should be spelled {want!r}: {r!r}"
        assert name == name.strip(), f"whitespace around header name {name!r}"
    if status in (200, 206) and path.startswith(("/static/", "/dynamic/")):
        names = {n for n, _ in r.raw_headers}
        for want in ("Content-Type", "Content-Length", "Last-Modified", "ETag", "Accept-Ranges", "Date", "Server"):
            assert want in names, f"{want} missing or not canonically spelled: {r!r}"
        assert count_header(r, "ETag") == 1 and count_header(r, "Last-Modified") == 1, r


def test_date_header_is_imf_fixdate_and_current(srv):
    import email.utils
    import re
    import time
    with Conn(srv.port) as c:
        r = c.request(get_req("/static/x"))
    date = r.header("date")
    assert re.fullmatch(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                        r"\d{4} \d\d:\d\d:\d\d GMT", date), date
    assert abs(email.utils.parsedate_to_datetime(date).timestamp() - time.time()) < 5, date
    assert r.header("server", "").startswith("aws"), r


def test_304_headers_unique(srv):
    with Conn(srv.port) as c:
        etag = c.request(get_req("/static/x")).header("etag")
        r = c.request(get_req("/static/x", extra=f"If-None-Match: {etag}\r\n"))
    assert r.status == 304, r
    assert count_header(r, "Date") == 1 and count_header(r, "Server") == 1, r
    assert count_header(r, "Content-Length") <= 1 and count_header(r, "ETag") == 1, r


# ---- methods and targets ------------------------------------------------------------------

@pytest.mark.parametrize("target", ["*", "/static/x", "/dynamic/small.bin"])
def test_options(srv, target):
    with Conn(srv.port) as c:
        r = c.request(get_req(target, method="OPTIONS"))
        assert r.status == 200, r
        allow = {m.strip() for m in (r.header("allow") or "").split(",")}
        assert {"GET", "HEAD", "OPTIONS"} <= allow, f"Allow: {r.header('allow')!r}"
        assert r.content_length == len(r.body), r
        # persistent: the next request on the connection is served
        check_ok(c.request(get_req("/static/x")), "/static/x")


def test_trace_405(srv):
    with Conn(srv.port) as c:
        r = c.request(get_req("/static/x", method="TRACE"))
    assert r.status == 405, r
    assert "GET" in (r.header("allow") or ""), r
    assert b"x marks the spot" not in r.body


def test_unknown_method_501(srv):
    with Conn(srv.port) as c:
        r = c.request(get_req("/static/x", method="BREW"))
    assert r.status == 501, r
    assert r.content_length == len(r.body), r


@pytest.mark.parametrize("target", ["http://localhost/static/x", "http://127.0.0.1:1234/static/x",
                                    "HTTP://LOCALHOST/static/x?q=1"])
def test_absolute_form_target(srv, target):
    with Conn(srv.port) as c:
        r = c.request(f"GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        check_ok(r, "/static/x")
        check_ok(c.request(get_req("/static/small.txt")), "/static/small.txt")


def test_two_host_headers_400(srv):
    with Conn(srv.port) as c:
        c.send(b"GET /static/x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n")
        r = c.final_response()
        assert r.status == 400, r
        assert b"x marks the spot" not in r.body


def test_missing_host_is_served_by_default(srv):
    r = parse_response(raw_request(srv.port, b"GET /static/x HTTP/1.1\r\nConnection: close\r\n\r\n", timeout=10))
    check_ok(r, "/static/x")


def test_strict_host_http11_without_host_400(strict_srv):
    r = parse_response(raw_request(strict_srv.port, b"GET /static/x HTTP/1.1\r\nConnection: close\r\n\r\n",
                                   timeout=10))
    assert r.status == 400, r
    assert b"x marks the spot" not in r.body


def test_strict_host_http10_without_host_200(strict_srv):
    r = parse_response(raw_request(strict_srv.port, b"GET /static/x HTTP/1.0\r\n\r\n", timeout=10))
    check_ok(r, "/static/x")


def test_strict_host_with_host_200(strict_srv):
    with Conn(strict_srv.port) as c:
        check_ok(c.request(get_req("/static/x")), "/static/x")


# ---- directories --------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/static", "/sub", "/noindex"])
def test_directory_without_slash_301(srv, path):
    with Conn(srv.port) as c:
        r = c.request(get_req(path))
        assert r.status == 301, r
        assert r.header("location") == path + "/", r
        assert r.content_length == len(r.body), r
        check_ok(c.request(get_req("/static/x")), "/static/x")


def test_directory_index_html(srv):
    with Conn(srv.port) as c:
        r = c.request(get_req("/sub/"))
    check_ok(r, "/sub/index.html")
    assert r.media_type == "text/html", r


def test_directory_without_index_403(srv):
    with Conn(srv.port) as c:
        r = c.request(get_req("/noindex/"))
    assert r.status == 403, r
    assert b"plain.txt" not in r.body


def test_autoindex_lists_escaped_names(strict_srv):
    with Conn(strict_srv.port) as c:
        r = c.request(get_req("/noindex/"))
    assert r.status == 200, r
    assert r.media_type == "text/html", r
    assert r.content_length == len(r.body), r
    assert b"plain.txt" in r.body, r.body[:500]
    assert b"a&lt;b&gt;&amp;c.txt" in r.body, f"escaped name missing: {r.body[:800]!r}"
    assert b"a<b>&c.txt" not in r.body, f"raw name appears unescaped: {r.body[:800]!r}"


def test_autoindex_links_resolve(strict_srv):
    """Every link of the listing, followed as a browser would, reaches the right file."""
    import html
    import re
    from urllib.parse import urljoin
    with Conn(strict_srv.port) as c:
        r = c.request(get_req("/noindex/"))
        assert r.status == 200, r
        hrefs = [html.unescape(h) for h in re.findall(r'href="([^"]*)"', r.body.decode("utf-8"))]
        wanted = {p for p in FILES if p.startswith("/noindex/")}
        reached = set()
        for href in hrefs:
            target = urljoin("/noindex/", href)
            if target in ("/", "/noindex/") or target.endswith("/"):
                continue
            resp = c.request(get_req(target))
            assert resp.status == 200, f"link {href!r} -> {target!r}: {resp!r}"
            match = [p for p in wanted if FILES[p] == resp.body]
            assert match, f"link {href!r} served unexpected bytes {resp.body[:80]!r}"
            reached.update(match)
        assert reached == wanted, f"files without a working link: {wanted - reached}; hrefs {hrefs}"


def test_autoindex_keeps_index_html(strict_srv):
    with Conn(strict_srv.port) as c:
        check_ok(c.request(get_req("/sub/")), "/sub/index.html")


def test_http10_response_read_to_eof_has_no_extra_bytes(srv):
    with Conn(srv.port) as c:
        c.send(b"GET /dynamic/small.bin HTTP/1.0\r\n\r\n")
        data_ = recv_until_eof(c.sock, 10)
    r = parse_response(data_)
    check_ok(r, "/dynamic/small.bin")
    assert r.rest == b"", r
