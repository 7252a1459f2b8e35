"""Lean idle connections: many keep-alive connections that are open but idle cost the server
little (no per-request buffers while idle), 10,000 of them are all served twice, and a
connection is accepted at once unless --defer-accept is given (TCP_DEFER_ACCEPT).

The many-connection tests drive thousands of non-blocking sockets from one thread with a
selector (epoll), in batches, so they take seconds, not minutes. They raise this process's
RLIMIT_NOFILE to its hard limit (the server raises its own at start) and give the server
--max-connections 20000 and a long --keepalive-timeout (the connections must outlive the test's
own pace, not the default 5 s).
"""

import os
import resource
import selectors
import socket
import time

import pytest

import awstest
import pluginutil as pu
from awstest import HOST, IncompleteResponse, parse_response

SMALL = "/static/a.txt"      # first request on every connection
SECOND = "/static/x.txt"     # second request
IDLE_ARGS = ["--max-connections", "20000", "--keepalive-timeout", "120"]


# --------------------------------------------------------------------------------------
# Many connections from one thread
# --------------------------------------------------------------------------------------

@pytest.fixture
def nofile():
    """Raises RLIMIT_NOFILE to the hard limit for the test; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    yield target
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def need_fds(limit, n):
    if limit < n + 1000:
        pytest.skip(f"RLIMIT_NOFILE hard limit {limit} is too low for {n} connections (ulimit -Hn)")


def request_bytes(path):
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


class Clients:
    """Keep-alive client connections driven together with one selector."""

    def __init__(self, port):
        self.port = port
        self.socks = []

    def close(self):
        for s in self.socks:
            s.close()
        self.socks = []

    def open(self, n, path, want, batch=500, timeout=60.0):
        """Opens n connections in batches; on each one sends GET path and checks the response
        (200, exactly `want`, kept alive); keeps them all open."""
        deadline = time.monotonic() + timeout
        for start in range(0, n, batch):
            new = []
            try:
                for _ in range(min(batch, n - start)):
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    new.append(s)
                    s.settimeout(5)
                    s.connect((HOST, self.port))
                    s.setblocking(False)
            except OSError as e:
                for s in new:
                    s.close()
                raise AssertionError(f"connect failed after {len(self.socks) + len(new) - 1} connections: {e!r}")
            self.socks += new
            self.exchange(new, path, want, deadline, first_index=start)

    def exchange(self, socks, path, want, deadline=None, first_index=0):
        """Sends GET path on every socket (non-blocking; a request this small always fits the
        send buffer), then reads one response on each and checks it exactly."""
        if deadline is None:
            deadline = time.monotonic() + 60
        req = request_bytes(path)
        sel = selectors.DefaultSelector()
        bufs = {}
        try:
            for i, s in enumerate(socks):
                sent = s.send(req)
                assert sent == len(req), f"connection {first_index + i}: sent {sent} of {len(req)} bytes"
                sel.register(s, selectors.EVENT_READ, first_index + i)
                bufs[first_index + i] = b""
            pending = len(socks)
            while pending:
                left = deadline - time.monotonic()
                assert left > 0, f"{pending} of {len(socks)} responses to GET {path} missing at the deadline"
                for key, _ in sel.select(min(left, 1.0)):
                    i, s = key.data, key.fileobj
                    try:
                        b = s.recv(65536)
                    except BlockingIOError:
                        continue
                    except ConnectionResetError:
                        b = b""
                    assert b, f"connection {i} closed by the server before the response to GET {path} " \
                              f"was complete ({len(bufs[i])} bytes: {bufs[i][:200]!r})"
                    bufs[i] += b
                    if b"\r\n\r\n" not in bufs[i]:
                        continue
                    try:
                        r = parse_response(bufs[i])
                    except IncompleteResponse:
                        continue
                    assert r.status == 200 and r.body == want and r.content_length == len(want), \
                        f"connection {i}, GET {path}: {r!r}"
                    assert (r.header("connection") or "").lower() != "close", f"connection {i} not kept alive: {r!r}"
                    assert r.rest == b"", f"connection {i}: {len(r.rest)} bytes after the response: {r.rest[:100]!r}"
                    sel.unregister(s)
                    pending -= 1
        finally:
            sel.close()

    def assert_all_open(self):
        """None of the connections has been closed by the server, nor has unread bytes."""
        closed, extra = [], []
        for i, s in enumerate(self.socks):
            try:
                b = s.recv(1)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                b = b""
            (extra if b else closed).append(i)
        assert not closed, f"{len(closed)} of {len(self.socks)} idle connections were closed by the server: {closed[:10]}"
        assert not extra, f"{len(extra)} connections have unexpected bytes: {extra[:10]}"


def socket_inodes(pid):
    """Inodes of the sockets the process holds as descriptors."""
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


# --------------------------------------------------------------------------------------
# 10,000 idle keep-alive connections, each served twice
# --------------------------------------------------------------------------------------

def test_ten_thousand_idle_keepalive_connections(make_server, docroot, nofile):
    n = 10_000
    need_fds(nofile, n)
    srv = make_server(args=IDLE_ARGS, name="idle-10k")
    pid = srv.server_pid()
    clients = Clients(srv.port)
    t0 = time.monotonic()
    try:
        clients.open(n, SMALL, docroot.files[SMALL], timeout=40)
        opened = time.monotonic()
        held = len(socket_inodes(pid))
        assert held >= n, f"the server holds {held} sockets for {n} open connections"
        clients.assert_all_open()
        clients.exchange(clients.socks, SECOND, docroot.files[SECOND], time.monotonic() + 30)
        done = time.monotonic()
        clients.assert_all_open()
        print(f"{n} connections opened and served in {opened - t0:.1f}s, second round on all in "
              f"{done - opened:.1f}s; server holds {held} sockets")
    finally:
        clients.close()
    assert srv.alive()
    r = awstest.get(srv.port, SMALL)
    assert r.status == 200 and r.body == docroot.files[SMALL], r


# --------------------------------------------------------------------------------------
# Memory per idle connection
# --------------------------------------------------------------------------------------

def _settled_rss_kib(pid):
    """VmRSS once it stops moving (a few samples 100 ms apart; bounded)."""
    prev = pu.rss_kib(pid)
    for _ in range(10):
        time.sleep(0.1)
        now = pu.rss_kib(pid)
        if now == prev:
            return now
        prev = now
    return prev


def test_idle_connection_memory_per_connection(make_server, docroot, nofile):
    n, warm = 5_000, 200
    need_fds(nofile, n + warm)
    srv = make_server(args=IDLE_ARGS, name="idle-memory")
    pid = srv.server_pid()
    want = docroot.files[SMALL]
    warmup, clients = Clients(srv.port), Clients(srv.port)
    try:
        # Warm-up: every worker has served some connections (caches, buffers, tables started),
        # and they stay open, so the baseline includes a server that is already in use.
        warmup.open(warm, SMALL, want, batch=warm)
        rss0 = _settled_rss_kib(pid)
        clients.open(n, SMALL, want, timeout=40)
        rss1 = _settled_rss_kib(pid)
        clients.assert_all_open()
    finally:
        clients.close()
        warmup.close()
    per_conn = (rss1 - rss0) * 1024 / n
    print(f"server RSS {rss0} KiB with {warm} connections, {rss1} KiB with {n} more idle keep-alive "
          f"connections (each answered once): {per_conn:.0f} bytes per idle connection")
    assert per_conn < 2048, (
        f"{per_conn:.0f} bytes of server RSS per idle keep-alive connection (limit 2048): "
        f"{rss0} KiB -> {rss1} KiB for {n} connections")


# --------------------------------------------------------------------------------------
# Accepting at once, or deferred with --defer-accept
# --------------------------------------------------------------------------------------

def _stable_sockets(pid, timeout=3.0):
    """The server's socket inodes once the set has not changed for 200 ms (the start-up probe
    connection may still be closing)."""
    deadline = time.monotonic() + timeout
    prev, since = socket_inodes(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = socket_inodes(pid)
        if now != prev:
            prev, since = now, time.monotonic()
        elif time.monotonic() - since >= 0.2:
            break
    return prev


def _new_socket_within(pid, base, limit):
    """Polls the server's descriptors until a socket not in `base` appears; returns the seconds
    it took, or None if none appeared with a check started within `limit` seconds."""
    t0 = time.monotonic()
    while True:
        started = time.monotonic() - t0
        if started > limit:
            return None
        if socket_inodes(pid) - base:
            return started
        time.sleep(0.002)


def test_idle_connection_is_accepted_at_once_by_default(make_server, docroot):
    srv = make_server(name="accept-now")
    pid = srv.server_pid()
    conns = []
    try:
        for i in range(3):
            base = _stable_sockets(pid)
            c = awstest.connect(srv.port, timeout=5)   # connected, sends nothing
            conns.append(c)
            took = _new_socket_within(pid, base, 0.1)
            assert took is not None, (
                f"connection {i + 1}: sent nothing, and the server had not accepted it 100 ms later "
                f"(no new socket descriptor; is TCP_DEFER_ACCEPT still set without --defer-accept?)")
        # and each one is served when it speaks
        for c in conns:
            c.sendall(request_bytes(SMALL))
            r = awstest.read_response(c, timeout=5)
            assert r.status == 200 and r.body == docroot.files[SMALL], r
    finally:
        for c in conns:
            c.close()


def test_defer_accept_holds_a_silent_connection(make_server, docroot):
    srv = make_server(args=["--defer-accept"], name="accept-deferred")
    pid = srv.server_pid()
    base = _stable_sockets(pid)
    with awstest.connect(srv.port, timeout=5) as c:
        took = _new_socket_within(pid, base, 0.5)
        assert took is None, f"with --defer-accept a silent connection was accepted after {took * 1000:.0f} ms"
        c.sendall(request_bytes(SMALL))
        r = awstest.read_response(c, timeout=5)
        assert r.status == 200 and r.body == docroot.files[SMALL], r
        assert socket_inodes(pid) - base, "answered, yet the server holds no new socket"
