"""The example plugins in Plugins/ end to end, each against its documented contract: echo, hello
(Swift), stream, upload, math (libffi function endpoints) and skeleton. The real binary, raw
sockets and curl, exact bytes.

An example whose .so and source are both missing is skipped (not written yet); a C example
whose .so is missing or stale is compiled from its source (see pluginutil.example_plugin)."""

import hashlib
import json
import os
import re
import subprocess
import threading
import time

import pytest

import awstest
import pluginutil as pu

KIB = 1024
MIB = 1024 * 1024
EXAMPLES = ["echo", "hello", "stream", "upload", "math", "skeleton"]
UPLOAD_MAX = 1 * MIB
GREETING = "Bonjour from the plugin tests"


@pytest.fixture(scope="module")
def root():
    return pu.small_root()


@pytest.fixture(scope="module")
def upload_dir(root):
    """Inside the document root, so the uploads have URLs (/uploads/<name>)."""
    d = os.path.join(root, "uploads")
    os.makedirs(d, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def srv(root, upload_dir):
    """One server with every example plugin that exists."""
    plugins = {}
    for name in EXAMPLES:
        if pu.example_available(name):
            try:
                plugins[name] = pu.example_plugin(name)
            except BaseException:  # a broken example fails its own tests, not the others'
                pass
    config = {"upload.dir": upload_dir, "upload.max": str(UPLOAD_MAX), "skeleton.greeting": GREETING}
    with pu.running_server(pu.plugin_folder(plugins), config=config, root=root, name="examples") as s:
        s.loaded = set(plugins)
        yield s


def need(srv, name):
    """Skips (or fails) like example_plugin, and fails if the plugin exists but did not load."""
    pu.example_plugin(name)
    assert name in srv.loaded, f"example plugin {name} could not be prepared"
    assert re.search(rf"plugin {name} \S+ \(ABI 1\.\d+\): ", srv.stderr()), \
        f"plugin {name} is not in the start-up log:\n{srv.stderr()[-3000:]}"


def curl(*args, timeout=30):
    r = subprocess.run(["curl", "-sS", "--max-time", str(timeout), *args], capture_output=True, timeout=timeout + 5)
    return r


# --------------------------------------------------------------------------------------
# echo
# --------------------------------------------------------------------------------------

def test_startup_log_lists_plugins_and_routes(srv):
    need(srv, "echo")
    log = srv.stderr()
    assert re.search(rf"plugin echo 1\.0\.0 \(ABI {pu.HOST_ABI_RE}\): \* /echo", log), log[-3000:]
    if "hello" in srv.loaded:
        assert re.search(rf"plugin hello \S+ \(ABI {pu.HOST_ABI_RE}\): GET /hello", log), log[-3000:]
    assert re.search(rf"\b{len(srv.loaded)} plugin\(s\) loaded", log), log[-3000:]


def test_echo_small_body_with_its_content_type(srv):
    need(srv, "echo")
    r, complete = pu.http(srv.port, "POST", "/echo", b"hello, echo\n", {"Content-Type": "text/x-test; charset=latin1"})
    assert complete and r.status == 200, r
    assert r.body == b"hello, echo\n" and r.content_length == 12, r
    assert r.header("content-type") == "text/x-test; charset=latin1", r


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_echo_3_mib_random_body(srv, chunked):
    need(srv, "echo")
    body = os.urandom(3 * MIB + 17)
    r, complete = pu.http(srv.port, "POST", "/echo", body, {"Content-Type": "application/x-random"},
                          chunked=chunked, chunk_size=100_003, timeout=30)
    assert complete and r.status == 200, r
    assert r.content_length == len(body), r
    assert r.header("transfer-encoding") is None, r
    assert r.header("content-type") == "application/x-random", r
    assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(body).hexdigest(), \
        f"echoed body differs ({len(r.body)} bytes back for {len(body)})"


def test_echo_empty_body_and_no_content_type(srv):
    need(srv, "echo")
    r, complete = pu.http(srv.port, "POST", "/echo", b"")
    assert complete and r.status == 200 and r.body == b"" and r.content_length == 0, r


def test_echo_head_and_get(srv):
    need(srv, "echo")
    with awstest.connect(srv.port, timeout=5) as s:
        rd = pu.Reader(s)
        pu.send_request(s, "HEAD", "/echo")
        r, _ = rd.read_response(head_request=True, timeout=5)
        assert r.status == 200, r
        # Headers only: the next response on the connection starts right after the head.
        pu.send_request(s, "GET", "/echo", close=True)
        r2, complete = rd.read_response(timeout=5)
        assert complete and r2.status == 405, r2
        assert r2.header("allow") == "POST, HEAD", r2
        assert rd.buf == b"" and s.recv(10) == b"", "bytes after the 405 (a body sent for HEAD?)"


def test_echo_keep_alive_pipelined(srv):
    need(srv, "echo")
    bodies = [os.urandom(n) for n in (1, 1000, 70000, 0, 5)]
    with awstest.connect(srv.port, timeout=10) as s:
        data = b""
        for i, b in enumerate(bodies):
            data += (f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: a/{i}\r\nContent-Length: {len(b)}\r\n"
                     + ("Connection: close\r\n" if i == len(bodies) - 1 else "") + "\r\n").encode() + b
        s.sendall(data)
        rd = pu.Reader(s)
        for i, b in enumerate(bodies):
            r, complete = rd.read_response(timeout=10)
            assert complete and r.status == 200 and r.body == b and r.header("content-type") == f"a/{i}", (i, r)


def test_echo_expect_100_continue_with_curl(srv, tmp_path):
    need(srv, "echo")
    body = os.urandom(2 * MIB)
    src, out = tmp_path / "body.bin", tmp_path / "out.bin"
    src.write_bytes(body)
    t0 = time.monotonic()
    r = curl("-v", "--expect100-timeout", "5", "-H", "Expect: 100-continue", "-H", "Content-Type: application/x-curl",
             "--data-binary", f"@{src}", "-o", str(out), f"http://{pu.HOST}:{srv.port}/echo")
    elapsed = time.monotonic() - t0
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 0, err[-2000:]
    assert re.search(r"< HTTP/1\.1 100 Continue", err), f"no 100 Continue received:\n{err[-2000:]}"
    assert re.search(r"< HTTP/1\.1 200 OK", err), err[-2000:]
    assert elapsed < 4, f"took {elapsed:.1f}s: curl waited for its expect timeout instead of a 100 Continue"
    assert out.read_bytes() == body


def test_echo_expect_100_continue_raw(srv):
    need(srv, "echo")
    body = os.urandom(300_000)
    with awstest.connect(srv.port, timeout=5) as s:
        s.sendall(f"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {len(body)}\r\n"
                  f"Connection: close\r\n\r\n".encode())
        got = b""
        while b"\r\n\r\n" not in got:
            b = s.recv(4096)
            assert b, got
            got += b
        assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), got
        s.sendall(body)
        rd = pu.Reader(s)
        rd.buf = got[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        r, complete = rd.read_response(timeout=10)
        assert complete and r.status == 200 and r.body == body, r


def test_echo_body_over_max_body_is_413():
    folder = pu.plugin_folder({"echo": pu.example_plugin("echo")})
    with pu.running_server(folder, extra=["--max-body", "1000"]) as s:
        r, complete = pu.http(s.port, "POST", "/echo", b"x" * 1000)
        assert r.status == 200 and r.body == b"x" * 1000, r
        with awstest.connect(s.port, timeout=5) as c:
            c.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n")
            r = awstest.read_response(c, timeout=5)
            assert r.status == 413, r


# --------------------------------------------------------------------------------------
# hello (Swift)
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("query,expected", [
    ("", "Hello, world!\n"),
    ("?name=Ada", "Hello, Ada!\n"),
    ("?name=J%C3%BCrgen+M", "Hello, Jürgen M!\n"),
    ("?x=1&name=B%26B", "Hello, B&B!\n"),
    ("?name=", "Hello, !\n"),
    ("?names=x&name=Z", "Hello, Z!\n"),
    ("?name=%FFok", "Hello, \ufffdok!\n"),
    ("?name=%+4%zz%4", "Hello, % 4%zz%4!\n"),
    ("?name=" + "a" * 200, "Hello, " + "a" * 200 + "!\n"),
])
def test_hello(srv, query, expected):
    need(srv, "hello")
    r, complete = pu.http(srv.port, "GET", "/hello" + query)
    assert complete and r.status == 200, r
    assert r.body == expected.encode(), r
    assert r.media_type == "text/plain", r
    assert r.content_length == len(expected.encode()), r


@pytest.mark.parametrize("name", ["a" * 201, "%C3%BC" * 101, "%FF" * 67])
def test_hello_name_too_long(srv, name):
    need(srv, "hello")
    r, complete = pu.http(srv.port, "GET", "/hello?name=" + name)
    assert complete and r.status == 414, r


def test_hello_head_and_post(srv):
    need(srv, "hello")
    r, _ = pu.http(srv.port, "HEAD", "/hello?name=Ada")
    assert r.status == 200 and r.body == b"" and r.content_length == len(b"Hello, Ada!\n"), r
    r, complete = pu.http(srv.port, "POST", "/hello", b"x")
    assert complete and r.status == 405 and "GET" in (r.header("allow") or ""), r


# --------------------------------------------------------------------------------------
# stream (the heavy cases are in test_plugins_streaming.py)
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 5, 1000, 100_000])
def test_stream_lines(srv, n):
    need(srv, "stream")
    r, complete = pu.http(srv.port, "GET", f"/stream/lines?n={n}")
    assert complete and r.status == 200, r
    assert r.media_type == "text/plain", r
    assert "chunked" in (r.header("transfer-encoding") or "") and r.content_length is None, r
    assert r.body == b"".join(b"line %d\n" % i for i in range(1, n + 1)), r


def test_stream_lines_zero(srv):
    need(srv, "stream")
    r, complete = pu.http(srv.port, "GET", "/stream/lines?n=0")
    assert complete and r.status == 200 and r.body == b"", r


@pytest.mark.parametrize("size", [0, 1, 250, 251, 65535, 65536, 65537, 1_000_003, 5 * MIB])
def test_stream_bytes(srv, size):
    need(srv, "stream")
    r, complete = pu.http(srv.port, "GET", f"/stream/bytes?size={size}")
    assert complete and r.status == 200, r
    assert r.content_length == size and r.header("transfer-encoding") is None, r
    period = bytes(i % 251 for i in range(251))
    assert r.body == (period * (size // 251 + 1))[:size], f"pattern differs ({len(r.body)} bytes)"


def test_stream_bytes_keep_alive_and_head(srv):
    need(srv, "stream")
    with awstest.connect(srv.port, timeout=10) as s:
        rd = pu.Reader(s)
        for size in (70000, 3, 200_000):
            pu.send_request(s, "GET", f"/stream/bytes?size={size}")
            r, complete = rd.read_response(timeout=10)
            assert complete and len(r.body) == size and r.body[:3] == b"\x00\x01\x02"[:size], r
        pu.send_request(s, "HEAD", "/stream/bytes?size=1000")
        r, _ = rd.read_response(head_request=True, timeout=5)
        assert r.status == 200 and r.content_length == 1000, r
        pu.send_request(s, "GET", "/stream/lines?n=2", close=True)
        r, complete = rd.read_response(timeout=5)
        assert complete and r.body == b"line 1\nline 2\n", r


def test_stream_events_count(srv):
    need(srv, "stream")
    t0 = time.monotonic()
    r, complete = pu.http(srv.port, "GET", "/stream/events?interval=20&count=4", timeout=10)
    assert complete and r.status == 200, r
    assert r.media_type == "text/event-stream", r
    assert r.body == b"data: event 1\n\ndata: event 2\n\ndata: event 3\n\ndata: event 4\n\n", r
    assert time.monotonic() - t0 >= 0.06


@pytest.mark.parametrize("target,param", [
    ("/stream/lines?n=abc", "n"), ("/stream/bytes?size=-1", "size"), ("/stream/events?interval=0", "interval"),
])
def test_stream_bad_parameters(srv, target, param):
    need(srv, "stream")
    r, complete = pu.http(srv.port, "GET", target)
    assert complete and r.status == 400 and re.search(rf"\b{param}\b", r.body.decode()), r


def test_stream_other_method_is_405(srv):
    need(srv, "stream")
    r, complete = pu.http(srv.port, "POST", "/stream/lines", b"x")
    assert complete and r.status == 405, r


# --------------------------------------------------------------------------------------
# upload
# --------------------------------------------------------------------------------------

SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def _listing(d):
    return sorted(os.listdir(d))


def _check_created(r, body, folder):
    assert r.status == 201, r
    loc = r.header("location")
    assert loc and loc.startswith("/uploads/"), r
    name = loc[len("/uploads/"):]
    assert SAFE_NAME.match(name) and "/" not in name and name not in (".", ".."), f"unsafe name {name!r}"
    assert r.media_type == "application/json", r
    doc = json.loads(r.body)
    assert doc["url"] == loc and doc["size"] == len(body), doc
    path = os.path.join(folder, name)
    assert os.path.isfile(path), f"{path} missing; folder has {_listing(folder)}"
    with open(path, "rb") as f:
        assert f.read() == body, "stored bytes differ from the body"
    return name


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_upload_stores_the_body(srv, upload_dir, chunked):
    need(srv, "upload")
    body = os.urandom(300_001)
    r, complete = pu.http(srv.port, "POST", "/upload", body, {"Content-Type": "application/octet-stream"},
                          chunked=chunked, chunk_size=30_000, timeout=5)
    assert complete, r
    name = _check_created(r, body, upload_dir)
    got, complete = pu.http(srv.port, "GET", f"/uploads/{name}", timeout=10)
    assert complete and got.status == 200 and got.body == body, got


def test_upload_names_are_distinct(srv, upload_dir):
    need(srv, "upload")
    names = set()
    for i in range(5):
        body = f"upload {i}\n".encode()
        r, complete = pu.http(srv.port, "POST", "/upload", body, {"Content-Type": "text/plain"}, timeout=5)
        assert complete, r
        names.add(_check_created(r, body, upload_dir))
    assert len(names) == 5, names


def test_upload_exactly_the_limit_is_accepted(srv, upload_dir):
    need(srv, "upload")
    body = os.urandom(UPLOAD_MAX)
    r, complete = pu.http(srv.port, "POST", "/upload", body, timeout=5)
    assert complete, r
    _check_created(r, body, upload_dir)


def test_upload_content_length_over_the_limit_is_413_without_writing(srv, upload_dir):
    need(srv, "upload")
    before = _listing(upload_dir)
    with awstest.connect(srv.port, timeout=5) as s:
        # Only the head: the answer must come from the declared length, before any body byte.
        s.sendall(f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {UPLOAD_MAX + 1}\r\n\r\n".encode())
        r = awstest.read_response(s, timeout=5)
        assert r.status == 413, r
    time.sleep(0.2)
    assert _listing(upload_dir) == before, "a file was written for a refused upload"


def test_upload_over_the_limit_with_expect_gets_413_instead_of_100(srv, upload_dir):
    need(srv, "upload")
    before = _listing(upload_dir)
    with awstest.connect(srv.port, timeout=5) as s:
        s.sendall(f"POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  f"Content-Length: {UPLOAD_MAX + 1}\r\n\r\n".encode())
        r = awstest.read_response(s, timeout=5)
        assert r.status == 413, f"a refused upload must not be invited with 100 Continue: {r!r}"
    assert _listing(upload_dir) == before


def test_upload_chunked_over_the_limit_is_413_and_the_partial_file_removed(srv, upload_dir):
    need(srv, "upload")
    before = _listing(upload_dir)
    body = os.urandom(UPLOAD_MAX + 300_000)
    with awstest.connect(srv.port, timeout=5) as s:
        errors = []

        def send():
            try:
                pu.send_request(s, "POST", "/upload", body, chunked=True, chunk_size=50_000)
            except OSError as e:   # the server may close once it has answered
                errors.append(e)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        try:
            data = awstest.recv_until_eof(s, timeout=10)
        except ConnectionResetError as e:
            pytest.fail(f"connection reset before the 413 could be read: {e}")
        t.join(5)
    r = awstest.parse_response(data)
    assert r.status == 413, r
    ok = pu.wait_for(lambda: _listing(upload_dir) == before, 2)
    assert ok, f"the partial file was not removed: before {before}, after {_listing(upload_dir)}"


def test_upload_default_folder_and_limit(tmp_path):
    """Without upload.dir the files go to <root>/uploads, where the server serves them; the
    default limit is 10 MiB."""
    so = pu.example_plugin("upload")
    root = pu.small_root()
    with pu.running_server(pu.plugin_folder({"upload": so}), root=root) as s:
        body = os.urandom(2 * MIB + 5)
        r, complete = pu.http(s.port, "POST", "/upload", body, timeout=5)
        assert complete, r
        name = _check_created(r, body, os.path.join(root, "uploads"))
        got, complete = pu.http(s.port, "GET", f"/uploads/{name}")
        assert complete and got.status == 200 and got.body == body, got
        with awstest.connect(s.port, timeout=5) as c:
            c.sendall(f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {10 * MIB + 1}\r\n\r\n".encode())
            assert awstest.read_response(c, timeout=5).status == 413
        assert _listing(os.path.join(root, "uploads")) == [name]


# --------------------------------------------------------------------------------------
# math (libffi function endpoints)
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("target,expected", [
    ("/math/area?w=3&h=4", 12),
    ("/math/area?w=2.5&h=4", 10),
    ("/math/add?a=2&b=40", 42),
    ("/math/add?a=-7&b=3", -4),
    ("/math/fib?n=10", 55),
    ("/math/fib?n=1", 1),
])
def test_math_text_and_json(srv, target, expected):
    need(srv, "math")
    r, complete = pu.http(srv.port, "GET", target)
    assert complete and r.status == 200, r
    assert float(r.body.strip()) == expected and r.body.strip() == str(expected).encode(), r
    r, complete = pu.http(srv.port, "GET", target + "&format=json")
    assert complete and r.status == 200 and r.media_type == "application/json", r
    assert json.loads(r.body) == {"result": expected}, r
    r, complete = pu.http(srv.port, "GET", target, headers={"Accept": "application/json"})
    assert complete and r.status == 200 and json.loads(r.body) == {"result": expected}, r


def test_math_greet(srv):
    need(srv, "math")
    r, complete = pu.http(srv.port, "GET", "/math/greet?name=Ada")
    assert complete and r.status == 200 and r.body.strip() == b"Hello, Ada!", r
    r, complete = pu.http(srv.port, "GET", "/math/greet?name=Ada&format=json")
    assert complete and json.loads(r.body) == {"result": "Hello, Ada!"}, r


@pytest.mark.parametrize("target,param", [
    ("/math/area?w=3", "h"),
    ("/math/area", "w"),
    ("/math/add?b=1", "a"),
    ("/math/greet", "name"),
    ("/math/fib", "n"),
    ("/math/area?w=abc&h=4", "w"),
    ("/math/add?a=2&b=4x", "b"),
    ("/math/fib?n=1.5", "n"),
])
def test_math_missing_or_invalid_parameter_is_400_naming_it(srv, target, param):
    need(srv, "math")
    r, complete = pu.http(srv.port, "GET", target)
    assert complete and r.status == 400, r
    assert re.search(rf"(?<![A-Za-z0-9_]){param}(?![A-Za-z0-9_])", r.body.decode("utf-8", "replace")), \
        f"the 400 must name parameter {param!r}: {r.body!r}"


def test_math_post_form(srv):
    need(srv, "math")
    r, complete = pu.http(srv.port, "POST", "/math/area", b"w=2&h=5",
                          {"Content-Type": "application/x-www-form-urlencoded"})
    assert complete and r.status == 200 and r.body.strip() == b"10", r
    r, complete = pu.http(srv.port, "POST", "/math/greet", b"name=Grace+Hopper",
                          {"Content-Type": "application/x-www-form-urlencoded"})
    assert complete and r.status == 200 and r.body.strip() == b"Hello, Grace Hopper!", r


INT64_MAX = 2**63 - 1


@pytest.mark.parametrize("a,b", [(INT64_MAX, 1), (-INT64_MAX - 1, -1), (INT64_MAX, INT64_MAX)])
def test_math_add_overflow_is_422_not_a_wrapped_sum(srv, a, b):
    """A sum outside int64_t used to wrap around silently (INT64_MAX + 1 = INT64_MIN, 200): the
    function reports ERANGE through errno and the host answers 422 naming it."""
    need(srv, "math")
    for extra in ("", "&format=json"):
        r, complete = pu.http(srv.port, "GET", f"/math/add?a={a}&b={b}{extra}")
        assert complete and r.status == 422, r
        assert r.media_type == "text/plain", r
        assert r.body == b"add: Numerical result out of range\n", r
    # The edges that fit are still sums, and the connection's next request is unaffected.
    r, complete = pu.http(srv.port, "GET", f"/math/add?a={INT64_MAX}&b=0")
    assert complete and r.status == 200 and r.body == f"{INT64_MAX}\n".encode(), r
    r, complete = pu.http(srv.port, "GET", f"/math/add?a={-INT64_MAX}&b=-1")
    assert complete and r.status == 200 and r.body == f"{-INT64_MAX - 1}\n".encode(), r


# --------------------------------------------------------------------------------------
# skeleton
# --------------------------------------------------------------------------------------

def test_skeleton_configured_greeting(srv):
    need(srv, "skeleton")
    r, complete = pu.http(srv.port, "GET", "/skeleton")
    assert complete and r.status == 200 and r.media_type == "text/plain", r
    assert GREETING.encode() in r.body, r


def test_skeleton_default_greeting():
    so = pu.example_plugin("skeleton")
    with pu.running_server(pu.plugin_folder({"skeleton": so})) as s:
        r, complete = pu.http(s.port, "GET", "/skeleton")
        assert complete and r.status == 200 and r.media_type == "text/plain", r
        assert r.body.strip() and GREETING.encode() not in r.body, r
