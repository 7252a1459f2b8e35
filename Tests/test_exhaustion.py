"""The server short of resources: out of descriptors (a file that cannot be opened for that is
503 + Retry-After, not 403, and the server recovers once descriptors are free again), and a flood
of connections over --max-connections (refused with 503, logged at most once a second per worker
with a count instead of one line per connection)."""

import math
import os
import re
import socket
import time

import pytest

import awstest

# The descriptor limit the server runs with (soft and hard: it raises its soft limit to the hard
# one at start). Small, so that a few dozen idle connections fill the table.
NOFILE = 64


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _get(sock: socket.socket, target: str) -> awstest.Response:
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return awstest.read_response(sock, timeout=5)


def test_out_of_descriptors_is_503_with_retry_after_then_recovers(make_server, docroot):
    """With the descriptor table full of idle connections, opening a file fails with EMFILE: that
    is the server's passing trouble, answered 503 with Retry-After (it used to be 403 Forbidden,
    even for a missing file), with a log line. Once the idle connections close, the same
    requests are answered 200 and 404 again."""
    workers = 2
    srv = make_server(args=["--keepalive-timeout", "120", "--header-timeout", "120", "--workers", str(workers)],
                      prefix=["prlimit", f"--nofile={NOFILE}:{NOFILE}", "--"], name="nofile")
    pid = srv.server_pid()
    used = _fd_count(pid)
    assert used < NOFILE - 8, f"the server already holds {used} of {NOFILE} descriptors at start"

    main = awstest.connect(srv.port, timeout=5)
    idle = []
    try:
        # This connection is served before the table fills (404s open nothing that stays open).
        r = _get(main, "/static/warm-up-missing.txt")
        assert r.status == 404, r
        # More idle connections than free descriptors: the server accepts until EMFILE, the rest
        # wait in the listen queue.
        start = time.monotonic()
        for _ in range(NOFILE - used + 16):
            idle.append(awstest.connect(srv.port, timeout=5))
        assert awstest.wait_for(lambda: _fd_count(pid) >= NOFILE, timeout=10), \
            f"the server holds {_fd_count(pid)} descriptors, expected its whole table ({NOFILE})"

        for target in ("/static/x.txt", "/dynamic/a.txt", "/static/no-such-file.txt", "/static/sub/"):
            r = _get(main, target)
            assert r.status == 503, (target, r)
            assert r.header("retry-after") == "1", (target, r)
            assert r.header("connection", "").lower() != "close", (target, r)
        assert re.search(r"out of descriptors or memory opening files.*answered 503 to \d+ request",
                         srv.stderr()), srv.stderr()[-2000:]
        # Meanwhile accept fails (EMFILE) every 100 ms on a listener with connections waiting:
        # logged at most once a second per worker, with a count (it was ten lines a second).
        time.sleep(3)
        elapsed = time.monotonic() - start
        lines = [l for l in srv.stderr().splitlines() if "accept failed" in l]
        allowed = workers * (math.ceil(elapsed) + 2)
        assert 0 < len(lines) <= allowed, \
            f"{len(lines)} accept failure lines in {elapsed:.1f} s (at most {allowed}):\n" + "\n".join(lines[:20])
        assert all(re.search(r"\d+ time\(s\) since the last such line", l) for l in lines), lines
    finally:
        for s in idle:
            s.close()

    def served():
        try:
            return _get(main, "/static/x.txt").status == 200
        except OSError:
            return False
    try:
        assert awstest.wait_for(served, timeout=15, interval=0.2), \
            f"still not served after the idle connections closed; stderr:\n{srv.stderr()[-2000:]}"
        r = _get(main, "/static/x.txt")
        assert r.status == 200 and r.body == docroot.files["/static/x.txt"], r
        r = _get(main, "/dynamic/a.txt")
        assert r.status == 200 and r.body == docroot.files["/dynamic/a.txt"], r
        assert _get(main, "/static/no-such-file.txt").status == 404
    finally:
        main.close()


REFUSED = 200


def test_refused_connections_are_logged_once_a_second_with_a_count(make_server, docroot):
    """Each connection over --max-connections used to log its own warning: a flood of them
    flooded the log. Now a worker logs at most one line a second, carrying how many it refused
    since its last line; the counts add up to every refusal."""
    workers = 2
    srv = make_server(args=["--max-connections", "2", "--workers", str(workers)], name="refusals")
    # Both slots held (and served) before the flood starts. The start-up probe's connection may
    # still hold a slot for a moment after the probe closed it: until the server has seen that
    # close, a held connection can itself be refused, so it is opened again.
    held = []
    early_refusals = 0   # counted in the log like the flood's
    deadline = time.monotonic() + 5
    while len(held) < 2:
        s = awstest.connect(srv.port, timeout=5)
        status = _get(s, "/static/x.txt").status
        if status == 200:
            held.append(s)
            continue
        s.close()
        assert status == 503 and time.monotonic() < deadline, f"holding a connection: {status}"
        early_refusals += 1
        time.sleep(0.05)
    try:
        start = time.monotonic()
        for _ in range(REFUSED):
            # Nothing sent: the refusal is answered at accept, and a request it never reads
            # would turn its close into a reset.
            with awstest.connect(srv.port, timeout=5) as s:
                r = awstest.parse_response(awstest.recv_until_eof(s, timeout=5))
            assert r.status == 503 and r.header("retry-after") == "1", r
        elapsed = time.monotonic() - start

        line = re.compile(r"connection limit \(2\) reached: refused (\d+) connection")

        def counted():
            return sum(int(n) for n in line.findall(srv.stderr()))
        # A burst's tail is reported by the tick once its second is over.
        total = REFUSED + early_refusals
        assert awstest.wait_for(lambda: counted() >= total, timeout=5), \
            f"the log counts {counted()} of {total} refusals:\n{srv.stderr()[-3000:]}"
        assert counted() == total, srv.stderr()[-3000:]
        lines = [l for l in srv.stderr().splitlines() if "connection limit" in l]
        allowed = workers * (math.ceil(elapsed) + 2)
        assert len(lines) <= allowed, \
            f"{len(lines)} log lines for {REFUSED} refusals in {elapsed:.1f} s (at most {allowed}):\n" \
            + "\n".join(lines[:20])
        assert all(line.search(l) for l in lines), lines
    finally:
        for s in held:
            s.close()
