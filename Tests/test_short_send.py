"""`Expect: 100-continue` when the socket takes only a few bytes per send: the interim
`HTTP/1.1 100 Continue` must reach the client whole, followed by a well-formed final response.
It used to be sent once on the side with its remainder dropped, so a short send turned the
stream into `HTTP/1.HTTP/1.1 200 OK...`.

The server runs with Tests/shims/short_send.c preloaded (compiled here), which limits every
send(2) to 3 bytes. The three places that answer 100-continue are covered: a plugin route that
buffers its body (echo), a function endpoint (math) and a CGI program."""

import os
import select
import subprocess
import time

import pytest

import awstest
import cgiutil
import pluginutil as pu

SHIM = os.path.join(awstest.REPO, "Tests", "shims", "short_send.c")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

CGI_ECHO = b"#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nexec cat\n"


@pytest.fixture(scope="module")
def shim():
    out = os.path.join(pu.new_dir("shim-"), "short_send.so")
    subprocess.run(["cc", "-O2", "-Wall", "-shared", "-fPIC", "-o", out, SHIM, "-ldl"], check=True)
    return out


@pytest.fixture(scope="module")
def srv(shim):
    root = pu.small_root()
    os.makedirs(os.path.join(root, "cgi"), mode=0o755)
    program = os.path.join(root, "cgi", "echo.sh")
    with open(program, "wb") as f:
        f.write(CGI_ECHO)
    os.chmod(program, 0o755)
    folder = pu.plugin_folder({"echo": pu.example_plugin("echo"), "math": pu.example_plugin("math")})
    server = awstest.Server(root, args=pu.server_args(folder), name="short-send",
                            prefix=["env", f"LD_PRELOAD={shim}", "SHORT_SEND_BYTES=3"])
    with awstest.running(server) as s:
        yield s


def _read_until(sock, n: int, timeout: float) -> bytes:
    """Up to n bytes, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            break
        b = sock.recv(n - len(buf))
        if not b:
            break
        buf += b
    return buf


@pytest.mark.parametrize("target,body,content_type,expected", [
    ("/echo", b"hello through a narrow socket", "text/plain", b"hello through a narrow socket"),
    ("/math/add", b"a=2&b=40", "application/x-www-form-urlencoded", b"42\n"),
    ("/cgi/echo.sh", b"hello, program", "text/plain", b"hello, program"),
], ids=["plugin", "function", "cgi"])
def test_100_continue_goes_out_whole_on_short_sends(srv, target, body, content_type, expected):
    with awstest.connect(srv.port, timeout=5) as s:
        s.sendall((f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                   f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n").encode())
        # A client waits (a while) for the interim response before it sends the body.
        interim = _read_until(s, len(CONTINUE), timeout=3)
        s.sendall(body)
        stream = interim + awstest.recv_until_eof(s, timeout=10)
    assert stream.startswith(CONTINUE), f"the stream does not start with a whole 100 Continue: {stream[:120]!r}"
    final = awstest.parse_response(stream[len(CONTINUE):], complete=False)
    assert final.version == "HTTP/1.1" and final.status == 200, final
    if final.header("transfer-encoding") == "chunked":
        got, rest = cgiutil.decode_chunked(final.body)
        assert rest == b"", rest
    else:
        assert final.content_length == len(final.body) and final.rest == b"", final
        got = final.body
    assert got == expected, final


def test_a_plain_request_is_whole_on_short_sends(srv):
    """The shim itself: responses without an interim line were already whole."""
    r = awstest.get(srv.port, "/plain.txt")
    assert r.status == 200 and r.body == b"a static file next to the plugins\n", r
