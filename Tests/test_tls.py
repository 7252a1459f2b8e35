"""HTTPS: the real server with --tls-cert/--tls-key (plus --tls-cert-for SNI certificates) on a
TLS port next to its plain port, driven by real clients: curl --cacert, openssl s_client,
Python's ssl and http.client, raw sockets. The certificates come from a throwaway PKI made with
the openssl CLI (tlsutil.pki: root -> intermediate -> leaves; clients trust only the root).

What these tests rely on (the interface, /work/notes/tls-spec.md):
  - `--tls-port N` listens for HTTPS on the --address; `--port` stays plain HTTP unless
    --no-http (then nothing listens on it);
  - TLS 1.2 and 1.3 only; TLS 1.2 suites are ECDHE + AES-GCM / CHACHA20-POLY1305 (no CBC);
    ALPN: http/1.1 is selected when offered; a client offering only other protocols gets a
    fatal no_application_protocol alert;
  - SNI: --tls-cert-for HOST=CERT,KEY, exact or one-label wildcard, exact beats wildcard, the
    default certificate otherwise (and without SNI); certificate files are full chains;
  - resumption: TLS 1.2 tickets and session IDs, TLS 1.3 tickets (exactly one per full
    handshake), ticket keys shared by all workers;
  - plain HTTP on the TLS port: a plain-text `HTTP/1.1 400` whose body says "The plain HTTP
    request was sent to HTTPS port", then close; other garbage: closed (no HTTP answer to
    anything that starts like a TLS record), the server serves on;
  - --header-timeout also bounds the handshake;
  - SIGHUP re-reads certificates: new connections get the new ones, open ones go on; a broken
    file logs "TLS reload failed" and the previous certificates keep serving;
  - --hsts S: `Strict-Transport-Security: max-age=S` on HTTPS responses only; --redirect-https:
    the plain port answers `308 Permanent Redirect` to https://HOST:TLSPORT/target?query;
  - the access log (json on the shared server) names the TLS version, "TLSv1.3" / "TLSv1.2",
    and null over plain HTTP;
  - plugins (ABI 1.2) see view.scheme "https"/"http" and view.tls_version (probe /probe/scheme);
  - the start-up log says "kTLS in use" or "kTLS unavailable" (the latter whenever the kernel
    lists no `tls` ULP in /proc/sys/net/ipv4/tcp_available_ulp).
The suite runs with AWS_TEST_ARGS empty (one worker per CPU) and with --workers 1; tests that
need a particular count set --workers themselves.
"""

import concurrent.futures
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
import uuid

import pytest

import awstest
import pluginutil as pu
import tlsutil as tu
from awstest import HOST, KIB, MIB
from tlsutil import make_tls_server, pki  # noqa: F401  (fixtures)

BIG_SIZE = 100 * MIB
MARKER = b"tls-marker-8d1f0c: served over TLS\n"
ACCEPTED_TLS12 = {"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                  "ECDHE-ECDSA-CHACHA20-POLY1305"}


# --------------------------------------------------------------------------------------
# The document root and the module's server
# --------------------------------------------------------------------------------------

class Site:
    """A document root: small files kept in `files` (url -> bytes), and a 100 MiB file at
    /static/big.bin (hard-linked as /dynamic/big.bin) known by its sha256."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="aws-tls-root-")
        os.chmod(self.base, 0o755)
        self.root = os.path.join(self.base, "root")
        self.files = {}
        for sub in ("", "static", "dynamic"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
            os.chmod(os.path.join(self.root, sub), 0o755)
        self.add("/index.html", b"<!doctype html><title>tls tests</title>\n")
        for kind in ("static", "dynamic"):
            self.add(f"/{kind}/a.txt", f"hello from {kind}/a.txt over any scheme\n".encode())
            self.add(f"/{kind}/f_1m.bin", awstest.content(f"tls/{kind}/f_1m", MIB + 3))
            self.add(f"/{kind}/f_100k.bin", awstest.content(f"tls/{kind}/f_100k", 100 * KIB + 1))
            self.add(f"/{kind}/f_12m.bin", awstest.content(f"tls/{kind}/f_12m", 12 * MIB + 5))
        self.add("/static/marker.txt", MARKER)
        self.big_sha256 = self._write_big("/static/big.bin")
        os.link(self.path("/static/big.bin"), self.path("/dynamic/big.bin"))

    def path(self, url: str) -> str:
        return os.path.join(self.root, url.lstrip("/"))

    def add(self, url: str, data: bytes) -> None:
        with open(self.path(url), "wb") as f:
            f.write(data)
        os.chmod(self.path(url), 0o644)
        self.files[url] = data

    def _write_big(self, url: str) -> str:
        """100 MiB: a random block of 1 MiB + 7 bytes, repeated, each copy stamped with its
        index in its first 8 bytes. Cheap to write, yet a server that repeats, skips or
        reorders any chunk (of any power-of-two size) changes the hash."""
        block = bytearray(awstest.content("tls/big-block", MIB + 7))
        h = hashlib.sha256()
        written = 0
        with open(self.path(url), "wb") as f:
            i = 0
            while written < BIG_SIZE:
                block[:8] = struct.pack(">Q", i)
                chunk = bytes(block[:BIG_SIZE - written])
                f.write(chunk)
                h.update(chunk)
                written += len(chunk)
                i += 1
        os.chmod(self.path(url), 0o644)
        return h.hexdigest()

    def cleanup(self):
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def site():
    s = Site()
    yield s
    s.cleanup()


def _plugins() -> str:
    return pu.plugin_folder({"echo": pu.example_plugin("echo"), "stream": pu.example_plugin("stream"),
                             "probe": pu.test_plugin("probe")})


@pytest.fixture(scope="module")
def srv(pki, site):
    """default + wildcard + exact certificates, plugins echo, stream and probe; workers as the
    pass of the suite says."""
    # JSON access lines on stderr: the tests below read the TLS version out of them.
    args = tu.cert_args(pki) + ["--plugins", _plugins(), "--log-level", "info", "--log-format", "json"]
    with tu.running(site.root, args, name="tls-shared") as s:
        yield s


@pytest.fixture
def live(srv):
    """The module's server, checked alive after the test."""
    yield srv
    assert srv.alive(), f"the server died during this test; stderr tail:\n{srv.stderr()[-3000:]}"


def curl(pki, url, *args, **kw) -> tu.CurlResult:
    return tu.curl(pki.root, url, *args, **kw)


def ok(r: tu.CurlResult, want: bytes, what: str = "") -> None:
    assert r.rc == 0 and r.status == 200 and r.verify_result == 0, f"{what}: {r!r}"
    assert r.body == want, f"{what}: {len(r.body)} bytes, expected {len(want)} (sha {awstest.sha256(r.body)[:12]} " \
                           f"vs {awstest.sha256(want)[:12]}): {r!r}"
    assert r.header("content-length") == str(len(want)), f"{what}: {r!r}"


def get_request(path: str, host: str = "localhost") -> bytes:
    return tu.http_request(path, host)


# --------------------------------------------------------------------------------------
# Files, ranges, conditionals, keep-alive, plugins, big transfers (curl, http.client)
# --------------------------------------------------------------------------------------

def test_static_files_over_https_verify_through_the_chain(live, pki, site):
    for path in ("/static/a.txt", "/static/f_1m.bin", "/static/f_100k.bin", "/index.html"):
        r = curl(pki, live.url(path))
        ok(r, site.files[path], path)
        assert r.http_version == "1.1", r
    # by name (localhost is in the default certificate's SAN), pinned to 127.0.0.1
    r = curl(pki, live.url("/static/a.txt", host="localhost"), resolve=["localhost"])
    ok(r, site.files["/static/a.txt"], "via localhost")
    # curl really verifies: another leaf as the only trust anchor is refused (exit 60)
    r = curl(pki, live.url("/static/a.txt"), "--cacert", pki["reloaded"].leaf)
    assert r.rc == 60 and r.body == b"", f"an untrusted chain was accepted: {r!r}"
    # the plain port serves the same files at the same time
    r = curl(pki, live.url("/static/f_1m.bin", tls=False))
    assert r.rc == 0 and r.status == 200 and r.body == site.files["/static/f_1m.bin"], r


def test_dynamic_files_over_https(live, pki, site):
    for path in ("/dynamic/a.txt", "/dynamic/f_1m.bin", "/dynamic/f_100k.bin"):
        ok(curl(pki, live.url(path)), site.files[path], path)


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_range_over_https(live, pki, site, kind):
    path = f"/{kind}/f_1m.bin"
    data = site.files[path]
    for spec, first, last in (("1000-2999", 1000, 2999), ("-100", len(data) - 100, len(data) - 1),
                              (f"{MIB}-", MIB, len(data) - 1)):
        r = curl(pki, live.url(path), "-H", f"Range: bytes={spec}")
        assert r.rc == 0 and r.status == 206, f"bytes={spec}: {r!r}"
        assert r.header("content-range") == f"bytes {first}-{last}/{len(data)}", f"bytes={spec}: {r!r}"
        assert r.body == data[first:last + 1], f"bytes={spec}: {len(r.body)} bytes, wrong content"
        assert r.header("content-length") == str(last + 1 - first), r


@pytest.mark.parametrize("path", ["/static/f_100k.bin", "/dynamic/f_100k.bin"])
def test_not_modified_over_https(live, pki, site, path):
    r = curl(pki, live.url(path))
    ok(r, site.files[path], path)
    etag = r.header("etag")
    assert etag, f"no ETag: {r!r}"
    r2 = curl(pki, live.url(path), "-H", f"If-None-Match: {etag}")
    assert r2.rc == 0 and r2.status == 304 and r2.body == b"", r2
    assert r2.header("etag") == etag, r2
    r3 = curl(pki, live.url(path), "-H", 'If-None-Match: "not-the-etag"')
    ok(r3, site.files[path], "with a stale ETag")


def test_keepalive_200_requests_on_one_tls_connection(live, pki, site):
    tag = uuid.uuid4().hex
    conn = tu.https_connection(pki.root, live.tls_port)
    try:
        conn.connect()
        version = conn.sock.version()
        local = conn.sock.getsockname()[1]
        assert conn.sock.selected_alpn_protocol() == "http/1.1", conn.sock.selected_alpn_protocol()
        for i in range(200):
            path = "/static/f_100k.bin" if i % 20 == 7 else ("/dynamic/a.txt" if i % 2 else "/static/a.txt")
            conn.request("GET", f"{path}?ka={tag}&i={i}")
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200 and body == site.files[path], f"request {i}: {resp.status} {body[:100]!r}"
            assert "close" not in (resp.getheader("Connection") or "").lower(), f"request {i}: {resp.getheaders()}"
            assert conn.sock is not None and conn.sock.getsockname()[1] == local, \
                f"request {i}: the client had to open a new connection"
    finally:
        conn.close()
    assert version == "TLSv1.3", version
    # The server saw them all on that one connection (same client port) and over TLS.
    lines = tu.wait_log_lines(live, f"ka={tag}&", count=200)
    assert len(lines) == 200, f"{len(lines)} access-log lines for 200 requests:\n" + "\n".join(lines[-5:])
    logged = [json.loads(ln) for ln in lines]
    assert all(o["tls"] == "TLSv1.3" and o["status"] == 200 for o in logged), \
        [o for o in logged if o["tls"] != "TLSv1.3" or o["status"] != 200][:3]


def test_pipelined_records_buffered_inside_openssl_are_served(live, pki, site):
    """Ten requests, each in a TLS record of its own, sent before any answer is read. The server
    reads ahead: one recv takes all ten records into OpenSSL, whose first request gets a 1 MiB
    answer that fills the socket. When that answer is out, the other nine are still inside
    OpenSSL, with nothing left on the socket for epoll to report: they must be read anyway
    (a server that waits for epoll hangs here)."""
    path = "/static/f_1m.bin"
    sock = tu.tls_connect(pki.root, live.tls_port, sni="localhost", timeout=10)
    try:
        for i in range(10):
            sock.sendall(f"GET {path}?rec={i} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())  # one record each
        reader = pu.Reader(sock)
        for i in range(10):
            r, complete = reader.read_response()
            assert complete and r.status == 200, f"response {i}: {r!r}"
            assert r.body == site.files[path], f"response {i}: {len(r.body)} bytes, not the file"
    finally:
        sock.close()


@pytest.mark.parametrize("path", ["/static/f_12m.bin", "/dynamic/f_12m.bin"])
def test_slow_reader_gets_every_byte(live, pki, site, path):
    """A client with a small receive buffer that waits before reading, then reads in sips: the
    response (larger than the server's socket buffer can take) fills the socket again and
    again, so records wait inside OpenSSL (WANT_WRITE) and are retried from re-read file bytes.
    Every byte must arrive, in order."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(10)
    raw.connect((HOST, live.tls_port))
    sock = tu.client_context(pki.root).wrap_socket(raw, server_hostname="localhost")
    try:
        sock.sendall(f"GET {path}?slow=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        time.sleep(0.3)
        data = bytearray()
        sips = 0
        while True:
            chunk = sock.recv(16384)
            if not chunk:
                break
            data += chunk
            sips += 1
            if sips % 64 == 0:
                time.sleep(0.002)
    finally:
        sock.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head[:200]
    assert body == site.files[path], f"{len(body)} bytes (sha {awstest.sha256(body)[:12]}), expected {len(site.files[path])}"


def test_plugin_stream_over_https(live, pki):
    r = curl(pki, live.url("/stream/lines?n=2000"))
    want = b"".join(b"line %d\n" % i for i in range(1, 2001))
    assert r.rc == 0 and r.status == 200 and r.body == want, r
    assert "chunked" in (r.header("transfer-encoding") or ""), r
    size = 3 * MIB + 5
    r = curl(pki, live.url(f"/stream/bytes?size={size}"))
    assert r.rc == 0 and r.status == 200 and r.header("content-length") == str(size), r
    assert r.body == bytes(i % 251 for i in range(size)), f"{len(r.body)} bytes, not the pattern"
    r = curl(pki, live.url("/stream/events?interval=10&count=5"))
    assert r.rc == 0 and r.status == 200, r
    assert r.body == b"".join(b"data: event %d\n\n" % k for k in range(1, 6)), r
    assert (r.header("content-type") or "").startswith("text/event-stream"), r


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_100_mib_download_over_https(live, pki, site, kind, tmp_path):
    out = str(tmp_path / "big.bin")
    r = curl(pki, live.url(f"/{kind}/big.bin"), out=out, timeout=60)
    try:
        assert r.rc == 0 and r.status == 200 and r.verify_result == 0, r
        assert r.header("content-length") == str(BIG_SIZE), r
        size = os.path.getsize(out)
        assert size == BIG_SIZE, f"{size} bytes downloaded, expected {BIG_SIZE}"
        h = hashlib.sha256()
        with open(out, "rb") as f:
            while True:
                b = f.read(4 * MIB)
                if not b:
                    break
                h.update(b)
        assert h.hexdigest() == site.big_sha256, "100 MiB downloaded, but not the file's bytes"
    finally:
        if os.path.exists(out):
            os.unlink(out)


def test_1_mib_post_to_echo_over_https(live, pki, tmp_path):
    body = os.urandom(MIB)
    src = tmp_path / "body.bin"
    src.write_bytes(body)
    r = curl(pki, live.url("/echo"), "--data-binary", f"@{src}", "-H", "Content-Type: application/x-tls-test")
    assert r.rc == 0 and r.status == 200, r
    assert r.body == body, f"echoed {len(r.body)} bytes, sent {len(body)} (equal: {r.body == body})"
    assert r.header("content-type") == "application/x-tls-test", r


# --------------------------------------------------------------------------------------
# Protocol versions, cipher suites, ALPN, SNI, resumption (openssl s_client)
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag,version", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3"), (None, "TLSv1.3")],
                         ids=["tls1_2", "tls1_3", "client-default"])
def test_tls12_and_tls13_accepted(live, pki, flag, version):
    r = tu.s_client(pki.root, live.tls_port, *([flag] if flag else []),
                    request=get_request("/static/marker.txt"))
    assert r.established, r
    assert r.protocols and set(r.protocols) == {version}, f"Protocol lines {r.protocols}, expected {version}: {r!r}"
    assert r.subject_cn == "aws-test-default", r
    if version == "TLSv1.2":
        assert r.cipher in ACCEPTED_TLS12, r
    assert "HTTP/1.1 200 OK" in r.out and MARKER.decode() in r.out, r


@pytest.mark.parametrize("flag,version", [("-tls1", "TLSv1"), ("-tls1_1", "TLSv1.1")], ids=["tls1_0", "tls1_1"])
def test_tls10_and_tls11_refused(live, pki, flag, version):
    # Security level 0: OpenSSL 3 clients refuse these versions themselves otherwise, and the
    # test would prove nothing. The same command line succeeds against a server that allows it.
    opts = [flag, "-cipher", "DEFAULT@SECLEVEL=0"]
    with tu.permissive_tls_server(pki) as (port, versions):
        control = tu.s_client(pki.root, port, *opts)
    assert control.established and versions == [version], \
        f"this client cannot do {version} even with a server that allows it ({versions}): {control!r}"
    r = tu.s_client(pki.root, live.tls_port, *opts, request=get_request("/static/marker.txt"))
    assert not r.established, f"{version} handshake accepted: {r!r}"
    assert r.cipher == "(NONE)", r
    assert MARKER.decode() not in r.out, r


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"])
def test_tls12_cbc_suites_refused(live, pki, cipher):
    with tu.permissive_tls_server(pki) as (port, versions):
        control = tu.s_client(pki.root, port, "-tls1_2", "-cipher", cipher)
    assert control.established and control.cipher == cipher and versions == ["TLSv1.2"], control
    r = tu.s_client(pki.root, live.tls_port, "-tls1_2", "-cipher", cipher, request=get_request("/static/marker.txt"))
    assert not r.established and r.cipher == "(NONE)", f"{cipher} accepted: {r!r}"


@pytest.mark.parametrize("cipher", sorted(ACCEPTED_TLS12))
def test_tls12_aead_suites_accepted(live, pki, cipher):
    r = tu.s_client(pki.root, live.tls_port, "-tls1_2", "-cipher", cipher, request=get_request("/static/marker.txt"))
    assert r.established and r.cipher == cipher and set(r.protocols) == {"TLSv1.2"}, r
    assert MARKER.decode() in r.out, r


def test_alpn(live, pki):
    for offer in ("http/1.1", "h2,http/1.1", "http/1.1,h2"):
        r = tu.s_client(pki.root, live.tls_port, "-alpn", offer, request=get_request("/static/marker.txt"))
        assert r.established and r.alpn == "http/1.1", f"offered {offer}: {r!r}"
        assert "ALPN protocol: http/1.1" in r.out and MARKER.decode() in r.out, r
    r = tu.s_client(pki.root, live.tls_port, request=get_request("/static/marker.txt"))
    assert r.established and r.alpn is None and "No ALPN negotiated" in r.out, f"no ALPN offered: {r!r}"
    for version in ("-tls1_2", "-tls1_3"):
        r = tu.s_client(pki.root, live.tls_port, version, "-alpn", "h2", request=get_request("/static/marker.txt"))
        assert not r.established and r.cipher == "(NONE)", f"only h2 offered ({version}): {r!r}"
        assert "no application protocol" in r.out, f"no no_application_protocol alert ({version}): {r!r}"
        assert MARKER.decode() not in r.out, r


def test_sni_selects_the_certificate(live, pki):
    for name, cn in (("a.example.test", "aws-test-wildcard"), ("b.example.test", "aws-test-exact"),
                     ("localhost", "aws-test-default"), (None, "aws-test-default")):
        r = tu.s_client(pki.root, live.tls_port, servername=name, request=get_request("/static/marker.txt"))
        assert r.established and r.subject_cn == cn, f"servername {name}: expected {cn}: {r!r}"
        assert MARKER.decode() in r.out, r
    # Names the wildcard must not match get the default (whose SAN does not cover them: the
    # chain is verified, the name not).
    for name, want in (("a.example.test", "wildcard"), ("zz-9.example.test", "wildcard"),
                       ("b.example.test", "exact"), ("example.test", "default"),
                       ("x.a.example.test", "default"), ("other.test", "default"), ("localhost", "default")):
        got = tu.peer_cert(pki.root, live.tls_port, sni=name, check_name=False)
        assert got == pki[want].der, f"SNI {name}: got {pki.name_of(got)}, expected {want}"
    assert tu.peer_cert(pki.root, live.tls_port) == pki["default"].der, "no SNI: not the default certificate"
    # curl with the name pinned to the loopback verifies the wildcard certificate by name.
    port = live.tls_port
    ok(curl(pki, f"https://a.example.test:{port}/static/a.txt", resolve=["a.example.test"]),
       b"hello from static/a.txt over any scheme\n", "a.example.test")
    ok(curl(pki, f"https://b.example.test:{port}/dynamic/a.txt", resolve=["b.example.test"]),
       b"hello from dynamic/a.txt over any scheme\n", "b.example.test")


def _resume(pki, port, version_flag, *extra, n=1):
    """A full handshake saving its session, then `n` connections resuming it. Returns
    (first, [resumed...])."""
    with tempfile.TemporaryDirectory(prefix="aws-tls-sess-") as d:
        sess = os.path.join(d, "session.pem")
        first = tu.s_client(pki.root, port, version_flag, *extra, "-sess_out", sess,
                            request=get_request("/static/marker.txt"))
        assert first.established and not first.reused, first
        assert os.path.exists(sess) and os.path.getsize(sess) > 0, f"no session saved: {first!r}"
        again = [tu.s_client(pki.root, port, version_flag, *extra, "-sess_in", sess,
                             request=get_request("/static/marker.txt")) for _ in range(n)]
    return first, again


def test_tls12_resumption_with_a_ticket(live, pki):
    first, again = _resume(pki, live.tls_port, "-tls1_2")
    assert "TLS session ticket:" in first.out, f"no TLS 1.2 session ticket issued: {first!r}"
    r = again[0]
    assert r.reused and set(r.protocols) == {"TLSv1.2"}, f"not resumed: {r!r}"
    assert MARKER.decode() in r.out, r


def test_tls12_resumption_by_session_id(make_tls_server, pki, site):
    # One worker: the session cache is only promised per server, not across workers.
    srv = make_tls_server(site.root, tu.cert_args(pki) + ["--workers", "1"], name="tls-sessid")
    first, again = _resume(pki, srv.tls_port, "-tls1_2", "-no_ticket", n=2)
    assert "TLS session ticket:" not in first.out, first
    sid = re.search(r"Session-ID: ([0-9A-F]{2,})", first.out)
    assert sid, f"no session ID issued: {first!r}"
    for r in again:
        assert r.reused and set(r.protocols) == {"TLSv1.2"}, f"not resumed from the session cache: {r!r}"
        assert MARKER.decode() in r.out, r


def test_tls13_resumption_with_one_ticket(live, pki):
    first, again = _resume(pki, live.tls_port, "-tls1_3")
    assert first.tickets == 1, f"{first.tickets} TLS 1.3 tickets after a full handshake, expected 1: {first!r}"
    assert set(first.protocols) == {"TLSv1.3"}, first
    r = again[0]
    assert r.reused and r.summary[1] == "TLSv1.3", f"not resumed: {r!r}"
    assert MARKER.decode() in r.out, r


# --------------------------------------------------------------------------------------
# Bad input on the TLS port
# --------------------------------------------------------------------------------------

def test_plain_http_to_the_tls_port_gets_400(live, pki, site):
    for req in (b"GET /static/a.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"):
        with awstest.connect(live.tls_port, timeout=5) as s:
            s.sendall(req)
            closed, data, elapsed = tu.closed_within(s, 5)
        assert closed, f"{req[:20]!r}: connection still open 5 s after the answer: {data[:300]!r}"
        assert elapsed < 3, f"{req[:20]!r}: closed only after {elapsed:.1f}s"
        assert data.startswith(b"HTTP/1.1 400"), f"{req[:20]!r}: {data[:300]!r}"
        r = awstest.parse_response(data)
        assert r.status == 400, r
        assert b"plain HTTP request was sent to HTTPS port" in r.body, r
    ok(curl(pki, live.url("/static/a.txt")), site.files["/static/a.txt"], "after plain HTTP on the TLS port")


def test_stalled_handshakes_closed_by_header_timeout(make_tls_server, pki, site):
    # One worker: the loop that holds the stalled handshakes must serve the normal client too.
    srv = make_tls_server(site.root, tu.cert_args(pki) + ["--header-timeout", "1", "--workers", "1"],
                          name="tls-stall")
    hello = tu.client_hello()
    t0 = time.monotonic()
    half = awstest.connect(srv.tls_port, timeout=5)
    whole = awstest.connect(srv.tls_port, timeout=5)
    try:
        half.sendall(hello[:20])       # a record header and a bit of a ClientHello, then nothing
        whole.sendall(hello)           # a whole ClientHello, then never the client's Finished
        ok(curl(pki, srv.url("/static/a.txt")), site.files["/static/a.txt"], "while two handshakes stall")
        ok(curl(pki, srv.url("/dynamic/a.txt", tls=False)), site.files["/dynamic/a.txt"], "plain, meanwhile")
        closed_half, got_half, _ = tu.closed_within(half, 6)
        t_half = time.monotonic() - t0
        closed_whole, got_whole, _ = tu.closed_within(whole, 6)
        t_whole = time.monotonic() - t0
    finally:
        half.close()
        whole.close()
    assert closed_half and t_half < 5, f"half a ClientHello: closed={closed_half} after {t_half:.1f}s (--header-timeout 1)"
    assert tu.only_tls_alerts(got_half), f"half a ClientHello answered with {got_half[:100]!r}"
    assert closed_whole and t_whole < 5, f"handshake stalled after the ClientHello: closed={closed_whole} after {t_whole:.1f}s"
    assert got_whole[:1] == b"\x16", f"no ServerHello for a whole ClientHello: {got_whole[:50]!r}"
    ok(curl(pki, srv.url("/static/a.txt")), site.files["/static/a.txt"], "after the stalled handshakes")


def test_garbage_closes_the_connection_and_the_server_serves_on(live, pki, site):
    rnd = random.Random("aws-tls-garbage")
    cases = {
        # not a TLS record at all (first byte 0: no record type, not an HTTP method)
        "random bytes": b"\x00" + rnd.randbytes(8 * KIB - 1),
        # a handshake record with a ClientHello of 60 random bytes
        "bad ClientHello": b"\x16\x03\x01\x00\x40" + b"\x01\x00\x00\x3c" + rnd.randbytes(60),
        # a record header announcing 65535 bytes (over the 2^14 + 2048 limit), then random bytes
        "oversized record": b"\x16\x03\x01\xff\xff" + rnd.randbytes(4 * KIB),
        # random bytes after a plausible record header
        "random record": b"\x16\x03\x03\x01\x00" + rnd.randbytes(6 * KIB),
    }
    for name, data in cases.items():
        with awstest.connect(live.tls_port, timeout=5) as s:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass   # already closed by the server: fine
            closed, got, elapsed = tu.closed_within(s, 5)
        assert closed, f"{name}: connection still open after 5 s ({got[:100]!r})"
        if data[0] == 0x16:
            assert tu.only_tls_alerts(got), f"{name}: answered with more than TLS alerts: {got[:200]!r}"
        assert live.alive(), f"the server died after {name}:\n{live.stderr()[-3000:]}"
    ok(curl(pki, live.url("/static/a.txt")), site.files["/static/a.txt"], "HTTPS after the garbage")
    ok(curl(pki, live.url("/dynamic/a.txt", tls=False)), site.files["/dynamic/a.txt"], "HTTP after the garbage")
    r = tu.s_client(pki.root, live.tls_port, request=get_request("/static/marker.txt"))
    assert r.established and MARKER.decode() in r.out, r


# --------------------------------------------------------------------------------------
# Certificate reload on SIGHUP
# --------------------------------------------------------------------------------------

def _install(cert: tu.Cert, cert_path: str, key_path: str) -> None:
    """Overwrites the server's certificate and key files in place (as `cp` would)."""
    with open(cert.cert, "rb") as f, open(cert_path, "wb") as out:
        out.write(f.read())
    with open(cert.key, "rb") as f, open(key_path, "wb") as out:
        out.write(f.read())


def test_sighup_reloads_certificates(make_tls_server, pki, site, tmp_path):
    d = tmp_path / "certs"
    d.mkdir()
    os.chmod(d, 0o755)
    cert_path, key_path = str(d / "server.pem"), str(d / "server.key")
    _install(pki["default"], cert_path, key_path)
    # (a long keep-alive timeout: the kept connection waits for reloads between its requests)
    args = ["--tls-cert", cert_path, "--tls-key", key_path, "--log-level", "info", "--keepalive-timeout", "60"]
    srv = make_tls_server(site.root, args, name="tls-reload")
    want = site.files["/static/a.txt"]

    def new_cert():
        return tu.peer_cert(pki.root, srv.tls_port)

    def all_new(der, n=6):
        return all(new_cert() == der for _ in range(n))

    kept = tu.https_connection(pki.root, srv.tls_port)
    try:
        kept.connect()
        kept_port = kept.sock.getsockname()[1]

        def kept_get(what):
            kept.request("GET", "/static/a.txt")
            resp = kept.getresponse()
            body = resp.read()
            assert resp.status == 200 and body == want, f"{what}: {resp.status} {body[:100]!r}"
            assert kept.sock is not None and kept.sock.getsockname()[1] == kept_port, \
                f"{what}: the kept connection was closed by the server"
            assert kept.sock.getpeercert(binary_form=True) == pki["default"].der

        kept_get("before the reload")
        assert new_cert() == pki["default"].der, pki.name_of(new_cert())

        # A new certificate: new connections get it, the open one goes on.
        _install(pki["reloaded"], cert_path, key_path)
        srv.signal(signal.SIGHUP)
        assert awstest.wait_for(lambda: all_new(pki["reloaded"].der), 5), \
            f"new connections still get {pki.name_of(new_cert())} 5 s after SIGHUP:\n{srv.stderr()[-2000:]}"
        kept_get("after the reload")
        for _ in range(10):
            assert new_cert() == pki["reloaded"].der, pki.name_of(new_cert())
        r = curl(pki, srv.url("/static/a.txt", host="localhost"), resolve=["localhost"])
        ok(r, want, "curl after the reload")

        # A broken file: logged, and the previous (reloaded) certificate keeps serving.
        mark = len(srv.stderr())
        with open(cert_path, "wb") as f:
            f.write(b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
        srv.signal(signal.SIGHUP)
        assert pu.wait_log(srv, r"TLS reload failed", 5, since=mark), \
            f"no 'TLS reload failed' within 5 s of SIGHUP with a broken certificate:\n{srv.stderr()[mark:][-2000:]}"
        for _ in range(10):
            got = new_cert()
            assert got == pki["reloaded"].der, f"after a failed reload: {pki.name_of(got)}"
        kept_get("after the failed reload")
        assert srv.alive()

        # Fixed again: the next SIGHUP takes it.
        _install(pki["default"], cert_path, key_path)
        srv.signal(signal.SIGHUP)
        assert awstest.wait_for(lambda: all_new(pki["default"].der), 5), \
            f"a good file after a failed reload not taken: {pki.name_of(new_cert())}\n{srv.stderr()[-2000:]}"
        kept_get("at the end")
    finally:
        kept.close()


# --------------------------------------------------------------------------------------
# --hsts, --redirect-https, --no-http
# --------------------------------------------------------------------------------------

def test_hsts_only_over_https(make_tls_server, pki, site):
    srv = make_tls_server(site.root, tu.cert_args(pki, sni=()) + ["--hsts", "600"], name="tls-hsts")
    for path, status in (("/static/a.txt", 200), ("/dynamic/f_100k.bin", 200), ("/missing.txt", 404)):
        r = curl(pki, srv.url(path))
        assert r.rc == 0 and r.status == status, r
        assert r.count("strict-transport-security") == 1, f"{path}: {r.raw_headers}"
        assert r.header("strict-transport-security") == "max-age=600", f"{path}: {r.raw_headers}"
        p = curl(pki, srv.url(path, tls=False))
        assert p.rc == 0 and p.status == status, p
        assert p.count("strict-transport-security") == 0, f"HSTS over plain HTTP on {path}: {p.raw_headers}"
    ok(curl(pki, srv.url("/static/a.txt")), site.files["/static/a.txt"], "with --hsts")


def test_redirect_https(make_tls_server, pki, site):
    srv = make_tls_server(site.root, tu.cert_args(pki, sni=()) + ["--redirect-https"], name="tls-redirect")
    tls = srv.tls_port
    cases = [
        (f"GET /static/a.txt?x=1&y=two HTTP/1.1\r\nHost: localhost:{srv.port}\r\n",
         f"https://localhost:{tls}/static/a.txt?x=1&y=two"),
        ("GET /dynamic/a.txt HTTP/1.1\r\nHost: www.example.test\r\n", f"https://www.example.test:{tls}/dynamic/a.txt"),
        (f"HEAD /nowhere/at/all?q HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n", f"https://127.0.0.1:{tls}/nowhere/at/all?q"),
        ("POST /echo?z=9 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n", f"https://localhost:{tls}/echo?z=9"),
    ]
    for head, location in cases:
        req = (head + "Connection: close\r\n\r\n" + ("hello" if head.startswith("POST") else "")).encode()
        data = awstest.raw_request(srv.port, req, timeout=10)
        r = awstest.parse_response(data, head_request=head.startswith("HEAD"))
        assert r.status == 308 and r.reason == "Permanent Redirect", f"{head.splitlines()[0]}: {r!r}"
        assert r.header("location") == location, f"{head.splitlines()[0]}: {r!r}"
    # curl follows it to the TLS port and gets the file.
    r = curl(pki, f"http://localhost:{srv.port}/static/a.txt?via=redirect", "-L",
             "--resolve", f"localhost:{tls}:{HOST}", resolve=["localhost"])
    ok(r, site.files["/static/a.txt"], "curl -L from the plain port")
    # HTTPS is served as usual.
    ok(curl(pki, srv.url("/static/f_1m.bin")), site.files["/static/f_1m.bin"], "HTTPS with --redirect-https")


def test_no_http_serves_https_only(make_tls_server, pki, site):
    srv = make_tls_server(site.root, tu.cert_args(pki, sni=()) + ["--no-http"], name="tls-nohttp")
    ok(curl(pki, srv.url("/static/a.txt")), site.files["/static/a.txt"], "--no-http, HTTPS")
    ok(curl(pki, srv.url("/dynamic/f_1m.bin")), site.files["/dynamic/f_1m.bin"], "--no-http, HTTPS")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, srv.port), timeout=2).close()


# --------------------------------------------------------------------------------------
# What the server says: access log, plugins, start-up line
# --------------------------------------------------------------------------------------

def test_access_log_names_the_tls_version(live, pki, site):
    tags = {v: uuid.uuid4().hex for v in ("1.3", "1.2", "plain")}
    ok(curl(pki, live.url(f"/static/a.txt?log={tags['1.3']}")), site.files["/static/a.txt"], "TLS 1.3")
    ok(curl(pki, live.url(f"/static/a.txt?log={tags['1.2']}"), "--tls-max", "1.2"), site.files["/static/a.txt"], "TLS 1.2")
    ok(curl(pki, live.url(f"/static/a.txt?log={tags['plain']}", tls=False)), site.files["/static/a.txt"], "plain")
    for v, want in (("1.3", "TLSv1.3"), ("1.2", "TLSv1.2"), ("plain", None)):
        lines = tu.wait_log_lines(live, f"log={tags[v]}")
        assert len(lines) == 1, f"TLS {v}: {lines}"
        o = json.loads(lines[0])
        assert (o["method"], o["target"], o["protocol"], o["status"]) == \
            ("GET", f"/static/a.txt?log={tags[v]}", "HTTP/1.1", 200), lines[0]
        assert o["tls"] == want, f"TLS {v}: the access-log line names {o['tls']!r}, expected {want!r}: {lines[0]!r}"


def test_plugin_sees_scheme_and_tls_version(live, pki):
    for args, want in (((), b"scheme=https tls=TLSv1.3\n"), (("--tls-max", "1.2"), b"scheme=https tls=TLSv1.2\n")):
        r = curl(pki, live.url("/probe/scheme"), *args)
        assert r.rc == 0 and r.status == 200 and r.body == want, f"{args}: {r!r}"
    r = curl(pki, live.url("/probe/scheme", tls=False))
    assert r.rc == 0 and r.status == 200 and r.body == b"scheme=http tls=\n", r


def _ulp() -> str:
    try:
        with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
            return f.read()
    except OSError:
        return ""


def test_startup_line_says_whether_ktls_is_used(make_tls_server, pki, site):
    ulp_before = _ulp()
    srv = make_tls_server(site.root, tu.cert_args(pki, sni=()), name="tls-ktls")
    assert pu.wait_log(srv, r"kTLS (in use|unavailable)", 5), f"no kTLS line at start-up:\n{srv.stderr()[-2000:]}"
    log = srv.stderr()
    in_use, unavailable = "kTLS in use" in log, "kTLS unavailable" in log
    assert in_use != unavailable, f"the log says {'both' if in_use else 'neither'}:\n{log[-2000:]}"
    ulp_after = _ulp()
    if "tls" not in ulp_before.split() and "tls" not in ulp_after.split():
        assert unavailable, (f"kernel ULPs {ulp_after.strip()!r} (no tls), yet the server claims kTLS:\n"
                             f"{log[-2000:]}")
    ok(curl(pki, srv.url("/static/f_1m.bin")), site.files["/static/f_1m.bin"], "HTTPS")


# --------------------------------------------------------------------------------------
# Two workers, many clients
# --------------------------------------------------------------------------------------

def test_two_workers_many_parallel_https_clients(make_tls_server, pki, site):
    folder = pu.plugin_folder({"echo": pu.example_plugin("echo")})
    srv = make_tls_server(site.root, tu.cert_args(pki) + ["--workers", "2", "--plugins", folder],
                          name="tls-workers2")
    paths = ["/static/a.txt", "/static/f_1m.bin", "/dynamic/f_100k.bin", "/dynamic/f_1m.bin", "POST"]
    threads, per_thread = 20, 20
    barrier = threading.Barrier(threads)

    def one(conn, i, k):
        path = paths[(i + k) % len(paths)]
        if path == "POST":
            body = awstest.content(f"tls-post-{i}-{k}", 64 * KIB + i)
            conn.request("POST", "/echo", body=body, headers={"Content-Type": "application/x-w2"})
            want = body
        else:
            conn.request("GET", path)
            want = site.files[path]
        resp = conn.getresponse()
        got = resp.read()
        if resp.status != 200 or got != want:
            raise AssertionError(f"{path}: {resp.status}, {len(got)} bytes (want {len(want)}), equal={got == want}")

    def client(i):
        barrier.wait(10)
        kept = tu.https_connection(pki.root, srv.tls_port)
        try:
            for k in range(per_thread // 2):       # half on one kept-alive connection
                one(kept, i, k)
        finally:
            kept.close()
        for k in range(per_thread // 2, per_thread):   # half on a new connection each
            fresh = tu.https_connection(pki.root, srv.tls_port)
            try:
                one(fresh, i, k)
            finally:
                fresh.close()
        return per_thread

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(client, i) for i in range(threads)]
        errors, done = [], 0
        for f in futures:
            try:
                done += f.result(timeout=60)
            except Exception as e:  # reported below
                errors.append(f"{type(e).__name__}: {e}")
    assert not errors, f"{len(errors)} of {threads} clients failed: {errors[:5]}"
    assert done == threads * per_thread

    # TLS 1.3 tickets from one worker resume on the other: eight full handshakes, each ticket
    # used once; all eight resumed on the issuing worker by chance is 1 in 256.
    for n in range(8):
        first, again = _resume(pki, srv.tls_port, "-tls1_3")
        assert again[0].reused, f"resumption {n + 1} of 8 failed (ticket keys not shared by the workers?): {again[0]!r}"
    ok(curl(pki, srv.url("/static/a.txt", tls=False)), site.files["/static/a.txt"], "plain, two workers")
    ok(curl(pki, srv.url("/static/a.txt", host="a.example.test"), resolve=["a.example.test"]),
       site.files["/static/a.txt"], "SNI, two workers")
