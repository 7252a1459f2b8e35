"""Memory after a burst comes back (issue 10, defect 8).

A few thousand aborted downloads of big files used to leave the server ~100 MiB larger for
good: every /dynamic/ transfer takes two 512 KiB libaio buffers from its worker's pool, and the
pool never gave one back. Likewise every request in progress takes an exchange (~12 KiB with its
buffers) and every connection a Connection object from pools that only grew. The pools now give
back what the load has not needed for two seconds (and malloc_trim returns the freed pages).

Each test reads the server's VmRSS before a burst, checks that the burst really took memory
(VmHWM) — so a test that exercised nothing cannot pass — and then waits, at most IDLE_WAIT
seconds, for VmRSS to come back within a bound of where it started. The bounds sit between the
figures measured on this 2-core machine (see bench/soak.py for the long version):

  burst                                      before the fix (after idle)  after (after 3 s)
  aborted downloads, 120 at once x 4 rounds  +60..+100 MiB                +1..+3 MiB
  1,500 stalled requests, then reset         +19 MiB                      +2 MiB

Their names end in keeps_memory_flat: the sanitizer runs leave them out (Makefile
SANITIZER_UNFIT), since a sanitizer's own allocator and shadow memory make RSS meaningless.
"""

import resource
import socket
import struct
import time

import pytest

from awstest import HOST, MIB

BIG = 20 * MIB                      # the session docroot's biggest files
BIG_STATIC = f"/static/f_{BIG}.bin"
BIG_DYNAMIC = f"/dynamic/f_{BIG}.bin"
IDLE_WAIT = 10.0                    # the pools trim within 2-3 s; generous for a loaded machine


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def settle_rss(pid, limit_kib, timeout=IDLE_WAIT):
    """VmRSS once it is at most limit_kib, or the last reading after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        rss = status_kib(pid, "VmRSS")
        if rss <= limit_kib or time.monotonic() > deadline:
            return rss
        time.sleep(0.2)


def assert_comes_back(pid, start, peak, took_mib, within_mib, burst, pool):
    """The burst really used `pool` (its peak at least took_mib above `start`), and VmRSS is back
    within within_mib of `start` after at most IDLE_WAIT seconds."""
    assert peak - start > took_mib * 1024, (
        f"{burst} took only {(peak - start) / 1024:.1f} MiB at their peak: the test did not "
        f"exercise {pool} (start {start / 1024:.1f} MiB)")
    bound = start + within_mib * 1024
    rss = settle_rss(pid, bound)
    assert rss <= bound, (
        f"VmRSS {rss / 1024:.1f} MiB {IDLE_WAIT:g} s after {burst}, "
        f"{(rss - start) / 1024:.1f} MiB above the {start / 1024:.1f} MiB it started at "
        f"(peak {peak / 1024:.1f} MiB): {pool} were not given back")


def warm_up(port):
    """One small request of each kind, so the start figure has the code and caches paged in."""
    for path in ("/static/a.txt", "/dynamic/a.txt"):
        with socket.create_connection((HOST, port), timeout=5) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            while s.recv(65536):
                pass


def start_download(port, path, extra=""):
    """A GET for a big file on a socket with a small receive buffer, read until the head and
    some body bytes have arrived: the server's send is then blocked with the transfer under way
    (for /dynamic/, with both of its libaio buffers filled)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    s.settimeout(10)
    s.connect((HOST, port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    got = b""
    while b"\r\n\r\n" not in got or len(got) < got.find(b"\r\n\r\n") + 4 + 4096:
        chunk = s.recv(65536)
        assert chunk, f"{path}: the server closed before sending the body: {got[:200]!r}"
        got += chunk
    assert got.startswith((b"HTTP/1.1 200", b"HTTP/1.1 206")), got[:200]
    return s


def abort(s, reset):
    if reset:  # RST instead of FIN
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


@pytest.fixture
def nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if target < 4000:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_aborted_big_downloads_keeps_memory_flat(make_server):
    srv = make_server()
    pid = srv.server_pid()
    warm_up(srv.port)
    start = status_kib(pid, "VmRSS")
    # Four rounds of 120 downloads in progress at once — 80 from /dynamic/ (libaio: 160 buffers
    # of 512 KiB in use), 40 from /static/ (sendfile), a few from an unaligned offset — then
    # all abandoned, half with a reset, half with a FIN.
    for round_ in range(4):
        socks = []
        try:
            for i in range(120):
                path = BIG_STATIC if i % 3 == 2 else BIG_DYNAMIC
                extra = f"Range: bytes={12345 + i}-\r\n" if i % 10 == 0 else ""
                socks.append(start_download(srv.port, path, extra))
        finally:
            for i, s in enumerate(socks):
                abort(s, reset=(i + round_) % 2 == 0)
    peak = status_kib(pid, "VmHWM")
    assert_comes_back(pid, start, peak, took_mib=48, within_mib=12, burst="480 aborted downloads",
                      pool="the libaio buffers")
    # And the server still serves, from fresh buffers.
    s = start_download(srv.port, BIG_DYNAMIC)
    abort(s, reset=True)
    assert srv.alive()


def test_burst_of_stalled_requests_keeps_memory_flat(make_server, nofile):
    srv = make_server()
    pid = srv.server_pid()
    warm_up(srv.port)
    start = status_kib(pid, "VmRSS")
    # 1,500 connections, each with a request in progress (an exchange each) that the client
    # does not read, then all reset at once.
    socks = []
    try:
        for i in range(1500):
            s = socket.socket()
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(10)
            s.connect((HOST, srv.port))
            s.sendall(f"GET {BIG_STATIC} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        # Every request has reached the server once every connection has its response's first
        # bytes (each is answered at once; nothing is read beyond them).
        for s in socks:
            assert s.recv(16).startswith(b"HTTP/1.1 200")
        peak = status_kib(pid, "VmRSS")
    finally:
        for s in socks:
            abort(s, reset=True)
    assert_comes_back(pid, start, peak, took_mib=10, within_mib=6, burst="1,500 requests reset in progress",
                      pool="the exchanges and connections")
    assert srv.alive()
