"""Helpers for the aws end-to-end tests: the server process, the document root, raw HTTP.

Everything here talks to the real binary over loopback sockets; nothing is mocked.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"

KIB = 1024
MIB = 1024 * 1024

# Sizes the byte-for-byte tests fetch from both static/ and dynamic/.
# Longest a single socket operation may wait (loopback: anything near this is a hang).
OP_TIMEOUT = 5.0

FILE_SIZES = [0, 1, 4095, 4096, 4097, MIB + 3, 20 * MIB]
# 2 MiB files for the many-clients test: this many in static/ and as many in dynamic/.
CONCURRENT_FILES = 10

# Content-Type fixtures: file name -> (expected media type, carries charset=utf-8: True must,
# False must not; see test_headers.py for the whole table).
CONTENT_TYPES = {
    "page.html": ("text/html", True),
    "style.css": ("text/css", True),
    "app.js": ("text/javascript", True),
    "data.json": ("application/json", True),
    "notes.txt": ("text/plain", True),
    "image.png": ("image/png", False),
    "photo.jpg": ("image/jpeg", False),
    "photo2.jpeg": ("image/jpeg", False),
    "anim.gif": ("image/gif", False),
    "vector.svg": ("image/svg+xml", True),
    "module.wasm": ("application/wasm", False),
    "blob.xyz123": ("application/octet-stream", False),
}

OUTSIDE_MARKER = b"OUTSIDE-THE-ROOT-7f3a9c-must-never-be-served\n"
SECRET_MARKER = b"unreadable-secret-5d21e0\n"


def aws_bin() -> str:
    return os.environ.get("AWS_BIN") or os.path.join(REPO, ".build", "release", "aws")


# --------------------------------------------------------------------------------------
# AWS_TEST_ARGS: extra server arguments for a whole run
# --------------------------------------------------------------------------------------
#
# `make test` runs the suite twice: once as is (the default, --workers auto) and once with
# AWS_TEST_ARGS="--workers 1". The variable is split like a shell command line (shlex) and
# goes into every server command built by Server.cmd (and pluginutil.run_until_exit), right
# after --root/--port/--address and BEFORE the test's own arguments.
#
# A test that sets an option itself keeps its own value, for two reasons at once:
#   1. options from AWS_TEST_ARGS that the test also passes are dropped (matched by name,
#      `--workers 4` and `--workers=4` alike; a name's values are the tokens after it up to
#      the next one starting with "-");
#   2. the test's arguments come last, and swift-argument-parser takes the LAST value of a
#      repeated single-value option (checked: `--max-connections 0 --max-connections 5`
#      starts, the reverse is refused), so even a missed duplicate resolves to the test's.
# So a test with `--workers 4` runs with 4 workers in both passes. A test that must see the
# server's true defaults (e.g. that no --workers means one worker per CPU) passes
# test_args=False to Server (or make_server) and gets none of AWS_TEST_ARGS.

def _option_name(token: str) -> str | None:
    if token.startswith("--"):
        return token.split("=", 1)[0]
    return None


def aws_test_args(own_args=()) -> list:
    """AWS_TEST_ARGS as a list, without the options that `own_args` sets itself."""
    extra = shlex.split(os.environ.get("AWS_TEST_ARGS", ""))
    own = {n for n in map(_option_name, own_args) if n}
    out, i = [], 0
    while i < len(extra):
        group = [extra[i]]
        i += 1
        if "=" not in group[0]:
            while i < len(extra) and not extra[i].startswith("-"):
                group.append(extra[i])
                i += 1
        if _option_name(group[0]) not in own:
            out += group
    return out



def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content(name: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes, distinct per file name (so a server that serves
    the wrong file cannot pass by accident)."""
    return random.Random(f"{name}:{size}").randbytes(size)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------
# Document root
# --------------------------------------------------------------------------------------

@dataclass
class DocRoot:
    base: str                 # temp dir holding root/ and outside/
    root: str                 # the document root handed to --root
    outside: str              # a directory next to the root (never served)
    files: dict = field(default_factory=dict)   # url path -> bytes

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel.lstrip("/"))


def _mkdir(path: str) -> None:
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)


def _write(path: str, data: bytes, mode: int = 0o644) -> None:
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def make_docroot() -> DocRoot:
    base = tempfile.mkdtemp(prefix="aws-test-")
    os.chmod(base, 0o755)
    d = DocRoot(base=base, root=os.path.join(base, "root"), outside=os.path.join(base, "outside"))
    for sub in ("root", "root/static", "root/dynamic", "root/static/sub", "outside"):
        _mkdir(os.path.join(base, sub))

    def add(url: str, data: bytes, mode: int = 0o644) -> None:
        _write(d.path(url), data, mode)
        d.files[url] = data

    add("/index.html", b"<!doctype html><title>aws test index</title><p>index of the root</p>\n")
    add("/other.txt", b"a regular file at the top of the root\n")
    for kind in ("static", "dynamic"):
        for size in FILE_SIZES:
            add(f"/{kind}/f_{size}.bin", content(f"{kind}/f_{size}", size))
        for i in range(CONCURRENT_FILES):
            add(f"/{kind}/c_{i}.bin", content(f"{kind}/c_{i}", 2 * MIB))
        add(f"/{kind}/slow.bin", content(f"{kind}/slow", 4 * MIB))
        add(f"/{kind}/big64k.bin", content(f"{kind}/big64k", 256 * KIB))
        add(f"/{kind}/a.txt", f"hello from {kind}/a.txt\n".encode())
        add(f"/{kind}/hello world.txt", f"spaces in {kind}\n".encode())
    add("/static/x.txt", b"x marks the spot\n")
    add("/static/sub/deep.txt", b"nested file\n")
    for name in CONTENT_TYPES:
        add(f"/static/{name}", content(f"type/{name}", 300))

    # Symlinks. Targets inside the root must be served, a target outside must not.
    add("/dynamic/target.bin", content("dynamic/target", 70000))
    os.symlink("target.bin", d.path("/dynamic/link_rel.bin"))
    d.files["/dynamic/link_rel.bin"] = d.files["/dynamic/target.bin"]
    os.symlink("../static/f_4097.bin", d.path("/dynamic/link_rel_up.bin"))
    d.files["/dynamic/link_rel_up.bin"] = d.files["/static/f_4097.bin"]
    os.symlink(d.path("/dynamic/target.bin"), d.path("/dynamic/link_abs.bin"))
    d.files["/dynamic/link_abs.bin"] = d.files["/dynamic/target.bin"]
    _write(os.path.join(d.outside, "secret.txt"), OUTSIDE_MARKER)
    os.symlink(os.path.join(d.outside, "secret.txt"), d.path("/dynamic/link_out_abs.txt"))
    os.symlink("../../outside/secret.txt", d.path("/dynamic/link_out_rel.txt"))
    os.symlink(os.path.join(d.outside, "secret.txt"), d.path("/static/link_out_abs.txt"))
    os.symlink("../../outside", d.path("/static/outdir"))  # directory symlink leaving the root

    # Unreadable for anyone but root (the test serves it with --user nobody).
    _write(d.path("/static/secret.txt"), SECRET_MARKER, 0o000)
    return d


# --------------------------------------------------------------------------------------
# HTTP over raw sockets
# --------------------------------------------------------------------------------------

@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: dict          # lower-case name -> value (repeated headers joined with ", ")
    raw_headers: list      # [(name as sent, value)]
    body: bytes
    head: bytes            # status line + headers, as sent
    rest: bytes            # bytes after this response (after Content-Length bytes)

    def header(self, name: str, default=None):
        return self.headers.get(name.lower(), default)

    @property
    def media_type(self) -> str:
        return (self.header("content-type") or "").split(";")[0].strip().lower()

    @property
    def content_length(self):
        v = self.header("content-length")
        return None if v is None else int(v)

    def __repr__(self) -> str:  # keep assertion messages short for 20 MiB bodies
        body = self.body if len(self.body) <= 200 else self.body[:200] + b"..."
        return (f"<Response {self.status} {self.reason!r} headers={self.raw_headers!r} "
                f"body[{len(self.body)}]={body!r} rest={len(self.rest)}B>")


class IncompleteResponse(Exception):
    pass


def _split_head(data: bytes):
    """Returns (head, remainder) or None if the header block is not complete.
    Accepts CRLF CRLF as well as bare LF LF."""
    i = data.find(b"\r\n\r\n")
    j = data.find(b"\n\n")
    if i < 0 and j < 0:
        return None
    if i >= 0 and (j < 0 or i <= j):
        return data[:i], data[i + 4:]
    return data[:j], data[j + 2:]


def parse_response(data: bytes, head_request: bool = False, complete: bool = True) -> Response:
    """Parses one HTTP/1.x response from data. With complete=True the body must be all there
    (Content-Length bytes, or everything to EOF when there is no Content-Length)."""
    split = _split_head(data)
    if split is None:
        raise IncompleteResponse(f"no end of headers in {len(data)} bytes: {data[:300]!r}")
    head, remainder = split
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    status_line = lines[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"bad status line {status_line!r}")
    version, status = parts[0], int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers, raw = {}, []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise ValueError(f"bad header line {line!r}")
        value = value.strip()
        raw.append((name, value))
        key = name.strip().lower()
        headers[key] = headers[key] + ", " + value if key in headers else value
    no_body = head_request or status in (204, 304) or 100 <= status < 200
    if no_body:
        body, rest = b"", remainder
    elif "content-length" in headers:
        n = int(headers["content-length"])
        if complete and len(remainder) < n:
            raise IncompleteResponse(f"body has {len(remainder)} of {n} bytes")
        body, rest = remainder[:n], remainder[n:]
    else:
        body, rest = remainder, b""
    return Response(version, status, reason, headers, raw, body, head, rest)


def connect(port: int, timeout: float = 10.0, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect((HOST, port))
    return s


def recv_until_eof(s: socket.socket, timeout: float = 30.0) -> bytes:
    """Reads until the peer closes. Each recv has the socket's timeout; the whole read has
    `timeout` (raises socket.timeout either way)."""
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        if time.monotonic() > deadline:
            raise socket.timeout(f"no EOF within {timeout}s ({sum(map(len, chunks))} bytes read)")
        b = s.recv(256 * KIB)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def raw_request(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    """Sends data on a fresh connection and returns every byte the server sends until EOF."""
    with connect(port, timeout=min(timeout, OP_TIMEOUT)) as s:
        s.sendall(data)
        return recv_until_eof(s, timeout)


def read_response(s: socket.socket, head_request: bool = False, timeout: float = 30.0) -> Response:
    """Reads one complete response (by Content-Length, or to EOF without one) and stops:
    works whether or not the server keeps the connection open."""
    deadline = time.monotonic() + timeout
    buf = b""
    while True:
        try:
            r = parse_response(buf, head_request=head_request)
            if r.header("content-length") is not None or head_request or r.status in (204, 304):
                return r
        except IncompleteResponse:
            pass
        if time.monotonic() > deadline:
            raise socket.timeout(f"incomplete response after {timeout}s: {buf[:300]!r}")
        b = s.recv(256 * KIB)
        if not b:
            return parse_response(buf, head_request=head_request)
        buf += b


def request(port: int, data: bytes, head_request: bool = False, timeout: float = 30.0) -> Response:
    """Sends raw bytes, returns the first response (not waiting for EOF)."""
    with connect(port, timeout=min(timeout, OP_TIMEOUT)) as s:
        s.sendall(data)
        return read_response(s, head_request=head_request, timeout=timeout)


def get(port: int, path: str, method: str = "GET", extra: str = "", timeout: float = 30.0) -> Response:
    """A well-formed request with Connection: close, read to EOF, parsed. Asserts that the
    server sent nothing past the response."""
    req = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
    data = raw_request(port, req.encode("latin-1"), timeout=timeout)
    r = parse_response(data, head_request=(method == "HEAD"))
    assert r.rest == b"", f"{len(r.rest)} bytes after the response to {method} {path}: {r.rest[:100]!r}"
    return r


def read_text(path: str) -> str:
    """A file's text ("" while it does not exist)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def wait_for(predicate, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


# --------------------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------------------

OK_EXIT = {0, -signal.SIGTERM, -signal.SIGKILL, -signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGINT}


class Server:
    """The real aws binary on a free loopback port. `prefix` wraps the command (e.g. strace)."""

    def __init__(self, root: str, args=(), prefix=(), log_dir: str | None = None,
                 ready_timeout: float = 10.0, name: str = "aws", test_args: bool = True):
        self.root = root
        self.args = list(args)
        self.use_test_args = test_args   # append AWS_TEST_ARGS (see aws_test_args() above)
        self.prefix = list(prefix)
        if log_dir is None:
            log_dir = tempfile.mkdtemp(prefix="aws-log-")
            atexit.register(shutil.rmtree, log_dir, True)
        self.log_dir = log_dir
        os.chmod(self.log_dir, 0o755)
        self.ready_timeout = ready_timeout
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.stderr_path = ""
        self.starts = 0
        self.returncode = None

    @property
    def cmd(self):
        extra = aws_test_args(self.args) if self.use_test_args else []
        return [*self.prefix, aws_bin(), "--root", self.root, "--port", str(self.port),
                "--address", HOST, *extra, *self.args]

    def start(self) -> "Server":
        binary = aws_bin()
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise RuntimeError(f"server binary {binary!r} is missing; build it (make build) or set AWS_BIN")
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind: retry
            self.starts += 1
            self.choose_ports()
            self.stderr_path = os.path.join(self.log_dir, f"{self.name}-{self.starts}.stderr")
            self._stderr = open(self.stderr_path, "wb")
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self._stderr,
                                         stderr=self._stderr, start_new_session=True)
            ok, last_error = self._wait_ready()
            if ok:
                return self
            if self.proc.poll() is None:
                self.kill()
                break
            if "in use" not in last_error.lower():
                break
        raise RuntimeError(f"server did not start: {last_error}\ncommand: {' '.join(self.cmd)}\n"
                           f"stderr:\n{self.stderr()[-4000:]}")

    def choose_ports(self) -> None:
        """Free ports for the next start attempt (a subclass with more listeners picks more)."""
        self.port = free_port()

    def ready_ports(self) -> list:
        """The ports that must accept connections before the server counts as started."""
        return [self.port]

    def _wait_ready(self):
        deadline = time.monotonic() + self.ready_timeout
        waiting = list(self.ready_ports())
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self._stderr.close()
                return False, f"exited with {rc} before accepting connections: {self.stderr()[-2000:]}"
            try:
                with socket.create_connection((HOST, waiting[0]), timeout=0.5):
                    waiting.pop(0)
                    if not waiting:
                        return True, ""
            except OSError:
                time.sleep(0.05)
        return False, f"port(s) {waiting} not accepting connections after {self.ready_timeout}s"

    def stderr(self) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def server_pid(self) -> int:
        """The aws process itself (the child of strace when wrapped)."""
        if not self.prefix:
            return self.proc.pid
        pid = self.proc.pid
        for _ in range(10):  # strace -> aws; walk down while the process is not aws
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                break
            if os.path.realpath(exe) == os.path.realpath(aws_bin()):
                return pid
            kids = []
            for task in os.listdir(f"/proc/{pid}/task"):
                try:
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        kids += [int(k) for k in f.read().split()]
                except OSError:
                    pass
            if not kids:
                break
            pid = kids[0]
        return pid

    def signal(self, sig: int) -> None:
        os.kill(self.server_pid(), sig)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait(5)
        self._stderr.close()

    def stop(self, timeout: float = 5.0):
        """SIGTERM, SIGKILL after `timeout`. Returns (returncode, killed)."""
        if self.proc is None:
            return None, False
        killed = False
        if self.proc.poll() is None:
            try:
                self.signal(signal.SIGTERM)
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                killed = True
                self.kill()
        else:
            self.proc.wait()
        # anything left in the process group (e.g. a traced child of strace)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self._stderr.close()
        self.returncode = self.proc.returncode
        return self.returncode, killed

    def stop_and_check(self) -> list:
        """Stops the server; returns what went wrong (death during the test, crash, no exit)."""
        if self.proc is None:
            return []
        alive_before = self.alive()
        rc, killed = self.stop()
        problems = []
        if not alive_before:
            problems.append(f"{self.name}: the server died during the test (exit {rc})")
        if killed:
            problems.append(f"{self.name}: the server did not exit within 5 s of SIGTERM")
        msg = self.crash_message(rc)
        if msg:
            problems.append(f"{self.name}: {msg}")
        if problems and self.stderr():
            problems.append(f"stderr tail:\n{self.stderr()[-3000:]}")
        return problems

    def crash_message(self, returncode) -> str | None:
        if returncode in OK_EXIT or returncode is None:
            return None
        kept = self.keep_stderr()
        if returncode < 0:
            try:
                what = signal.Signals(-returncode).name
            except ValueError:
                what = f"signal {-returncode}"
            return f"server crashed with {what}; whole stderr kept in {kept}; tail:\n{self.stderr()[-3000:]}"
        return f"server exited with status {returncode}; whole stderr kept in {kept}; tail:\n{self.stderr()[-3000:]}"

    def keep_stderr(self) -> str:
        """Copies the server's whole stderr (a sanitizer's report is longer than any tail) to
        .build/failed-servers/, which outlives the run's temporary log folders."""
        folder = os.path.join(REPO, ".build", "failed-servers")
        try:
            os.makedirs(folder, exist_ok=True)
            dest = os.path.join(folder, f"{self.name}-{os.getpid()}-{self.starts}.stderr")
            shutil.copyfile(self.stderr_path, dest)
            return dest
        except OSError as e:
            return f"(not kept: {e})"


# --------------------------------------------------------------------------------------
# Servers owned by a test or a fixture: started or the test fails, stopped and checked
# --------------------------------------------------------------------------------------

def start_or_fail(srv: "Server", env: dict | None = None) -> "Server":
    """Starts `srv` with `env` added to the environment it inherits; a server that does not
    start fails the test (outside the except: reported once, not as a chain)."""
    error = None
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        srv.start()
    except RuntimeError as e:
        error = str(e)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if error:
        pytest.fail(error, pytrace=False)
    return srv


def stop_all_or_fail(servers) -> None:
    """Stops every server; a crash, a death during the test or no exit on SIGTERM fails it."""
    problems = []
    for srv in servers:
        problems += srv.stop_and_check()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@contextlib.contextmanager
def running(srv: "Server", env: dict | None = None):
    """A started server for a module-scoped fixture, stopped and checked at the end."""
    start_or_fail(srv, env)
    try:
        yield srv
    finally:
        stop_all_or_fail([srv])
