"""Status codes, error bodies, HEAD, Content-Type, response headers, lenient request parsing.

Requests that a client library would normalise (`..`) are sent raw over a socket."""

import email.utils
import os
import pwd
import re

import pytest

from awstest import CONTENT_TYPES, SECRET_MARKER, get, parse_response, raw_request, request


def assert_error_response(r, status):
    assert r.status == status, r
    assert r.media_type == "text/html", f"error {status} should have an HTML body: {r!r}"
    assert r.content_length is not None, f"error {status} has no Content-Length: {r!r}"
    assert r.content_length == len(r.body), r
    assert len(r.body) > 0, f"error {status} has an empty body"


def raw(port, line, extra=b"Host: x\r\nConnection: close\r\n"):
    """Sends `line` (bytes, without CRLF) as the request line; returns the first response."""
    return request(port, line + b"\r\n" + extra + b"\r\n")


# ---- 404 -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/static/nope.txt", "/dynamic/nope.bin", "/nope", "/static/sub/nope/deeper"])
def test_404_missing_file(server, path):
    r = get(server.port, path)
    assert_error_response(r, 404)


# ---- 403 -----------------------------------------------------------------------------

TRAVERSALS = [
    b"/static/../../etc/passwd",
    b"/static/%2e%2e/%2e%2e/etc/passwd",
    b"/static/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
    b"/%2e%2e/%2e%2e/etc/passwd",
    b"/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    b"/../../../../etc/passwd",
    b"/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    b"/dynamic/../../../../../etc/passwd",
]


@pytest.mark.parametrize("target", TRAVERSALS, ids=lambda t: t.decode())
def test_403_path_leaving_root(server, target):
    r = raw(server.port, b"GET " + target + b" HTTP/1.1")
    assert_error_response(r, 403)
    assert b"root:x:0:0" not in r.body


@pytest.mark.parametrize("target", [b"/static/a%00.txt", b"/static/a.txt%00"])
def test_403_nul_byte(server, target):
    r = raw(server.port, b"GET " + target + b" HTTP/1.1")
    assert_error_response(r, 403)


def test_403_unreadable_file(docroot, make_server, server):
    """Mode 000. Root reads anything, so as root the test starts a server with --user nobody
    (which must really drop to nobody and still serve the readable files)."""
    if os.geteuid() != 0:
        srv = server  # the shared server already cannot read it
    else:
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("no user 'nobody' on this machine")
        srv = make_server(args=["--user", "nobody"], name="nobody")
        with open(f"/proc/{srv.server_pid()}/status") as f:
            uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)", f.read(), re.M).groups()
        assert all(int(u) == nobody.pw_uid for u in uids), f"--user nobody: process Uid line is {uids}"
    for path in ("/static/a.txt", "/dynamic/a.txt", "/static/f_1048579.bin", "/dynamic/f_1048579.bin"):
        ok = get(srv.port, path)
        assert ok.status == 200, ok
        assert ok.body == docroot.files[path]
    r = get(srv.port, "/static/secret.txt")
    assert_error_response(r, 403)
    assert SECRET_MARKER.strip() not in r.body


# ---- 400 / 501 / 505 / 405 -------------------------------------------------------------

@pytest.mark.parametrize("data", [
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"\x00\x01\x02 / HTTP/1.1\r\n\r\n",
    b"GET  HTTP/1.1\r\n\r\n",
], ids=["GARBAGE", "GET-only", "binary", "no-target"])
def test_400_garbage_request_line(server, data):
    r = request(server.port, data)
    assert_error_response(r, 400)


@pytest.mark.parametrize("line", [b"FOO /static/x.txt HTTP/1.1", b"BREW / HTTP/1.1"])
def test_501_unknown_method(server, line):
    r = raw(server.port, line)
    assert_error_response(r, 501)


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/3.0"])
def test_505_unsupported_version(server, version):
    r = raw(server.port, b"GET / " + version)
    assert_error_response(r, 505)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "POST", "PATCH"])
@pytest.mark.parametrize("path", ["/static/a.txt", "/dynamic/a.txt"])
def test_405_write_method_on_file(server, method, path):
    r = request(server.port, (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                              "Connection: close\r\n\r\n").encode())
    assert_error_response(r, 405)
    allow = r.header("allow")
    assert allow is not None, f"405 without Allow header: {r!r}"
    methods = {m.strip().upper() for m in allow.split(",")}
    assert {"GET", "HEAD"} <= methods, f"Allow: {allow}"


# ---- HEAD ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/static/f_4097.bin", "/dynamic/f_1048579.bin",
                                  "/static/f_0.bin", "/static/style.css", "/static/nope.txt"])
def test_head_matches_get(server, path):
    get_r = get(server.port, path)
    data = raw_request(server.port, f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head_r = parse_response(data, head_request=True)
    assert head_r.rest == b"", f"HEAD {path} sent {len(head_r.rest)} body bytes: {head_r.rest[:80]!r}"
    assert head_r.status == get_r.status
    g = {k: v for k, v in get_r.headers.items() if k != "date"}
    h = {k: v for k, v in head_r.headers.items() if k != "date"}
    assert h == g, f"HEAD headers differ from GET headers for {path}"
    assert "content-length" in h


# ---- Content-Type and standard headers -------------------------------------------------

@pytest.mark.parametrize("name", sorted(CONTENT_TYPES))
def test_content_type(server, docroot, name):
    media, charset = CONTENT_TYPES[name]
    r = get(server.port, f"/static/{name}")
    assert r.status == 200, r
    assert r.body == docroot.files[f"/static/{name}"]
    assert r.media_type == media, f"{name}: Content-Type {r.header('content-type')!r}"
    assert ("charset=utf-8" in r.header("content-type").lower().replace(" ", "")) == charset, r.header("content-type")


@pytest.mark.parametrize("path", ["/static/a.txt", "/dynamic/a.txt"])
def test_standard_headers(server, docroot, path):
    r = get(server.port, path)
    assert r.version == "HTTP/1.1" and r.status == 200 and r.reason == "OK", r
    assert r.header("server", "").startswith("aws/"), r
    assert email.utils.parsedate_to_datetime(r.header("date")) is not None
    lm = email.utils.parsedate_to_datetime(r.header("last-modified"))
    assert int(lm.timestamp()) == int(os.stat(docroot.path(path)).st_mtime), r.header("last-modified")
    assert r.header("connection", "").lower() == "close", "Connection: close request must be echoed"
    names = [n.lower() for n, _ in r.raw_headers]
    assert names.count("content-length") == 1
    assert names.count("content-type") == 1


# ---- lenient parsing -------------------------------------------------------------------

def test_lf_only_line_endings(server, docroot):
    data = raw_request(server.port, b"GET /static/a.txt HTTP/1.1\nHost: x\nConnection: close\n\n")
    r = parse_response(data)
    assert r.status == 200, r
    assert r.body == docroot.files["/static/a.txt"]


def test_lf_only_minimal(server, docroot):
    r = request(server.port, b"GET /static/a.txt HTTP/1.1\n\n")
    assert r.status == 200, r
    assert r.body == docroot.files["/static/a.txt"]


@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/1.1"])
def test_no_host_header(server, docroot, version):
    r = request(server.port, f"GET /static/a.txt {version}\r\nConnection: close\r\n\r\n".encode())
    assert r.status == 200, r
    assert r.body == docroot.files["/static/a.txt"]


def test_http10_bare_request_closes(server, docroot):
    data = raw_request(server.port, b"GET /static/x.txt HTTP/1.0\r\n\r\n")
    r = parse_response(data)
    assert r.status == 200, r
    assert r.body == docroot.files["/static/x.txt"]
    assert r.rest == b""


def test_odd_header_spacing(server, docroot):
    req = (b"GET /static/a.txt HTTP/1.1\r\nHost:   x  \r\nAccept:*/*\r\n"
           b"X-Odd:y\r\nConnection:   close   \r\n\r\n")
    r = request(server.port, req)
    assert r.status == 200, r
    assert r.body == docroot.files["/static/a.txt"]
