"""Access logs (issue 12): the combined, common and json formats, reopening on SIGUSR1, and a
destination that takes no bytes not stalling the server.

- combined (the default) is read by GoAccess (`goaccess --log-format=COMBINED`): every request
  counted, none invalid;
- common: the exact Apache line (`%h %l %u %t "%r" %>s %b`), escaping as Apache does;
- json: each line a JSON object with the documented fields and values (TLS version over HTTPS,
  plugin name on a plugin route, invalid UTF-8 and control bytes escaped);
- SIGUSR1 after `mv access.log access.log.1`: later lines go to a new access.log and no line is
  lost while requests keep coming; a reopen that fails is logged and the open file kept;
- a FIFO nobody reads: requests are still answered, the dropped lines are counted and logged.
"""

import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import uuid

import pytest

import awstest
import pluginutil as pu
import tlsutil as tu
from awstest import OK_EXIT, wait_for
from tlsutil import make_tls_server, pki  # noqa: F401  (fixtures)

APACHE_TIME = r"\[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000)\]"


def read_lines(path: str) -> list:
    try:
        with open(path, "rb") as f:
            return f.read().decode("latin-1").splitlines()
    except FileNotFoundError:
        return []


def stop_cleanly(srv) -> None:
    rc, killed = srv.stop()
    assert not killed and rc in OK_EXIT, srv.crash_message(rc) or f"exit {rc}\n{srv.stderr()[-2000:]}"


def test_combined_log_is_read_by_goaccess(make_server, log_dir):
    goaccess = shutil.which("goaccess")
    if goaccess is None:
        pytest.fail("goaccess not found on PATH: this test has GoAccess read the combined log "
                    "(`make deps` installs it; or apt-get install goaccess)", pytrace=False)
    path = os.path.join(log_dir, f"access-{uuid.uuid4().hex}.log")
    srv = make_server(args=["--access-log", path, "--log-format", "combined", "--workers", "1"], name="goaccess")
    ua = 'Mozilla/5.0 "quoted" back\\slash caf\xe9'
    sent = [
        ("GET", "/static/x.txt", f"Referer: http://example.test/from?a=1\r\nUser-Agent: {ua}\r\n", 200),
        ("GET", "/static/x.txt?q=%22x%22&r=1", "User-Agent: curl/8\r\n", 200),
        ("GET", "/static/missing.txt", "Referer: http://example.test/\r\n", 404),
        ("HEAD", "/static/x.txt", "", 200),
        ("HEAD", "/static/missing.txt", "", 404),
        ("DELETE", "/static/x.txt", "", 405),
        ("GET", "/dynamic/a.txt", "User-Agent: tab\there \xff\r\n", 200),
        # Malformed: the request line is not logged ("-"), like Apache's 400 lines.
        ("GET", "/static/x.txt", "Bad Header\r\n", 400),
    ]
    for method, target, extra, status in sent:
        r = awstest.get(srv.port, target, method=method, extra=extra)
        assert r.status == status, f"{method} {target}: {r.status}"
    stop_cleanly(srv)
    lines = read_lines(path)
    assert len(lines) == len(sent), "\n".join(lines)
    # The first line, field by field, as Apache writes it.
    m = re.fullmatch(r'127\.0\.0\.1 - - ' + APACHE_TIME + r' "GET /static/x\.txt HTTP/1\.1" 200 17 '
                     r'"http://example\.test/from\?a=1" "Mozilla/5\.0 \\"quoted\\" back\\\\slash caf\\xe9"', lines[0])
    assert m, lines[0]
    assert lines[3].endswith('"HEAD /static/x.txt HTTP/1.1" 200 - "-" "-"'), lines[3]
    assert '"DELETE /static/x.txt HTTP/1.1" 405 ' in lines[5], lines[5]
    assert lines[6].endswith('"tab\\x09here \\xff"'), lines[6]
    assert re.search(r'\] "-" 400 \d+ "-" "-"$', lines[7]), lines[7]

    report = path + ".goaccess.json"
    r = subprocess.run([goaccess, path, "--log-format=COMBINED", "--no-global-config", "-o", report],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"goaccess failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    with open(report) as f:
        general = json.load(f)["general"]
    assert general["failed_requests"] == 0, f"goaccess found invalid lines: {general}\n" + "\n".join(lines)
    assert general["total_requests"] == len(sent), general
    assert general["valid_requests"] == len(sent), general
    assert general["unique_not_found"] == 2, general  # GET and HEAD of the missing file


def test_common_format_exact_lines(make_server, log_dir):
    path = os.path.join(log_dir, f"access-{uuid.uuid4().hex}.log")
    srv = make_server(args=["--access-log", path, "--log-format", "common", "--workers", "1"], name="common")
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    assert awstest.get(srv.port, "/static/x.txt", extra="Referer: http://r/\r\nUser-Agent: ua\r\n").status == 200
    assert awstest.get(srv.port, "/static/x.txt", method="HEAD").status == 200
    # A raw target with a quote and a backslash, which the request line must escape.
    r = awstest.request(srv.port, b'GET /static/a"b\\c HTTP/1.0\r\n\r\n')
    assert r.status == 404, r
    # A malformed request: no request line to log, Apache's "-".
    r = awstest.request(srv.port, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
    assert r.status == 400, r
    stop_cleanly(srv)
    after = datetime.datetime.now(datetime.timezone.utc)
    lines = read_lines(path)
    assert len(lines) == 4, "\n".join(lines)
    rest = [re.sub(APACHE_TIME, "[T]", ln) for ln in lines]
    assert rest == [
        '127.0.0.1 - - [T] "GET /static/x.txt HTTP/1.1" 200 17',
        '127.0.0.1 - - [T] "HEAD /static/x.txt HTTP/1.1" 200 -',
        '127.0.0.1 - - [T] "GET /static/a\\"b\\\\c HTTP/1.0" 404 ' + rest[2].rsplit(" ", 1)[1],
        '127.0.0.1 - - [T] "-" 400 ' + rest[3].rsplit(" ", 1)[1],
    ], "\n".join(lines)
    assert int(rest[2].rsplit(" ", 1)[1]) > 0 and int(rest[3].rsplit(" ", 1)[1]) > 0, lines
    stamp = datetime.datetime.strptime(re.search(APACHE_TIME, lines[0]).group(1), "%d/%b/%Y:%H:%M:%S %z")
    assert before <= stamp <= after, f"{stamp} not within [{before}, {after}]"


JSON_KEYS = ["time", "client", "method", "target", "protocol", "status", "bytes", "referer", "user_agent",
             "duration_ms", "worker", "tls", "plugin"]


def test_json_lines_parse_with_the_documented_fields(log_dir):
    pu.example_plugin("hello")  # skips (not written) or fails (not built: make plugins)
    path = os.path.join(log_dir, f"access-{uuid.uuid4().hex}.log")
    folder = pu.plugin_folder({"hello": pu.example_plugin("hello")})
    with pu.running_server(folder, extra=["--access-log", path, "--log-format", "json", "--workers", "1"]) as srv:
        before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        r, complete = pu.http(srv.port, "GET", "/hello?name=log")
        assert r.status == 200 and complete, r
        body = r.body
        raw = (b"GET /nothing/\xff\xfe\"\\caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\nReferer: http://r/\xc3\r\n"
               b"User-Agent: a\tb \xe2\x82\xac \xed\xa0\x80\r\nConnection: close\r\n\r\n")
        assert awstest.request(srv.port, raw).status == 404
        assert awstest.get(srv.port, "/index.html", method="HEAD").status == 200
        assert awstest.request(srv.port, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").status == 400
    after = datetime.datetime.now(datetime.timezone.utc)
    lines = read_lines(path)
    assert len(lines) == 4, "\n".join(lines)
    with open(path, "rb") as f:
        objects = [json.loads(line) for line in f.read().splitlines()]  # bytes: must be valid UTF-8 JSON
    for o in objects:
        assert list(o) == JSON_KEYS, o
        t = datetime.datetime.strptime(o["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
        assert before <= t <= after, o
        assert o["client"] == "127.0.0.1" and o["worker"] == 0 and o["tls"] is None, o
        assert isinstance(o["duration_ms"], float) and 0 <= o["duration_ms"] < 10_000, o
    hello, odd, head, bad = objects
    assert hello["method"] == "GET" and hello["target"] == "/hello?name=log" and hello["protocol"] == "HTTP/1.1", hello
    assert hello["status"] == 200 and hello["bytes"] == len(body) and hello["plugin"] == "hello", hello
    assert odd["target"] == '/nothing/\u00ff\u00fe"\\caf\u00e9', odd
    assert odd["status"] == 404 and odd["plugin"] is None, odd
    assert odd["referer"] == "http://r/\u00c3", odd
    assert odd["user_agent"] == "a\tb \u20ac \u00ed\u00a0\u0080", odd
    assert head["method"] == "HEAD" and head["bytes"] == 0 and head["referer"] is None, head
    assert bad["status"] == 400 and bad["method"] is None and bad["target"] is None and bad["protocol"] is None, bad
    assert bad["duration_ms"] == 0, bad


def test_json_line_names_the_tls_version(make_tls_server, pki, log_dir):
    tu.require_tools()
    path = os.path.join(log_dir, f"access-{uuid.uuid4().hex}.log")
    root = pu.small_root()
    with open(os.path.join(root, "a.txt"), "wb") as f:
        f.write(b"tls log\n")
    srv = make_tls_server(root, args=tu.cert_args(pki, sni=()) + ["--access-log", path, "--log-format", "json", "--workers", "1"])
    for args in ((), ("--tls-max", "1.2")):
        r = tu.curl(pki.root, srv.url("/a.txt"), *args)
        assert r.rc == 0 and r.status == 200, r
    r = tu.curl(pki.root, srv.url("/a.txt", tls=False))
    assert r.rc == 0 and r.status == 200, r
    # Written within a tick (0.1 s) of the last request.
    assert wait_for(lambda: len(read_lines(path)) >= 3, 5), read_lines(path)
    objects = [json.loads(line) for line in read_lines(path)]
    assert [o["tls"] for o in objects] == ["TLSv1.3", "TLSv1.2", None], objects
    assert all(o["target"] == "/a.txt" and o["bytes"] == 8 for o in objects), objects


def test_sigusr1_reopens_the_file_and_loses_no_line(make_server, log_dir):
    path = os.path.join(tempfile.mkdtemp(dir=log_dir), "access.log")
    rotated = path + ".1"
    srv = make_server(args=["--access-log", path, "--workers", "2"], name="reopen")
    answered = 0
    failures = []
    stop = threading.Event()
    counts_lock = threading.Lock()

    def client(n):
        nonlocal answered
        try:
            with awstest.connect(srv.port) as s:
                i = 0
                while not stop.is_set():
                    s.sendall(f"GET /static/x.txt?c={n}&i={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    r = awstest.read_response(s)
                    if r.status != 200:
                        failures.append(r.status)
                        return
                    with counts_lock:
                        answered += 1
                    i += 1
        except Exception as e:  # reported by the assertion below
            failures.append(repr(e))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    try:
        assert wait_for(lambda: len(read_lines(path)) >= 200, 10), "no lines reached the log"
        os.rename(path, rotated)
        mark = len(srv.stderr())
        srv.signal(signal.SIGUSR1)
        assert wait_for(lambda: len(read_lines(path)) >= 200, 10), \
            f"no new {path} after SIGUSR1; stderr:\n{srv.stderr()[mark:]}"
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not failures, failures
    stop_cleanly(srv)
    old, new = read_lines(rotated), read_lines(path)
    assert len(old) + len(new) == answered, f"{len(old)} + {len(new)} lines for {answered} requests"
    assert len({ln for ln in old + new}) == answered, "duplicate lines"
    assert "reopened 1 file(s)" in srv.stderr()[mark:], srv.stderr()[mark:]


def test_a_destination_that_takes_nothing_does_not_stall_serving(make_server, log_dir):
    fifo = os.path.join(tempfile.mkdtemp(dir=log_dir), "access.fifo")
    os.mkfifo(fifo)
    # Held open, never read: once the pipe's buffer is full every write blocks.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        metrics_port = awstest.free_port()
        srv = make_server(args=["--access-log", fifo, "--workers", "1", "--metrics", f"{awstest.HOST}:{metrics_port}"], name="fifo")
        long_query = "q=" + "x" * 1000
        n = 3000  # ~1.1 KB lines: far more than the pipe (64 KiB) and the writer's queue hold
        with awstest.connect(srv.port) as s:
            for i in range(n):
                s.sendall(f"GET /static/x.txt?i={i}&{long_query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                r = awstest.read_response(s, timeout=10)
                assert r.status == 200 and r.body == b"x marks the spot\n", f"request {i}: {r.status}"
        m = pu.wait_log(srv, r"access log: (\d+) line\(s\) dropped", timeout=5)
        assert m, f"no drop warning; stderr tail:\n{srv.stderr()[-2000:]}"
        assert 0 < int(m.group(1)) <= n, m.group(0)
        # The metrics count them too (at least as many: lines may drop after the warning).
        raw = awstest.raw_request(metrics_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", timeout=10)
        dropped = re.search(rb"^aws_access_log_dropped_lines_total (\d+)$", raw, re.M)
        assert dropped and int(dropped.group(1)) >= int(m.group(1)), raw[-3000:]
    finally:
        # The reader leaves: the blocked write fails (EPIPE) and the server can exit at once.
        os.close(reader)
    stop_cleanly(srv)


def test_a_failed_reopen_keeps_writing_to_the_open_file(make_server, log_dir):
    path = os.path.join(tempfile.mkdtemp(dir=log_dir), "access.log")
    rotated = path + ".1"
    srv = make_server(args=["--access-log", path, "--workers", "1"], name="reopen-fails")
    assert awstest.get(srv.port, "/static/x.txt?before").status == 200
    assert wait_for(lambda: len(read_lines(path)) == 1, 5), read_lines(path)
    os.rename(path, rotated)
    os.mkdir(path)  # the path is now a directory: open(O_WRONLY) fails with EISDIR
    mark = len(srv.stderr())
    srv.signal(signal.SIGUSR1)
    m = pu.wait_log(srv, r"access log .*access\.log: reopen failed .*; still writing to the file open before", 5, since=mark)
    assert m, srv.stderr()[mark:]
    assert awstest.get(srv.port, "/static/x.txt?after").status == 200
    stop_cleanly(srv)
    lines = read_lines(rotated)
    assert len(lines) == 2 and "?before " in lines[0] and "?after " in lines[1], lines
    assert "reopened" not in srv.stderr()[mark:], srv.stderr()[mark:]
