"""Multi-threaded workers (--workers N|auto): one thread per worker, each with its own epoll
loop and its own SO_REUSEPORT listener, named aws-worker-<i>; the main thread (still named
aws) only handles signals and reloads. Checked from outside: thread names and CPU times in
/proc, the start-up line, load spread over every worker, hot reload under load with requests in
flight on several workers, posts from plugin threads, SIGTERM with downloads on several
workers, and --max-connections as one limit for the whole server.

What these tests rely on (the spec of the feature):
  - worker threads are named exactly aws-worker-0 ... aws-worker-<N-1> (pthread_setname_np),
    the main thread keeps the process name "aws";
  - the start-up line on stderr contains "listening on ADDRESS:PORT" and "<N> worker(s)";
  - --workers 0 / abc / -1 are refused at start (exit status > 0, a message naming workers);
  - `--workers auto` (the default) is the number of CPUs in the process's affinity mask;
  - an old plugin version is unloaded once ("plugin NAME VERSION unloaded", one line for the
    whole server) after every worker released it and its last request ended;
  - over --max-connections (counted for the whole server) a connection gets 503 with
    Retry-After: 1 and is closed.
Every test here sets --workers itself where the count matters, so it runs the same in both
passes of `make test` (AWS_TEST_ARGS="--workers 1" is overridden by the test's own option).
"""

import os
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest

import awstest
import pluginutil as pu
from awstest import HOST, MIB
from http11util import Conn, connection_tokens, get_req, refused_or_closed

WORKER_NAME = re.compile(r"^aws-worker-(\d+)$")


# --------------------------------------------------------------------------------------
# /proc helpers
# --------------------------------------------------------------------------------------

def thread_names(pid: int) -> dict:
    """tid -> comm for every thread of the process (threads that exit meanwhile are skipped)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                out[int(tid)] = f.read().rstrip("\n")
        except OSError:
            pass
    return out


def worker_threads(pid: int) -> dict:
    """tid -> name of the threads named aws-worker-<i>."""
    return {tid: name for tid, name in thread_names(pid).items() if WORKER_NAME.match(name)}


def cpu_ticks(pid: int, tid: int) -> int:
    """utime + stime of one thread, in clock ticks: fields 14 and 15 of /proc/PID/task/TID/stat,
    counted after the ')' that ends the comm field (a comm may contain spaces or parens)."""
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        stat = f.read()
    rest = stat[stat.rindex(")") + 2:].split()   # rest[0] is field 3 (state)
    return int(rest[14 - 3]) + int(rest[15 - 3])


def wait_workers(srv, n: int, timeout: float = 5.0) -> dict:
    """Waits until the server has n aws-worker-* threads (they may start just after the first
    listener accepts), then checks the count stays n. Returns tid -> name."""
    pid = srv.server_pid()
    got = awstest.wait_for(lambda: len(worker_threads(pid)) >= n, timeout)
    time.sleep(0.2)
    workers = worker_threads(pid)
    assert got and len(workers) == n, (
        f"expected exactly {n} threads named aws-worker-<i>, found {len(workers)}: "
        f"{sorted(workers.values())}; all threads: {sorted(thread_names(pid).values())}\n"
        f"stderr tail:\n{srv.stderr()[-2000:]}")
    assert sorted(workers.values()) == [f"aws-worker-{i}" for i in range(n)], sorted(workers.values())
    return workers


def assert_main_thread_is_aws(srv):
    pid = srv.server_pid()
    names = thread_names(pid)
    assert names.get(pid) == "aws", f"the main thread is named {names.get(pid)!r}, expected 'aws': {names}"


def assert_startup_line(srv, n: int):
    log = srv.stderr()
    rx = rf"listening on {re.escape(HOST)}:{srv.port}\b.*\b{n} worker\(s\)"
    assert re.search(rx, log), f"no start-up line matching {rx!r} in:\n{log[-2000:]}"


# --------------------------------------------------------------------------------------
# Worker count: default, explicit, refused
# --------------------------------------------------------------------------------------

def test_four_workers_are_named_threads_and_each_serves_a_share(make_server, docroot):
    srv = make_server(args=["--workers", "4"], name="workers4")
    pid = srv.server_pid()
    workers = wait_workers(srv, 4)
    assert_main_thread_is_aws(srv)
    assert_startup_line(srv, 4)

    path = "/static/a.txt"
    want = docroot.files[path]
    clients, min_requests, max_requests = 64, 20, 100_000
    stop = threading.Event()
    lock = threading.Lock()
    done = [0] * clients
    failures = []
    barrier = threading.Barrier(clients + 1)

    def client(i):
        try:
            with Conn(srv.port, timeout=10) as c:
                barrier.wait(10)
                while not stop.is_set() and done[i] < max_requests:
                    r = c.request(get_req(path), timeout=10)
                    if r.status != 200 or r.body != want or r.content_length != len(want) \
                            or "close" in connection_tokens(r):
                        raise AssertionError(f"bad response {r!r}")
                    done[i] += 1
        except Exception as e:  # reported below
            with lock:
                failures.append(f"client {i} after {done[i]} requests: {type(e).__name__}: {e}")
            stop.set()

    before = {tid: cpu_ticks(pid, tid) for tid in workers}
    main_before = cpu_ticks(pid, pid)
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        barrier.wait(10)
    except threading.BrokenBarrierError:
        stop.set()   # a client could not connect: reported with the failures below

    # Load until every worker has provably done a share of it (or the bound runs out): at least
    # 40 ticks (0.4 s of CPU) over all workers, every worker at least 5% of that (2+ ticks), and
    # every client 20+ requests. 64 connections spread by SO_REUSEPORT's hash over 4 listeners
    # give each worker about 16 of them.
    def deltas():
        return {tid: cpu_ticks(pid, tid) - before[tid] for tid in workers}

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not stop.is_set():
        d = deltas()
        total = sum(d.values())
        if total >= 40 and min(d.values()) >= max(2, total * 0.05) and min(done) >= min_requests:
            break
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(15)
    d = deltas()
    main_delta = cpu_ticks(pid, pid) - main_before
    total = sum(d.values())
    shares = {workers[tid]: n for tid, n in sorted(d.items(), key=lambda kv: workers[kv[0]])}
    print(f"{sum(done)} requests on {clients} connections; CPU ticks per worker {shares}, "
          f"main thread {main_delta}")
    assert not failures, f"{len(failures)} clients failed: {failures[:5]}"
    assert not any(t.is_alive() for t in threads), "client threads still running"
    assert min(done) >= min_requests, f"a client did only {min(done)} requests: {done}"
    assert total >= 40, f"the workers used only {total} ticks of CPU for {sum(done)} requests: {shares}"
    lazy = {name: n for name, n in shares.items() if n < max(2, total * 0.05)}
    assert not lazy, (f"workers with (almost) no CPU time under load from {clients} connections: "
                      f"{lazy}; all: {shares} (does every worker accept on its own listener?)")
    assert main_delta <= max(2, total // 10), \
        f"the main thread used {main_delta} ticks while the workers used {total}: it should serve nothing"


def test_default_is_one_worker_per_cpu_of_the_affinity_mask(make_server):
    srv = make_server(args=[], test_args=False, name="workers-default")
    pid = srv.server_pid()
    cpus = len(os.sched_getaffinity(pid))
    assert cpus == len(os.sched_getaffinity(0)), "the server does not inherit the test's CPU affinity"
    wait_workers(srv, cpus)
    assert_main_thread_is_aws(srv)
    assert_startup_line(srv, cpus)
    r = awstest.get(srv.port, "/static/a.txt")
    assert r.status == 200 and r.body == b"hello from static/a.txt\n", r


def test_workers_auto_follows_a_narrowed_affinity_mask(make_server):
    """auto counts the CPUs the process may run on, not the machine's: under `taskset -c C`
    the server has one worker even on a bigger machine."""
    if not shutil.which("taskset"):
        pytest.skip("taskset (util-linux) is not installed")
    cpu = min(os.sched_getaffinity(0))
    srv = make_server(args=["--workers", "auto"], prefix=["taskset", "-c", str(cpu)], name="workers-taskset")
    pid = srv.server_pid()
    assert os.sched_getaffinity(pid) == {cpu}, os.sched_getaffinity(pid)
    wait_workers(srv, 1)
    assert_startup_line(srv, 1)
    r = awstest.get(srv.port, "/static/a.txt")
    assert r.status == 200 and r.body == b"hello from static/a.txt\n", r


def test_one_worker(make_server, docroot):
    srv = make_server(args=["--workers", "1"], name="workers1")
    wait_workers(srv, 1)
    assert_main_thread_is_aws(srv)
    assert_startup_line(srv, 1)
    with Conn(srv.port, timeout=5) as c:
        for path in ("/static/a.txt", "/dynamic/f_4097.bin", "/static/f_4097.bin"):
            r = c.request(get_req(path), timeout=10)
            assert r.status == 200 and r.body == docroot.files[path], r


@pytest.mark.parametrize("value", ["0", "abc", "-1"])
def test_bad_worker_count_is_refused_at_start(docroot, value):
    cmd = [awstest.aws_bin(), "--root", docroot.root, "--port", str(awstest.free_port()),
           "--address", HOST, "--workers", value]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"`--workers {value}` was not refused: the server still ran after 10 s:\n"
                    f"{out.decode('utf-8', 'replace')[-2000:]}", pytrace=False)
    text = out.decode("utf-8", "replace")
    assert proc.returncode > 0, f"`--workers {value}`: exit status {proc.returncode}, expected an error exit:\n{text}"
    assert "workers" in text.lower(), f"`--workers {value}`: the message does not name the option:\n{text}"
    assert "listening on" not in text, f"`--workers {value}` started listening:\n{text}"


# --------------------------------------------------------------------------------------
# Hot reload under load on four workers
# --------------------------------------------------------------------------------------

def _v(n):
    return pu.test_plugin("versioned", VERSION=f'"{n}"')


class SpreadLoad(pu.VersionLoad):
    """GET /versioned back to back on many keep-alive connections (several per thread, used in
    turn), plus threads opening a new connection per request. With 48 connections over 4
    SO_REUSEPORT listeners every worker has some (all on one worker: 4 * (3/4)^48 ~ 4e-6).
    Remembers, per keep-alive connection, whether it has seen version 2, and any version 1
    after version 2 on the same connection."""

    def __init__(self, port, threads=12, conns_per_thread=4, fresh_threads=2):
        super().__init__(port)
        self.n_conns = threads * conns_per_thread
        self.seen2 = [False] * self.n_conns
        self.threads = [threading.Thread(target=self._keepalive, args=(range(i * conns_per_thread, (i + 1) * conns_per_thread),),
                                         daemon=True) for i in range(threads)]
        self.threads += [threading.Thread(target=self._fresh, daemon=True) for _ in range(fresh_threads)]

    def all_seen2(self):
        return all(self.seen2)

    def _fail(self, msg):
        with self.lock:
            self.failures.append(msg)

    def _check(self, r, complete):
        if r.status != 200 or not complete or r.body not in self.counts:
            self._fail(f"{r.status} complete={complete} {r.body[:100]!r}")
            return None
        with self.lock:
            self.counts[r.body] += 1
        return r.body

    def _keepalive(self, ids):
        conns = {}
        while not self.stop.is_set():
            for i in ids:
                if self.stop.is_set():
                    break
                try:
                    if i not in conns:
                        s = awstest.connect(self.port, timeout=5)
                        conns[i] = (s, pu.Reader(s))
                        self.seen2[i] = False   # a new connection starts over
                    s, rd = conns[i]
                    pu.send_request(s, "GET", "/versioned")
                    r, complete = rd.read_response(timeout=5)
                    body = self._check(r, complete)
                    if body == b"version 2\n":
                        self.seen2[i] = True
                    elif body == b"version 1\n" and self.seen2[i]:
                        with self.lock:
                            self.regressions.append(i)
                    if "close" in connection_tokens(r):
                        self._fail(f"connection {i} closed by the server: {r!r}")
                        s.close()
                        del conns[i]
                except (OSError, ValueError, awstest.IncompleteResponse) as e:
                    self._fail(f"connection {i}: {type(e).__name__}: {e}")
                    if i in conns:
                        conns.pop(i)[0].close()
        for s, _ in conns.values():
            s.close()

    def _fresh(self):
        while not self.stop.is_set():
            try:
                r, complete = pu.http(self.port, "GET", "/versioned", timeout=5)
                self._check(r, complete)
            except (OSError, ValueError, awstest.IncompleteResponse) as e:
                self._fail(f"fresh connection: {type(e).__name__}: {e}")


class SlowRequest:
    """GET /versioned/slow?parts=N&ms=T on its own connection, read to the end by a thread.
    The plugin's thread sleeps T ms before posting each of the N parts, so the request cannot
    end before `sent + N*T`: `cannot_end_before` is a lower bound independent of scheduling."""

    def __init__(self, port, parts, ms):
        self.port, self.parts, self.ms = port, parts, ms
        self.head = None
        self.body = b""
        self.complete = False
        self.error = None
        self.ended_at = None
        self.started = threading.Event()
        self.sock = awstest.connect(port, timeout=10)
        self.sent_at = time.monotonic()
        pu.send_request(self.sock, "GET", f"/versioned/slow?parts={parts}&ms={ms}", close=True)
        self.cannot_end_before = self.sent_at + parts * ms / 1000
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def expected(self, version):
        return b"".join(b"v%d part %d\n" % (version, i) for i in range(1, self.parts + 1))

    def _run(self):
        try:
            with self.sock:
                rd = pu.Reader(self.sock)
                deadline = time.monotonic() + self.parts * self.ms / 1000 + 20
                self.head = rd.read_head(deadline)
                self.started.set()
                self.body, self.complete = rd.read_chunked_body(deadline)
        except Exception as e:  # reported by the test
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.ended_at = time.monotonic()
            self.started.set()


def test_reload_under_load_on_four_workers():
    folder = pu.plugin_folder({"versioned": _v(1), "ok": pu.test_plugin("ok")})
    unloaded = "plugin versioned 1 unloaded"
    with pu.running_server(folder, extra=["--workers", "4"], name="workers-reload") as srv:
        wait_workers(srv, 4)
        r, complete = pu.http(srv.port, "GET", "/versioned", timeout=5)
        assert complete and r.body == b"version 1\n", r
        with SpreadLoad(srv.port) as load:
            assert pu.wait_for(lambda: load.total() >= 300 and not load.failures, 10) and not load.failures, \
                f"load: {load.total()} requests, failures {load.failures[:5]}"

            # Slow requests on version 1 on 8 connections (so on several workers), started one
            # after another (each has its head before the next starts), ending 0.3 s apart.
            slow = []
            for i in range(8):
                s = SlowRequest(srv.port, parts=25 + 3 * i, ms=100)
                assert s.started.wait(10) and s.error is None, f"slow request {i}: {s.error}"
                assert s.head.status == 200 and s.head.header("x-version") == "1", s.head
                slow.append(s)

            pu.deploy(folder, "versioned", _v(2))
            mark = pu.log_mark(srv)
            srv.signal(signal.SIGHUP)
            assert pu.wait_log(srv, r"SIGHUP: reloading plugins", 3, since=mark), srv.stderr()[mark:]
            # Every worker publishes the new table: every keep-alive connection sees version 2.
            assert pu.wait_for(load.all_seen2, 10), (
                f"{load.seen2.count(False)} of {load.n_conns} keep-alive connections never saw version 2 "
                f"within 10 s of the SIGHUP (a worker still on the old route table?)\n{srv.stderr()[mark:][-2000:]}")

            # While any slow request is certainly still in flight (before its lower bound), the
            # old version must still be loaded. A check counts only if the log was read
            # entirely before some request's bound.
            checks = 0
            loop_deadline = time.monotonic() + 30
            while any(s.thread.is_alive() for s in slow) and time.monotonic() < loop_deadline:
                log = srv.stderr()[mark:]
                read_at = time.monotonic()
                if any(read_at < s.cannot_end_before for s in slow):
                    checks += 1
                    assert unloaded not in log, (
                        f"version 1 was unloaded while {sum(read_at < s.cannot_end_before for s in slow)} "
                        f"requests on it were still in flight:\n{log[-3000:]}")
                time.sleep(0.05)
            for i, s in enumerate(slow):
                s.thread.join(5)
                assert not s.thread.is_alive(), f"slow request {i} did not end"
                assert s.error is None, f"slow request {i}: {s.error}"
                assert s.complete, f"slow request {i} was cut short after {s.body!r}"
                assert s.body == s.expected(1), f"slow request {i} body: {s.body!r}"
            assert checks > 0, "the log was never read while a slow request was certainly in flight"
            # Once the last one has ended, version 1 goes.
            assert pu.wait_log(srv, re.escape(unloaded), 5, since=mark), \
                f"version 1 not unloaded within 5 s after its last request ended:\n{srv.stderr()[mark:][-3000:]}"

            n = load.total()
            assert pu.wait_for(lambda: load.total() >= n + 200, 10), "load stalled after the reload"
        assert load.failures == [], f"{len(load.failures)} failed requests: {load.failures[:10]}"
        assert load.regressions == [], f"version 1 after version 2 on connections {load.regressions[:10]}"
        assert load.counts[b"version 1\n"] > 0 and load.counts[b"version 2\n"] > 0, load.counts
        for _ in range(20):
            r, complete = pu.http(srv.port, "GET", "/versioned", timeout=5)
            assert complete and r.body == b"version 2\n", r
        log = srv.stderr()[mark:]
        assert re.search(r"plugin versioned 2 loaded from \S*versioned\.so \(replacing 1\)", log), log[-3000:]
        assert log.count(unloaded) == 1, f"'{unloaded}' {log.count(unloaded)} times (once for the whole server):\n{log[-3000:]}"
        assert log.count("versioned 1 shut down") == 1, log[-3000:]
        assert pu.ok_get(srv.port, "/ok") == b"ok\n"


# --------------------------------------------------------------------------------------
# post from plugin threads, four workers
# --------------------------------------------------------------------------------------

def test_event_streams_posted_from_plugin_threads_on_four_workers():
    folder = pu.plugin_folder({"stream": pu.example_plugin("stream")})
    with pu.running_server(folder, extra=["--workers", "4"], name="workers-events") as srv:
        wait_workers(srv, 4)
        n = 24
        results = [None] * n
        barrier = threading.Barrier(n)

        def client(i):
            count = 8 + i % 7
            want = b"".join(b"data: event %d\n\n" % k for k in range(1, count + 1))
            try:
                with awstest.connect(srv.port, timeout=10) as s:
                    rd = pu.Reader(s)
                    barrier.wait(10)
                    pu.send_request(s, "GET", f"/stream/events?interval={20 + i % 5 * 5}&count={count}")
                    r, complete = rd.read_response(timeout=20)
                    problems = []
                    if r.status != 200 or r.media_type != "text/event-stream":
                        problems.append(f"head {r!r}")
                    if "chunked" not in (r.header("transfer-encoding") or ""):
                        problems.append(f"not chunked: {r.raw_headers}")
                    if not complete or r.body != want:
                        problems.append(f"complete={complete} body={r.body!r}")
                    # The connection goes on after a stream fed by posts.
                    pu.send_request(s, "GET", "/stream/lines?n=3", close=True)
                    r2, complete2 = rd.read_response(timeout=10)
                    if r2.status != 200 or not complete2 or r2.body != b"line 1\nline 2\nline 3\n":
                        problems.append(f"next request on the connection: {r2!r} complete={complete2}")
                    results[i] = problems
            except Exception as e:  # reported below
                results[i] = [f"{type(e).__name__}: {e}"]

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(40)
        bad = {i: p for i, p in enumerate(results) if p is None or p}
        assert not bad, f"{len(bad)} of {n} event streams wrong: {dict(list(bad.items())[:5])}"
        assert srv.alive()


# --------------------------------------------------------------------------------------
# SIGTERM with downloads on several workers
# --------------------------------------------------------------------------------------

def test_sigterm_lets_downloads_on_every_worker_finish(make_server, docroot):
    srv = make_server(args=["--workers", "4", "--shutdown-grace", "30"], name="workers-term")
    wait_workers(srv, 4)
    paths = ["/static/f_20971520.bin", "/dynamic/f_20971520.bin"] * 4
    n = len(paths)
    started = [threading.Event() for _ in range(n)]
    go = threading.Event()
    results = [None] * n

    def download(i):
        path = paths[i]
        buf = bytearray()
        try:
            with awstest.connect(srv.port, timeout=10, rcvbuf=64 * 1024) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                while len(buf) < MIB:
                    b = s.recv(64 * 1024)
                    if not b:
                        break
                    buf += b
                started[i].set()
                go.wait(20)
                deadline = time.monotonic() + 40
                while time.monotonic() < deadline:   # slowly: 64 KiB, a pause, again
                    b = s.recv(64 * 1024)
                    if not b:
                        break
                    buf += b
                    time.sleep(0.001)
                else:
                    results[i] = f"{path}: no EOF within 40 s ({len(buf)} bytes)"
                    return
            r = awstest.parse_response(bytes(buf), complete=False)
            want = docroot.files[path]
            if r.status != 200 or r.content_length != len(want):
                results[i] = f"{path}: {r!r}"
            elif len(r.body) != len(want) or r.rest:
                results[i] = f"{path}: {len(r.body)} of {len(want)} bytes (+{len(r.rest)} extra)"
            elif r.body != want:
                results[i] = f"{path}: {len(want)} bytes but not the file's"
            else:
                results[i] = "ok"
        except Exception as e:  # reported below
            results[i] = f"{path}: {type(e).__name__}: {e} after {len(buf)} bytes"
        finally:
            started[i].set()

    threads = [threading.Thread(target=download, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for e in started:
        assert e.wait(20), "a download did not start"
    assert all(r is None for r in results), f"downloads failed before the signal: {results}"
    srv.signal(signal.SIGTERM)
    go.set()
    # No worker accepts any more: several new connections in a row are refused (or closed
    # unanswered), whichever listener they would hash to.
    tries = []

    def none_accepted():
        outcomes = [refused_or_closed(srv.port, timeout=1.0) for _ in range(8)]
        tries.append([how for _, how in outcomes])
        return all(ok for ok, _ in outcomes)

    assert awstest.wait_for(none_accepted, 5, 0.1), f"new connections still served after SIGTERM: {tries[-3:]}"
    for t in threads:
        t.join(60)
    assert results == ["ok"] * n, f"downloads after SIGTERM: {results}"
    try:
        rc = srv.proc.wait(15)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"server still running 15 s after the downloads ended:\n{srv.stderr()[-2000:]}")
    assert rc == 0, f"exit status {rc} after SIGTERM; stderr:\n{srv.stderr()[-2000:]}"


# --------------------------------------------------------------------------------------
# --max-connections for the whole server
# --------------------------------------------------------------------------------------

def _assert_refused_503(c, what):
    try:
        c.send(get_req("/static/a.txt"))
    except (BrokenPipeError, ConnectionResetError):
        pass
    r = c.final_response(timeout=5)
    assert r.status == 503, f"{what}: {r!r}"
    assert r.header("retry-after") == "1", f"{what}: Retry-After {r.header('retry-after')!r}: {r!r}"
    assert "close" in connection_tokens(r), f"{what}: {r!r}"
    closed, extra = c.closed_within(5)
    assert closed and extra == b"", f"{what}: not closed after the 503 (extra {extra[:100]!r})"


def test_max_connections_is_one_limit_for_all_workers(make_server, docroot):
    srv = make_server(args=["--workers", "4", "--max-connections", "8"], name="workers-maxconn")
    wait_workers(srv, 4)
    want = docroot.files["/static/a.txt"]

    def ok(c, what):
        r = c.request(get_req("/static/a.txt"), timeout=5)
        assert r.status == 200 and r.body == want and "close" not in connection_tokens(r), f"{what}: {r!r}"

    conns = []
    try:
        for i in range(8):   # eight connections, each answered once: surely accepted and counted
            c = Conn(srv.port, timeout=5)
            conns.append(c)
            ok(c, f"connection {i + 1} of 8")
        for round_ in range(5):   # the 9th and 10th at once, five times: whichever worker takes them
            extra = [Conn(srv.port, timeout=5), Conn(srv.port, timeout=5)]
            try:
                for j, c in enumerate(extra):
                    _assert_refused_503(c, f"round {round_ + 1}, connection {9 + j}")
            finally:
                for c in extra:
                    c.close()
        for i, c in enumerate(conns):   # the eight still work
            ok(c, f"connection {i + 1} after the refusals")
        # One leaves: a new one is served (once the server has seen the close), and then the
        # server is full again.
        conns.pop(0).close()

        def served():
            c = Conn(srv.port, timeout=5)
            try:
                c.send(get_req("/static/a.txt"))
                r = c.final_response(timeout=5)
            except OSError:
                c.close()
                return None
            if r.status == 200 and r.body == want:
                return c
            c.close()
            return None

        c = awstest.wait_for(served, 5, 0.1)
        assert c, "no connection served after one of the eight closed"
        conns.append(c)
        with Conn(srv.port, timeout=5) as over:
            _assert_refused_503(over, "a 9th connection after the replacement")
        for i, c in enumerate(conns):
            ok(c, f"connection {i + 1} at the end")
    finally:
        for c in conns:
            c.close()
