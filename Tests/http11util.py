"""Helpers for the HTTP/1.1 feature tests (test_http11_*.py).

Builds private document roots, runs module-owned servers, and reads several responses from
one connection (keep-alive, pipelining) without losing the bytes that follow a response.
Everything talks to the real binary over loopback sockets.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import tempfile
import time

import pytest

import awstest
from awstest import KIB, MIB, IncompleteResponse, parse_response

# Canonical spelling of the response header names aws sends.
CANONICAL = {n.lower(): n for n in (
    "Date", "Server", "Content-Type", "Content-Length", "Last-Modified", "ETag",
    "Accept-Ranges", "Content-Range", "Connection", "Allow", "Location", "Retry-After",
    "Keep-Alive", "Vary", "Cache-Control", "Transfer-Encoding",
)}


def data(name: str, size: int) -> bytes:
    """Deterministic bytes, distinct per name."""
    return awstest.content(f"http11/{name}", size)


# --------------------------------------------------------------------------------------
# Document roots and servers
# --------------------------------------------------------------------------------------

class Root:
    """A private document root: `files` maps url path -> bytes."""

    def __init__(self, files: dict, dirs=()):
        self.base = tempfile.mkdtemp(prefix="aws-h11-")
        os.chmod(self.base, 0o755)
        self.root = os.path.join(self.base, "root")
        self.files = {}
        self._mkdir(self.root)
        for d in dirs:
            self._mkdir(self.path(d))
        for url, content in files.items():
            self.write(url, content)

    def path(self, url: str) -> str:
        return os.path.join(self.root, url.lstrip("/"))

    @staticmethod
    def _mkdir(p: str) -> None:
        os.makedirs(p, exist_ok=True)
        os.chmod(p, 0o755)

    def write(self, url: str, content: bytes) -> None:
        p = self.path(url)
        parent = os.path.dirname(p)
        # create every missing parent with 0755
        missing = []
        while not os.path.isdir(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
        for m in reversed(missing):
            self._mkdir(m)
        with open(p, "wb") as f:
            f.write(content)
        os.chmod(p, 0o644)
        self.files[url] = content

    def cleanup(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def running_server(root: str, args=(), name: str = "h11"):
    """A started awstest.Server for a module-scoped fixture; on exit it is stopped with
    SIGTERM and must not have crashed or hung."""
    srv = awstest.Server(root, args=list(args), name=name)
    srv.start()
    try:
        yield srv
    finally:
        rc, killed = srv.stop()
        assert not killed, f"{name}: server did not exit within 5 s of SIGTERM"
        msg = srv.crash_message(rc)
        assert msg is None, f"{name}: {msg}"


# --------------------------------------------------------------------------------------
# A connection that reads responses one after another
# --------------------------------------------------------------------------------------

class Conn:
    """A client socket with a read buffer. `response()` returns the next complete response
    and keeps whatever follows it for the next call."""

    def __init__(self, port: int, timeout: float = 10.0, rcvbuf: int | None = None):
        self.sock = awstest.connect(port, timeout=timeout, rcvbuf=rcvbuf)
        self.buf = b""
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv(self) -> bool:
        try:
            b = self.sock.recv(256 * KIB)
        except ConnectionResetError:
            b = b""
        if not b:
            self.eof = True
            return False
        self.buf += b
        return True

    def response(self, head: bool = False, timeout: float = 30.0):
        """The next response: 1xx interim responses are returned too (callers skip them)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                r = parse_response(self.buf, head_request=head)
                if (r.header("content-length") is not None or head
                        or r.status in (204, 304) or r.status < 200):
                    self.buf = r.rest
                    return r
            except IncompleteResponse:
                pass
            if self.eof:
                r = parse_response(self.buf, head_request=head)  # raises if incomplete
                self.buf = b""
                return r
            if time.monotonic() > deadline:
                raise socket.timeout(f"incomplete response after {timeout}s: {self.buf[:300]!r}")
            self._recv()

    def final_response(self, head: bool = False, timeout: float = 30.0):
        """The next non-1xx response."""
        while True:
            r = self.response(head=head, timeout=timeout)
            if r.status >= 200:
                return r

    def request(self, data: bytes, head: bool = False, timeout: float = 30.0):
        self.send(data)
        return self.final_response(head=head, timeout=timeout)

    def closed_within(self, timeout: float) -> tuple[bool, bytes]:
        """Waits up to `timeout` s for the server to close. Returns (closed, extra bytes
        received meanwhile, including anything already buffered)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([self.sock], [], [], left)
            if r:
                self._recv()
        extra, self.buf = self.buf, b""
        return self.eof, extra

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def get_req(path: str, method: str = "GET", version: str = "HTTP/1.1", extra: str = "",
            close: bool = False) -> bytes:
    """A request head with Host (and Connection: close when asked)."""
    req = f"{method} {path} {version}\r\nHost: 127.0.0.1\r\n{extra}"
    if close:
        req += "Connection: close\r\n"
    return (req + "\r\n").encode("latin-1")


def assert_closed(conn: Conn, timeout: float = 5.0, what: str = "") -> None:
    closed, extra = conn.closed_within(timeout)
    assert closed, f"{what}: the server did not close the connection within {timeout}s"
    assert extra == b"", f"{what}: {len(extra)} unexpected bytes before close: {extra[:200]!r}"


def header_names(r) -> list:
    return [name for name, _ in r.raw_headers]


def count_header(r, name: str) -> int:
    return sum(1 for n, _ in r.raw_headers if n.lower() == name.lower())


def connection_tokens(r) -> set:
    v = r.header("connection") or ""
    return {t.strip().lower() for t in v.split(",") if t.strip()}


def refused_or_closed(port: int, timeout: float = 2.0) -> tuple[bool, str]:
    """True when a new connection is refused, or accepted at the TCP level but closed (or
    reset) without any response within `timeout`."""
    try:
        s = awstest.connect(port, timeout=timeout)
    except ConnectionRefusedError:
        return True, "refused"
    except OSError as e:
        return True, f"connect failed: {e}"
    with s:
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        except OSError:
            return True, "reset on send"
        try:
            b = s.recv(4096)
        except ConnectionResetError:
            return True, "reset"
        except socket.timeout:
            return False, "accepted, no answer and no close"
        if b == b"":
            return True, "closed without answer"
        return False, f"answered: {b[:120]!r}"


__all__ = ["KIB", "MIB", "Root", "running_server", "Conn", "get_req", "assert_closed",
           "header_names", "count_header", "connection_tokens", "refused_or_closed", "data",
           "CANONICAL"]


# --------------------------------------------------------------------------------------
# Module fixtures shared by the test_http11_* files: a root of FILES and a server on it
# --------------------------------------------------------------------------------------

def root_fixture(files: dict):
    """A module-scoped `root` fixture: a Root of `files`, removed at the end of the module."""
    @pytest.fixture(scope="module")
    def root():
        r = Root(files)
        yield r
        r.cleanup()
    return root


def server_fixture(name: str):
    """A module-scoped `srv` fixture: the server on the module's `root`, stopped at the end."""
    @pytest.fixture(scope="module")
    def srv(root):
        with running_server(root.root, name=name) as s:
            yield s
    return srv
