"""Helpers for the CGI tests (test_cgi.py): a document root with a cgi folder of test programs
written at test time (never into the repository), servers started with extra environment
variables, chunked bodies, and what /proc says about the server's children and descriptors.

The test programs are /bin/sh scripts and Python scripts whose shebang is the interpreter
running the tests (sys.executable), each chmod 755 unless a test needs otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest

import awstest
import pluginutil as pu

PYTHON = sys.executable


def aws_version() -> str:
    """The version the binary reports (`aws --version`), e.g. "0.1.0"."""
    r = subprocess.run([awstest.aws_bin(), "--version"], capture_output=True, text=True, timeout=10)
    return r.stdout.strip()


def token() -> str:
    """A fresh name for pid/marker files in the scratch folder (one per request)."""
    return uuid.uuid4().hex[:16]


# --------------------------------------------------------------------------------------
# The site: document root, cgi folder, a folder outside both, a scratch folder
# --------------------------------------------------------------------------------------

class CGISite:
    """base/root            the document root (index.html, static/...)
       base/root/cgi        the default cgi folder (<root>/cgi), the test programs
       base/outside         next to the root: programs that must never run
       base/scratch         where programs write pid and marker files (CGI_SCRATCH)"""

    def __init__(self, prefix: str = "aws-cgi-"):
        self.base = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.base, 0o755)
        self.root = os.path.join(self.base, "root")
        self.cgi = os.path.join(self.root, "cgi")
        self.outside = os.path.join(self.base, "outside")
        self.scratch = os.path.join(self.base, "scratch")
        for d in (self.root, self.cgi, self.outside, self.scratch):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        os.chmod(self.scratch, 0o777)
        self.files = {}        # url -> bytes of static files
        self.sources = {}      # program name -> source bytes

    def add_file(self, url: str, data: bytes) -> None:
        p = os.path.join(self.root, url.lstrip("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, 0o644)
        self.files[url] = data

    def add_program(self, name: str, text: str, mode: int = 0o755, folder: str | None = None) -> str:
        """Writes a program (text with {python} replaced by the interpreter) into the cgi
        folder (or `folder`); returns its path."""
        p = os.path.join(folder or self.cgi, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        data = text.replace("{python}", PYTHON).encode()
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
        self.sources[name] = data
        return p

    def scratch_path(self, name: str) -> str:
        return os.path.join(self.scratch, name)

    def cleanup(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------

def start(srv: awstest.Server, env: dict | None = None) -> awstest.Server:
    return awstest.start_or_fail(srv, env)


def running(root: str, args=(), name: str = "cgi", env: dict | None = None, log_dir: str | None = None):
    """A started awstest.Server (AWS_TEST_ARGS applied) for a module-scoped fixture; a crash,
    or no exit on SIGTERM, fails the test that ends it."""
    return awstest.running(awstest.Server(root, args=list(args), name=name, log_dir=log_dir), env)


# --------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------

def decode_chunked(data: bytes):
    """Decodes a complete chunked body at the start of data. Returns (body, rest); raises
    ValueError on bad framing or a missing last chunk."""
    out, i = [], 0
    while True:
        j = data.find(b"\r\n", i)
        if j < 0:
            raise ValueError(f"no chunk-size line at offset {i}: {data[i:i + 40]!r}")
        size = int(data[i:j].split(b";")[0].strip(), 16)
        i = j + 2
        if size == 0:
            while True:   # trailers, then an empty line
                j = data.find(b"\r\n", i)
                if j < 0:
                    raise ValueError("no end of the trailer section")
                line, i = data[i:j], j + 2
                if line == b"":
                    return b"".join(out), data[i:]
        if len(data) < i + size + 2:
            raise ValueError(f"chunk of {size} bytes cut short at offset {i}")
        if data[i + size:i + size + 2] != b"\r\n":
            raise ValueError(f"chunk of {size} bytes not followed by CRLF")
        out.append(data[i:i + size])
        i += size + 2


def env_dump(r) -> dict:
    """The JSON document the env.py test program answers (see test_cgi.ENV_PY)."""
    assert r.status == 200, r
    assert r.media_type == "application/json", r
    try:
        return json.loads(r.body)
    except ValueError:
        pytest.fail(f"the env.py program's answer is not JSON: {r!r}", pytrace=False)


def header_count(r, name: str) -> int:
    return sum(1 for n, _ in r.raw_headers if n.lower() == name.lower())


def header_values(r, name: str) -> list:
    return [v for n, v in r.raw_headers if n.lower() == name.lower()]


# --------------------------------------------------------------------------------------
# Processes and descriptors (/proc)
# --------------------------------------------------------------------------------------

def _stat(pid: int):
    """(state, ppid, comm) of a process, or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    rest = stat[stat.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), comm


def children(pid: int) -> list:
    """[(pid, state, comm)] of every process whose parent is `pid` (any of its threads)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _stat(int(name))
        if st and st[1] == pid:
            out.append((int(name), st[0], st[2]))
    return out


def zombies(pid: int) -> list:
    return [c for c in children(pid) if c[1] == "Z"]


def gone(pid: int) -> bool:
    """True when the process no longer exists at all (a zombie still exists)."""
    return _stat(pid) is None


def process_state(pid: int) -> str:
    st = _stat(pid)
    return "gone" if st is None else f"state {st[0]} ({st[2]}, parent {st[1]})"


def fd_table(pid: int) -> dict:
    """fd -> what it points to, for the server process."""
    out = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            pass
    return out


def read_pid(path: str, timeout: float = 5.0) -> int:
    """The pid a program wrote into `path` (waits for the file to be complete)."""
    def get():
        try:
            with open(path) as f:
                text = f.read().strip()
            return int(text) if text else None
        except (OSError, ValueError):
            return None
    pid = awstest.wait_for(get, timeout)
    assert pid, f"the program did not write its pid to {path} within {timeout}s"
    return pid


rss_kib = pu.rss_kib
wait_for = awstest.wait_for
