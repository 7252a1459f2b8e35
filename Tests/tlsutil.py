"""Helpers for the HTTPS tests (test_tls.py): a throwaway PKI made with the openssl CLI, the aws
server with a TLS port, and real TLS clients (curl, openssl s_client, Python's ssl).

The PKI (fixture `pki`, one per test session, in a temp folder):
  root CA  ->  intermediate CA  ->  leaf certificates, all ECDSA P-256.
  Every leaf file handed to the server is a full chain (leaf, then the intermediate), and the
  clients trust only the root: a server that does not send the chain fails verification.
    default   CN aws-test-default   SAN DNS:localhost, IP:127.0.0.1   (--tls-cert/--tls-key)
    wildcard  CN aws-test-wildcard  SAN DNS:*.example.test            (--tls-cert-for *.example.test=)
    exact     CN aws-test-exact     SAN DNS:b.example.test            (--tls-cert-for b.example.test=)
    reloaded  CN aws-test-reloaded  SAN DNS:localhost, IP:127.0.0.1   (the reload test's new default)

`openssl` and `curl` must be installed (`make deps` installs them): a missing one fails the
tests that need it with a message saying so; nothing here skips.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field

import pytest

import awstest
from awstest import HOST, free_port

# --------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------


def require_tools() -> None:
    missing = [t for t in ("openssl", "curl") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found on PATH: the HTTPS tests drive the server with "
                    f"the openssl and curl command-line tools (`make deps` installs them; "
                    f"or apt-get install openssl curl)", pytrace=False)


def _run(cmd, timeout=30.0, input=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, input=input, capture_output=True, timeout=timeout, cwd=cwd,
                          stdin=None if input is not None else subprocess.DEVNULL)


def _openssl(*args, cwd=None) -> str:
    r = _run(["openssl", *args], cwd=cwd)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({r.returncode}):\n"
                           f"{r.stdout.decode(errors='replace')}{r.stderr.decode(errors='replace')}")
    return r.stdout.decode(errors="replace")


# --------------------------------------------------------------------------------------
# The PKI
# --------------------------------------------------------------------------------------

@dataclass
class Cert:
    name: str
    cn: str
    cert: str        # full chain PEM: leaf, then the intermediate (what the server is given)
    key: str         # PEM private key
    leaf: str        # the leaf alone, PEM
    der: bytes       # the leaf, DER (what a client sees as the peer certificate)
    serial: str      # hex, as `openssl x509 -serial` prints it


@dataclass
class PKI:
    dir: str
    root: str                              # the CA file clients trust (the root only)
    certs: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> Cert:
        return self.certs[name]

    def name_of(self, der: bytes | None) -> str:
        """Which fixture certificate `der` is (for assertion messages)."""
        for c in self.certs.values():
            if c.der == der:
                return c.name
        return "none" if der is None else f"an unknown certificate ({len(der)} bytes)"


LEAVES = {
    # name: (CN, SAN, serial)
    "default": ("aws-test-default", "DNS:localhost,IP:127.0.0.1", "0x1001"),
    "wildcard": ("aws-test-wildcard", "DNS:*.example.test", "0x1002"),
    "exact": ("aws-test-exact", "DNS:b.example.test", "0x1003"),
    "reloaded": ("aws-test-reloaded", "DNS:localhost,IP:127.0.0.1", "0x1004"),
}

_CA_EXT = ("basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
           "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
_LEAF_EXT = ("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
             "extendedKeyUsage=serverAuth\nsubjectAltName={san}\n"
             "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")


def _genkey(path: str) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def make_pki(d: str) -> PKI:
    j = lambda *p: os.path.join(d, *p)  # noqa: E731
    _genkey(j("root.key"))
    _openssl("req", "-x509", "-new", "-key", j("root.key"), "-subj", "/CN=aws test root CA", "-days", "7",
             "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", j("root.pem"))
    _genkey(j("int.key"))
    _openssl("req", "-new", "-key", j("int.key"), "-subj", "/CN=aws test intermediate CA", "-out", j("int.csr"))
    _write_text(j("int.ext"), _CA_EXT)
    _openssl("x509", "-req", "-in", j("int.csr"), "-CA", j("root.pem"), "-CAkey", j("root.key"),
             "-set_serial", "0x100", "-days", "7", "-sha256", "-extfile", j("int.ext"), "-out", j("int.pem"))
    pki = PKI(dir=d, root=j("root.pem"))
    for name, (cn, san, serial) in LEAVES.items():
        _genkey(j(f"{name}.key"))
        _openssl("req", "-new", "-key", j(f"{name}.key"), "-subj", f"/CN={cn}", "-out", j(f"{name}.csr"))
        _write_text(j(f"{name}.ext"), _LEAF_EXT.format(san=san))
        _openssl("x509", "-req", "-in", j(f"{name}.csr"), "-CA", j("int.pem"), "-CAkey", j("int.key"),
                 "-set_serial", serial, "-days", "7", "-sha256", "-extfile", j(f"{name}.ext"),
                 "-out", j(f"{name}.leaf.pem"))
        leaf_pem = _read(j(f"{name}.leaf.pem"))
        with open(j(f"{name}.pem"), "wb") as f:
            f.write(leaf_pem + _read(j("int.pem")))
        # The chain must verify against the root alone, with the intermediate from the file.
        _openssl("verify", "-CAfile", j("root.pem"), "-untrusted", j("int.pem"), j(f"{name}.leaf.pem"))
        printed = _openssl("x509", "-in", j(f"{name}.leaf.pem"), "-noout", "-serial")
        der = ssl.PEM_cert_to_DER_cert(leaf_pem.decode())
        pki.certs[name] = Cert(name=name, cn=cn, cert=j(f"{name}.pem"), key=j(f"{name}.key"),
                               leaf=j(f"{name}.leaf.pem"), der=der,
                               serial=printed.strip().partition("=")[2])
    for f in os.listdir(d):
        os.chmod(j(f), 0o644)   # readable by the server whatever user it runs as
    return pki


@pytest.fixture(scope="session")
def pki():
    require_tools()
    d = tempfile.mkdtemp(prefix="aws-tls-pki-")
    os.chmod(d, 0o755)
    try:
        yield make_pki(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def cert_args(pki: PKI, default: str = "default", sni=("wildcard", "exact")) -> list:
    """--tls-cert/--tls-key for the default certificate, --tls-cert-for for each SNI one."""
    c = pki[default]
    args = ["--tls-cert", c.cert, "--tls-key", c.key]
    hosts = {"wildcard": "*.example.test", "exact": "b.example.test"}
    for name in sni:
        s = pki[name]
        args += ["--tls-cert-for", f"{hosts[name]}={s.cert},{s.key}"]
    return args


# --------------------------------------------------------------------------------------
# The server with a TLS port
# --------------------------------------------------------------------------------------

class TLSServer(awstest.Server):
    """awstest.Server plus `--tls-port` on a second free port. `port` stays the plain port
    (given with --port even under --no-http, where the server ignores it). Ready when the TLS
    port accepts TCP connections, and the plain port too unless --no-http."""

    def __init__(self, root: str, args=(), **kw):
        super().__init__(root, args=args, **kw)
        self.tls_port = 0
        self.plain = "--no-http" not in self.args

    @property
    def cmd(self):
        return super().cmd + ["--tls-port", str(self.tls_port)]

    def choose_ports(self) -> None:
        super().choose_ports()
        self.tls_port = free_port()
        while self.tls_port == self.port:
            self.tls_port = free_port()

    def ready_ports(self) -> list:
        return [self.tls_port] + ([self.port] if self.plain else [])

    def url(self, path: str, host: str = HOST, tls: bool = True) -> str:
        return f"https://{host}:{self.tls_port}{path}" if tls else f"http://{host}:{self.port}{path}"


def _start(srv: TLSServer) -> TLSServer:
    return awstest.start_or_fail(srv)


def running(root: str, args=(), name: str = "tls"):
    """A started TLSServer for a module-scoped fixture; stopped at the end, and a crash (or no
    exit on SIGTERM) fails the test that ends it."""
    return awstest.running(TLSServer(root, args=list(args), name=name))


@pytest.fixture
def make_tls_server(pki):
    """make_tls_server(root, args=[...], name=...) -> a started TLSServer, stopped at the end of
    the test, which fails if the server crashed or died meanwhile."""
    started = []

    def factory(root: str, args=(), name: str = "tls-extra", test_args: bool = True):
        srv = TLSServer(root, args=list(args), name=name, test_args=test_args)
        _start(srv)
        started.append(srv)
        return srv

    yield factory
    awstest.stop_all_or_fail(started)


# --------------------------------------------------------------------------------------
# curl
# --------------------------------------------------------------------------------------

@dataclass
class CurlResult:
    rc: int
    status: int
    reason: str
    headers: dict          # lower-case name -> value, of the last (final) response
    raw_headers: list      # [(name, value)] of the final response
    body: bytes
    num_connects: int
    verify_result: int     # %{ssl_verify_result}: 0 when the peer verified
    http_version: str
    stderr: str
    cmd: list

    def header(self, name: str, default=None):
        return self.headers.get(name.lower(), default)

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.raw_headers if n.lower() == name.lower())

    def __repr__(self) -> str:
        body = self.body if len(self.body) <= 200 else self.body[:200] + b"..."
        return (f"<curl rc={self.rc} {self.status} {self.reason!r} headers={self.raw_headers!r} "
                f"body[{len(self.body)}]={body!r} stderr={self.stderr[-500:]!r} cmd={' '.join(self.cmd)}>")


def _final_head(head: bytes):
    """The last response head in a --dump-header file (after any 1xx)."""
    blocks = [b for b in head.replace(b"\r\n", b"\n").split(b"\n\n") if b.strip()]
    if not blocks:
        return "", 0, "", [], {}
    lines = blocks[-1].decode("latin-1").split("\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    raw, headers = [], {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        value = value.strip()
        raw.append((name.strip(), value))
        k = name.strip().lower()
        headers[k] = headers[k] + ", " + value if k in headers else value
    return parts[0], status, parts[2] if len(parts) > 2 else "", raw, headers


def curl(ca: str, url: str, *args, resolve=(), out: str | None = None, timeout: float = 60.0) -> CurlResult:
    """Runs curl once with `--cacert ca`; the body goes to `out` if given (then body is b"").
    `resolve`: host names to pin to 127.0.0.1 at the URL's port (--resolve NAME:PORT:127.0.0.1)."""
    require_tools()
    with tempfile.TemporaryDirectory(prefix="aws-curl-") as d:
        head_path = os.path.join(d, "head")
        body_path = out or os.path.join(d, "body")
        port = re.match(r"https?://[^/:]+:(\d+)", url)
        cmd = ["curl", "-sS", "--noproxy", "*", "--cacert", ca, "--max-time", str(int(timeout)),
               "-D", head_path, "-o", body_path,
               "-w", "%{response_code} %{num_connects} %{ssl_verify_result} %{http_version}"]
        for name in resolve:
            cmd += ["--resolve", f"{name}:{port.group(1)}:{HOST}"]
        cmd += [*args, url]
        try:
            r = _run(cmd, timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"curl did not finish within {timeout + 10}s: {' '.join(cmd)}", pytrace=False)
        head = _read(head_path) if os.path.exists(head_path) else b""
        body = b"" if out else (_read(body_path) if os.path.exists(body_path) else b"")
    w = r.stdout.decode(errors="replace").split()
    _, status, reason, raw, headers = _final_head(head)
    return CurlResult(rc=r.returncode, status=status, reason=reason, headers=headers, raw_headers=raw,
                      body=body, num_connects=int(w[1]) if len(w) > 1 else -1,
                      verify_result=int(w[2]) if len(w) > 2 else -1,
                      http_version=w[3] if len(w) > 3 else "", stderr=r.stderr.decode(errors="replace"),
                      cmd=cmd)


# --------------------------------------------------------------------------------------
# openssl s_client
# --------------------------------------------------------------------------------------

# What s_client prints (checked against `openssl s_server` and Python ssl servers, OpenSSL 3.0):
#   "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384" after a full handshake, "Reused, ..." after
#   a resumed one, "New, (NONE), Cipher is (NONE)" when the handshake failed. The middle field
#   is the CIPHER's version (SSL_CIPHER_get_version), not the protocol's: a TLS 1.2 connection
#   with a CBC-SHA suite says "TLSv1.0" there.
#   "    Protocol  : TLSv1.2" in an "SSL-Session:" block: the protocol; printed at handshake
#   time for TLS <= 1.2 (also after a FAILED handshake, then naming the version the client
#   tried), and for TLS 1.3 only in the "Post-Handshake New Session Ticket arrived:" blocks.
#   "ALPN protocol: http/1.1" or "No ALPN negotiated"; "subject=CN = name" for the peer.
#   A fatal no_application_protocol alert: "...:tlsv1 alert no application protocol:...
#   SSL alert number 120".
_SUMMARY = re.compile(r"^(New|Reused), (\S+), Cipher is (\S+)$", re.M)


@dataclass
class SClient:
    rc: int
    out: str
    cmd: list

    @property
    def summary(self):
        m = _SUMMARY.search(self.out)
        return m.groups() if m else None

    @property
    def established(self) -> bool:
        """A cipher was agreed AND the peer verified. (s_client prints "New, TLSv1.3, Cipher is
        ..." even when it then aborted the handshake because the certificate did not verify.)"""
        s = self.summary
        return s is not None and s[2] != "(NONE)" and self.verified

    @property
    def reused(self) -> bool:
        s = self.summary
        return self.established and s[0] == "Reused"

    @property
    def cipher(self):
        s = self.summary
        return s[2] if s else None

    @property
    def protocols(self) -> list:
        """Every "Protocol  : X" value (meaningful only when the handshake succeeded)."""
        return re.findall(r"^\s*Protocol\s*:\s*(\S+)$", self.out, re.M)

    @property
    def alpn(self):
        m = re.search(r"^ALPN protocol: (\S+)$", self.out, re.M)
        return m.group(1) if m else None

    @property
    def subject_cn(self):
        m = re.search(r"^subject=.*?CN\s*=\s*([^,/\n]+)", self.out, re.M)
        return m.group(1).strip() if m else None

    @property
    def verified(self) -> bool:
        return bool(re.search(r"^\s*Verify return code: 0 \(ok\)$", self.out, re.M))

    @property
    def tickets(self) -> int:
        return self.out.count("Post-Handshake New Session Ticket arrived")

    def __repr__(self) -> str:
        # the interesting lines, without the certificate PEM
        keep = [ln for ln in self.out.splitlines()
                if not re.fullmatch(r"[A-Za-z0-9+/=]{40,}", ln) and not ln.startswith("    00")]
        return f"<s_client rc={self.rc} cmd={' '.join(self.cmd)}\n" + "\n".join(keep[-80:]) + "\n>"


def http_request(path: str = "/", host: str = "localhost") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


def s_client(ca: str, port: int, *opts, servername: str | None = None, request: bytes | None = None,
             check_name: bool = True, timeout: float = 15.0) -> SClient:
    """openssl s_client against 127.0.0.1:port, trusting only `ca` and refusing an unverified
    peer (-verify_return_error; the name checked, unless check_name=False, is `servername`, or
    the IP 127.0.0.1 without SNI). With `request` the bytes are sent after the handshake and
    s_client reads until the server closes (-ign_eof): that is what makes it read TLS 1.3
    session tickets."""
    require_tools()
    cmd = ["openssl", "s_client", "-connect", f"{HOST}:{port}", "-CAfile", ca, "-verify_return_error"]
    if servername is None:
        cmd += ["-noservername"] + (["-verify_ip", HOST] if check_name else [])
    else:
        cmd += ["-servername", servername] + (["-verify_hostname", servername] if check_name else [])
    if request is not None:
        cmd.append("-ign_eof")
    cmd += list(opts)
    try:
        r = _run(cmd, timeout=timeout, input=request if request is not None else None)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
        pytest.fail(f"openssl s_client did not finish within {timeout}s: {' '.join(cmd)}\n{out[-3000:]}",
                    pytrace=False)
    return SClient(rc=r.returncode, out=r.stdout.decode(errors="replace") + "\n" + r.stderr.decode(errors="replace"),
                   cmd=cmd)


# --------------------------------------------------------------------------------------
# Python ssl
# --------------------------------------------------------------------------------------

def client_context(ca: str, check_hostname: bool = True, alpn=("http/1.1",)) -> ssl.SSLContext:
    """Trusts only `ca`; verifies the peer (and its name unless check_hostname=False)."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def tls_connect(ca: str, port: int, sni: str | None = None, check_name: bool = True,
                timeout: float = 5.0) -> ssl.SSLSocket:
    """A TLS connection to 127.0.0.1:port; the chain is always verified against `ca`. With
    `sni` that name is sent (and checked unless check_name=False); without it no SNI is sent
    (Python sends none for an IP address) and the certificate must be valid for 127.0.0.1
    (unless check_name=False)."""
    ctx = client_context(ca, check_hostname=check_name)
    raw = socket.create_connection((HOST, port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=sni if sni is not None else HOST)
    except BaseException:
        raw.close()
        raise


def peer_cert(ca: str, port: int, sni: str | None = None, check_name: bool = True) -> bytes:
    """The DER leaf certificate a new connection gets."""
    with tls_connect(ca, port, sni, check_name) as s:
        return s.getpeercert(binary_form=True)


def https_connection(ca: str, port: int, timeout: float = 10.0) -> http.client.HTTPSConnection:
    """http.client over TLS to 127.0.0.1 (the name checked against the IP SAN)."""
    return http.client.HTTPSConnection(HOST, port, timeout=timeout, context=client_context(ca))


def client_hello(server_hostname: str = "localhost") -> bytes:
    """A real ClientHello (one TLS record), as Python's ssl would send it, captured with a
    MemoryBIO: nothing goes over the network."""
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16" and len(hello) > 40, hello[:50]
    return hello


@contextlib.contextmanager
def permissive_tls_server(pki: PKI, connections: int = 1):
    """A Python TLS server that accepts what aws must refuse (TLS 1.0 to 1.2, every cipher at
    security level 0), serving the default certificate. It proves that a client command line
    aws refuses really offers the thing being refused. Yields (port, versions) where versions
    collects the negotiated version (or the error) per connection."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.load_cert_chain(pki["default"].cert, pki["default"].key)
    ls = socket.socket()
    ls.bind((HOST, 0))
    ls.listen(8)
    ls.settimeout(15)
    versions = []

    def serve():
        for _ in range(connections):
            try:
                c, _ = ls.accept()
            except OSError:
                return
            try:
                c.settimeout(5)
                with ctx.wrap_socket(c, server_side=True) as s:
                    versions.append(s.version())
                    with contextlib.suppress(OSError):
                        s.recv(4096)   # the client's request, or its close
            except (OSError, ssl.SSLError) as e:
                versions.append(f"error: {e}")
            finally:
                c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield ls.getsockname()[1], versions
    finally:
        ls.close()
        t.join(10)


# --------------------------------------------------------------------------------------
# Logs, connections
# --------------------------------------------------------------------------------------

def log_lines(srv, *needles, since: int = 0) -> list:
    return [ln for ln in srv.stderr()[since:].splitlines() if all(n in ln for n in needles)]


def wait_log_lines(srv, *needles, count: int = 1, timeout: float = 5.0, since: int = 0) -> list:
    """Waits until at least `count` log lines contain every needle; returns them (maybe fewer)."""
    awstest.wait_for(lambda: len(log_lines(srv, *needles, since=since)) >= count, timeout)
    return log_lines(srv, *needles, since=since)


def closed_within(sock: socket.socket, timeout: float) -> tuple:
    """Reads until EOF (or a reset). Returns (closed, bytes received, seconds waited)."""
    t0 = time.monotonic()
    got = b""
    sock.settimeout(0.2)
    while time.monotonic() - t0 < timeout:
        try:
            b = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True, got, time.monotonic() - t0
        if not b:
            return True, got, time.monotonic() - t0
        got += b
    return False, got, time.monotonic() - t0


def only_tls_alerts(data: bytes) -> bool:
    """True when `data` is nothing, or nothing but TLS alert records (type 21)."""
    i = 0
    while i < len(data):
        if len(data) - i < 5 or data[i] != 0x15:
            return False
        i += 5 + int.from_bytes(data[i + 3:i + 5], "big")
    return i == len(data)
