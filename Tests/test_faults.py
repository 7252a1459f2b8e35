"""Fault injection: the real server under an LD_PRELOAD shim (Tests/faults/faultshim.c) that
makes its socket I/O short and flaky, must send exactly the bytes it sends without faults.

The shim is compiled with cc into a temporary folder at test time. Each mode below starts one
server (HTTP and HTTPS, the echo plugin, a CGI folder) with LD_PRELOAD and the mode's FAULT_*
variables; a server without the shim answers the same requests, and every response (status
line, headers except Date, body) must be byte-for-byte the same. The shim's counters (the
FAULT_STATS file) prove that the faults were really injected: a test whose faults never fired
fails instead of passing vacuously.

Every decision of the shim is a function of (FAULT_SEED, which accepted connection, call number
on it): a failure names the seed, and AWS_FAULT_SEED=N reruns with another one.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import time

import pytest

import awstest
import pluginutil as pu
import tlsutil as tu
from awstest import HOST, MIB
from cgiutil import decode_chunked
from tlsutil import pki  # noqa: F401  (fixture)

SHIM_SOURCE = os.path.join(awstest.REPO, "Tests", "faults", "faultshim.c")
SEED = int(os.environ.get("AWS_FAULT_SEED", "20261129"))

SIZES = [0, 1, 4097, MIB + 3]
BIG = MIB + 3

# The modes every core test runs in. Probabilities are per mille.
MODES = {
    # every recv/read on a socket returns one byte
    "tiny-reads": {"FAULT_READ_MAX": "1"},
    # every send/write/writev/sendfile to a socket moves 1 to 4 bytes (the 1 MiB bodies make
    # a larger cap pointless: what matters is that every call is short)
    "tiny-writes": {"FAULT_WRITE_MAX": "4"},
    # 30% of the calls on a non-blocking socket fail with EAGAIN, 10% with EINTR, and the
    # first read and the first write of every connection with EAGAIN
    "eagain-eintr": {"FAULT_EAGAIN": "300", "FAULT_EINTR": "100", "FAULT_EAGAIN_FIRST": "1"},
    # all of it, on the CGI pipes too, and io_submit refusing 30% of the reads
    "all": {"FAULT_READ_MAX": "3", "FAULT_WRITE_MAX": "64", "FAULT_EAGAIN": "300",
            "FAULT_EINTR": "100", "FAULT_EAGAIN_FIRST": "1", "FAULT_AIO_EAGAIN": "300",
            "FAULT_PIPES": "1"},
}

# AWS_FAULT_MODE="FAULT_X=V FAULT_Y=W ..." adds a mode of one's own (`make test-faults` runs a
# harsher one); it must fire whatever of the four kinds its variables turn on.
_CUSTOM = dict(kv.split("=", 1) for kv in os.environ.get("AWS_FAULT_MODE", "").split())
if _CUSTOM:
    MODES["custom"] = _CUSTOM

# What each mode must have injected during every test (names of FAULT_STATS counters): faults
# every connection meets whatever the dice say (a request is longer than 3 bytes, a response
# longer than 64, the first read and write of a connection get EAGAIN). EINTR and io_submit
# refusals are random: they are counted, not required.
MUST_FIRE = {
    "tiny-reads": ("short_reads",),
    "tiny-writes": ("short_writes",),
    "eagain-eintr": ("eagain",),
    "all": ("short_reads", "short_writes", "eagain"),
    "custom": tuple(name for name, var in (("short_reads", "FAULT_READ_MAX"), ("short_writes", "FAULT_WRITE_MAX"),
                                           ("eagain", "FAULT_EAGAIN_FIRST"))
                    if int(_CUSTOM.get(var, "0") or 0) > 0),
}

# The FAULT_STATS file: 64-bit words, in the order of the enum in faultshim.c.
STAT_WORDS = ("magic", "paused", "calls", "short_reads", "short_writes", "eagain", "eintr",
              "econnreset", "aio_calls", "aio_eagain", "accept_calls", "emfile")
STATS_MAGIC = 0x666C7473


# --------------------------------------------------------------------------------------
# The shim
# --------------------------------------------------------------------------------------

def scratch() -> str:
    """The session's temporary folder (shared with the plugin helpers, removed at exit)."""
    return pu.scratch_dir()


_shim = None


def shim() -> str:
    """Compiles faultshim.c (once per session) and returns the .so path."""
    global _shim
    if _shim is None:
        out = os.path.join(scratch(), "faultshim.so")
        cmd = ["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared", "-pthread",
               "-o", out, SHIM_SOURCE, "-ldl"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            pytest.fail(f"compiling the fault shim failed:\n{' '.join(cmd)}\n{r.stdout}{r.stderr}",
                        pytrace=False)
        _shim = out
    return _shim


class Faults:
    """The environment that puts a server under the shim, and the shim's counters."""

    def __init__(self, name: str, variables: dict, seed: int = SEED):
        self.name = name
        self.stats_path = os.path.join(scratch(), f"stats-{name}-{os.getpid()}-{time.monotonic_ns()}")
        self.env = {"LD_PRELOAD": shim(), "FAULT_SEED": str(seed), "FAULT_STATS": self.stats_path,
                    **variables}
        self.seed = seed

    def stats(self) -> dict:
        try:
            with open(self.stats_path, "rb") as f:
                data = f.read(8 * len(STAT_WORDS))
        except OSError:
            return {}
        if len(data) < 8 * len(STAT_WORDS):
            return {}
        return dict(zip(STAT_WORDS, struct.unpack(f"<{len(STAT_WORDS)}Q", data)))

    def pause(self, paused: bool = True) -> None:
        """Stops (or restarts) every injection in the running server."""
        fd = os.open(self.stats_path, os.O_RDWR)
        try:
            os.pwrite(fd, struct.pack("<Q", 1 if paused else 0), 8)
        finally:
            os.close(fd)

    def describe(self) -> str:
        knobs = " ".join(f"{k}={v}" for k, v in self.env.items() if k.startswith("FAULT_") and k != "FAULT_STATS")
        return f"mode {self.name} ({knobs})"

    def check_loaded(self) -> dict:
        s = self.stats()
        assert s.get("magic") == STATS_MAGIC, \
            f"the fault shim is not loaded in the server (LD_PRELOAD={self.env['LD_PRELOAD']}): {s}"
        return s

    def check_fired(self, *names, since: dict | None = None) -> None:
        """Each named counter grew (since the snapshot `since`, or ever)."""
        s = self.check_loaded()
        since = since or {}
        quiet = [n for n in names if s.get(n, 0) <= since.get(n, 0)]
        assert not quiet, f"{self.describe()}: no {', '.join(quiet)} injected; counters {s}"


# --------------------------------------------------------------------------------------
# The site: files, the echo plugin, CGI programs
# --------------------------------------------------------------------------------------

# Echoes its body with its own Content-Length, so the framing of the answer does not depend on
# when the program's output ends (the server picks Content-Length or chunked by timing
# otherwise) and the whole response can be compared byte for byte.
CGI_ECHO = """#!/bin/sh
printf 'Content-Type: application/octet-stream\\r\\nContent-Length: %s\\r\\nX-Got: %s\\r\\n\\r\\n' "$CONTENT_LENGTH" "$CONTENT_LENGTH"
exec head -c "$CONTENT_LENGTH"
"""

# 1 MiB + 3 bytes of output with no length: chunked, read from the pipe with backpressure.
CGI_STREAM = f"""#!/bin/sh
printf 'Content-Type: application/octet-stream\\r\\n\\r\\n'
exec cat ../static/f_{BIG}.bin
"""


class Site:
    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="aws-faults-site-")
        os.chmod(self.base, 0o755)
        self.root = os.path.join(self.base, "root")
        self.files = {}
        for kind in ("static", "dynamic"):
            for size in SIZES:
                self.add(f"/{kind}/f_{size}.bin", awstest.content(f"faults/{kind}/{size}", size))
        self.add("/cgi/echo.sh", CGI_ECHO.encode(), 0o755)
        self.add("/cgi/stream.sh", CGI_STREAM.encode(), 0o755)
        self.plugins = pu.plugin_folder({"echo": pu.example_plugin("echo")})

    def add(self, url: str, data: bytes, mode: int = 0o644) -> None:
        p = os.path.join(self.root, url.lstrip("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        for d in (os.path.dirname(p), os.path.dirname(os.path.dirname(p))):
            os.chmod(d, 0o755)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
        self.files[url] = data

    def cleanup(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def site():
    s = Site()
    yield s
    s.cleanup()


def server_args(pki, site) -> list:
    return tu.cert_args(pki, sni=()) + ["--plugins", site.plugins]


def new_server(pki, site, name: str) -> tu.TLSServer:
    return tu.TLSServer(site.root, args=server_args(pki, site), name=name)


@pytest.fixture(scope="module")
def clean(pki, site):
    """The same server without the shim: the reference for every response."""
    with awstest.running(new_server(pki, site, "faults-clean")) as srv:
        yield srv


class Faulty:
    def __init__(self, srv: tu.TLSServer, faults: Faults):
        self.srv = srv
        self.faults = faults
        self.exercised = True   # a test that skips itself sets False: nothing to check after it


@pytest.fixture(scope="module", params=list(MODES))
def faulty(request, pki, site):
    """One server per mode under the shim, shared by the mode's tests."""
    name = request.param
    faults = Faults(name, MODES[name])
    srv = new_server(pki, site, f"faults-{name}")
    with awstest.running(srv, faults.env):
        faults.check_loaded()
        yield Faulty(srv, faults)


@pytest.fixture
def mode(faulty):
    """The mode's server, checked alive after the test, and that the mode's faults fired."""
    before = faulty.faults.stats()
    faulty.exercised = True
    yield faulty
    assert faulty.srv.alive(), (f"{faulty.faults.describe()}: the server died; stderr tail:\n"
                                f"{faulty.srv.stderr()[-3000:]}")
    if faulty.exercised:
        faulty.faults.check_fired(*MUST_FIRE[faulty.faults.name], since=before)


# --------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------

TIMEOUT = 60.0


def exchange(port: int, data: bytes, tls_ca: str | None = None, timeout: float = TIMEOUT) -> bytes:
    """Sends `data` on a fresh connection (TLS when tls_ca is given), returns every byte the
    server sends until it closes."""
    raw = socket.create_connection((HOST, port), timeout=10)
    sock = raw
    try:
        if tls_ca is not None:
            sock = tu.client_context(tls_ca).wrap_socket(raw, server_hostname=HOST)
        sock.sendall(data)
        deadline = time.monotonic() + timeout
        chunks = []
        while True:
            if time.monotonic() > deadline:
                raise socket.timeout(f"no end of the response within {timeout}s "
                                     f"({sum(map(len, chunks))} bytes read)")
            try:
                b = sock.recv(256 * 1024)
            except ssl.SSLZeroReturnError:
                b = b""
            if not b:
                return b"".join(chunks)
            chunks.append(b)
    finally:
        sock.close()


DATE = re.compile(rb"\r\nDate: [^\r\n]*")


def normalized(data: bytes) -> bytes:
    """The bytes with every Date header's value blanked (the only part that may differ)."""
    return DATE.sub(b"\r\nDate: -", data)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def same_bytes(got: bytes, want: bytes, what: str, faults: Faults) -> None:
    """Asserts that two whole exchanges are the same bytes (Dates aside), saying where they
    first differ (1 MiB bodies are not printed)."""
    g, w = normalized(got), normalized(want)
    if g == w:
        return
    i = next((k for k in range(min(len(g), len(w))) if g[k] != w[k]), min(len(g), len(w)))
    pytest.fail(f"{faults.describe()}, seed {faults.seed}: {what}: {len(g)} bytes (sha {digest(g)}) "
                f"instead of {len(w)} (sha {digest(w)}); first difference at byte {i}:\n"
                f"  got:      {g[max(0, i - 60):i + 60]!r}\n  expected: {w[max(0, i - 60):i + 60]!r}",
                pytrace=False)


def compare(faulty: Faulty, clean, data: bytes, what: str, tls_ca: str | None = None) -> bytes:
    """The same request bytes to both servers; the answers must be the same bytes. Returns them."""
    want = exchange(clean.tls_port if tls_ca else clean.port, data, tls_ca)
    got = exchange(faulty.srv.tls_port if tls_ca else faulty.srv.port, data, tls_ca)
    same_bytes(got, want, what, faulty.faults)
    return got


def get(path: str, extra: str = "", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n{extra}Connection: close\r\n\r\n".encode()


def chunked_post(path: str, body: bytes, sizes=(1, 2, 4093, 65536)) -> bytes:
    """A POST whose body goes in chunks of the given sizes (cycled)."""
    out = [f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/x-test\r\n"
           f"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()]
    i, k = 0, 0
    while i < len(body):
        part = body[i:i + sizes[k % len(sizes)]]
        out.append(b"%x\r\n" % len(part) + part + b"\r\n")
        i += len(part)
        k += 1
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def body_of(data: bytes) -> bytes:
    """The body of the one response in `data` (Content-Length or chunked)."""
    r = awstest.parse_response(data)
    if "chunked" in (r.header("transfer-encoding") or "").lower():
        head_end = data.index(b"\r\n\r\n") + 4
        body, rest = decode_chunked(data[head_end:])
        assert rest == b"", f"{len(rest)} bytes after the chunked body"
        return body
    assert r.rest == b"", f"{len(r.rest)} bytes after the response"
    return r.body


# --------------------------------------------------------------------------------------
# The core subset, in every mode
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_files_of_every_size(mode, clean, site, kind):
    for size in SIZES:
        url = f"/{kind}/f_{size}.bin"
        got = compare(mode, clean, get(url), f"GET {url}")
        r = awstest.parse_response(got)
        assert r.status == 200 and r.body == site.files[url], \
            f"{mode.faults.describe()}: GET {url}: {r!r}, sha {digest(r.body)} vs {digest(site.files[url])}"
    compare(mode, clean, get(f"/{kind}/f_{BIG}.bin", method="HEAD"), "HEAD")


RANGES = ["bytes=0-0", "bytes=4095-4097", "bytes=-3", f"bytes={BIG - 700}-", "bytes=5-70004",
          f"bytes={BIG}-"]


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_ranges(mode, clean, site, kind):
    url = f"/{kind}/f_{BIG}.bin"
    data = site.files[url]
    for spec in RANGES:
        got = compare(mode, clean, get(url, f"Range: {spec}\r\n"), f"GET {url} Range: {spec}")
        r = awstest.parse_response(got)
        if spec == f"bytes={BIG}-":
            assert r.status == 416, r
            continue
        first, _, last = spec[len("bytes="):].partition("-")
        if first == "":
            want = data[-int(last):]
        else:
            want = data[int(first):int(last) + 1 if last else None]
        assert r.status == 206 and r.body == want, f"{mode.faults.describe()}: Range {spec}: {r!r}"


def test_keepalive_pipelined(mode, clean, site):
    """Seven requests written at once on one connection, answered in order."""
    body = awstest.content("faults/pipelined-post", 5000)
    reqs = [
        f"GET /static/f_4097.bin HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode(),
        f"GET /dynamic/f_4097.bin HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode(),
        f"GET /static/f_{BIG}.bin HTTP/1.1\r\nHost: {HOST}\r\nRange: bytes=1000-70000\r\n\r\n".encode(),
        f"HEAD /dynamic/f_{BIG}.bin HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode(),
        f"GET /missing.txt HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode(),
        f"POST /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body,
        get("/dynamic/f_1.bin"),
    ]
    got = compare(mode, clean, b"".join(reqs), "seven pipelined requests")
    assert got.count(b"HTTP/1.1 ") >= 7 and site.files["/dynamic/f_4097.bin"] in got, got[:300]


def test_chunked_post_to_the_echo_plugin(mode, clean):
    body = awstest.content("faults/echo", 100_003)
    got = compare(mode, clean, chunked_post("/echo", body), "chunked POST /echo")
    r = awstest.parse_response(got)
    assert r.status == 200 and r.body == body, r


def test_chunked_post_to_a_cgi_program(mode, clean):
    body = awstest.content("faults/cgi", 100_003)
    got = compare(mode, clean, chunked_post("/cgi/echo.sh", body), "chunked POST /cgi/echo.sh")
    r = awstest.parse_response(got)
    assert r.status == 200 and r.header("x-got") == str(len(body)) and r.body == body, r


def test_cgi_output_streamed_chunked(mode, clean, site):
    """Output without a length, 1 MiB through the pipe: chunked, the same body. (Where the chunk
    boundaries fall depends on how the pipe was read, so the decoded bodies are compared.)"""
    want = exchange(clean.port, get("/cgi/stream.sh"))
    got = exchange(mode.srv.port, get("/cgi/stream.sh"))
    for data, who in ((want, "without faults"), (got, mode.faults.describe())):
        r = awstest.parse_response(data, complete=False)
        assert r.status == 200 and r.header("transfer-encoding") == "chunked", f"{who}: {r!r}"
        assert body_of(data) == site.files[f"/static/f_{BIG}.bin"], \
            f"{who}, seed {mode.faults.seed}: {len(body_of(data))} bytes, sha {digest(body_of(data))}"


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_https_file(mode, clean, site, pki, kind):
    for size in (4097, BIG):
        url = f"/{kind}/f_{size}.bin"
        got = compare(mode, clean, get(url), f"GET {url} over TLS", tls_ca=pki.root)
        r = awstest.parse_response(got)
        assert r.status == 200 and r.body == site.files[url], f"{mode.faults.describe()}: {r!r}"


def expect_continue(port: int, body: bytes, tls_ca: str | None = None, wait: float = 2.0,
                    path: str = "/echo") -> bytes:
    """POST `path` with `Expect: 100-continue`: the head, then the body once the interim
    response has come (or after `wait` seconds without it, as clients do), then everything
    until the server closes."""
    raw = socket.create_connection((HOST, port), timeout=10)
    sock = raw
    try:
        if tls_ca is not None:
            sock = tu.client_context(tls_ca).wrap_socket(raw, server_hostname=HOST)
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nExpect: 100-continue\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        got = b""
        deadline = time.monotonic() + wait
        sock.settimeout(0.1)
        while b"\r\n\r\n" not in got and time.monotonic() < deadline:
            try:
                b = sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            if not b:
                break
            got += b
        sock.settimeout(10)
        sock.sendall(body)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                b = sock.recv(256 * 1024)
            except ssl.SSLZeroReturnError:
                b = b""
            if not b:
                return got
            got += b
        raise socket.timeout(f"no end of the response within {TIMEOUT}s")
    finally:
        sock.close()


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def check_continue(got: bytes, want: bytes, faults: Faults, what: str) -> None:
    """The interim response goes out whole or not at all (RFC 9110 §15.2: a client must be
    ready for a final response without it); what follows is the final response, unchanged."""
    assert want.startswith(CONTINUE), f"the server without faults sent no 100 Continue: {want[:200]!r}"
    if not got.startswith(CONTINUE):
        want = want[len(CONTINUE):]
    same_bytes(got, want, what, faults)


# Issue 10, item 2 (regression): the interim `100 Continue` line is queued like any output, so a
# short send (tiny writes) or a full socket (EAGAIN; over TLS an SSL_write that returns
# WANT_WRITE keeps its record for the retry) never cuts it or eats into the final head. These
# tests failed with `HHTTP/1.1 200 OK...` and, over TLS, with the head missing its first 25 bytes
# while the line was sent with one `try?` send.


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest.mark.parametrize("path", ["/echo", "/cgi/echo.sh"], ids=["plugin", "cgi"])
def test_expect_100_continue(mode, clean, pki, tls, path):
    body = awstest.content("faults/continue", 3000)
    ca = pki.root if tls else None
    want = expect_continue(clean.tls_port if tls else clean.port, body, ca, path=path)
    got = expect_continue(mode.srv.tls_port if tls else mode.srv.port, body, ca, path=path)
    check_continue(got, want, mode.faults, f"POST {path} with Expect: 100-continue{' over TLS' if tls else ''}")


# --------------------------------------------------------------------------------------
# Faults on demand: io_submit refused, accept out of descriptors, connections reset
# --------------------------------------------------------------------------------------

def start_faulty(pki, site, name: str, variables: dict) -> Faulty:
    faults = Faults(name, variables)
    srv = new_server(pki, site, f"faults-{name}")
    awstest.start_or_fail(srv, faults.env)
    faults.check_loaded()
    return Faulty(srv, faults)


@pytest.fixture
def on_demand(pki, site):
    """start(name, variables) -> a Faulty server for this test only, stopped and checked after."""
    started = []

    def start(name: str, variables: dict) -> Faulty:
        f = start_faulty(pki, site, name, variables)
        started.append(f.srv)
        return f

    yield start
    awstest.stop_all_or_fail(started)


def test_expect_100_continue_over_tls_with_eagain(on_demand, clean, pki):
    """Expect: 100-continue over TLS with 70% of the socket calls failing with EAGAIN: in 20
    tries the interim line's write meets EAGAIN all but certainly (1 - 0.3^20), and every answer
    must still be the interim line (whole, or not at all) and then the final response."""
    f = on_demand("continue-tls", {"FAULT_EAGAIN": "700"})
    body = awstest.content("faults/continue", 3000)
    want = expect_continue(clean.tls_port, body, pki.root)
    for i in range(20):
        got = expect_continue(f.srv.tls_port, body, pki.root, wait=0.5)
        check_continue(got, want, f.faults, f"try {i}: POST /echo with Expect: 100-continue over TLS")
    f.faults.check_fired("eagain")


def test_every_io_submit_refused(on_demand, clean, site):
    """io_submit -> EAGAIN on every call: /dynamic/ files are read some other way, same bytes."""
    f = on_demand("aio-eagain", {"FAULT_AIO_EAGAIN": "1000"})
    for size in SIZES:
        url = f"/dynamic/f_{size}.bin"
        got = compare(f, clean, get(url), f"GET {url}")
        assert awstest.parse_response(got).body == site.files[url]
    compare(f, clean, get(f"/dynamic/f_{BIG}.bin", "Range: bytes=70000-\r\n"), "a range")
    f.faults.check_fired("aio_eagain")


def test_accept_out_of_descriptors(on_demand, clean, site, pki):
    """accept4 -> EMFILE on half the calls: every connection is still served (accepting pauses
    and resumes; the connection waits in the queue meanwhile)."""
    f = on_demand("emfile", {"FAULT_EMFILE": "500"})
    for i in range(12):
        tls = i % 3 == 2
        compare(f, clean, get("/static/f_4097.bin"), f"connection {i}", tls_ca=pki.root if tls else None)
    f.faults.check_fired("emfile")
    assert awstest.wait_for(lambda: "accept failed" in f.srv.stderr(), 5), \
        f"no 'accept failed' line in the log: {f.srv.stderr()[-2000:]}"


def settled(read, quiet: float = 1.0, limit: float = 10.0):
    """read() once it has returned the same value for `quiet` seconds (or after `limit`)."""
    deadline = time.monotonic() + limit
    value, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return value


def server_fds(srv) -> list:
    """The server's descriptors that belong to connections and programs (sockets, pipes,
    pidfds), by what they are. Regular files are left out: each worker's open-file cache holds
    its own, so how many are open depends on which worker served what."""
    fd_dir = f"/proc/{srv.server_pid()}/fd"
    kinds = []
    for d in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{d}")
        except OSError:
            continue   # closed meanwhile
        if target.startswith(("socket:", "pipe:", "anon_inode:[pidfd]", "anon_inode:pidfd")):
            kinds.append(target.split(":")[0] + (":pidfd" if "pidfd" in target else ""))
    return sorted(kinds)


def server_children(srv) -> list:
    pid = srv.server_pid()
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                kids += fh.read().split()
        except OSError:
            pass
    return kids


def exchange_tolerant(port: int, data: bytes, tls_ca: str | None = None) -> bytes:
    """Like exchange(), but a connection the server resets or cuts short returns what came."""
    raw = socket.create_connection((HOST, port), timeout=10)
    sock = raw
    got = []
    try:
        if tls_ca is not None:
            sock = tu.client_context(tls_ca).wrap_socket(raw, server_hostname=HOST)
        sock.sendall(data)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            b = sock.recv(256 * 1024)
            if not b:
                break
            got.append(b)
        else:
            raise socket.timeout(f"no end of the response within {TIMEOUT}s")
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError, ssl.SSLZeroReturnError):
        pass
    finally:
        sock.close()
    return b"".join(got)


def test_connections_reset(on_demand, clean, site, pki):
    """recv/send fail with ECONNRESET on 8% of the calls (the socket shut down as a real reset
    leaves it): every answer is the clean one or a cut-short prefix of it, never other bytes; the
    server keeps running, and once the resets stop it holds no more descriptors or CGI programs
    than before and answers everything exactly."""
    f = on_demand("econnreset", {"FAULT_ECONNRESET": "80"})
    f.faults.pause()
    requests = [
        ("GET static", get("/static/f_4097.bin"), None),
        ("GET dynamic", get(f"/dynamic/f_{BIG}.bin"), None),
        ("GET static big", get(f"/static/f_{BIG}.bin"), None),
        ("POST echo", chunked_post("/echo", awstest.content("faults/reset-echo", 70_000)), None),
        ("POST cgi", chunked_post("/cgi/echo.sh", awstest.content("faults/reset-cgi", 70_000)), None),
        ("GET over TLS", get(f"/dynamic/f_{BIG}.bin"), pki.root),
    ]
    wants = {}
    for what, data, ca in requests:
        wants[what] = normalized(exchange(clean.tls_port if ca else clean.port, data, ca))
        same_bytes(exchange(f.srv.tls_port if ca else f.srv.port, data, ca), wants[what], what, f.faults)
    assert awstest.wait_for(lambda: not server_children(f.srv), 10)
    # The baseline once the clean exchanges' connections are gone: one the server is still
    # closing (a lingering close lasts up to 2 s) would otherwise count as "before".
    fds_before = settled(lambda: server_fds(f.srv))

    f.faults.pause(False)
    whole = cut = 0
    for round_ in range(8):
        for what, data, ca in requests:
            got = normalized(exchange_tolerant(f.srv.tls_port if ca else f.srv.port, data, ca))
            if got == wants[what]:
                whole += 1
                continue
            cut += 1
            if ca is None:   # over TLS a cut record is not readable: only the plain bytes are checked
                assert wants[what].startswith(got), \
                    (f"{f.faults.describe()}, seed {f.faults.seed}: {what} (round {round_}): {len(got)} "
                     f"bytes that are not a prefix of the clean answer: {got[:300]!r}")
    f.faults.pause()
    f.faults.check_fired("econnreset")
    assert f.srv.alive(), f"the server died under resets: {f.srv.stderr()[-3000:]}"
    assert cut > 0 and whole > 0, f"resets cut {cut} answers, {whole} whole: the test proved nothing"

    # Back to normal: no descriptors or programs left over, every answer exact again.
    assert awstest.wait_for(lambda: not server_children(f.srv), 10), \
        f"CGI programs still running after their connections were reset: {server_children(f.srv)}"
    assert awstest.wait_for(lambda: server_fds(f.srv) == fds_before, 10), \
        f"descriptors of connections and programs after the resets: {server_fds(f.srv)}; before: {fds_before}"
    for what, data, ca in requests:
        same_bytes(exchange(f.srv.tls_port if ca else f.srv.port, data, ca), wants[what], what + " after", f.faults)
