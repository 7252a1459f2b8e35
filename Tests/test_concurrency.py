"""One event loop, many connections: slow writers, many clients, aborting, idle and slow readers.

Every socket has a timeout, so a stalled server fails the test instead of hanging the suite."""

import socket
import struct
import threading
import time

import pytest

from awstest import CONCURRENT_FILES, KIB, connect, get, parse_response, recv_until_eof, sha256


def fetch(port, path, timeout=30):
    return get(port, path, timeout=timeout)


def assert_serves(server, docroot, path="/static/f_1048579.bin", within=None):
    t0 = time.monotonic()
    r = fetch(server.port, path)
    elapsed = time.monotonic() - t0
    assert r.status == 200, r
    assert sha256(r.body) == sha256(docroot.files[path]), f"{path}: wrong bytes"
    if within is not None:
        assert elapsed < within, f"{path} took {elapsed:.2f}s (limit {within}s)"
    return elapsed


# ---- a request dribbled in one byte at a time ----------------------------------------------

@pytest.mark.parametrize("path", ["/static/a.txt", "/dynamic/f_4097.bin"])
def test_request_one_byte_at_a_time(server, docroot, path):
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: dribble\r\nConnection: close\r\n\r\n".encode()
    with connect(server.port, timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(req)):
            s.send(req[i:i + 1])
            time.sleep(0.001)
        data = recv_until_eof(s, timeout=10)
    r = parse_response(data)
    assert r.status == 200, r
    assert r.body == docroot.files[path]
    assert r.rest == b""


# ---- many clients at once ------------------------------------------------------------------

def test_fifty_concurrent_clients(server, docroot):
    paths = [f"/{kind}/c_{i}.bin" for i in range(CONCURRENT_FILES) for kind in ("static", "dynamic")]
    n = 50
    barrier = threading.Barrier(n)
    results = [None] * n

    def client(i):
        path = paths[i % len(paths)]  # each file is fetched by 2-3 clients at the same time
        try:
            barrier.wait(timeout=10)
            r = fetch(server.port, path, timeout=60)
            ok = r.status == 200 and sha256(r.body) == sha256(docroot.files[path])
            results[i] = (path, ok, f"status {r.status}, {len(r.body)} bytes")
        except Exception as e:  # reported below
            results[i] = (path, False, repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    bad = [r for r in results if r is None or not r[1]]
    assert not bad, f"{len(bad)} of {n} clients failed: {bad[:5]}"
    assert server.alive()


# ---- clients that go away in the middle of a response ---------------------------------

def _abort_midway(port, path, rst):
    s = connect(port, timeout=10)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    got = s.recv(100)
    assert got.startswith(b"HTTP/1.1 200"), got
    if rst:  # SO_LINGER 0: close() sends RST instead of FIN
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


@pytest.mark.parametrize("kind", ["static", "dynamic"])
@pytest.mark.parametrize("rst", [False, True], ids=["close", "rst"])
def test_client_aborts_large_response(server, docroot, kind, rst):
    path = f"/{kind}/f_20971520.bin"
    for _ in range(5):
        _abort_midway(server.port, path, rst)
        # A concurrent normal request while the aborted ones are being torn down.
        assert_serves(server, docroot, f"/{kind}/f_4097.bin")
    time.sleep(0.2)
    assert server.alive(), f"server died after aborted clients:\n{server.stderr()[-3000:]}"
    assert_serves(server, docroot)
    assert_serves(server, docroot, "/dynamic/f_1048579.bin")


def test_many_aborts_in_parallel(server, docroot):
    errors = []

    def worker(i):
        try:
            _abort_midway(server.port, f"/{'static' if i % 2 else 'dynamic'}/f_20971520.bin", rst=i % 3 == 0)
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    time.sleep(0.2)
    assert server.alive()
    assert_serves(server, docroot, "/static/f_20971520.bin")
    assert_serves(server, docroot, "/dynamic/f_20971520.bin")


# ---- idle and stalled connections ----------------------------------------------------

def test_idle_connections_do_not_block_others(server, docroot):
    idle = []
    try:
        for _ in range(5):
            idle.append(connect(server.port, timeout=10))           # says nothing at all
        for part in (b"GET /sta", b"GET /static/a.txt HTTP/1.1\r\nHo", b"G"):
            s = connect(server.port, timeout=10)
            s.sendall(part)                                          # partial request, then stalls
            idle.append(s)
        time.sleep(0.1)
        for path in ("/static/a.txt", "/dynamic/a.txt", "/static/f_1048579.bin", "/dynamic/f_1048579.bin"):
            assert_serves(server, docroot, path, within=2.0)
        # Still fine after the idle sockets have been open a while.
        time.sleep(0.5)
        assert_serves(server, docroot, "/static/x.txt", within=2.0)
    finally:
        for s in idle:
            s.close()
    assert server.alive()
    assert_serves(server, docroot)


# ---- slow readers ------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_slow_reader_gets_exact_bytes(server, docroot, kind):
    path = f"/{kind}/slow.bin"
    want = docroot.files[path]
    s = connect(server.port, timeout=10, rcvbuf=4 * KIB)
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        chunks, total, reads = [], 0, 0
        checked_other = False
        deadline = time.monotonic() + 60
        while True:
            b = s.recv(4 * KIB)
            if not b:
                break
            chunks.append(b)
            total += len(b)
            reads += 1
            time.sleep(0.001)
            if not checked_other and total > 256 * KIB:
                # The server is blocked on this socket; others must not wait for it.
                assert_serves(server, docroot, "/static/a.txt", within=2.0)
                assert_serves(server, docroot, "/dynamic/a.txt", within=2.0)
                checked_other = True
                time.sleep(0.3)  # let the send buffer fill completely
            assert time.monotonic() < deadline, f"slow read of {path} took over 60 s ({total} bytes)"
    finally:
        s.close()
    r = parse_response(b"".join(chunks))
    assert r.status == 200, r
    assert len(r.body) == len(want)
    assert sha256(r.body) == sha256(want)
    assert checked_other
