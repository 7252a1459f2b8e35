"""Helpers for the plugin tests (test_plugins_*.py): building test plugins, plugin folders,
servers with plugins, server logs, HTTP/1.1 responses with chunked bodies, process memory.

The test plugins in Tests/plugins/*.c are compiled at test time into a temporary folder (never
into the repository). The example plugins are taken from Plugins/*.so (built by `make plugins`);
a C example whose .so is missing or older than its source is compiled from the source instead.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

import awstest

REPO = awstest.REPO
INCLUDE = os.path.join(REPO, "Sources", "PluginAPI", "include")
TEST_PLUGINS = os.path.join(REPO, "Tests", "plugins")
EXAMPLES = os.path.join(REPO, "Plugins")
HOST = awstest.HOST

def _header_abi() -> str:
    """"MAJOR.MINOR" of the ABI the host and every plugin built now use (from aws_plugin.h)."""
    with open(os.path.join(INCLUDE, "aws_plugin.h")) as f:
        text = f.read()
    major = re.search(r"#define AWS_PLUGIN_ABI_MAJOR (\d+)", text).group(1)
    minor = re.search(r"#define AWS_PLUGIN_ABI_MINOR (\d+)", text).group(1)
    return f"{major}.{minor}"


HOST_ABI = _header_abi()
HOST_ABI_RE = re.escape(HOST_ABI)

# AWS_E_* from aws_plugin.h
OK, E_GONE, E_STATE, E_INVALID, E_CONFLICT, E_NOMEM, E_THREAD = 0, -1, -2, -3, -4, -5, -6

_scratch: str | None = None


def scratch_dir() -> str:
    """One temporary folder per test session for built plugins, plugin folders and roots."""
    global _scratch
    if _scratch is None:
        _scratch = tempfile.mkdtemp(prefix="aws-plugin-tests-")
        os.chmod(_scratch, 0o755)
        atexit.register(shutil.rmtree, _scratch, True)
    return _scratch


def new_dir(prefix: str) -> str:
    d = tempfile.mkdtemp(prefix=prefix, dir=scratch_dir())
    os.chmod(d, 0o755)
    return d


# --------------------------------------------------------------------------------------
# Building plugins
# --------------------------------------------------------------------------------------

_built: dict = {}


def compile_c(source: str, defines: dict | None = None, out_name: str | None = None) -> str:
    """Compiles one C plugin source into a shared library in the scratch folder and returns
    its path. Cached per (source contents, defines)."""
    defines = defines or {}
    with open(source, "rb") as f:
        src = f.read()
    header = b""
    for h in (os.path.join(INCLUDE, "aws_plugin.h"), os.path.join(TEST_PLUGINS, "testplugin.h")):
        with open(h, "rb") as f:
            header += f.read()
    key = hashlib.sha256(src + header + repr(sorted(defines.items())).encode()).hexdigest()[:16]
    if key in _built and os.path.exists(_built[key]):
        path = _built[key]
    else:
        out_dir = os.path.join(scratch_dir(), "build")
        os.makedirs(out_dir, exist_ok=True)
        base = os.path.splitext(os.path.basename(source))[0]
        path = os.path.join(out_dir, f"{base}-{key}.so")
        cmd = ["cc", "-O2", "-Wall", "-fPIC", "-shared", "-pthread", f"-I{INCLUDE}", f"-I{TEST_PLUGINS}"]
        for k, v in defines.items():
            cmd.append(f"-D{k}={v}")
        cmd += ["-o", path, source]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"compiling {source} failed:\n{' '.join(cmd)}\n{r.stdout}{r.stderr}")
        _built[key] = path
    if out_name:
        # A copy under the requested name, e.g. for two plugins built from one source.
        named_dir = os.path.join(scratch_dir(), "named", key)
        os.makedirs(named_dir, exist_ok=True)
        named = os.path.join(named_dir, out_name)
        if not os.path.exists(named):
            shutil.copy(path, named)
        return named
    return path


def test_plugin(name: str, **defines) -> str:
    """Builds Tests/plugins/<name>.c (with -D defines) and returns the .so path."""
    return compile_c(os.path.join(TEST_PLUGINS, f"{name}.c"), {k: v for k, v in defines.items()})


def example_plugin(name: str) -> str:
    """The path of example plugin Plugins/<name>.so. A C example whose .so is missing or older
    than its source is compiled from the source. Skips the test when neither the .so nor any
    source exists (the example has not been written); fails when only a Swift source exists
    (run `make plugins`)."""
    so = os.path.join(EXAMPLES, f"{name}.so")
    c_src = os.path.join(EXAMPLES, f"{name}.c")
    swift_src = os.path.join(EXAMPLES, name)
    if os.path.isfile(c_src):
        if not os.path.isfile(so) or os.path.getmtime(so) < os.path.getmtime(c_src):
            return compile_c(c_src)
        return so
    if os.path.isfile(so):
        return so
    if os.path.isdir(swift_src):
        pytest.fail(f"example plugin {name}: {so} is missing but its source {swift_src}/ exists; "
                    f"build it with `make plugins`", pytrace=False)
    pytest.skip(f"example plugin {name} does not exist (neither {so} nor a source)")


def example_available(name: str) -> bool:
    return (os.path.isfile(os.path.join(EXAMPLES, f"{name}.so"))
            or os.path.isfile(os.path.join(EXAMPLES, f"{name}.c"))
            or os.path.isdir(os.path.join(EXAMPLES, name)))


# --------------------------------------------------------------------------------------
# Plugin folders, roots
# --------------------------------------------------------------------------------------

def plugin_folder(plugins: dict) -> str:
    """A fresh plugins folder holding copies: {"echo": "/path/to/echo.so", ...} -> <dir>/echo.so."""
    d = new_dir("plugins-")
    for name, path in plugins.items():
        shutil.copy(path, os.path.join(d, f"{name}.so"))
    return d


def deploy(folder: str, name: str, source_so: str) -> None:
    """Installs source_so as <folder>/<name>.so the way a deploy would: written under a
    temporary name, then renamed over the old file in one step."""
    tmp = os.path.join(folder, f".{name}.so.deploying")
    shutil.copy(source_so, tmp)
    os.rename(tmp, os.path.join(folder, f"{name}.so"))


def deploy_bytes(folder: str, name: str, data: bytes) -> None:
    tmp = os.path.join(folder, f".{name}.so.deploying")
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, os.path.join(folder, f"{name}.so"))


def small_root() -> str:
    """A small document root (plugin tests do not need the big file fixtures)."""
    root = new_dir("root-")
    with open(os.path.join(root, "index.html"), "wb") as f:
        f.write(b"<!doctype html><title>plugin tests</title>\n")
    with open(os.path.join(root, "plain.txt"), "wb") as f:
        f.write(b"a static file next to the plugins\n")
    return root


# --------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------

def server_args(folder: str, config: dict | None = None, extra=()) -> list:
    args = ["--plugins", folder, "--log-level", "info"]
    for k, v in (config or {}).items():
        args += ["--plugin-config", f"{k}={v}"]
    return args + list(extra)


def plugin_cache(pid: int) -> str:
    """Where the server copies plugin files before loading them (content-addressed)."""
    return os.path.join(os.environ.get("TMPDIR") or "/tmp", f"aws-plugins-{pid}")


@contextlib.contextmanager
def running_server(folder: str, config: dict | None = None, extra=(), root: str | None = None,
                   name: str = "plugins"):
    """A started awstest.Server with --plugins folder; stopped at the end, and a crash (or a
    failure to exit on SIGTERM) fails the test that used it."""
    srv = awstest.Server(root or small_root(), args=server_args(folder, config, extra),
                         log_dir=new_dir("log-"), name=name)
    try:
        srv.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield srv
    finally:
        alive_before = srv.alive()
        rc, killed = srv.stop()
        shutil.rmtree(plugin_cache(srv.proc.pid), ignore_errors=True)  # left behind by a crash
        problems = []
        if not alive_before:
            problems.append(f"the server died during the test (exit {rc})")
        if killed:
            problems.append("the server did not exit within 5 s of SIGTERM")
        msg = srv.crash_message(rc)
        if msg:
            problems.append(msg)
        if problems:
            pytest.fail("; ".join(problems) + f"\nstderr tail:\n{srv.stderr()[-3000:]}", pytrace=False)


def run_until_exit(folder: str, config: dict | None = None, extra=(), root: str | None = None,
                   timeout: float = 10.0):
    """Runs the server with a plugins folder that is expected to make it exit at start-up.
    Returns (returncode, output). Fails if it is still running after `timeout` seconds."""
    args = server_args(folder, config, extra)
    cmd = [awstest.aws_bin(), "--root", root or small_root(), "--port", str(awstest.free_port()),
           "--address", HOST, *awstest.aws_test_args(args), *args]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the server was expected to exit at start-up but still ran after {timeout}s:\n"
                    f"{' '.join(cmd)}\n{out.decode('utf-8', 'replace')[-3000:]}", pytrace=False)
    finally:
        shutil.rmtree(plugin_cache(proc.pid), ignore_errors=True)
    return proc.returncode, out.decode("utf-8", "replace")


def log_mark(srv) -> int:
    """The current length of the server's log, to look only at what comes after."""
    return len(srv.stderr())


def wait_log(srv, pattern: str, timeout: float = 5.0, since: int = 0):
    """Waits until the server log (from offset `since`) matches the regular expression;
    returns the match or None."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        m = rx.search(srv.stderr()[since:])
        if m or time.monotonic() > deadline:
            return m
        time.sleep(0.02)


wait_for = awstest.wait_for


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


# --------------------------------------------------------------------------------------
# HTTP/1.1 client side with chunked bodies
# --------------------------------------------------------------------------------------

class Reader:
    """Reads HTTP/1.1 responses from a socket: Content-Length, chunked, or to EOF. Keeps the
    bytes after one response for the next (pipelining, keep-alive)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def _fill(self, deadline: float) -> bool:
        if time.monotonic() > deadline:
            raise socket.timeout(f"response not complete in time ({len(self.buf)} bytes buffered)")
        b = self.sock.recv(256 * 1024)
        if not b:
            return False
        self.buf += b
        return True

    def read_head(self, deadline: float):
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                head, self.buf = self.buf[:i + 4], self.buf[i + 4:]
                return awstest.parse_response(head, head_request=True)
            if not self._fill(deadline):
                raise awstest.IncompleteResponse(f"connection closed inside the head: {self.buf[:300]!r}")

    def read_response(self, head_request: bool = False, timeout: float = 30.0):
        """Returns (Response, complete). `complete` is False when the body was cut short (EOF
        before Content-Length bytes or before the last chunk). 1xx responses are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.read_head(deadline)
            if not (100 <= r.status < 200):
                break
        te = (r.header("transfer-encoding") or "").lower()
        if head_request or r.status in (204, 304):
            return r, True
        if "chunked" in te:
            body, complete = self._read_chunked(deadline)
        elif r.header("content-length") is not None:
            n = int(r.header("content-length"))
            while len(self.buf) < n:
                if not self._fill(deadline):
                    break
            complete = len(self.buf) >= n
            body, self.buf = self.buf[:n], self.buf[n:]
        else:
            while self._fill(deadline):
                pass
            body, self.buf, complete = self.buf, b"", True
        r.body = body
        return r, complete

    def read_chunked_body(self, deadline: float):
        """The rest of a chunked body (after read_head): (body, complete)."""
        return self._read_chunked(deadline)

    def _read_chunked(self, deadline: float):
        body = []
        while True:
            while b"\r\n" not in self.buf:
                if not self._fill(deadline):
                    return b"".join(body), False
            line, self.buf = self.buf.split(b"\r\n", 1)
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # optional trailers, then an empty line
                    while b"\r\n" not in self.buf:
                        if not self._fill(deadline):
                            return b"".join(body), False
                    trailer, self.buf = self.buf.split(b"\r\n", 1)
                    if trailer == b"":
                        return b"".join(body), True
            while len(self.buf) < size + 2:
                if not self._fill(deadline):
                    body.append(self.buf[:size])
                    return b"".join(body), False
            if self.buf[size:size + 2] != b"\r\n":
                raise ValueError(f"chunk of {size} bytes not followed by CRLF: {self.buf[size:size + 10]!r}")
            body.append(self.buf[:size])
            self.buf = self.buf[size + 2:]


def http(port: int, method: str, target: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 30.0, chunked: bool = False, chunk_size: int = 65536):
    """One request on a fresh connection (Connection: close). Returns (Response, complete)."""
    with awstest.connect(port, timeout=min(timeout, 10.0)) as s:
        send_request(s, method, target, body, headers, close=True, chunked=chunked, chunk_size=chunk_size)
        return Reader(s).read_response(head_request=(method == "HEAD"), timeout=timeout)


def send_request(s: socket.socket, method: str, target: str, body: bytes | None = None,
                 headers: dict | None = None, close: bool = False, chunked: bool = False,
                 chunk_size: int = 65536) -> None:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body is not None:
        lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if body is None:
        return
    if not chunked:
        s.sendall(body)
        return
    for i in range(0, len(body), chunk_size):
        part = body[i:i + chunk_size]
        s.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
    s.sendall(b"0\r\n\r\n")


def ok_get(port: int, target: str, timeout: float = 10.0):
    """GET that must answer 200 completely; returns the body."""
    r, complete = http(port, "GET", target, timeout=timeout)
    assert r.status == 200 and complete, f"GET {target}: {r!r} complete={complete}"
    return r.body


def report(body: bytes) -> dict:
    """Parses a test plugin's "name=value" lines into a dict of ints (or strings)."""
    out = {}
    for line in body.decode().splitlines():
        k, _, v = line.partition("=")
        try:
            out[k] = int(v)
        except ValueError:
            out[k] = v
    return out


class VersionLoad:
    """Base of the reload load generators (test_plugins_reload.Load, test_workers.SpreadLoad):
    client threads that count answers per plugin version; started on entering, stopped and
    joined on leaving. A subclass fills `threads` in its __init__ after calling this one."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {b"version 1\n": 0, b"version 2\n": 0}
        self.failures = []
        self.regressions = []   # a connection that saw version 2 and then version 1 again
        self.threads = []

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def total(self):
        with self.lock:
            return sum(self.counts.values())
