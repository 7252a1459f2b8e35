"""Limits and timeouts: 414, 431 (bytes and count), --max-connections (503 + Retry-After),
--max-requests-per-connection, the header timeout against a slowloris client, the keep-alive
idle timeout, the send timeout against a client that stops reading, and SIGTERM during a
20 MiB download."""

import select
import signal
import socket
import time

import pytest

import awstest
from http11util import (MIB, Conn, Root, assert_closed, connection_tokens, data, get_req,
                        refused_or_closed, running_server)

BIG = 20 * MIB
FILES = {
    "/static/x": b"x marks the spot\n",
    "/static/small.txt": data("limits-small", 2000),
    "/dynamic/small.bin": data("limits-dyn-small", 3000),
    "/static/big.bin": data("limits-static-big", BIG),
    "/dynamic/big.bin": data("limits-dynamic-big", BIG),
}


@pytest.fixture(scope="module")
def root():
    r = Root(FILES)
    yield r
    r.cleanup()


def assert_x(r):
    assert r.status == 200 and r.body == FILES["/static/x"], r


# ---- request line and header limits ------------------------------------------------------

@pytest.fixture(scope="module")
def small_head_srv(root):
    args = ["--max-request-line", "1024", "--max-header-bytes", "4096", "--max-headers", "20"]
    with running_server(root.root, args=args, name="h11-heads") as s:
        yield s


def test_request_line_over_limit_414(small_head_srv):
    with Conn(small_head_srv.port) as c:
        c.send(get_req("/static/" + "a" * 2000) + get_req("/static/x"))
        r = c.final_response(timeout=5)
        assert r.status == 414, r
        assert r.content_length == len(r.body), r
        assert "close" in connection_tokens(r), r
        closed, extra = c.closed_within(5)
        assert closed and extra == b"", f"not closed after 414 (extra {extra[:100]!r})"


def test_request_line_under_limit_served(small_head_srv):
    with Conn(small_head_srv.port) as c:
        r = c.request(get_req("/static/" + "a" * 900))
        assert r.status == 404, r
        assert_x(c.request(get_req("/static/x?" + "q" * 900)))


@pytest.mark.parametrize("method", ["GET", "OPTIONS"])
def test_request_line_limit_counts_the_whole_line(small_head_srv, method):
    """--max-request-line 1024 is the request line, method and version included (CRLF not
    counted): a 1024-byte line is served, a 1025-byte one is 414. It used to limit the target
    alone, so a line of 1025 bytes (a 1010-byte target) was served."""
    def line(length):
        fixed = len(f"{method} /static/x? HTTP/1.1")
        return f"{method} /static/x?{'q' * (length - fixed)} HTTP/1.1"
    assert len(line(1024)) == 1024 and len(line(1025)) == 1025
    with Conn(small_head_srv.port) as c:
        r = c.request((line(1024) + "\r\nHost: 127.0.0.1\r\n\r\n").encode())
        assert r.status == 200, r
    with Conn(small_head_srv.port) as c:
        c.send((line(1025) + "\r\nHost: 127.0.0.1\r\n\r\n").encode())
        r = c.final_response(timeout=5)
        assert r.status == 414, r
        assert "close" in connection_tokens(r), r
        closed, extra = c.closed_within(5)
        assert closed and extra == b"", f"not closed after 414 (extra {extra[:100]!r})"


@pytest.mark.parametrize("shape", ["one-big-header", "many-medium-headers"])
def test_header_bytes_over_limit_431(small_head_srv, shape):
    if shape == "one-big-header":
        extra = "X-Fill: " + "f" * 6000 + "\r\n"
    else:
        extra = "".join(f"X-Fill-{i}: {'g' * 500}\r\n" for i in range(12))
    with Conn(small_head_srv.port) as c:
        c.send(get_req("/static/x", extra=extra))
        r = c.final_response(timeout=5)
        assert r.status == 431, r
        assert "close" in connection_tokens(r), r
        closed, extra_bytes = c.closed_within(5)
        assert closed and extra_bytes == b"", "not closed after 431"


def test_header_bytes_under_limit_served(small_head_srv):
    with Conn(small_head_srv.port) as c:
        assert_x(c.request(get_req("/static/x", extra="X-Fill: " + "f" * 2500 + "\r\n")))


def test_too_many_headers_431(small_head_srv):
    extra = "".join(f"X-H{i}: v\r\n" for i in range(30))
    with Conn(small_head_srv.port) as c:
        c.send(get_req("/static/x", extra=extra))
        r = c.final_response(timeout=5)
        assert r.status == 431, r
        assert "close" in connection_tokens(r), r
        closed, extra_bytes = c.closed_within(5)
        assert closed and extra_bytes == b"", "not closed after 431"


def test_headers_under_count_served(small_head_srv):
    extra = "".join(f"X-H{i}: v\r\n" for i in range(15))  # 16 with Host
    with Conn(small_head_srv.port) as c:
        assert_x(c.request(get_req("/static/x", extra=extra)))


# ---- connection limits ------------------------------------------------------------------------

def test_max_connections(make_server, root):
    srv = make_server(args=["--max-connections", "5"], root=root.root, name="h11-maxconn")
    conns = [Conn(srv.port, timeout=5) for _ in range(5)]
    try:
        for c in conns:  # all five are accepted and served
            assert_x(c.request(get_req("/static/x")))
        with Conn(srv.port, timeout=5) as sixth:
            try:
                sixth.send(get_req("/static/x"))
            except (BrokenPipeError, ConnectionResetError):
                pass
            r = sixth.final_response(timeout=5)
            assert r.status == 503, r
            assert r.header("retry-after") is not None, f"503 without Retry-After: {r!r}"
            assert r.header("retry-after").strip().isdigit(), r
            assert "close" in connection_tokens(r), r
            closed, extra = sixth.closed_within(5)
            assert closed and extra == b"", "the refused connection was not closed"
        for c in conns:  # the first five still work
            r = c.request(get_req("/static/small.txt"))
            assert r.status == 200 and r.body == FILES["/static/small.txt"], r
        # once one closes, a new connection is served again
        conns.pop().close()

        def new_ok():
            try:
                with Conn(srv.port, timeout=2) as c:
                    return c.request(get_req("/static/x"), timeout=2).status == 200
            except OSError:
                return False
        assert awstest.wait_for(new_ok, 3.0, 0.1), "no connection served after one of the five closed"
    finally:
        for c in conns:
            c.close()


def test_max_requests_per_connection(make_server, root):
    srv = make_server(args=["--max-requests-per-connection", "3"], root=root.root, name="h11-maxreq")
    with Conn(srv.port) as c:
        for i in range(2):
            r = c.request(get_req("/static/x"))
            assert_x(r)
            assert "close" not in connection_tokens(r), f"response {i + 1} announced close: {r!r}"
        r = c.request(get_req("/dynamic/small.bin"))
        assert r.status == 200 and r.body == FILES["/dynamic/small.bin"], r
        assert "close" in connection_tokens(r), f"third response lacks Connection: close: {r!r}"
        assert_closed(c, 5, "after the last allowed request")


def test_max_requests_per_connection_pipelined(make_server, root):
    srv = make_server(args=["--max-requests-per-connection", "3"], root=root.root, name="h11-maxreq-p")
    with Conn(srv.port) as c:
        c.send(get_req("/static/x") * 5)
        for i in range(3):
            r = c.final_response()
            assert_x(r)
            assert ("close" in connection_tokens(r)) == (i == 2), f"response {i + 1}: {r!r}"
        closed, extra = c.closed_within(5)
        assert closed and extra == b"", f"requests past the limit answered: {extra[:200]!r}"


# ---- timeouts ---------------------------------------------------------------------------------

def test_header_timeout_slowloris(make_server, root):
    srv = make_server(args=["--header-timeout", "1"], root=root.root, name="h11-hdrto")
    s = awstest.connect(srv.port, timeout=5)
    got = b""
    cut = False
    normal_elapsed = None
    t0 = time.monotonic()
    try:
        s.sendall(b"GET /static/x HTTP/1.1\r\nHost: x\r\n")
        i = 0
        while time.monotonic() - t0 < 5.0:
            r, _, _ = select.select([s], [], [], 0.3)
            if r:
                try:
                    b = s.recv(65536)
                except ConnectionResetError:
                    b = b""
                if not b:
                    cut = True
                    break
                got += b
                continue
            if i == 1:  # meanwhile a normal client on another connection is served promptly
                t1 = time.monotonic()
                with Conn(srv.port, timeout=2) as other:
                    assert_x(other.request(get_req("/static/x"), timeout=2))
                normal_elapsed = time.monotonic() - t1
            try:
                s.sendall(f"X-Slow-{i}: {i}\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            i += 1
        elapsed = time.monotonic() - t0
    finally:
        s.close()
    assert cut, f"slow header client not cut off after {elapsed:.1f}s (got {got[:200]!r})"
    assert elapsed < 3.5, f"cut off only after {elapsed:.1f}s with --header-timeout 1"
    if got:
        r = awstest.parse_response(got)
        assert r.status == 408, r
        assert "close" in connection_tokens(r), r
    assert normal_elapsed is not None and normal_elapsed < 1.0, f"normal client took {normal_elapsed}s"


def test_keepalive_idle_timeout(make_server, root):
    srv = make_server(args=["--keepalive-timeout", "1"], root=root.root, name="h11-kato")
    with Conn(srv.port) as c:
        r = c.request(get_req("/static/x"))
        assert_x(r)
        assert "close" not in connection_tokens(r), r
        t0 = time.monotonic()
        closed, extra = c.closed_within(5)
        elapsed = time.monotonic() - t0
        assert closed, "idle keep-alive connection still open after 5 s with --keepalive-timeout 1"
        assert extra == b"", extra[:200]
        assert elapsed < 3.0, f"idle connection closed only after {elapsed:.1f}s"
    # a connection that keeps working is not cut: requests 0.3 s apart span 1.5 s > timeout
    with Conn(srv.port) as c:
        for _ in range(5):
            assert_x(c.request(get_req("/static/x")))
            time.sleep(0.3)
        assert_x(c.request(get_req("/static/x")))


def test_header_timeout_on_second_request(make_server, root):
    srv = make_server(args=["--header-timeout", "1"], root=root.root, name="h11-hdrto2")
    with Conn(srv.port) as c:
        assert_x(c.request(get_req("/static/x")))
        c.send(b"GET /static/x HTTP/1.1\r\nHost: x\r\n")  # never finished
        t0 = time.monotonic()
        closed, extra = c.closed_within(6)
        elapsed = time.monotonic() - t0
    assert closed, "incomplete second request head not timed out"
    assert elapsed < 3.5, f"timed out only after {elapsed:.1f}s"
    if extra:
        r = awstest.parse_response(extra)
        assert r.status == 408 and "close" in connection_tokens(r), r


def test_body_timeout(make_server, root):
    srv = make_server(args=["--body-timeout", "1"], root=root.root, name="h11-bodyto")
    with Conn(srv.port) as c:
        # The answer to a request with a body waits for the body (so a body over --max-body can
        # still get 413); a body that stalls is answered 408 and the connection closed.
        t0 = time.monotonic()
        c.send(b"POST /static/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        r = c.final_response(timeout=5)
        elapsed = time.monotonic() - t0
        assert r.status == 408 and "close" in connection_tokens(r), r
        assert elapsed < 3.5, f"answered only after {elapsed:.1f}s with --body-timeout 1"
        closed, extra = c.closed_within(3)
        assert closed and extra == b"", f"connection not closed after 408 (extra {extra[:100]!r})"
    with Conn(srv.port) as c:
        assert_x(c.request(get_req("/static/x")))


def test_slow_steady_download_outlives_timeouts(make_server, root):
    """Every timeout at 1 s, two 20 MiB downloads read steadily for several seconds: progress
    keeps them alive, and the bytes are exact."""
    args = ["--header-timeout", "1", "--keepalive-timeout", "1", "--send-timeout", "1", "--body-timeout", "1"]
    srv = make_server(args=args, root=root.root, name="h11-steady")
    conns = {p: Conn(srv.port, timeout=5, rcvbuf=256 * 1024) for p in ("/static/big.bin", "/dynamic/big.bin")}
    try:
        for p, c in conns.items():
            c.send(get_req(p))
        done = {}
        t0 = time.monotonic()
        while len(done) < len(conns) and time.monotonic() - t0 < 30:
            for p, c in conns.items():
                if p in done:
                    continue
                if not c._recv():
                    done[p] = f"EOF after {len(c.buf)} bytes"
                elif len(c.buf) >= BIG:
                    try:
                        r = awstest.parse_response(c.buf)
                    except awstest.IncompleteResponse:
                        continue
                    done[p] = r
            time.sleep(0.03)
        elapsed = time.monotonic() - t0
        for p in conns:
            r = done.get(p, "not finished in 30 s")
            assert not isinstance(r, str), f"{p}: {r}"
            assert r.status == 200 and r.body == FILES[p], f"{p}: {r!r}"
        assert elapsed > 1.5, f"the downloads were not slow enough to test anything ({elapsed:.1f}s)"
    finally:
        for c in conns.values():
            c.close()


def test_send_timeout_stalled_reader(make_server, root):
    srv = make_server(args=["--send-timeout", "1"], root=root.root, name="h11-sendto")
    stalled = {}
    for path in ("/static/big.bin", "/dynamic/big.bin"):
        c = Conn(srv.port, timeout=5, rcvbuf=64 * 1024)
        c.send(get_req(path))
        stalled[path] = c
    try:
        # while they stall, others are served
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            with Conn(srv.port, timeout=2) as other:
                r = other.request(get_req("/dynamic/small.bin"), timeout=2)
                assert r.status == 200 and r.body == FILES["/dynamic/small.bin"], r
            time.sleep(0.25)
        for path, c in stalled.items():
            total = 0
            end = "timeout"
            c.sock.settimeout(5)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 20:
                try:
                    b = c.sock.recv(1 << 20)
                except ConnectionResetError:
                    end = "reset"
                    break
                except socket.timeout:
                    break
                if not b:
                    end = "eof"
                    break
                total += len(b)
            assert end in ("eof", "reset"), f"{path}: connection neither closed nor reset ({total} bytes read)"
            assert total < BIG, f"{path}: the whole {BIG}-byte body arrived: the stalled send was not abandoned"
    finally:
        for c in stalled.values():
            c.close()
    with Conn(srv.port, timeout=5) as c:
        r = c.request(get_req("/static/small.txt"))
        assert r.status == 200 and r.body == FILES["/static/small.txt"], r


@pytest.mark.parametrize("path", ["/static/big.bin", "/dynamic/big.bin"])
def test_sigterm_lets_download_finish(make_server, root, path):
    srv = make_server(root=root.root, name="h11-term")
    expected = FILES[path]
    idle = Conn(srv.port, timeout=5)
    assert_x(idle.request(get_req("/static/x")))
    with idle, Conn(srv.port, timeout=10, rcvbuf=256 * 1024) as c:
        c.send(get_req(path))
        buf = b""
        while len(buf) < MIB:
            b = c.sock.recv(256 * 1024)
            assert b, "EOF before the signal"
            buf += b
        srv.signal(signal.SIGTERM)
        # idle keep-alive connections are closed
        closed, extra = idle.closed_within(3)
        assert closed and extra == b"", "idle keep-alive connection not closed after SIGTERM"
        # new connections are refused (poll: the listener goes away shortly after the signal)
        results = []

        def refused():
            ok, how = refused_or_closed(srv.port, timeout=1.0)
            results.append(how)
            return how == "refused"
        assert awstest.wait_for(refused, 3.0, 0.1), f"new connections not refused after SIGTERM: {results}"
        # the download goes on to the last byte, read in slices
        t0 = time.monotonic()
        while time.monotonic() - t0 < 20:
            try:
                b = c.sock.recv(512 * 1024)
            except ConnectionResetError:
                break
            if not b:
                break
            buf += b
            time.sleep(0.002)
    r = awstest.parse_response(buf, complete=False)
    assert r.status == 200, r
    assert r.content_length == len(expected), r
    assert len(r.body) == len(expected), f"download cut short: {len(r.body)} of {len(expected)} bytes"
    assert r.body == expected, "download bytes differ"
    rc = srv.proc.wait(10)
    assert rc == 0, f"exit status {rc} after SIGTERM; stderr:\n{srv.stderr()[-2000:]}"


def test_sigterm_grace_expires_for_stalled_downloads(make_server, root):
    """With --shutdown-grace 1, responses that make no progress do not hold the exit."""
    srv = make_server(args=["--shutdown-grace", "1"], root=root.root, name="h11-grace")
    conns = []
    try:
        for p in ("/static/big.bin", "/dynamic/big.bin"):
            c = Conn(srv.port, timeout=5, rcvbuf=64 * 1024)
            c.send(get_req(p))
            assert c._recv(), "no response started"
            conns.append(c)
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        try:
            rc = srv.proc.wait(6)
        except Exception:
            raise AssertionError("server still running 6 s after SIGTERM with --shutdown-grace 1")
        elapsed = time.monotonic() - t0
        assert rc == 0, f"exit status {rc}; stderr:\n{srv.stderr()[-2000:]}"
        assert elapsed < 3.5, f"exit took {elapsed:.1f}s with --shutdown-grace 1"
        for c in conns:  # the stalled downloads were cut short
            c.sock.settimeout(5)
            closed, received = c.closed_within(5)
            assert closed, "stalled download still open after the server exited"
            assert len(received) < BIG, "the whole body arrived although the client never read"
    finally:
        for c in conns:
            c.close()
