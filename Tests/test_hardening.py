"""Regression tests for defects found in review: inputs that used to crash or hang the server,
a reset that destroyed a finished response, an open redirect, and plugin API numbers out of
range. Each test fails on the old behaviour."""

import os
import re
import socket
import time

import pytest

import awstest
import pluginutil as pu


def _alive(port):
    r = awstest.get(port, "/static/a.txt")
    assert r.status == 200


def test_content_length_beyond_int64_is_413_not_a_crash(server):
    raw = awstest.raw_request(server.port, b"POST /static/a.txt HTTP/1.1\r\nHost: x\r\n"
                              b"Content-Length: 9300000000000000000\r\n\r\n", timeout=5)
    r = awstest.parse_response(raw, complete=False)
    assert r.status == 413, r
    _alive(server.port)


@pytest.mark.parametrize("stamp", [-315619200, 32503680000], ids=["1960", "year-3000"])
def test_files_with_odd_dates_are_served(server, docroot, stamp):
    path = docroot.path(f"/static/dated_{stamp}.txt")
    with open(path, "wb") as f:
        f.write(b"dated\n")
    os.chmod(path, 0o644)
    os.utime(path, (stamp, stamp))
    r = awstest.get(server.port, f"/static/dated_{stamp}.txt")
    assert r.status == 200 and r.body == b"dated\n", r
    lm = r.header("last-modified")
    assert lm and lm.endswith(" GMT") and len(lm) == 29, lm
    _alive(server.port)


def test_upgrade_header_does_not_break_the_connection(server):
    with awstest.connect(server.port, timeout=5) as s:
        s.sendall(b"GET /static/a.txt HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        first = awstest.read_response(s, timeout=5)
        assert first.status == 200, first
        if (first.header("connection") or "").lower() == "close":
            return  # closing after an upgrade request is a correct answer too
        s.sendall(b"GET /static/x.txt HTTP/1.1\r\nHo")
        time.sleep(0.2)
        s.sendall(b"st: x\r\n\r\n")
        second = awstest.read_response(s, timeout=5)
        assert second.status == 200 and second.body == b"x marks the spot\n", second


def test_request_during_a_closing_response_does_not_reset_it(server, docroot):
    """Connection: close on a large response, and the client sends more while it downloads:
    the close must not reset the connection before the response is read (unread input + close
    = RST, which discards what the kernel still had to send)."""
    want = docroot.files["/static/slow.bin"]
    with awstest.connect(server.port, timeout=10, rcvbuf=65536) as s:
        s.sendall(b"GET /static/slow.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = s.recv(65536)
        s.sendall(b"GET /static/a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        while True:
            d = s.recv(262144)
            if not d:
                break
            got += d
    r = awstest.parse_response(got)
    assert r.status == 200 and len(r.body) == len(want) and r.body == want, \
        f"got {len(r.body)} of {len(want)} body bytes"


def test_directory_redirect_never_leaves_the_host(server):
    raw = awstest.raw_request(server.port, b"GET //evil.example/../static HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=5)
    r = awstest.parse_response(raw)
    assert r.status == 301, r
    loc = r.header("location")
    assert loc == "/static/", loc


def test_trailing_slash_after_a_file_is_404(server):
    r = awstest.get(server.port, "/static/a.txt/")
    assert r.status == 404, r
    r = awstest.get(server.port, "/static/a.txt/")  # cached now
    assert r.status == 404, r


def test_infinite_timeout_is_refused_at_start(docroot):
    import subprocess
    p = subprocess.run([awstest.aws_bin(), "--root", docroot.root, "--port", str(awstest.free_port()),
                        "--address", "127.0.0.1", "--header-timeout", "inf"], capture_output=True, timeout=10)
    assert p.returncode != 0 and p.returncode > 0, p
    assert b"header-timeout" in p.stderr


@pytest.fixture(scope="module")
def ranges_server():
    folder = pu.plugin_folder({"ranges": pu.test_plugin("ranges")})
    with pu.running_server(folder, name="ranges") as srv:
        yield srv


def test_plugin_out_of_range_numbers_are_refused(ranges_server):
    port = ranges_server.port
    r, complete = pu.http(port, "GET", "/ranges/length", timeout=5)
    assert complete and r.status == 200 and r.body == b"set_content_length=-3\n", r
    r, complete = pu.http(port, "GET", "/ranges/part", timeout=5)
    assert complete and r.status == 200 and r.body == b"memory=-3 file=-3 header=-3\n", r
    r, complete = pu.http(port, "GET", "/ranges/interim", timeout=5)
    assert complete and r.status == 200 and r.body == b"set_status_100=-3\n", r


def test_plugin_204_has_no_body(ranges_server):
    port = ranges_server.port
    with awstest.connect(port, timeout=5) as s:
        s.sendall(b"GET /ranges/nocontent HTTP/1.1\r\nHost: x\r\n\r\nGET /ranges/interim HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = awstest.recv_until_eof(s, timeout=5)
    assert data.startswith(b"HTTP/1.1 204 "), data[:200]
    assert b"this must not be sent" not in data
    second = data.index(b"HTTP/1.1 200 ")  # the next response follows the 204's head directly
    assert data[:second].endswith(b"\r\n\r\n"), data[:second]


def test_plugin_status_set_after_fields_rewrites_the_head(ranges_server):
    """The host begins a plugin's head in its output buffer before on_request; a set_status
    after add_header rewrites the status line there and keeps the fields in order."""
    with awstest.connect(ranges_server.port, timeout=5) as s:
        s.sendall(b"GET /ranges/restatus HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /ranges/unnamed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = awstest.recv_until_eof(s, timeout=5)
    first, rest = data.split(b"\r\n\r\n", 1)
    lines = first.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 201 Created", first
    assert re.fullmatch(rb"Date: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", lines[1]), first
    assert lines[2].startswith(b"Server: aws/"), first
    assert lines[3] == b"X-Content-Type-Options: nosniff", first
    assert lines[4:7] == [b"X-First: 1", b"X-Second: 2", b"Content-Type: text/plain"], first
    body = b"set_status=0,0\n"
    assert lines[7] == b"Content-Length: %d" % len(body), first
    assert rest.startswith(body), rest
    second = rest[len(body):]
    assert second.startswith(b"HTTP/1.1 299 \r\nDate: "), second
    assert b"\r\nX-First: 1\r\nContent-Type: text/plain\r\n" in second, second
    assert second.endswith(b"\r\n\r\nunnamed\n"), second


def test_directory_index_follows_changes(make_server, tmp_path):
    """/dir/ is answered from the cached dir/index.html; a rewrite or removal shows within ~1 s."""
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    os.chmod(tmp_path, 0o755); os.chmod(root, 0o755); os.chmod(root / "d", 0o755)
    index = root / "d" / "index.html"
    index.write_bytes(b"<p>one</p>\n")
    os.chmod(index, 0o644)
    srv = make_server(root=str(root), name="index")
    for _ in range(3):
        r = awstest.get(srv.port, "/d/")
        assert r.status == 200 and r.body == b"<p>one</p>\n" and r.media_type == "text/html", r
    index.write_bytes(b"<p>two, longer</p>\n")
    assert awstest.wait_for(lambda: awstest.get(srv.port, "/d/").body == b"<p>two, longer</p>\n", 3)
    index.unlink()
    assert awstest.wait_for(lambda: awstest.get(srv.port, "/d/").status == 403, 3)
    r = awstest.get(srv.port, "/")
    assert r.status == 403, r  # no index.html at the root of this tree


def test_options_on_a_plugin_path(ranges_server):
    raw = awstest.raw_request(ranges_server.port, b"OPTIONS /ranges/part HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=5)
    r = awstest.parse_response(raw)
    assert r.status == 200, r
    allow = {m.strip() for m in r.header("allow").split(",")}
    assert {"GET", "HEAD", "OPTIONS"} <= allow, allow
