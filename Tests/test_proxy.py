"""Behind a load balancer: the PROXY protocol (v1 and v2, `--proxy-protocol`), X-Forwarded-For
and Forwarded from `--trusted-proxy` peers, and HAProxy (Debian `haproxy`) in front of two aws
instances.

Loopback is all of 127/8 on Linux, so the tests give each party its own address: the client
connects from 127.0.0.2, HAProxy connects to aws from 127.0.0.3 (`source`), and the proof that
aws sees the client is 127.0.0.2 at the start of its access-log line, never 127.0.0.3.

The access log's format may change (a combined format): the client address is asserted at the
start of the request line, as `ADDR:PORT "GET` (port known) and `ADDR - - [` (combined) both
begin, after the optional swift-log prefix `... aws.access: `.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import uuid

import pytest

import awstest
import pluginutil as pu
from awstest import HOST, free_port, read_text, wait_for
from tlsutil import make_tls_server, pki  # noqa: F401  (fixtures)

CLIENT = "127.0.0.2"
BALANCER = "127.0.0.3"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

def v1(family: str, src: str, dst: str, sport: int, dport: int) -> bytes:
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src: str | None = None, sport: int = 0, dst: str = "127.0.0.1", dport: int = 80,
       local: bool = False, tlvs: bytes = b"") -> bytes:
    """A version 2 header: PROXY over TCP from src (IPv4 or IPv6), or LOCAL."""
    if local:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    if ":" in src:
        family, addresses = 0x21, socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, "::1" if dst == "127.0.0.1" else dst)
    else:
        family, addresses = 0x11, socket.inet_aton(src) + socket.inet_aton(dst)
    body = addresses + struct.pack("!HH", sport, dport) + tlvs
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


def tag() -> str:
    return uuid.uuid4().hex[:12]


def request(path: str, extra: str = "", version: str = "1.1") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: t\r\n{extra}Connection: close\r\n\r\n".encode()


def connect_from(source: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(awstest.OP_TIMEOUT)
    s.bind((source, 0))
    s.connect((HOST, port))
    return s


def exchange(port: int, *pieces: bytes, source: str = CLIENT, pause: float = 0.0) -> bytes:
    """Sends the pieces (with `pause` between them: a header that arrives in parts) and reads
    until the server closes; what it read."""
    s = connect_from(source, port)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i, p in enumerate(pieces):
            if i and pause:
                time.sleep(pause)
            s.sendall(p)
        return read_all(s)
    finally:
        s.close()


def read_all(s) -> bytes:
    """Everything until the server closes. A close with our bytes unread reaches us as a reset;
    whether it comes as a FIN or a reset is TCP's business, the tests care about the bytes."""
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return out
            out += d
    except ConnectionResetError:
        return out


def status_of(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1."), f"no HTTP response: {raw[:200]!r}"
    return int(raw.split(b" ", 2)[1])


def body_of(raw: bytes) -> bytes:
    """The body of a response to an HTTP/1.0 request or one with Content-Length (no chunks)."""
    return raw.split(b"\r\n\r\n", 1)[1]




def request_lines(path: str, marker: str) -> list:
    """The access-log lines of the requests whose target holds `marker`, without swift-log's
    prefix: each starts with the client address."""
    out = []
    for line in read_text(path).splitlines():
        if marker in line:
            out.append(line.split("aws.access: ", 1)[1] if "aws.access: " in line else line)
    return out


def logged_client(log: str, marker: str, timeout: float = 5.0) -> str:
    """The client address of the one request with `marker` (the log formats carry no port)."""
    assert wait_for(lambda: request_lines(log, marker), timeout), f"no access-log line for {marker}:\n{read_text(log)}"
    lines = request_lines(log, marker)
    assert len(lines) == 1, lines
    return lines[0].split(" ", 1)[0]


def assert_client(log: str, marker: str, address: str, port: int | None = None) -> None:
    """The log names `address`. `port` (what the PROXY or Forwarded header said) is not in the
    access-log formats; CGI's REMOTE_PORT test and the parser's unit tests check it."""
    got = logged_client(log, marker)
    assert got == address, f"logged {got!r}, want {address}"


@pytest.fixture
def access_log(log_dir):
    return os.path.join(log_dir, f"access-proxy-{uuid.uuid4().hex}.log")


def proxy_server(make_server, access_log, *args, root=None, name="proxy"):
    return make_server(args=["--proxy-protocol", "--access-log", access_log, "--log-level", "info", *args],
                       root=root, name=name)


# --------------------------------------------------------------------------------------
# PROXY protocol on a raw socket
# --------------------------------------------------------------------------------------

def test_v1_tcp4_names_the_client(make_server, access_log):
    srv = proxy_server(make_server, access_log)
    m = tag()
    raw = exchange(srv.port, v1("TCP4", "203.0.113.7", "127.0.0.1", 51000, 80) + request(f"/static/x.txt?{m}"))
    assert status_of(raw) == 200 and body_of(raw) == b"x marks the spot\n"
    assert_client(access_log, m, "203.0.113.7", 51000)


def test_v1_tcp6_and_unknown(make_server, access_log):
    srv = proxy_server(make_server, access_log)
    m6, mu = tag(), tag()
    assert status_of(exchange(srv.port, v1("TCP6", "2001:db8::7", "::1", 40000, 443) + request(f"/static/x.txt?{m6}"))) == 200
    assert_client(access_log, m6, "2001:db8::7", 40000)
    # UNKNOWN: the connection's own peer stands.
    assert status_of(exchange(srv.port, b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n" + request(f"/static/x.txt?{mu}"))) == 200
    assert_client(access_log, mu, CLIENT)


def test_v2_ipv4_ipv6_local_and_tlvs(make_server, access_log):
    srv = proxy_server(make_server, access_log)
    m4, m6, ml, mt = tag(), tag(), tag(), tag()
    assert status_of(exchange(srv.port, v2("198.51.100.1", 4444) + request(f"/static/x.txt?{m4}"))) == 200
    assert_client(access_log, m4, "198.51.100.1", 4444)
    assert status_of(exchange(srv.port, v2("2001:db8:cafe::17", 4711) + request(f"/static/x.txt?{m6}"))) == 200
    assert_client(access_log, m6, "2001:db8:cafe::17", 4711)
    # LOCAL (a balancer's health check): the real peer.
    assert status_of(exchange(srv.port, v2(local=True) + request(f"/static/x.txt?{ml}"))) == 200
    assert_client(access_log, ml, CLIENT)
    # TLVs (here ALPN and a NOOP) are skipped, not taken for HTTP.
    tlvs = b"\x01\x00\x08http/1.1" + b"\x04\x00\x03abc"
    assert status_of(exchange(srv.port, v2("192.0.2.44", 1234, tlvs=tlvs) + request(f"/static/x.txt?{mt}"))) == 200
    assert_client(access_log, mt, "192.0.2.44", 1234)


def test_header_in_pieces(make_server, access_log):
    """The header arrives a few bytes at a time (and the request right behind its last part)."""
    srv = proxy_server(make_server, access_log)
    m1, m2 = tag(), tag()
    h1 = v1("TCP4", "203.0.113.9", "127.0.0.1", 1000, 80)
    raw = exchange(srv.port, h1[:3], h1[3:20], h1[20:] + request(f"/static/x.txt?{m1}"), pause=0.05)
    assert status_of(raw) == 200
    assert_client(access_log, m1, "203.0.113.9", 1000)
    h2 = v2("203.0.113.10", 2000, tlvs=b"\x04\x00\x05hello")
    req = request(f"/static/x.txt?{m2}")
    raw = exchange(srv.port, h2[:1], h2[1:14], h2[14:30], h2[30:] + req[:5], req[5:], pause=0.05)
    assert status_of(raw) == 200
    assert_client(access_log, m2, "203.0.113.10", 2000)


@pytest.mark.parametrize("header,reason", [
    (b"GET /static/x.txt HTTP/1.1\r\nHost: t\r\n\r\n", "no PROXY protocol header"),
    (b"PROXY TCP4 203.0.113.7 127.0.0.1 51000\r\n", "two addresses and two ports"),
    (b"PROXY TCP4 2001:db8::1 127.0.0.1 1 2\r\n", "does not match its family"),
    (b"PROXY TCP4 203.0.113.7 127.0.0.1 70000 80\r\n", "port is not 0-65535"),
    (b"PROXY TCP5 203.0.113.7 127.0.0.1 1 2\r\n", "family"),
    (b"PROXY TCP4 203.0.113.7 127.0.0.1 1 2\n", "without CRLF"),
    (b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n", "longer than 107"),
    (V2_SIGNATURE + bytes([0x31, 0x11, 0, 12]) + bytes(12), "version 3"),
    (V2_SIGNATURE + bytes([0x22, 0x11, 0, 12]) + bytes(12), "command 2"),
    (V2_SIGNATURE + bytes([0x21, 0x11, 0, 4]) + bytes(4), "too short for its addresses"),
    (V2_SIGNATURE[:7] + b"X" + V2_SIGNATURE[8:] + bytes([0x21, 0x11, 0, 12]) + bytes(12), "no PROXY protocol header"),
])
def test_malformed_header_closes_and_logs(make_server, access_log, header, reason):
    srv = proxy_server(make_server, access_log)
    m = tag()
    raw = exchange(srv.port, header + request(f"/static/x.txt?{m}"))
    assert raw == b"", f"a response to a malformed PROXY header: {raw[:200]!r}"
    assert wait_for(lambda: "malformed PROXY protocol header" in srv.stderr() and reason in srv.stderr(), 5.0), srv.stderr()[-2000:]
    line = [ln for ln in srv.stderr().splitlines() if "malformed PROXY" in ln][-1]
    assert f"{CLIENT}:" in line, line
    assert not request_lines(access_log, m)
    # The server goes on.
    assert status_of(exchange(srv.port, v1("TCP4", "192.0.2.1", "127.0.0.1", 1, 2) + request("/static/x.txt"))) == 200


def test_close_inside_header_is_logged(make_server, access_log):
    srv = proxy_server(make_server, access_log)
    s = connect_from(CLIENT, srv.port)
    s.sendall(b"PROXY TCP4 203.0.")
    s.shutdown(socket.SHUT_WR)
    assert read_all(s) == b""
    s.close()
    assert wait_for(lambda: "connection closed inside its PROXY protocol header" in srv.stderr(), 5.0), srv.stderr()[-2000:]


def test_incomplete_header_times_out(make_server, access_log):
    srv = proxy_server(make_server, access_log, "--header-timeout", "1")
    s = connect_from(CLIENT, srv.port)
    s.sendall(b"PROXY TCP4 203.0.")
    s.settimeout(10)
    assert read_all(s) == b""
    s.close()
    assert wait_for(lambda: [ln for ln in srv.stderr().splitlines()
                             if "PROXY protocol header timed out" in ln and f"peer={CLIENT}:" in ln], 5.0), srv.stderr()[-2000:]


def test_untrusted_peer_sending_proxy_is_closed(make_server, access_log):
    srv = proxy_server(make_server, access_log, "--trusted-proxy", BALANCER)
    m_bad, m_ok = tag(), tag()
    raw = exchange(srv.port, v1("TCP4", "203.0.113.7", "127.0.0.1", 5, 80) + request(f"/static/x.txt?{m_bad}"), source=CLIENT)
    assert raw == b""
    # (The start-up probe from 127.0.0.1 is refused the same way: the line of this client.)
    assert wait_for(lambda: [ln for ln in srv.stderr().splitlines() if "not in --trusted-proxy" in ln and f"peer={CLIENT}:" in ln], 5.0), \
        srv.stderr()[-2000:]
    assert not request_lines(access_log, m_bad)
    raw = exchange(srv.port, v1("TCP4", "203.0.113.7", "127.0.0.1", 5, 80) + request(f"/static/x.txt?{m_ok}"), source=BALANCER)
    assert status_of(raw) == 200
    assert_client(access_log, m_ok, "203.0.113.7", 5)


def test_keep_alive_after_header(make_server, access_log):
    """The header is read once per connection; the requests after it all belong to its client."""
    srv = proxy_server(make_server, access_log)
    m1, m2 = tag(), tag()
    s = connect_from(CLIENT, srv.port)
    s.sendall(v2("198.51.100.77", 777) + f"GET /static/x.txt?{m1} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    r1 = awstest.read_response(s)
    assert r1.status == 200
    s.sendall(request(f"/static/x.txt?{m2}"))
    assert status_of(read_all(s)) == 200
    s.close()
    assert_client(access_log, m1, "198.51.100.77", 777)
    assert_client(access_log, m2, "198.51.100.77", 777)


def test_proxy_header_before_tls(make_tls_server, pki, docroot, access_log):
    """On the HTTPS listener the header precedes the ClientHello."""
    srv = make_tls_server(docroot.root, args=["--proxy-protocol", "--access-log", access_log, "--no-http"]
                          + ["--tls-cert", pki["default"].cert, "--tls-key", pki["default"].key])
    m = tag()
    raw_sock = connect_from(CLIENT, srv.tls_port)
    raw_sock.sendall(v2("203.0.113.88", 8888))
    ctx = ssl.create_default_context(cafile=pki.root)
    with ctx.wrap_socket(raw_sock, server_hostname="localhost") as s:
        s.sendall(request(f"/static/x.txt?{m}"))
        raw = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            raw += d
    assert status_of(raw) == 200 and body_of(raw) == b"x marks the spot\n"
    assert_client(access_log, m, "203.0.113.88", 8888)


# --------------------------------------------------------------------------------------
# X-Forwarded-For and Forwarded
# --------------------------------------------------------------------------------------

def forwarded_server(make_server, access_log, *args, root=None):
    return make_server(args=["--trusted-proxy", BALANCER, "--trusted-proxy", "10.0.0.0/8", "--access-log", access_log, *args],
                       root=root, name="xff")


@pytest.mark.parametrize("headers,client,port", [
    ("X-Forwarded-For: 198.51.100.9\r\n", "198.51.100.9", None),
    # Rightmost address that is not trusted: 10.1.2.3 is another trusted hop.
    ("X-Forwarded-For: 192.0.2.1, 198.51.100.9, 10.1.2.3\r\n", "198.51.100.9", None),
    # Two header lines are one list.
    ("X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 10.9.9.9\r\n", "192.0.2.1", None),
    ("X-Forwarded-For: 2001:db8::5\r\n", "2001:db8::5", None),
    ("Forwarded: for=198.51.100.20;proto=http\r\n", "198.51.100.20", None),
    ('Forwarded: for=192.0.2.60, for="[2001:db8:cafe::17]:4711"\r\n', "2001:db8:cafe::17", 4711),
    ('Forwarded: For="[2001:db8:cafe::17]:4711", for=10.0.0.1;by=10.0.0.2\r\n', "2001:db8:cafe::17", 4711),
    # X-Forwarded-For, when present, is the one believed.
    ("Forwarded: for=192.0.2.99\r\nX-Forwarded-For: 198.51.100.9\r\n", "198.51.100.9", None),
    # An entry that is not an address ends the walk at the last address reached.
    ("X-Forwarded-For: 198.51.100.9, unknown, 10.0.0.7\r\n", "10.0.0.7", None),
    # No header: the peer itself.
    ("", BALANCER, None),
])
def test_trusted_peer_forwarding_headers(make_server, access_log, headers, client, port):
    srv = forwarded_server(make_server, access_log)
    m = tag()
    assert status_of(exchange(srv.port, request(f"/static/x.txt?{m}", headers), source=BALANCER)) == 200
    assert_client(access_log, m, client, port)


def test_spoofed_forwarding_from_untrusted_peer_is_ignored(make_server, access_log):
    srv = forwarded_server(make_server, access_log)
    m1, m2 = tag(), tag()
    raw = exchange(srv.port, request(f"/static/x.txt?{m1}", "X-Forwarded-For: 10.0.0.1, 203.0.113.66\r\n"), source=CLIENT)
    assert status_of(raw) == 200
    assert_client(access_log, m1, CLIENT)
    raw = exchange(srv.port, request(f"/static/x.txt?{m2}", "Forwarded: for=203.0.113.66\r\n"), source=CLIENT)
    assert status_of(raw) == 200
    assert_client(access_log, m2, CLIENT)


def test_trusted_proxy_is_validated(docroot):
    for bad in ["10.0.0.0/33", "not-an-address", "2001:db8::/129", "10.0.0.0/", "1.2.3.4/8/8", "010.0.0.1"]:
        r = subprocess.run([awstest.aws_bin(), "--root", docroot.root, "--port", "0", "--trusted-proxy", bad],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode != 0, bad
        assert "--trusted-proxy wants an IPv4 or IPv6 address or CIDR range" in r.stderr and bad in r.stderr, r.stderr


def test_proxy_header_then_forwarded_from_trusted_hops(make_server, access_log):
    """PROXY names a trusted hop (10.0.0.5); its X-Forwarded-For names the client."""
    srv = proxy_server(make_server, access_log, "--trusted-proxy", CLIENT, "--trusted-proxy", "10.0.0.0/8")
    m = tag()
    raw = exchange(srv.port, v1("TCP4", "10.0.0.5", "127.0.0.1", 1, 2) + request(f"/static/x.txt?{m}", "X-Forwarded-For: 198.51.100.3\r\n"))
    assert status_of(raw) == 200
    assert_client(access_log, m, "198.51.100.3")


# --------------------------------------------------------------------------------------
# CGI and plugins see the client
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cgi_root():
    base = tempfile.mkdtemp(prefix="aws-proxy-cgi-")
    os.chmod(base, 0o755)
    os.makedirs(os.path.join(base, "cgi"))
    p = os.path.join(base, "cgi", "remote.sh")
    with open(p, "w") as f:
        f.write("#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s|%s\\n' \"$REMOTE_ADDR\" \"$REMOTE_PORT\"\n")
    os.chmod(p, 0o755)
    os.chmod(os.path.join(base, "cgi"), 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_cgi_remote_addr_is_the_client(make_server, access_log, cgi_root):
    srv = proxy_server(make_server, access_log, "--trusted-proxy", CLIENT, root=cgi_root)
    raw = exchange(srv.port, v2("203.0.113.50", 5050) + request("/cgi/remote.sh", version="1.0"))
    assert status_of(raw) == 200 and body_of(raw) == b"203.0.113.50|5050\n"
    raw = exchange(srv.port, v1("TCP6", "2001:db8::50", "::1", 6060, 80) + request("/cgi/remote.sh", version="1.0"))
    assert body_of(raw) == b"2001:db8::50|6060\n"
    # Through X-Forwarded-For (no port known).
    raw = exchange(srv.port, v2(local=True) + request("/cgi/remote.sh", "X-Forwarded-For: 198.51.100.60\r\n", version="1.0"))
    assert body_of(raw) == b"198.51.100.60|0\n"


def test_plugin_remote_addr_is_the_client(make_server, access_log):
    folder = pu.plugin_folder({"probe": pu.test_plugin("probe")})
    srv = proxy_server(make_server, access_log, "--plugins", folder, "--trusted-proxy", CLIENT)
    raw = exchange(srv.port, v1("TCP4", "203.0.113.70", "127.0.0.1", 7070, 80) + request("/probe/remote"))
    assert status_of(raw) == 200 and body_of(raw) == b"remote=203.0.113.70:7070\n"
    raw = exchange(srv.port, v2("2001:db8::70", 7071) + request("/probe/remote"))
    assert body_of(raw) == b"remote=[2001:db8::70]:7071\n"
    raw = exchange(srv.port, v2(local=True) + request("/probe/remote", "X-Forwarded-For: 198.51.100.71\r\n"))
    assert body_of(raw) == b"remote=198.51.100.71\n"


# --------------------------------------------------------------------------------------
# HAProxy in front of two aws instances
# --------------------------------------------------------------------------------------

class HAProxy:
    """haproxy in the foreground with a generated config; `ready` answers on a monitor URI
    (a probe of the balanced port would itself be balanced to an instance)."""

    def __init__(self, listen_section: str, log_dir: str):
        if not shutil.which("haproxy"):
            pytest.fail("haproxy is not installed (Debian package haproxy; make deps)", pytrace=False)
        self.port, self.monitor = free_port(), free_port()
        self.dir = tempfile.mkdtemp(prefix="aws-haproxy-", dir=log_dir)
        self.cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(self.cfg, "w") as f:
            f.write(f"""global
    maxconn 200
defaults
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend monitor
    mode http
    bind {HOST}:{self.monitor}
    monitor-uri /ready
listen lb
    bind {HOST}:{self.port}
    balance roundrobin
    source {BALANCER}
{listen_section}
""")
        self.err = open(os.path.join(self.dir, "haproxy.stderr"), "wb")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", self.cfg], stdin=subprocess.DEVNULL,
                                     stdout=self.err, stderr=self.err, start_new_session=True)

        def ready():
            assert self.proc.poll() is None, f"haproxy exited: {self.stderr()}"
            try:
                return awstest.get(self.monitor, "/ready", timeout=1.0).status == 200
            except OSError:
                return False
        assert wait_for(ready, 10.0), f"haproxy not ready: {self.stderr()}"

    def stderr(self) -> str:
        return read_text(os.path.join(self.dir, "haproxy.stderr"))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.err.close()


@pytest.fixture
def haproxy(log_dir):
    started = []

    def start(section: str) -> HAProxy:
        h = HAProxy(section, log_dir)
        started.append(h)
        return h
    yield start
    for h in started:
        h.stop()


def two_instances(make_server, log_dir, *args):
    logs = [os.path.join(log_dir, f"access-lb-{i}-{uuid.uuid4().hex}.log") for i in range(2)]
    servers = [make_server(args=["--access-log", log, *args], name=f"lb{i}") for i, log in enumerate(logs)]
    return servers, logs


def balanced_requests(port: int, n: int) -> list:
    markers = []
    for _ in range(n):
        m = tag()
        raw = exchange(port, request(f"/static/x.txt?{m}"), source=CLIENT)
        assert status_of(raw) == 200 and body_of(raw) == b"x marks the spot\n"
        markers.append(m)
    return markers


def check_balanced(logs: list, markers: list) -> None:
    def all_logged():
        return all(any(request_lines(log, m) for log in logs) for m in markers)
    assert wait_for(all_logged, 5.0), [read_text(log) for log in logs]
    per_instance = [[m for m in markers if request_lines(log, m)] for log in logs]
    # roundrobin over fresh connections, equal weights, no health checks: strictly alternating.
    assert [len(p) for p in per_instance] == [len(markers) // 2] * 2, per_instance
    for log, mine in zip(logs, per_instance):
        for m in mine:
            line = request_lines(log, m)[0]
            address = line.split(" ", 1)[0]
            assert address.startswith(CLIENT + ":") or address == CLIENT, f"logged {line!r}: not the client {CLIENT}"
            assert BALANCER not in line


def test_haproxy_send_proxy_v2_balances_and_logs_the_client(make_server, log_dir, haproxy):
    servers, logs = two_instances(make_server, log_dir, "--proxy-protocol", "--trusted-proxy", BALANCER)
    h = haproxy("    mode tcp\n" + "".join(
        f"    server s{i} {HOST}:{srv.port} send-proxy-v2\n" for i, srv in enumerate(servers)))
    check_balanced(logs, balanced_requests(h.port, 6))


def test_haproxy_forwardfor_with_trusted_proxy(make_server, log_dir, haproxy):
    servers, logs = two_instances(make_server, log_dir, "--trusted-proxy", BALANCER)
    h = haproxy("    mode http\n    option forwardfor\n    option http-server-close\n" + "".join(
        f"    server s{i} {HOST}:{srv.port}\n" for i, srv in enumerate(servers)))
    check_balanced(logs, balanced_requests(h.port, 6))
    # A client that talks to aws directly cannot claim another address.
    m = tag()
    raw = exchange(servers[0].port, request(f"/static/x.txt?{m}", "X-Forwarded-For: 198.51.100.1\r\n"), source=CLIENT)
    assert status_of(raw) == 200
    assert_client(logs[0], m, CLIENT)


# --------------------------------------------------------------------------------------
# Per-request cost
# --------------------------------------------------------------------------------------

def test_allocations_with_forwarded_client():
    """A keep-alive request from a trusted proxy with X-Forwarded-For (IPv6 and IPv4 entries)
    allocates nothing more than one without (Tests/test_allocations.py: 0 in steady state)."""
    from test_allocations import STATIC_MAX_PER_REQUEST, allocations, build_shim, make_root

    work = pu.new_dir("alloc-proxy-")
    shim = build_shim(work)
    counter = os.path.join(work, "counters")
    srv = awstest.Server(make_root(), args=["--log-level", "warning", "--trusted-proxy", "127.0.0.0/8"],
                         log_dir=pu.new_dir("alloc-proxy-log-"), name="alloc-proxy")
    with awstest.running(srv, env={"LD_PRELOAD": shim, "MALLOC_COUNT_FILE": counter}):
        for header in ["X-Forwarded-For: 2001:db8::1, 198.51.100.7, 127.0.0.9",
                       'Forwarded: for="[2001:db8:cafe::17]:4711";proto=http, for=127.0.0.5']:
            result = allocations.measure(HOST, srv.port, counter, "/static/1k.bin", 5000, 1000, 4, [header])
            assert result["per_request"] <= STATIC_MAX_PER_REQUEST, (header, result)


def test_refusals_are_logged_at_most_once_a_second(make_server, access_log):
    """A malformed PROXY header costs its sender nothing: a flood of them gives a line at most
    once a second (the last reason and peer, and how many since the line before), not a line
    each, and every refusal is counted in one line or another. (One worker: each worker keeps
    its own count and lines.)"""
    srv = proxy_server(make_server, access_log, "--workers", "1")
    t0 = time.monotonic()
    for _ in range(40):
        assert exchange(srv.port, b"PROXY TCP9 x y 1 2\r\n" + request("/static/x.txt")) == b""
    took = time.monotonic() - t0
    # The refusals after the first line are summed up on the worker's timer, within a second.
    assert wait_for(lambda: sum(refusals(srv)) >= 40, 5.0), srv.stderr()[-3000:]
    counts = refusals(srv)
    assert sum(counts) == 40, counts
    assert len(counts) <= 2 + int(took), f"{len(counts)} lines for 40 refusals in {took:.2f}s: {counts}"


def refusals(srv) -> list:
    """Refusals per log line about a malformed PROXY header: 1, or the count a summary names."""
    out = []
    for ln in srv.stderr().splitlines():
        if "malformed PROXY protocol header" not in ln:
            continue
        m = re.search(r"\((\d+) PROXY protocol refusals since the last such line\)", ln)
        out.append(int(m.group(1)) if m else 1)
    return out
