"""CGI/1.1: the real server running real programs (/bin/sh and Python scripts written at test
time into a temporary cgi folder, plus the examples shipped in www/cgi), driven by real clients
(raw sockets, http.client, curl) on loopback.

What these tests rely on (the interface, /work/notes/cgi-spec.md):
  - `/cgi/NAME[/PATH_INFO][?QUERY]` runs `<cgi-dir>/NAME` (default cgi-dir `<root>/cgi`; NAME is
    one decoded path segment); NAME missing, `/cgi`, `/cgi/` -> 404; not a regular executable file
    (no x bit, a directory) or resolving outside the cgi folder -> 403;
    `--cgi-script PATH` runs PATH for every /cgi/... (PATH_INFO = the rest, SCRIPT_NAME=/cgi);
    `--no-cgi`: /cgi/... is served like any other path (files);
  - the environment is exactly: GATEWAY_INTERFACE, SERVER_SOFTWARE=aws/<version>, SERVER_NAME (Host
    without port, else the local address), SERVER_PORT, SERVER_PROTOCOL, REQUEST_METHOD,
    REQUEST_URI (as sent), QUERY_STRING (always, maybe empty), CONTENT_LENGTH and CONTENT_TYPE (only
    with a body / only when sent), SCRIPT_NAME, SCRIPT_FILENAME (real path), PATH_INFO (decoded, only
    when non-empty), PATH_TRANSLATED (real document root + PATH_INFO, only with PATH_INFO),
    REMOTE_ADDR, REMOTE_PORT, HTTP_* for each request header (upper case, '-' -> '_', repeats joined
    with ", ", none for Content-Length/Content-Type, never HTTP_PROXY), HTTPS=on over TLS only,
    --cgi-env variables, and PATH from the server's environment -- nothing else (checked as an
    exact set, the server started with AWS_SECRET_TEST=1 in its environment);
  - working directory = the program's folder; descriptors 0, 1, 2 only; a Content-Length body
    streamed to stdin, a chunked one decoded first (CONTENT_LENGTH = its size); stdin at EOF at the
    body's end (at once without a body: the env.py program reads stdin to EOF before answering);
  - output: a CGI header block (LF or CRLF) up to 32 KiB; `Status:` sets the status; `Location:
    /path` without Status is an internal GET (the program's body discarded); `Location: http://...`
    -> 302; other fields pass through except Connection, Keep-Alive, Transfer-Encoding, Upgrade,
    Date, Server; no Content-Type/Location/Status, a malformed line, > 32 KiB, or EOF before the
    blank line (also no output at all) -> 502; the program's Content-Length is used (fewer bytes:
    the connection ends; more: the extra dropped and the connection closed); otherwise output that
    has ended when the head is read (<= 64 KiB) gets a Content-Length, and the rest is chunked on
    HTTP/1.1 and close-delimited (Connection: close) on HTTP/1.0; HEAD runs the program, sends
    the head only;
  - --cgi-timeout S: a program silent on stdout for S seconds is killed (SIGTERM, SIGKILL 2 s
    later), 504 if no head was sent yet; --cgi-max N over the whole server -> 503 + Retry-After: 1
    (the program is not started); a client leaving mid-output -> the program is killed; children
    reaped (no zombies), no descriptor left behind; stderr lines logged at warning level as
    `cgi NAME: <line>`; HTTPS works the same, with HTTPS=on.
Program output and request bodies are streamed with backpressure: a slow reader of a 50 MiB
answer, or a 48 MiB upload to a program that does not read yet, must not make the server's memory
grow by more than 16 MiB.

Beyond the letter of the spec, a few tests hold the server to plain HTTP and common sense, each
saying so: a 204 from a program carries no body; a redirect loop of internal redirects ends with
a 5xx; the program's exit status does not spoil a complete answer; an answer ends at EOF on
stdout even if the program runs on; a body over --max-body is 413 and the program never starts;
pipelined CGI requests are answered in order; a server stopped with SIGTERM leaves no program
running; a request traversing out of the cgi folder (%2e%2e, %2f) never runs a program outside.

The suite runs once with AWS_TEST_ARGS empty (one worker per CPU) and once with --workers 1;
the test that needs two workers sets --workers 2 itself.
"""

import concurrent.futures
import hashlib
import http.client
import json
import os
import re
import shutil
import struct
import tempfile
import threading
import time

import pytest

import awstest
import cgiutil as cu
import pluginutil as pu
import tlsutil as tu
from awstest import HOST, KIB, MIB
from http11util import Conn, connection_tokens
from tlsutil import make_tls_server, pki  # noqa: F401  (fixtures)

SECRET_ENV = {"AWS_SECRET_TEST": "1"}
EXAMPLES = os.path.join(awstest.REPO, "www", "cgi")

# --------------------------------------------------------------------------------------
# The test programs ({python} is replaced by the interpreter running the tests)
# --------------------------------------------------------------------------------------

ENV_PY = r'''#!{python}
# Answers, as JSON, what a CGI program receives: the environment exactly as exec'd (read from
# /proc/self/environ, which Python's start-up locale coercion does not touch), its open
# descriptors, working directory, argv, and what stdin held up to EOF.
import hashlib, json, os, sys

fds = {}
for name in os.listdir("/proc/self/fd"):
    try:
        os.fstat(int(name))          # the descriptor listdir itself used is closed by now
    except OSError:
        continue
    try:
        fds[name] = os.readlink("/proc/self/fd/" + name)
    except OSError:
        fds[name] = "?"
with open("/proc/self/environ", "rb") as f:
    entries = [e.decode("latin-1") for e in f.read().split(b"\0") if e]
data = sys.stdin.buffer.read()
doc = {
    "entries": entries,
    "env": dict(e.partition("=")[::2] for e in entries),
    "cwd": os.getcwd(),
    "argv": sys.argv,
    "fds": fds,
    "stdin_len": len(data),
    "stdin_sha256": hashlib.sha256(data).hexdigest(),
}
sys.stdout.buffer.write(b"Content-Type: application/json\r\n\r\n" + json.dumps(doc).encode())
'''

ECHO_PY = r'''#!{python}
# Reads stdin to EOF, then answers its size and sha256 in headers and the bytes as the body.
import hashlib, os, sys
data = sys.stdin.buffer.read()
head = ("Content-Type: application/octet-stream\r\n"
        "X-Read-Bytes: %d\r\nX-Read-Sha256: %s\r\nX-Content-Length: %s\r\n\r\n"
        % (len(data), hashlib.sha256(data).hexdigest(), os.environ.get("CONTENT_LENGTH", "-")))
sys.stdout.buffer.write(head.encode() + data)
'''

BIG_BLOCK = bytes(range(256)) * 256       # 64 KiB; each copy is stamped with its index
BIG_BLOCKS = 800                          # 50 MiB
BIG_PY = r'''#!{python}
# 50 MiB: 800 blocks of 64 KiB, block i starting with i as 8 big-endian bytes.
import struct, sys
block = bytes(range(256)) * 256
out = sys.stdout.buffer
out.write(b"Content-Type: application/octet-stream\r\n\r\n")
for i in range(800):
    out.write(struct.pack(">Q", i) + block[8:])
out.flush()
'''

STREAM_PY = r'''#!{python}
# Writes its pid to $CGI_SCRATCH/$QUERY_STRING.pid, then output forever. Once the pipe breaks it
# keeps running (sleeping): only a signal from the server ends it. With PATH_INFO /stubborn it
# also ignores SIGTERM (only SIGKILL ends it).
import os, signal, time
with open(os.path.join(os.environ["CGI_SCRATCH"], os.environ["QUERY_STRING"] + ".pid"), "w") as f:
    f.write(str(os.getpid()))
if os.environ.get("PATH_INFO") == "/stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
block = b"x" * 65535 + b"\n"
try:
    os.write(1, b"Content-Type: text/plain\r\n\r\n")
    while True:
        os.write(1, block)
except OSError:
    pass
while True:
    time.sleep(0.1)
'''

HOLD_PY = r'''#!{python}
# Writes its pid, sends a head and "holding", then waits (at most 20 s) for the file
# $CGI_SCRATCH/$QUERY_STRING.release before it sends "released" and exits.
import os, sys, time
path = os.path.join(os.environ["CGI_SCRATCH"], os.environ["QUERY_STRING"])
with open(path + ".pid", "w") as f:
    f.write(str(os.getpid()))
sys.stdout.buffer.write(b"Content-Type: text/plain\r\n\r\nholding\n")
sys.stdout.flush()
deadline = time.monotonic() + 20
while not os.path.exists(path + ".release") and time.monotonic() < deadline:
    time.sleep(0.02)
sys.stdout.buffer.write(b"released\n")
'''

FIRST_PY = r'''#!{python}
# Answers as soon as the first 5 bytes of the body are in, then reads the rest to EOF.
import os, sys
first = b""
while len(first) < 5:
    b = os.read(0, 5 - len(first))
    if not b:
        break
    first += b
out = sys.stdout.buffer
out.write(b"Content-Type: text/plain\r\n\r\nfirst " + first + b"\n")
out.flush()
rest = sys.stdin.buffer.read()
out.write(b"rest %d\n" % len(rest))
'''

SLOWREAD_PY = r'''#!{python}
# Reads nothing for 1.5 s, then its whole body; answers the size and sha256.
import hashlib, sys, time
time.sleep(1.5)
data = sys.stdin.buffer.read()
sys.stdout.buffer.write(b"Content-Type: text/plain\r\n\r\n%d %s\n" % (len(data), hashlib.sha256(data).hexdigest().encode()))
'''

SH = "#!/bin/sh\n"


def padded_head(lines: int) -> str:
    """A sh program whose header block has `lines` padding fields of 113 bytes each."""
    return f"""printf 'Content-Type: text/plain\\n'
i=0
while [ $i -lt {lines} ]; do
    printf 'X-Pad-%03d: %0100d\\n' $i 0
    i=$((i + 1))
done
printf '\\nPROGRAM-BODY\\n'
"""


PROGRAMS = {
    "env.py": ENV_PY,
    "echo.py": ECHO_PY,
    "big.py": BIG_PY,
    "stream.py": STREAM_PY,
    "hold.py": HOLD_PY,
    "first.py": FIRST_PY,
    "slowread.py": SLOWREAD_PY,
    "hello.sh": SH + "printf 'Content-Type: text/plain\\r\\n\\r\\nhello from cgi\\n'\n",
    "query.sh": SH + """printf 'Content-Type: text/plain\\nX-Query: %s\\n\\n' "$QUERY_STRING"
i=0
while [ $i -lt 100 ]; do
    printf '%s line %d\\n' "$QUERY_STRING" $i
    i=$((i + 1))
done
""",
    "method.sh": SH + """printf 'Content-Type: text/plain\\r\\nX-Method: %s\\r\\n\\r\\nmethod %s body\\n' "$REQUEST_METHOD" "$REQUEST_METHOD"\n""",
    "marker.sh": SH + """: > "$CGI_SCRATCH/$QUERY_STRING.ran"
printf 'Content-Type: text/plain\\n\\nmarker %s\\n' "$QUERY_STRING"
""",
    "status201.sh": SH + "printf 'Status: 201 Created\\r\\nContent-Type: text/plain\\r\\n\\r\\ncreated by the program\\n'\n",
    # LF-only header lines
    "status404.sh": SH + "printf 'Status: 404 Not Found\\nContent-Type: text/plain\\n\\nthe program says: no such thing\\n'\n",
    "loc_local.sh": SH + "printf 'Location: /static/page.txt\\r\\n\\r\\nDISCARDED-BODY-OF-THE-PROGRAM\\n'\n",
    "loc_cgi.sh": SH + "printf 'Location: /cgi/method.sh?via-redirect\\r\\n\\r\\nDISCARDED\\n'\n",
    "loop.sh": SH + "printf 'Location: /cgi/loop.sh\\r\\n\\r\\n'\n",
    "loc302_local.sh": SH + "printf 'Status: 302 Found\\r\\nLocation: /static/page.txt\\r\\nContent-Type: text/plain\\r\\n\\r\\nsee the page\\n'\n",
    "lowercase.sh": SH + "printf 'content-type: text/plain\\r\\nstatus: 404 Not Found\\r\\nx-lower: 1\\r\\n\\r\\nlower-case names\\n'\n",
    "status204.sh": SH + "printf 'Status: 204 No Content\\r\\nX-Was: 204\\r\\n\\r\\nA BODY THAT A 204 MUST NOT CARRY\\n'\n",
    "exit3.sh": SH + "printf 'Content-Type: text/plain\\r\\n\\r\\nanswered, then failed\\n'\nexit 3\n",
    "loc_abs.sh": SH + "printf 'Location: http://example.test/elsewhere?x=1\\r\\n\\r\\n'\n",
    "loc301.sh": SH + "printf 'Status: 301 Moved Permanently\\r\\nLocation: https://example.test/moved\\r\\n"
                      "Content-Type: text/plain\\r\\n\\r\\nmoved\\n'\n",
    "headers.sh": SH + """printf 'Content-Type: text/plain\\r\\n'
printf 'X-Custom: custom value 1\\r\\n'
printf 'Set-Cookie: a=1\\r\\n'
printf 'Set-Cookie: b=2\\r\\n'
printf 'Connection: close\\r\\n'
printf 'Keep-Alive: timeout=99\\r\\n'
printf 'Server: evil/6.6.6\\r\\n'
printf 'Date: Thu, 01 Jan 1970 00:00:00 GMT\\r\\n'
printf 'Upgrade: h2c\\r\\n'
printf 'Transfer-Encoding: chunked\\r\\n'
printf '\\r\\n'
printf 'body of headers.sh\\n'
# Output still open after the body: the server streams (chunked) rather than waiting to see its
# end (a program whose output has ended when its head is read is answered with a Content-Length).
exec sleep 1
""",
    "clen.sh": SH + "printf 'Content-Type: text/plain\\r\\nContent-Length: 12\\r\\n\\r\\nhello world\\n'\n",
    "clen_short.sh": SH + "printf 'Content-Type: text/plain\\r\\nContent-Length: 100\\r\\n\\r\\n0123456789'\n",
    "clen_extra.sh": SH + "printf 'Content-Type: text/plain\\r\\nContent-Length: 5\\r\\n\\r\\nabcdefghij-EXTRA'\n",
    # 6000 lines, 100 KiB: more than the server reads with the head (64 KiB), so it streams the
    # rest whatever the timing (a shorter output may be whole before the head goes out: then it
    # is answered with a Content-Length)
    "noclen.sh": SH + """printf 'Content-Type: text/plain\\r\\n\\r\\n'
i=0
while [ $i -lt 6000 ]; do
    printf 'noclen line %d\\n' $i
    i=$((i + 1))
done
""",
    # 3000 lines (190 KiB) on stderr before anything on stdout: more than a pipe holds
    "stderr_flood.sh": SH + """i=0
while [ $i -lt 3000 ]; do
    echo "flood $QUERY_STRING line $i padding padding padding padding padding padding" >&2
    i=$((i + 1))
done
printf 'Content-Type: text/plain\\n\\nafter the flood\\n'
""",
    # the answer ends with stdout, although the program goes on for 3 s
    "closeout.sh": SH + """echo $$ > "$CGI_SCRATCH/$QUERY_STRING.pid"
printf 'Content-Type: text/plain\\r\\n\\r\\ndone early\\n'
exec >&-
exec sleep 3
""",
    "stderr.sh": SH + """echo "problem one $QUERY_STRING" >&2
printf 'Content-Type: text/plain\\n\\nstderr test\\n'
echo "problem two $QUERY_STRING" >&2
""",
    # 502s
    "noheader.sh": SH + "printf 'Content-Type: text/plain\\n'\n",          # EOF before the blank line
    "nothing.sh": SH + "exit 0\n",                                         # no output at all
    "malformed.sh": SH + "printf 'Content-Type text/plain\\n\\nPROGRAM-BODY\\n'\n",   # no colon
    "badname.sh": SH + "printf 'Content-Type: text/plain\\nBad Name: x\\n\\nPROGRAM-BODY\\n'\n",
    "nocontent.sh": SH + "printf 'X-Only: 1\\n\\nPROGRAM-BODY\\n'\n",       # no Content-Type/Location/Status
    # 400 lines of 113 bytes: 45 KiB of header block (> 32 KiB)
    "bighead.sh": SH + padded_head(400),
    # 200 such lines: 22 KiB (< 32 KiB), accepted
    "okhead.sh": SH + padded_head(200),
    # timeouts (with --cgi-timeout 1)
    "sleeper.sh": SH + """echo $$ > "$CGI_SCRATCH/$QUERY_STRING.pid"
exec sleep 30
""",
    "stall.sh": SH + """echo $$ > "$CGI_SCRATCH/$QUERY_STRING.pid"
printf 'Content-Type: text/plain\\n\\npartial\\n'
exec sleep 30
""",
    "ticker.sh": SH + """printf 'Content-Type: text/plain\\n\\n'
for i in 1 2 3 4 5 6 7; do
    sleep 0.3
    printf 'tick %d\\n' $i
done
""",
}

PAGE = b"the static page an internal redirect lands on\n"
EVIL_SH = SH + """: > "$CGI_SCRATCH/evil-ran"
printf 'Content-Type: text/plain\\n\\nEVIL: a program outside the cgi folder ran\\n'
"""


def query_body(q: str) -> bytes:
    return "".join(f"{q} line {i}\n" for i in range(100)).encode()


def noclen_body() -> bytes:
    return "".join(f"noclen line {i}\n" for i in range(6000)).encode()


def big_expected_sha() -> str:
    h = hashlib.sha256()
    for i in range(BIG_BLOCKS):
        h.update(struct.pack(">Q", i) + BIG_BLOCK[8:])
    return h.hexdigest()


def build_site() -> cu.CGISite:
    s = cu.CGISite()
    s.add_file("/index.html", b"<!doctype html><title>cgi tests</title>\n")
    s.add_file("/static/page.txt", PAGE)
    for name, text in PROGRAMS.items():
        s.add_program(name, text)
    s.add_program("notexec.sh", PROGRAMS["hello.sh"], mode=0o644)
    s.add_program("subdir/inner.sh", PROGRAMS["hello.sh"])
    os.chmod(os.path.join(s.cgi, "subdir"), 0o755)
    s.add_program("evil.sh", EVIL_SH, folder=s.outside)
    os.symlink("hello.sh", os.path.join(s.cgi, "link-inside"))
    os.symlink("../../outside/evil.sh", os.path.join(s.cgi, "link-outside"))
    os.symlink(os.path.join(s.outside, "evil.sh"), os.path.join(s.cgi, "link-outside-abs"))
    os.symlink("../../outside", os.path.join(s.cgi, "linkdir"))
    # the same root and cgi folder reached through symlinks
    os.symlink(s.root, os.path.join(s.base, "rootlink"))
    os.symlink(s.cgi, os.path.join(s.base, "cgilink"))
    # --cgi-script: a single program in a folder of its own
    s.solo = os.path.join(s.base, "solo")
    s.add_program("env.py", ENV_PY, folder=s.solo)
    os.chmod(s.solo, 0o755)
    return s


def cgi_args(site) -> list:
    return ["--cgi-env", f"CGI_SCRATCH={site.scratch}", "--cgi-env", "CGI_TEST_VAR=a=b c"]


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site():
    s = build_site()
    yield s
    s.cleanup()


@pytest.fixture(scope="module")
def version():
    v = cu.aws_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", v), f"aws --version printed {v!r}"
    return v


@pytest.fixture(scope="module")
def srv(site):
    """The module's server: default cgi folder <root>/cgi, default limits, AWS_SECRET_TEST=1 in
    its own environment."""
    with cu.running(site.root, cgi_args(site), name="cgi-shared", env=SECRET_ENV) as s:
        yield s


@pytest.fixture
def live(srv):
    yield srv
    assert srv.alive(), f"the server died during this test; stderr tail:\n{srv.stderr()[-3000:]}"


@pytest.fixture(scope="module")
def timeout_srv(site):
    with cu.running(site.root, cgi_args(site) + ["--cgi-timeout", "1"], name="cgi-timeout") as s:
        yield s


@pytest.fixture(scope="module")
def burst_srv(site):
    with cu.running(site.root, cgi_args(site) + ["--cgi-max", "200"], name="cgi-burst") as s:
        yield s


@pytest.fixture
def cgi_server(site):
    """cgi_server(args, root=None, env=None, with_cgi_env=True) -> a started awstest.Server with
    the site's --cgi-env variables first (unless with_cgi_env=False); stopped at the end of the
    test, which fails if it crashed."""
    started = []

    def factory(args=(), root=None, name="cgi-extra", env=None, with_cgi_env=True):
        full = (cgi_args(site) if with_cgi_env else []) + list(args)
        srv = cu.start(awstest.Server(root or site.root, args=full, name=name), env)
        started.append(srv)
        return srv

    yield factory
    awstest.stop_all_or_fail(started)


# --------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------

def req(method: str, target: str, version: str = "HTTP/1.1", headers=(), body: bytes | None = None,
        host: str | None = "127.0.0.1", close: bool = True) -> bytes:
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def exchange(port: int, data: bytes, head: bool = False, timeout: float = 15.0):
    """Sends data on a fresh connection; returns (Response, complete) for the first response
    (Content-Length, chunked or to EOF)."""
    with awstest.connect(port, timeout=min(timeout, 10.0)) as s:
        s.sendall(data)
        return pu.Reader(s).read_response(head_request=head, timeout=timeout)


def fetch(port: int, target: str, method: str = "GET", **kw):
    """One request with Connection: close; the response must be complete."""
    r, complete = exchange(port, req(method, target, **kw), head=(method == "HEAD"))
    assert complete, f"{method} {target}: incomplete response {r!r}"
    return r


def get_env(port: int, target: str, **kw) -> dict:
    return cu.env_dump(fetch(port, target, **kw))


def still_serving(srv) -> None:
    assert srv.alive(), f"the server died; stderr tail:\n{srv.stderr()[-3000:]}"
    r = fetch(srv.port, "/cgi/hello.sh")
    assert r.status == 200 and r.body == b"hello from cgi\n", r


def expected_env(site, srv, version, **over) -> dict:
    """The environment of a plain GET /cgi/env.py (no PATH_INFO, no query) on `srv`; keyword
    arguments override (None removes)."""
    env = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": f"aws/{version}",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": str(srv.port),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_METHOD": "GET",
        "REQUEST_URI": "/cgi/env.py",
        "QUERY_STRING": "",
        "SCRIPT_NAME": "/cgi/env.py",
        "SCRIPT_FILENAME": os.path.realpath(os.path.join(site.cgi, "env.py")),
        "REMOTE_ADDR": "127.0.0.1",
        "PATH": os.environ["PATH"],
        "CGI_SCRATCH": site.scratch,
        "CGI_TEST_VAR": "a=b c",
    }
    for k, v in over.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def assert_env(got: dict, want: dict, what: str) -> None:
    assert "AWS_SECRET_TEST" not in got["env"], f"{what}: the server's own environment leaked: {got['env']}"
    assert "HTTP_PROXY" not in got["env"], f"{what}: HTTP_PROXY set (httpoxy): {got['env']}"
    assert len(got["entries"]) == len(got["env"]), f"{what}: a variable is set twice: {got['entries']}"
    assert got["env"] == want, what


# --------------------------------------------------------------------------------------
# The environment
# --------------------------------------------------------------------------------------

def test_env_every_variable_of_a_get_with_path_info_query_and_headers(live, site, version):
    target = "/cgi/env.py/some/path%20x?a=1&b=%20&c"
    with awstest.connect(live.port, timeout=10) as s:
        local_port = s.getsockname()[1]
        s.sendall(req("GET", target, host="cgi.example.test:8080", close=False, headers=[
            ("Accept", "*/*"), ("X-Repeated", "one"), ("X-Dashed-Name-Here", "dashed value"),
            ("x-repeated", "two"), ("Proxy", "http://proxy.evil.test:3128")]))
        rd = pu.Reader(s)
        r, complete = rd.read_response(timeout=10)
        assert complete, r
        want = expected_env(
            site, live, version, SERVER_NAME="cgi.example.test", REQUEST_URI=target,
            QUERY_STRING="a=1&b=%20&c", PATH_INFO="/some/path x",
            PATH_TRANSLATED=os.path.realpath(site.root) + "/some/path x", REMOTE_PORT=str(local_port),
            HTTP_HOST="cgi.example.test:8080", HTTP_ACCEPT="*/*", HTTP_X_REPEATED="one, two",
            HTTP_X_DASHED_NAME_HERE="dashed value")
        assert_env(cu.env_dump(r), want, f"GET {target}")

        # The same connection, no query, no PATH_INFO, no other header: QUERY_STRING empty but
        # set, PATH_INFO and PATH_TRANSLATED absent.
        s.sendall(req("GET", "/cgi/env.py", close=False))
        r, complete = rd.read_response(timeout=10)
        assert complete, r
        want = expected_env(site, live, version, REMOTE_PORT=str(local_port), HTTP_HOST="127.0.0.1")
        assert_env(cu.env_dump(r), want, "GET /cgi/env.py (second request on the connection)")


def test_env_http10_without_host(live, site, version):
    with awstest.connect(live.port, timeout=10) as s:
        local_port = s.getsockname()[1]
        s.sendall(b"GET /cgi/env.py?x=%41 HTTP/1.0\r\n\r\n")
        data = awstest.recv_until_eof(s, timeout=10)
    r = awstest.parse_response(data)
    want = expected_env(site, live, version, SERVER_PROTOCOL="HTTP/1.0", REQUEST_URI="/cgi/env.py?x=%41",
                        QUERY_STRING="x=%41", REMOTE_PORT=str(local_port))
    assert_env(cu.env_dump(r), want, "HTTP/1.0 GET without Host")


def test_env_body_variables_only_with_a_body(live, site, version):
    body = b"a=1&b=two"
    with awstest.connect(live.port, timeout=10) as s:
        local_port = s.getsockname()[1]
        s.sendall(req("POST", "/cgi/env.py", body=body, close=False,
                      headers=[("Content-Type", "application/x-www-form-urlencoded")]))
        r, complete = pu.Reader(s).read_response(timeout=10)
    assert complete, r
    got = cu.env_dump(r)
    want = expected_env(site, live, version, REQUEST_METHOD="POST", REMOTE_PORT=str(local_port),
                        HTTP_HOST="127.0.0.1", CONTENT_LENGTH=str(len(body)),
                        CONTENT_TYPE="application/x-www-form-urlencoded")
    assert "HTTP_CONTENT_LENGTH" not in got["env"] and "HTTP_CONTENT_TYPE" not in got["env"], got["env"]
    assert_env(got, want, "POST with a form body")
    assert got["stdin_len"] == len(body) and got["stdin_sha256"] == awstest.sha256(body), got

    # Without a body: neither variable, stdin empty (and at EOF: the program read it to the end).
    got = get_env(live.port, "/cgi/env.py")
    assert "CONTENT_LENGTH" not in got["env"] and "CONTENT_TYPE" not in got["env"], got["env"]
    assert got["stdin_len"] == 0, got


@pytest.mark.parametrize("method,body", [("PUT", b"put body\n"), ("DELETE", None), ("PATCH", b"{}")])
def test_env_other_methods_reach_the_program(live, method, body):
    got = cu.env_dump(fetch(live.port, "/cgi/env.py", method=method, body=body))
    assert got["env"]["REQUEST_METHOD"] == method, got["env"]
    if body is None:
        assert "CONTENT_LENGTH" not in got["env"] and got["stdin_len"] == 0, got
    else:
        assert got["env"]["CONTENT_LENGTH"] == str(len(body)), got["env"]
        assert got["stdin_len"] == len(body) and got["stdin_sha256"] == awstest.sha256(body), got


def test_program_runs_in_its_folder_with_only_stdin_stdout_stderr(live, site):
    # Idle connections held open meanwhile: none of the server's descriptors (these sockets, the
    # listeners, epoll, pipes of other programs...) may reach the program.
    idle = [awstest.connect(live.port, timeout=5) for _ in range(5)]
    try:
        got = get_env(live.port, "/cgi/env.py")
    finally:
        for s in idle:
            s.close()
    assert sorted(got["fds"], key=int) == ["0", "1", "2"], f"descriptors open in the program: {got['fds']}"
    assert got["cwd"] == os.path.realpath(site.cgi), got["cwd"]
    script = got["argv"][0]
    assert os.path.realpath(os.path.join(got["cwd"], script)) == os.path.realpath(os.path.join(site.cgi, "env.py")), \
        got["argv"]


def test_program_name_is_one_decoded_segment(live, site):
    got = get_env(live.port, "/cgi/%65nv.py/p%61th")
    assert got["env"]["SCRIPT_FILENAME"] == os.path.realpath(os.path.join(site.cgi, "env.py")), got["env"]
    assert got["env"]["PATH_INFO"] == "/path", got["env"]
    assert got["env"]["REQUEST_URI"] == "/cgi/%65nv.py/p%61th", got["env"]


def test_symlinked_root_and_cgi_folder_give_real_paths(cgi_server, site):
    srv = cgi_server(["--cgi-dir", os.path.join(site.base, "cgilink")], root=os.path.join(site.base, "rootlink"))
    got = get_env(srv.port, "/cgi/env.py/x/y")
    real_root = os.path.realpath(site.root)
    assert real_root != os.path.join(site.base, "rootlink")
    env = got["env"]
    assert env["SCRIPT_FILENAME"] == os.path.join(os.path.realpath(site.cgi), "env.py"), env
    assert env["PATH_TRANSLATED"] == real_root + "/x/y", env
    assert env["PATH_INFO"] == "/x/y" and env["SCRIPT_NAME"] == "/cgi/env.py", env
    assert got["cwd"] == os.path.realpath(site.cgi), got


def test_cgi_script_mode_runs_one_program_for_every_path(cgi_server, site):
    solo = os.path.join(site.solo, "env.py")
    srv = cgi_server(["--cgi-script", solo])
    for target, path_info, query in (("/cgi/a/b?q=1", "/a/b", "q=1"), ("/cgi/hello.sh", "/hello.sh", "")):
        got = get_env(srv.port, target)
        env = got["env"]
        assert env["SCRIPT_NAME"] == "/cgi", (target, env)
        assert env["PATH_INFO"] == path_info, (target, env)
        assert env["PATH_TRANSLATED"] == os.path.realpath(site.root) + path_info, (target, env)
        assert env["QUERY_STRING"] == query, (target, env)
        assert env["SCRIPT_FILENAME"] == os.path.realpath(solo), (target, env)
        assert env["REQUEST_URI"] == target, (target, env)
        assert got["cwd"] == os.path.realpath(site.solo), (target, got)


# --------------------------------------------------------------------------------------
# Request bodies
# --------------------------------------------------------------------------------------

def check_echo(r, data: bytes, what: str) -> None:
    assert r.status == 200, f"{what}: {r!r}"
    assert r.header("x-read-bytes") == str(len(data)), f"{what}: the program read {r.header('x-read-bytes')} bytes"
    assert r.header("x-read-sha256") == awstest.sha256(data), f"{what}: the program read other bytes"
    assert r.header("x-content-length") == str(len(data)), f"{what}: CONTENT_LENGTH={r.header('x-content-length')}"
    assert len(r.body) == len(data) and r.body == data, f"{what}: the echo differs ({len(r.body)} bytes)"


def test_post_1mib_with_content_length_round_trip(live):
    data = awstest.content("cgi/post-cl", MIB)
    conn = http.client.HTTPConnection(HOST, live.port, timeout=30)
    try:
        conn.request("POST", "/cgi/echo.py", body=data, headers={"Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        body = resp.read()
        headers = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    r = awstest.Response("HTTP/1.1", resp.status, resp.reason, headers, resp.getheaders(), body, b"", b"")
    check_echo(r, data, "1 MiB POST with Content-Length")


def test_post_1mib_chunked_round_trip(live):
    data = awstest.content("cgi/post-chunked", MIB)
    with awstest.connect(live.port, timeout=30) as s:
        pu.send_request(s, "POST", "/cgi/echo.py", body=data, chunked=True, chunk_size=10007, close=True,
                        headers={"Content-Type": "application/octet-stream"})
        r, complete = pu.Reader(s).read_response(timeout=30)
    assert complete, r
    check_echo(r, data, "1 MiB chunked POST")


def test_content_length_body_is_streamed_to_the_program(live):
    """The program answers after 5 bytes of a 10-byte body: that answer must arrive while the
    client still holds back the other 5 (a server collecting the body first would hang)."""
    with awstest.connect(live.port, timeout=10) as s:
        s.sendall(b"POST /cgi/first.py HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\nabcde")
        rd = pu.Reader(s)
        head = rd.read_head(time.monotonic() + 5)
        assert head.status == 200, head
        while b"first abcde\n" not in rd.buf:
            assert rd._fill(time.monotonic() + 5), rd.buf
        s.sendall(b"fghij")
        body, complete = rd.read_chunked_body(time.monotonic() + 10)
    assert complete and body == b"first abcde\nrest 5\n", (body, complete)


def test_large_upload_to_a_slow_program_keeps_memory_flat(cgi_server):
    """48 MiB sent as fast as the client can to a program that reads nothing for 1.5 s: the
    server stops reading the socket while the pipe is full instead of buffering the body."""
    size = 48 * MIB
    srv = cgi_server(["--max-body", str(64 * MIB)], name="cgi-upload")
    pid = srv.server_pid()
    still_serving(srv)
    time.sleep(0.2)
    base = cu.rss_kib(pid)
    block = awstest.content("cgi/upload-block", MIB)
    h = hashlib.sha256()
    for _ in range(48):
        h.update(block)
    errors = []
    with awstest.connect(srv.port, timeout=30) as s:
        def send():
            try:
                s.sendall(b"POST /cgi/slowread.py HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                          b"Content-Length: %d\r\n\r\n" % size)
                for _ in range(48):
                    s.sendall(block)
            except OSError as e:
                errors.append(e)
        t = threading.Thread(target=send, daemon=True)
        t.start()
        samples = []
        for _ in range(10):           # while the program sleeps
            time.sleep(0.1)
            samples.append(cu.rss_kib(pid))
        r, complete = pu.Reader(s).read_response(timeout=30)
        t.join(10)
    assert not errors, errors
    assert complete and r.status == 200, r
    assert r.body == b"%d %s\n" % (size, h.hexdigest().encode()), r
    growth = max(samples) - base
    print(f"48 MiB upload to a sleeping program: RSS base {base} KiB, peak {max(samples)} KiB")
    assert growth < 16 * 1024, f"server RSS grew by {growth} KiB during a 48 MiB upload to a program not reading it"


def test_body_over_max_body_is_413_and_the_program_not_started(cgi_server, site):
    """--max-body 1000: a Content-Length of 1500 (the head alone is sent), and a chunked body of
    3 x 600 bytes (small enough that the server reads it all before it answers and closes)."""
    srv = cgi_server(["--max-body", "1000"], name="cgi-maxbody")
    for chunked in (False, True):
        tok = cu.token()
        head = f"POST /cgi/marker.sh?{tok} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if chunked:
            data = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"".join(
                b"258\r\n" + b"m" * 600 + b"\r\n" for _ in range(3)) + b"0\r\n\r\n"
        else:
            data = (head + "Content-Length: 1500\r\n\r\n").encode()
        with Conn(srv.port, timeout=10) as c:
            c.send(data)
            r = c.final_response(timeout=10)
        assert r.status == 413, f"chunked={chunked}: {r!r}"
        assert not os.path.exists(site.scratch_path(f"{tok}.ran")), f"chunked={chunked}: the program ran"
    still_serving(srv)


def test_pipelined_requests_are_answered_in_order(live):
    reqs = b"".join(req("GET", f"/cgi/query.sh?pipe{i}", close=(i == 2)) for i in range(3))
    with awstest.connect(live.port, timeout=10) as s:
        s.sendall(reqs)
        rd = pu.Reader(s)
        for i in range(3):
            r, complete = rd.read_response(timeout=10)
            assert complete and r.status == 200 and r.body == query_body(f"pipe{i}"), (i, r)


# --------------------------------------------------------------------------------------
# The program's header block
# --------------------------------------------------------------------------------------

def test_status_header_sets_the_status(live):
    r = fetch(live.port, "/cgi/status201.sh")
    assert r.status == 201 and r.body == b"created by the program\n", r
    r = fetch(live.port, "/cgi/status404.sh")
    assert r.status == 404 and r.body == b"the program says: no such thing\n", r
    assert r.media_type == "text/plain", r
    assert r.header("status") is None, f"the Status field itself was passed on: {r!r}"


def test_header_names_are_case_insensitive(live):
    r = fetch(live.port, "/cgi/lowercase.sh")
    assert r.status == 404 and r.media_type == "text/plain" and r.body == b"lower-case names\n", r
    assert r.header("x-lower") == "1" and r.header("status") is None, r


def test_exit_status_does_not_change_a_complete_answer(live):
    r = fetch(live.port, "/cgi/exit3.sh")
    assert r.status == 200 and r.body == b"answered, then failed\n", r


def test_status_204_sends_no_body(live):
    with awstest.connect(live.port, timeout=10) as s:
        rd = pu.Reader(s)
        s.sendall(req("GET", "/cgi/status204.sh", close=False))
        r, complete = rd.read_response(timeout=10)
        assert r.status == 204 and r.header("x-was") == "204", r
        assert r.header("transfer-encoding") is None and r.header("content-length") is None, r
        s.sendall(req("GET", "/cgi/hello.sh"))     # no body bytes came between the two answers
        r2, complete = rd.read_response(timeout=10)
        assert complete and r2.status == 200 and r2.body == b"hello from cgi\n", r2


def test_local_location_is_an_internal_redirect(live, site):
    for method, body in (("GET", None), ("POST", b"x=1")):
        r = fetch(live.port, "/cgi/loc_local.sh", method=method, body=body)
        assert r.status == 200, f"{method}: {r!r}"
        assert r.body == PAGE, f"{method}: not the file's bytes: {r!r}"
        assert r.header("location") is None, f"{method}: {r!r}"
        assert r.media_type == "text/plain" and r.content_length == len(PAGE), f"{method}: {r!r}"
        assert b"DISCARDED" not in r.body


def test_local_location_to_a_program_runs_it_with_get(live):
    for method, body in (("GET", None), ("POST", b"x=1")):
        r = fetch(live.port, "/cgi/loc_cgi.sh", method=method, body=body)
        assert r.status == 200 and r.header("x-method") == "GET", f"{method}: {r!r}"
        assert r.body == b"method GET body\n", f"{method}: {r!r}"


def test_internal_redirect_loop_ends(live):
    """A program redirecting to itself: the spec says nothing of loops; the server must end
    it with an error (not hang or run it forever)."""
    t0 = time.monotonic()
    r = fetch(live.port, "/cgi/loop.sh")
    assert 500 <= r.status < 600, r
    assert time.monotonic() - t0 < 5
    still_serving(live)


def test_absolute_location_is_302_and_status_with_location_is_kept(live):
    r = fetch(live.port, "/cgi/loc_abs.sh")
    assert r.status == 302, r
    assert r.header("location") == "http://example.test/elsewhere?x=1", r
    assert cu.header_count(r, "location") == 1, r
    # with a Status, a local Location is not an internal redirect
    r = fetch(live.port, "/cgi/loc302_local.sh")
    assert r.status == 302, r
    assert r.header("location") == "/static/page.txt" and r.body == b"see the page\n", r
    r = fetch(live.port, "/cgi/loc301.sh")
    assert r.status == 301 and r.header("location") == "https://example.test/moved", r
    assert r.body == b"moved\n", r


def test_302_status_line_says_found(live):
    """The spec: `Location: http://...` -> `302 Found`."""
    for target in ("/cgi/loc_abs.sh", "/cgi/loc302_local.sh"):
        r = fetch(live.port, target)
        assert r.status == 302 and r.reason == "Found", f"{target}: status line {r.head.splitlines()[0]!r}"


def test_header_fields_pass_through_except_the_servers_own(live, version):
    with awstest.connect(live.port, timeout=10) as s:
        rd = pu.Reader(s)
        s.sendall(req("GET", "/cgi/headers.sh", close=False))
        r, complete = rd.read_response(timeout=10)
        assert complete and r.status == 200, r
        assert r.body == b"body of headers.sh\n", r
        assert r.header("x-custom") == "custom value 1", r
        assert cu.header_values(r, "set-cookie") == ["a=1", "b=2"], r
        assert cu.header_values(r, "server") == [f"aws/{version}"], r
        dates = cu.header_values(r, "date")
        assert len(dates) == 1 and "1970" not in dates[0], r
        assert r.header("upgrade") is None, r
        assert "99" not in (r.header("keep-alive") or ""), r
        assert "close" not in connection_tokens(r), r
        assert cu.header_values(r, "transfer-encoding") == ["chunked"], r
        # The program's "Connection: close" did not close the connection.
        s.sendall(req("GET", "/cgi/hello.sh"))
        r2, complete = rd.read_response(timeout=10)
        assert complete and r2.status == 200 and r2.body == b"hello from cgi\n", r2


def test_programs_content_length_is_used_and_the_connection_kept(live):
    with awstest.connect(live.port, timeout=10) as s:
        rd = pu.Reader(s)
        for _ in range(2):
            s.sendall(req("GET", "/cgi/clen.sh", close=False))
            r, complete = rd.read_response(timeout=10)
            assert complete and r.status == 200 and r.body == b"hello world\n", r
            assert r.content_length == 12 and r.header("transfer-encoding") is None, r
            assert "close" not in connection_tokens(r), r


def test_fewer_bytes_than_content_length_end_the_connection(live):
    with Conn(live.port, timeout=10) as c:
        c.send(req("GET", "/cgi/clen_short.sh", close=False))
        closed, data = c.closed_within(8)
    assert closed, f"the connection was not closed after the program's short body: {data[:300]!r}"
    r = awstest.parse_response(data, complete=False)
    assert r.status == 200 and r.content_length == 100, r
    assert r.body == b"0123456789", r


def test_bytes_beyond_content_length_are_dropped_and_the_connection_closed(live):
    with Conn(live.port, timeout=10) as c:
        c.send(req("GET", "/cgi/clen_extra.sh", close=False))
        closed, data = c.closed_within(8)
    assert closed, f"the connection was not closed after the program's extra bytes: {data[:300]!r}"
    r = awstest.parse_response(data)
    assert r.status == 200 and r.content_length == 5 and r.body == b"abcde", r
    assert r.rest == b"", f"bytes after the declared length: {r.rest!r}"


def test_no_content_length_is_chunked_on_http11(live):
    with awstest.connect(live.port, timeout=10) as s:
        rd = pu.Reader(s)
        s.sendall(req("GET", "/cgi/noclen.sh", close=False))
        r, complete = rd.read_response(timeout=10)
        assert complete and r.status == 200, r
        assert cu.header_values(r, "transfer-encoding") == ["chunked"] and r.content_length is None, r
        assert r.body == noclen_body(), r
        s.sendall(req("GET", "/cgi/hello.sh"))
        r2, complete = rd.read_response(timeout=10)
        assert complete and r2.status == 200 and r2.body == b"hello from cgi\n", r2


def test_no_content_length_is_close_delimited_on_http10(live):
    # Even when the HTTP/1.0 client asks to keep the connection.
    data = awstest.raw_request(live.port, b"GET /cgi/noclen.sh HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
                               timeout=15)
    r = awstest.parse_response(data)
    assert r.status == 200, r
    assert r.header("transfer-encoding") is None and r.content_length is None, r
    assert "close" in connection_tokens(r), r
    assert r.body == noclen_body(), r


def test_head_runs_the_program_and_sends_the_head_only(live):
    for target, clen in (("/cgi/method.sh", None), ("/cgi/clen.sh", 12)):
        data = awstest.raw_request(live.port, req("HEAD", target), timeout=10)
        head, sep, after = data.partition(b"\r\n\r\n")
        assert sep and after == b"", f"HEAD {target}: bytes after the head: {data!r}"
        r = awstest.parse_response(data, head_request=True)
        assert r.status == 200, r
        if clen is None:
            assert r.header("x-method") == "HEAD", f"the program did not run with REQUEST_METHOD=HEAD: {r!r}"
        else:
            assert r.content_length == clen, r
    r = fetch(live.port, "/cgi/method.sh")
    assert r.header("x-method") == "GET" and r.body == b"method GET body\n", r


def test_header_block_under_32_kib_is_accepted(live):
    r = fetch(live.port, "/cgi/okhead.sh")
    assert r.status == 200 and r.body == b"PROGRAM-BODY\n", r
    pads = [(n, v) for n, v in r.raw_headers if n.lower().startswith("x-pad-")]
    assert len(pads) == 200 and pads[0] == ("X-Pad-000", "0" * 100), pads[:3]


# --------------------------------------------------------------------------------------
# Errors: 404, 403, 502
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["/cgi/missing.sh", "/cgi/missing.sh/extra/path?x=1", "/cgi", "/cgi/"])
def test_missing_program_is_404(live, target):
    r = fetch(live.port, target)
    assert r.status == 404, r


@pytest.mark.parametrize("target", ["/cgi/notexec.sh", "/cgi/subdir", "/cgi/subdir/inner.sh", "/cgi/link-outside",
                                    "/cgi/link-outside-abs", "/cgi/linkdir/evil.sh"])
def test_not_a_program_inside_the_folder_is_403(live, site, target):
    r = fetch(live.port, target)
    assert r.status == 403, r
    assert not os.path.exists(site.scratch_path("evil-ran")), "a program outside the cgi folder ran"


def test_traversal_never_runs_a_program_outside(live, site):
    for target in ("/cgi/..%2foutside%2fevil.sh", "/cgi/%2e%2e/outside/evil.sh", "/cgi/..%2F..%2Foutside%2Fevil.sh"):
        r = fetch(live.port, target)
        assert 400 <= r.status < 500, f"{target}: {r!r}"
        assert b"EVIL" not in r.body, f"{target}: {r!r}"
    assert not os.path.exists(site.scratch_path("evil-ran")), "a program outside the cgi folder ran"


def test_symlink_inside_the_folder_runs(live):
    r = fetch(live.port, "/cgi/link-inside")
    assert r.status == 200 and r.body == b"hello from cgi\n", r


@pytest.mark.parametrize("name", ["noheader.sh", "nothing.sh", "malformed.sh", "badname.sh", "nocontent.sh",
                                  "bighead.sh"])
def test_bad_header_block_is_502(live, name):
    r = fetch(live.port, f"/cgi/{name}")
    assert r.status == 502, r
    assert b"PROGRAM-BODY" not in r.body, f"the program's body was sent with the 502: {r!r}"
    still_serving(live)


# --------------------------------------------------------------------------------------
# Timeouts, disconnects, limits
# --------------------------------------------------------------------------------------

def test_silent_program_gets_504_and_is_killed(timeout_srv, site):
    tok = cu.token()
    t0 = time.monotonic()
    r = fetch(timeout_srv.port, f"/cgi/sleeper.sh?{tok}")
    elapsed = time.monotonic() - t0
    assert r.status == 504, r
    assert 0.9 <= elapsed <= 6.0, f"504 after {elapsed:.2f}s with --cgi-timeout 1"
    pid = cu.read_pid(site.scratch_path(f"{tok}.pid"))
    assert cu.wait_for(lambda: cu.gone(pid), 5), f"the timed-out program is still there: {cu.process_state(pid)}"
    still_serving(timeout_srv)


def test_program_silent_after_its_head_is_killed_and_the_body_cut(timeout_srv, site):
    tok = cu.token()
    with awstest.connect(timeout_srv.port, timeout=10) as s:
        s.sendall(req("GET", f"/cgi/stall.sh?{tok}", close=False))
        rd = pu.Reader(s)
        head = rd.read_head(time.monotonic() + 10)
        t0 = time.monotonic()
        assert head.status == 200 and "chunked" in (head.header("transfer-encoding") or ""), head
        body, complete = rd.read_chunked_body(time.monotonic() + 10)
        elapsed = time.monotonic() - t0
    assert body == b"partial\n", body
    assert not complete, "the body of a killed program was ended as if it were complete"
    assert 0.5 <= elapsed <= 6.0, f"the connection ended {elapsed:.2f}s after the head (--cgi-timeout 1)"
    pid = cu.read_pid(site.scratch_path(f"{tok}.pid"))
    assert cu.wait_for(lambda: cu.gone(pid), 5), cu.process_state(pid)


def test_timeout_counts_silence_not_running_time(timeout_srv):
    t0 = time.monotonic()
    r = fetch(timeout_srv.port, "/cgi/ticker.sh")
    elapsed = time.monotonic() - t0
    assert r.status == 200, r
    assert r.body == b"".join(b"tick %d\n" % i for i in range(1, 8)), r
    assert elapsed >= 1.8, f"7 ticks 0.3 s apart took {elapsed:.2f}s"


@pytest.mark.parametrize("variant", ["", "/stubborn"])
def test_client_leaving_mid_output_kills_the_program(live, site, variant):
    """The program survives a broken pipe (and, stubborn, ignores SIGTERM): only the server's
    SIGTERM (SIGKILL 2 s later) ends it."""
    tok = cu.token()
    with awstest.connect(live.port, timeout=10) as s:
        s.sendall(req("GET", f"/cgi/stream.py{variant}?{tok}", close=False))
        got = b""
        while len(got) < 256 * KIB:
            b = s.recv(64 * KIB)
            assert b, f"EOF after {len(got)} bytes"
            got += b
        assert got.startswith(b"HTTP/1.1 200 "), got[:200]
    pid = cu.read_pid(site.scratch_path(f"{tok}.pid"))
    limit = 8.0 if variant else 5.0
    assert cu.wait_for(lambda: cu.gone(pid), limit), \
        f"the program is still there {limit}s after the client left: {cu.process_state(pid)}"
    assert cu.wait_for(lambda: not cu.zombies(live.server_pid()), 5), cu.zombies(live.server_pid())
    still_serving(live)


def test_cgi_max_refuses_over_the_limit_with_503_then_recovers(cgi_server, site):
    srv = cgi_server(["--cgi-max", "2"])
    holds = [cu.token(), cu.token()]
    socks = []
    try:
        for tok in holds:
            s = awstest.connect(srv.port, timeout=10)
            socks.append(s)
            s.sendall(req("GET", f"/cgi/hold.py?{tok}"))
        readers = [pu.Reader(s) for s in socks]
        for rd in readers:   # each program has started and sent its head: two are running
            head = rd.read_head(time.monotonic() + 10)
            assert head.status == 200 and "chunked" in (head.header("transfer-encoding") or ""), head
        third = cu.token()
        r = fetch(srv.port, f"/cgi/marker.sh?{third}")
        assert r.status == 503, r
        assert r.header("retry-after") == "1", r
        time.sleep(0.2)
        assert not os.path.exists(site.scratch_path(f"{third}.ran")), "the program over the limit was started"
        for tok in holds:
            with open(site.scratch_path(f"{tok}.release"), "w"):
                pass
        for rd in readers:
            body, complete = rd.read_chunked_body(time.monotonic() + 10)
            assert complete and body == b"holding\nreleased\n", (body, complete)
    finally:
        for s in socks:
            s.close()
    # Both programs have ended: a new one is started again (once the server has reaped them).
    results = []

    def one_more():
        tok = cu.token()
        r = fetch(srv.port, f"/cgi/marker.sh?{tok}")
        results.append((tok, r))
        return r.status != 503

    assert cu.wait_for(one_more, 5, interval=0.1), f"still 503 after the running programs ended: {results[-1]}"
    tok, r = results[-1]
    assert r.status == 200 and r.body == f"marker {tok}\n".encode(), r
    assert os.path.exists(site.scratch_path(f"{tok}.ran"))


def test_50mib_output_to_a_slow_reader_keeps_memory_flat(cgi_server):
    srv = cgi_server(name="cgi-memory")
    pid = srv.server_pid()
    still_serving(srv)                 # warm-up: one CGI request
    time.sleep(0.2)
    base = cu.rss_kib(pid)
    samples = []
    chunks = []
    with awstest.connect(srv.port, timeout=10, rcvbuf=64 * KIB) as s:
        s.sendall(req("GET", "/cgi/big.py"))
        time.sleep(1.0)               # the program could write all 50 MiB in this time
        samples.append(cu.rss_kib(pid))
        deadline = time.monotonic() + 60
        n = 0
        while True:
            assert time.monotonic() < deadline, f"only {sum(map(len, chunks))} bytes after 60 s"
            b = s.recv(32 * KIB)     # small sips
            if not b:
                break
            chunks.append(b)
            n += 1
            if n % 64 == 0:
                samples.append(cu.rss_kib(pid))
            time.sleep(0.001)
    data = b"".join(chunks)
    head, sep, rest = data.partition(b"\r\n\r\n")
    r = awstest.parse_response(head + sep, head_request=True)
    assert r.status == 200 and "chunked" in (r.header("transfer-encoding") or ""), r
    body, after = cu.decode_chunked(rest)
    assert after == b"", f"{len(after)} bytes after the last chunk"
    assert len(body) == BIG_BLOCKS * len(BIG_BLOCK), len(body)
    assert awstest.sha256(body) == big_expected_sha(), "the 50 MiB body differs"
    growth = max(samples) - base
    print(f"50 MiB to a slow reader: RSS base {base} KiB, after the 1 s pause {samples[0]} KiB, "
          f"peak {max(samples)} KiB, {len(samples)} samples")
    assert growth < 16 * 1024, (f"server RSS grew by {growth} KiB while a slow client read 50 MiB "
                                f"(base {base} KiB, samples {samples[:5]}...{samples[-3:]})")


def test_stderr_lines_are_logged_with_the_program_name(live):
    tok = cu.token()
    mark = pu.log_mark(live)
    r = fetch(live.port, f"/cgi/stderr.sh?{tok}")
    assert r.status == 200 and r.body == b"stderr test\n", r
    for word in ("one", "two"):
        rx = rf"(?m)^\S+ warning .*\bcgi stderr\.sh: problem {word} {tok}$"
        assert pu.wait_log(live, rx, timeout=5, since=mark), \
            f"no log line matching {rx!r}; log since the request:\n{live.stderr()[mark:][-2000:]}"


def test_stderr_flood_does_not_block_the_program(live):
    tok = cu.token()
    mark = pu.log_mark(live)
    r = fetch(live.port, f"/cgi/stderr_flood.sh?{tok}")
    assert r.status == 200 and r.body == b"after the flood\n", r
    rx = rf"(?m)^\S+ warning .*\bcgi stderr_flood\.sh: flood {tok} line 2999 padding"
    assert pu.wait_log(live, rx, timeout=5, since=mark), f"the last stderr line was not logged ({rx!r})"


def test_end_of_stdout_ends_the_answer_while_the_program_runs_on(live, site):
    tok = cu.token()
    t0 = time.monotonic()
    r = fetch(live.port, f"/cgi/closeout.sh?{tok}")
    elapsed = time.monotonic() - t0
    assert r.status == 200 and r.body == b"done early\n", r
    assert elapsed < 2.0, f"the answer took {elapsed:.2f}s: the server waited for the exit, not for EOF on stdout"
    pid = cu.read_pid(site.scratch_path(f"{tok}.pid"))
    # reaped once it exits (3 s after it started)
    assert cu.wait_for(lambda: cu.gone(pid), 8), cu.process_state(pid)


def test_server_shutdown_leaves_no_program_behind(site):
    """SIGTERM with a program running (the spec says nothing of shutdown): once the grace period
    is over the server exits, and the program must not outlive it."""
    srv = cu.start(awstest.Server(site.root, args=cgi_args(site) + ["--shutdown-grace", "1"], name="cgi-shutdown"))
    try:
        tok = cu.token()
        with awstest.connect(srv.port, timeout=10) as s:
            s.sendall(req("GET", f"/cgi/hold.py?{tok}"))
            head = pu.Reader(s).read_head(time.monotonic() + 10)
            assert head.status == 200, head
            pid = cu.read_pid(site.scratch_path(f"{tok}.pid"))
            rc, killed = srv.stop(timeout=8)
    finally:
        if srv.alive():
            srv.kill()
    assert not killed, "the server did not exit within 8 s of SIGTERM (grace 1 s)"
    assert srv.crash_message(rc) is None, srv.crash_message(rc)
    assert cu.wait_for(lambda: cu.gone(pid), 5), f"the program outlived the server: {cu.process_state(pid)}"


# --------------------------------------------------------------------------------------
# Many at once, workers, clean-up
# --------------------------------------------------------------------------------------

def run_mixed(port: int, count: int, tag: str, post_every: int = 5) -> list:
    """`count` connections at once (a barrier), each one request: GET query.sh?<unique>, or
    every `post_every`-th a 64 KiB POST to echo.py. Returns the list of failures."""
    barrier = threading.Barrier(count)

    def one(i):
        try:
            with awstest.connect(port, timeout=30) as s:
                barrier.wait(30)
                if post_every and i % post_every == 0:
                    data = awstest.content(f"cgi/{tag}/{i}", 64 * KIB + i)
                    pu.send_request(s, "POST", "/cgi/echo.py", body=data, close=True)
                    r, complete = pu.Reader(s).read_response(timeout=60)
                    assert complete, r
                    check_echo(r, data, f"POST {i}")
                else:
                    q = f"{tag}-{i}"
                    s.sendall(req("GET", f"/cgi/query.sh?{q}"))
                    r, complete = pu.Reader(s).read_response(timeout=60)
                    assert complete and r.status == 200, r
                    assert r.header("x-query") == q and r.body == query_body(q), r
            return None
        except Exception as e:  # reported by the caller
            return f"request {i}: {type(e).__name__}: {e}"

    with concurrent.futures.ThreadPoolExecutor(count) as ex:
        return [f for f in ex.map(one, range(count)) if f]


def test_100_concurrent_requests_each_answered_right(burst_srv):
    failures = run_mixed(burst_srv.port, 100, f"c{cu.token()}")
    assert not failures, f"{len(failures)} of 100 failed:\n" + "\n".join(failures[:10])
    assert cu.wait_for(lambda: not cu.zombies(burst_srv.server_pid()), 5), cu.zombies(burst_srv.server_pid())


def test_no_zombies_and_no_descriptor_left_after_a_burst(burst_srv, site):
    pid = burst_srv.server_pid()
    kinds = [("/cgi/hello.sh", 200), ("/cgi/nothing.sh", 502), ("/cgi/missing.sh", 404),
             ("/cgi/notexec.sh", 403), ("/cgi/status404.sh", 404), ("/cgi/noclen.sh", 200)]

    def burst(rounds: int) -> list:
        def one(i):
            target, status = kinds[i % len(kinds)]
            r = fetch(burst_srv.port, target)
            return None if r.status == status else f"{target}: {r!r}"
        with concurrent.futures.ThreadPoolExecutor(32) as ex:
            return [f for f in ex.map(one, range(rounds)) if f]

    # Warm-up: enough connections to reach every worker, every kind of answer.
    ncpu = len(os.sched_getaffinity(0))
    assert not burst(max(64, 16 * ncpu))
    assert not run_mixed(burst_srv.port, 16, "warm")
    assert cu.wait_for(lambda: not cu.zombies(pid), 5)
    prev = None

    def settled():
        nonlocal prev
        now = len(cu.fd_table(pid))
        same, prev = now == prev, now
        return same
    cu.wait_for(settled, 5, interval=0.2)
    baseline = cu.fd_table(pid)

    failures = burst(300) + run_mixed(burst_srv.port, 60, f"b{cu.token()}")
    # and a client that leaves mid-output
    tok = cu.token()
    with awstest.connect(burst_srv.port, timeout=10) as s:
        s.sendall(req("GET", f"/cgi/stream.py?{tok}", close=False))
        assert s.recv(64 * KIB)
    spid = cu.read_pid(site.scratch_path(f"{tok}.pid"))
    assert not failures, "\n".join(failures[:10])
    assert cu.wait_for(lambda: cu.gone(spid), 5), cu.process_state(spid)

    assert cu.wait_for(lambda: not cu.zombies(pid), 5), f"zombie children: {cu.zombies(pid)}"
    assert cu.wait_for(lambda: len(cu.fd_table(pid)) <= len(baseline), 10), (
        f"descriptors: {len(baseline)} before the burst, {len(cu.fd_table(pid))} after; new ones: "
        f"{sorted(set(cu.fd_table(pid).items()) - set(baseline.items()))[:20]}")


def test_two_workers_serve_a_burst(cgi_server):
    srv = cgi_server(["--workers", "2", "--cgi-max", "200"], name="cgi-workers2")
    assert re.search(r"\b2 worker\(s\)", srv.stderr()), srv.stderr()[-2000:]
    for n in (80, 80):
        failures = run_mixed(srv.port, n, f"w{cu.token()}")
        assert not failures, f"{len(failures)} of {n} failed:\n" + "\n".join(failures[:10])
    assert cu.wait_for(lambda: not cu.zombies(srv.server_pid()), 5), cu.zombies(srv.server_pid())


# --------------------------------------------------------------------------------------
# HTTPS, --no-cgi
# --------------------------------------------------------------------------------------

def test_https_sets_HTTPS_on_and_plain_http_does_not(make_tls_server, pki, site):  # noqa: F811
    srv = make_tls_server(site.root, args=tu.cert_args(pki, sni=()) + cgi_args(site), name="cgi-tls")
    r = tu.curl(pki.root, srv.url("/cgi/env.py/tls?x=1"))
    assert r.rc == 0 and r.status == 200 and r.verify_result == 0, r
    env = json.loads(r.body)["env"]
    assert env.get("HTTPS") == "on", env
    assert env["SERVER_PORT"] == str(srv.tls_port) and env["PATH_INFO"] == "/tls", env
    assert env["QUERY_STRING"] == "x=1" and env["GATEWAY_INTERFACE"] == "CGI/1.1", env

    r = tu.curl(pki.root, srv.url("/cgi/env.py", tls=False))
    assert r.rc == 0 and r.status == 200, r
    env = json.loads(r.body)["env"]
    assert "HTTPS" not in env, env
    assert env["SERVER_PORT"] == str(srv.port), env

    # a 1 MiB POST over TLS
    data = awstest.content("cgi/tls-post", MIB)
    with tempfile.NamedTemporaryFile(prefix="aws-cgi-post-") as f:
        f.write(data)
        f.flush()
        r = tu.curl(pki.root, srv.url("/cgi/echo.py"), "--data-binary", f"@{f.name}",
                    "-H", "Content-Type: application/octet-stream")
    assert r.rc == 0 and r.status == 200, r
    assert r.header("x-read-sha256") == awstest.sha256(data) and r.body == data, r


def test_no_cgi_serves_the_folder_as_files(cgi_server, site):
    # (the server refuses --no-cgi together with --cgi-env: none here)
    srv = cgi_server(["--no-cgi"], name="cgi-off", with_cgi_env=False)
    r = fetch(srv.port, "/cgi/hello.sh")
    assert r.status == 200, r
    assert r.body == site.sources["hello.sh"], f"not the program's source text: {r!r}"
    assert r.content_length == len(site.sources["hello.sh"]), r
    r = fetch(srv.port, "/cgi/missing.sh")
    assert r.status == 404, r
    r = fetch(srv.port, "/cgi/env.py")
    assert r.status == 200 and r.body == site.sources["env.py"], r


CGI_ROUTE_PLUGIN = r"""
/* A plugin owning GET /cgi/hello.sh (exact): where a plugin route is registered, it wins. */
#include "testplugin.h"

static int on_request(aws_request req, const aws_request_view *view, void *user) {
    (void)view; (void)user;
    return reply_text(req, 200, "the plugin answered\n");
}

static const aws_handler handler = { .header = AWS_ABI_HEADER_INIT(aws_handler), .on_request = on_request };

static int init(const aws_host_api *api, aws_plugin_ctx *ctx) {
    tp_attach(api, ctx);
    return tp_route("GET", "/cgi/hello.sh", AWS_MATCH_EXACT, 0, &handler);
}

static const aws_plugin_descriptor descriptor = {
    .header = AWS_ABI_HEADER_INIT(aws_plugin_descriptor), .name = "cgiroute", .version = "0.1", .init = init,
};

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &descriptor; }
"""


def test_plugin_route_wins_over_cgi(cgi_server, site):
    src = os.path.join(pu.new_dir("cgiroute-src-"), "cgiroute.c")
    with open(src, "w") as f:
        f.write(CGI_ROUTE_PLUGIN)
    folder = pu.plugin_folder({"cgiroute": pu.compile_c(src)})
    srv = cgi_server(["--plugins", folder, "--strict-plugins"], name="cgi-plugin")
    r = fetch(srv.port, "/cgi/hello.sh")
    assert r.status == 200 and r.body == b"the plugin answered\n", r
    r = fetch(srv.port, "/cgi/query.sh?next-to-a-plugin")    # other programs still run
    assert r.status == 200 and r.body == query_body("next-to-a-plugin"), r


# --------------------------------------------------------------------------------------
# The examples in www/cgi
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def examples_srv():
    for name in ("env.sh", "form.py", "slow.sh"):
        path = os.path.join(EXAMPLES, name)
        assert os.path.isfile(path), f"the example {path} is missing"
        assert os.access(path, os.X_OK), f"the example {path} is not executable (chmod 755)"
    root = tempfile.mkdtemp(prefix="aws-cgi-examples-")
    os.chmod(root, 0o755)
    with open(os.path.join(root, "index.html"), "wb") as f:
        f.write(b"<!doctype html><title>examples</title>\n")
    try:
        with cu.running(root, ["--cgi-dir", EXAMPLES], name="cgi-examples", env=SECRET_ENV) as s:
            yield s
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_example_env_sh_prints_the_sorted_environment(examples_srv):
    r = fetch(examples_srv.port, "/cgi/env.sh/extra?x=1", headers=[("X-Example", "yes")])
    assert r.status == 200 and r.media_type == "text/plain", r
    lines = r.body.decode().splitlines()
    assert lines == sorted(lines), f"not sorted: {lines}"
    for want in ("GATEWAY_INTERFACE=CGI/1.1", "REQUEST_METHOD=GET", "QUERY_STRING=x=1", "PATH_INFO=/extra",
                 "SCRIPT_NAME=/cgi/env.sh", f"SCRIPT_FILENAME={os.path.realpath(os.path.join(EXAMPLES, 'env.sh'))}",
                 f"SERVER_PORT={examples_srv.port}", "HTTP_X_EXAMPLE=yes", f"PWD={os.path.realpath(EXAMPLES)}"):
        assert want in lines, f"{want!r} not in {lines}"
    assert not [ln for ln in lines if ln.startswith("AWS_SECRET_TEST=")], lines


def test_example_form_py_summarises_a_post(examples_srv):
    r = fetch(examples_srv.port, "/cgi/form.py", method="POST", body=b"name=x&age=3",
              headers=[("Content-Type", "application/x-www-form-urlencoded")])
    assert r.status == 200 and r.media_type == "text/plain", r
    assert r.body == (b"method: POST\ncontent-type: application/x-www-form-urlencoded\nbytes: 12\n"
                      b"fields: 2\nname = x\nage = 3\n"), r
    r = fetch(examples_srv.port, "/cgi/form.py", method="POST", body=b"raw\x00bytes\n",
              headers=[("Content-Type", "application/octet-stream")])
    assert r.status == 200 and r.body == (b"method: POST\ncontent-type: application/octet-stream\nbytes: 10\n"
                                          b"raw body (not a form)\n"), r
    r = fetch(examples_srv.port, "/cgi/form.py")
    assert r.status == 200 and r.media_type == "text/html", r
    assert b'<form method="post" action="/cgi/form.py">' in r.body, r
    r = fetch(examples_srv.port, "/cgi/form.py", method="DELETE")
    assert r.status == 405 and r.header("allow") == "GET, HEAD, POST", r


def test_example_slow_sh_streams_twenty_lines(examples_srv):
    t0 = time.monotonic()
    arrivals = []            # when each line's newline arrived
    with awstest.connect(examples_srv.port, timeout=10) as s:
        s.sendall(req("GET", "/cgi/slow.sh"))
        rd = pu.Reader(s)
        deadline = time.monotonic() + 20
        head = rd.read_head(deadline)
        assert head.status == 200 and head.media_type == "text/plain", head
        assert "chunked" in (head.header("transfer-encoding") or "") and head.content_length is None, head
        body = b""
        while True:   # chunk by chunk, noting arrival times
            while b"\r\n" not in rd.buf:
                assert rd._fill(deadline), f"EOF inside the body: {body!r}"
            size_line, rest = rd.buf.split(b"\r\n", 1)
            n = int(size_line.split(b";")[0], 16)
            if n == 0:
                break
            while len(rest) < n + 2:
                assert rd._fill(deadline), f"EOF inside a chunk: {body!r}"
                size_line, rest = rd.buf.split(b"\r\n", 1)
            body += rest[:n]
            rd.buf = rest[n + 2:]
            arrivals += [time.monotonic()] * rest[:n].count(b"\n")
    total = time.monotonic() - t0
    assert body == b"".join(b"line %d of 20\n" % i for i in range(1, 21)), body
    assert len(arrivals) == 20
    assert total >= 1.5, f"20 lines 100 ms apart took only {total:.2f}s"
    assert arrivals[-1] - arrivals[0] >= 1.2, (
        f"the lines did not arrive progressively: first at {arrivals[0] - t0:.2f}s, last at {arrivals[-1] - t0:.2f}s")
    assert total < 15, total
