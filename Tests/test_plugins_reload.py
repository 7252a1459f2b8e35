"""Hot reload on SIGHUP: a new version of a plugin replaces the old one under load without a
failed request, responses in flight finish on the old version, and a broken new file leaves the
old version serving. The plugin is Tests/plugins/versioned.c, built as version 1 and 2 and
deployed over each other under the same file name (written elsewhere, renamed into place)."""

import os
import re
import shutil
import signal
import threading
import time

import pytest

import awstest
import pluginutil as pu


def v(n):
    return pu.test_plugin("versioned", VERSION=f'"{n}"')


@pytest.fixture
def deployed():
    """A plugins folder with versioned (version 1) and ok."""
    return pu.plugin_folder({"versioned": v(1), "ok": pu.test_plugin("ok")})


def _version(port, timeout=5.0) -> bytes:
    r, complete = pu.http(port, "GET", "/versioned", timeout=timeout)
    assert r.status == 200 and complete, r
    return r.body


def _reload(srv, until_version=None, timeout=5.0):
    """SIGHUP, then (optionally) poll until /versioned answers `until_version`."""
    mark = pu.log_mark(srv)
    srv.signal(signal.SIGHUP)
    assert pu.wait_log(srv, r"SIGHUP: reloading plugins", 2, since=mark), srv.stderr()[mark:]
    if until_version is not None:
        want = f"version {until_version}\n".encode()
        ok = pu.wait_for(lambda: _version(srv.port) == want, timeout, interval=0.02)
        assert ok, f"/versioned did not switch to version {until_version} within {timeout}s:\n{srv.stderr()[mark:]}"
    return mark


class Load(pu.VersionLoad):
    """Threads sending GET /versioned back to back: keep-alive connections and one thread
    with a new connection per request. Counts answers per version and every failure."""

    def __init__(self, port, keepalive_threads=3, fresh_threads=1):
        super().__init__(port)
        self.threads = [threading.Thread(target=self._run, args=(True,), daemon=True) for _ in range(keepalive_threads)]
        self.threads += [threading.Thread(target=self._run, args=(False,), daemon=True) for _ in range(fresh_threads)]

    def _note(self, body):
        with self.lock:
            if body in self.counts:
                self.counts[body] += 1
            else:
                self.failures.append(f"unexpected body {body!r}")

    def _run(self, keepalive):
        sock = rd = None
        seen2 = False
        while not self.stop.is_set():
            try:
                if sock is None:
                    sock = awstest.connect(self.port, timeout=5)
                    rd = pu.Reader(sock)
                    seen2 = False
                pu.send_request(sock, "GET", "/versioned", close=not keepalive)
                r, complete = rd.read_response(timeout=5)
                if r.status != 200 or not complete:
                    with self.lock:
                        self.failures.append(f"{r.status} complete={complete} {r.body[:100]!r}")
                else:
                    self._note(r.body)
                    if r.body == b"version 2\n":
                        seen2 = True
                    elif seen2:
                        with self.lock:
                            self.regressions.append(r.body)
                if not keepalive or (r.header("connection") or "").lower() == "close":
                    sock.close()
                    sock = None
            except (OSError, ValueError, awstest.IncompleteResponse) as e:
                with self.lock:
                    self.failures.append(f"{type(e).__name__}: {e}")
                if sock is not None:
                    sock.close()
                sock = None
        if sock is not None:
            sock.close()


def test_reload_under_load_has_no_failed_request(deployed):
    with pu.running_server(deployed) as srv:
        assert _version(srv.port) == b"version 1\n"
        assert re.search(rf"plugin versioned 1 \(ABI {pu.HOST_ABI_RE}\): GET /versioned\*", srv.stderr()), srv.stderr()
        with Load(srv.port) as load:
            assert pu.wait_for(lambda: load.total() >= 200, 5), f"load too slow: {load.total()} requests"
            pu.deploy(deployed, "versioned", v(2))
            mark = _reload(srv, until_version=2)
            n = load.total()
            assert pu.wait_for(lambda: load.total() >= n + 200, 5), "load stalled after the reload"
        assert load.failures == [], f"{len(load.failures)} failed requests during the reload: {load.failures[:10]}"
        assert load.regressions == [], f"version 1 answered after version 2 on the same connection: {len(load.regressions)}"
        assert load.counts[b"version 1\n"] > 0 and load.counts[b"version 2\n"] > 0, load.counts
        for _ in range(20):
            assert _version(srv.port) == b"version 2\n"
        log = srv.stderr()[mark:]
        assert re.search(r"plugin versioned 2 loaded from \S*versioned\.so \(replacing 1\)", log), log
        # Nothing uses version 1 any more: it is shut down (its threads joined) and unloaded.
        assert pu.wait_log(srv, r"plugin versioned 1 unloaded", 3, since=mark), srv.stderr()[mark:]
        assert "versioned 1 shut down" in srv.stderr()[mark:]
        assert pu.ok_get(srv.port, "/ok") == b"ok\n"


def test_in_flight_response_finishes_on_the_old_version(deployed):
    parts = 10
    with pu.running_server(deployed) as srv:
        result = {}
        first_part = threading.Event()

        def slow_client():
            try:
                with awstest.connect(srv.port, timeout=5) as s:
                    pu.send_request(s, "GET", f"/versioned/slow?parts={parts}&ms=100", close=True)
                    rd = pu.Reader(s)
                    deadline = time.monotonic() + 10
                    head = rd.read_head(deadline)
                    assert "chunked" in (head.header("transfer-encoding") or ""), head
                    while b"part 1\n" not in rd.buf and rd._fill(deadline):
                        pass
                    first_part.set()
                    body, complete = rd.read_chunked_body(deadline)
                    result.update(head=head, body=body, complete=complete, end=time.monotonic())
            except Exception as e:  # reported below
                result["error"] = repr(e)
                first_part.set()

        t = threading.Thread(target=slow_client, daemon=True)
        t0 = time.monotonic()
        t.start()
        assert first_part.wait(5), "the slow response did not start"
        assert "error" not in result, result
        pu.deploy(deployed, "versioned", v(2))
        mark = _reload(srv, until_version=2)
        switched = time.monotonic()
        # Version 1 still has a request in flight: it must not be unloaded yet.
        assert "plugin versioned 1 unloaded" not in srv.stderr()[mark:], srv.stderr()[mark:]
        t.join(15)
        assert not t.is_alive(), "the slow response did not end"
        assert "error" not in result, result
        assert result["head"].status == 200 and result["head"].header("x-version") == "1", result["head"]
        assert result["complete"], f"the in-flight response was cut short: {result['body']!r}"
        assert result["body"] == b"".join(b"v1 part %d\n" % i for i in range(1, parts + 1)), result["body"]
        assert result["end"] > switched, "the reload happened after the response, not during it"
        assert result["end"] - t0 >= parts * 0.1 * 0.8
        assert pu.wait_log(srv, r"plugin versioned 1 unloaded", 3, since=mark), srv.stderr()[mark:]
        r, complete = pu.http(srv.port, "GET", "/versioned/slow?parts=2&ms=10", timeout=5)
        assert complete and r.body == b"v2 part 1\nv2 part 2\n", r


@pytest.mark.parametrize("broken", ["garbage", "abi2", "noentry", "init-fails-on-overlap"])
def test_broken_new_file_keeps_the_old_version_serving(deployed, broken):
    with pu.running_server(deployed) as srv:
        assert _version(srv.port) == b"version 1\n"
        if broken == "garbage":
            pu.deploy_bytes(deployed, "versioned", b"\x7fELF" + os.urandom(20000))
        elif broken == "abi2":
            pu.deploy(deployed, "versioned", pu.test_plugin("abi2"))
        elif broken == "noentry":
            pu.deploy(deployed, "versioned", pu.test_plugin("noentry"))
        else:
            # A valid plugin whose route overlaps another plugin's (/ok): refused at reload,
            # and not fatal then.
            pu.deploy(deployed, "versioned", pu.test_plugin("ok"))
        mark = _reload(srv)
        m = pu.wait_log(srv, r"versioned\.so not reloaded: .*the old version keeps serving", 3, since=mark)
        assert m, f"no log line saying the old version keeps serving:\n{srv.stderr()[mark:]}"
        for _ in range(10):
            assert _version(srv.port) == b"version 1\n"
        assert pu.ok_get(srv.port, "/ok") == b"ok\n"
        assert "plugin versioned 1 unloaded" not in srv.stderr()[mark:]
        # A good file afterwards is picked up.
        pu.deploy(deployed, "versioned", v(2))
        _reload(srv, until_version=2)
        assert pu.ok_get(srv.port, "/ok") == b"ok\n"


def test_reload_adds_and_removes_plugins(deployed):
    with pu.running_server(deployed) as srv:
        r, _ = pu.http(srv.port, "GET", "/abi10")
        assert r.status == 404, r
        # Unchanged files keep their loaded instance: a SIGHUP with no change loads nothing.
        mark = _reload(srv)
        time.sleep(0.2)
        assert " loaded from " not in srv.stderr()[mark:], srv.stderr()[mark:]
        assert _version(srv.port) == b"version 1\n"
        # A new file is loaded.
        pu.deploy(deployed, "abi10", pu.test_plugin("abi10"))
        mark = _reload(srv)
        assert pu.wait_for(lambda: pu.http(srv.port, "GET", "/abi10")[0].status == 200, 3), srv.stderr()[mark:]
        # A removed file's routes go away; the others stay.
        os.unlink(os.path.join(deployed, "ok.so"))
        mark = _reload(srv)
        assert pu.wait_for(lambda: pu.http(srv.port, "GET", "/ok")[0].status == 404, 3), srv.stderr()[mark:]
        assert pu.wait_log(srv, r"plugin ok \S+ unloaded", 3, since=mark), srv.stderr()[mark:]
        assert _version(srv.port) == b"version 1\n"
        assert pu.http(srv.port, "GET", "/abi10")[0].status == 200


def test_post_queued_when_the_old_version_is_unloaded(deployed):
    """A plugin thread posts a function shortly after its request finished, while a reload
    retires that version. post promises fn is called exactly once; the host must not unload
    the library with the call still queued (it would jump into unmapped code)."""
    with pu.running_server(deployed) as srv:
        r, complete = pu.http(srv.port, "GET", "/versioned/post-later?ms=300", timeout=5)
        assert complete and r.body == b"version 1 posting later\n", r
        pu.deploy(deployed, "versioned", v(2))
        mark = _reload(srv, until_version=2)
        m = pu.wait_log(srv, r"versioned 1: late post ran alive=(\d)", 3, since=mark)
        assert srv.alive(), f"the server died running a posted function of an unloaded plugin:\n{srv.stderr()[mark:]}"
        assert m and m.group(1) == "0", f"the posted function did not run (with alive=0):\n{srv.stderr()[mark:]}"
        assert _version(srv.port) == b"version 2\n"


def test_plugin_copies_are_removed_when_the_server_exits(deployed):
    """Plugins load from content-addressed copies in $TMPDIR/aws-plugins-<pid>; a clean exit
    removes them (else every run leaves a folder of libraries behind)."""
    srv = awstest.Server(pu.small_root(), args=pu.server_args(deployed), log_dir=pu.new_dir("log-"))
    srv.start()
    cache = pu.plugin_cache(srv.server_pid())
    try:
        assert _version(srv.port) == b"version 1\n"
        copies = sorted(os.listdir(cache)) if os.path.isdir(cache) else []
        assert any(c.startswith("versioned-") for c in copies), f"no copy in {cache}: {copies}"
        pu.deploy(deployed, "versioned", v(2))
        _reload(srv, until_version=2)
        copies = sorted(os.listdir(cache))
        assert len([c for c in copies if c.startswith("versioned-")]) == 2, copies
    finally:
        rc, killed = srv.stop()
        leftover = sorted(os.listdir(cache)) if os.path.isdir(cache) else None
        shutil.rmtree(cache, ignore_errors=True)
    assert rc == 0 and not killed, f"exit {rc}, killed={killed}:\n{srv.stderr()[-2000:]}"
    assert leftover is None, f"{cache} still exists after a clean exit, holding {leftover}"


def lingering(n, **defines):
    return pu.test_plugin("lingering", VERSION=f'"{n}"', **defines)


def _lingering_ticks(port, version) -> int:
    body = pu.ok_get(port, "/lingering")
    m = re.fullmatch(rb"lingering (\d+) ticks=(\d+)\n", body)
    assert m and m.group(1) == str(version).encode(), body
    return int(m.group(2))


@pytest.mark.parametrize("new", ["good", "refused"])
def test_thread_outliving_its_unloaded_version_does_not_crash_the_server(new):
    """A plugin bug: a thread the plugin started in init keeps running its code after shutdown
    (Tests/plugins/lingering.c). Unloading that version must not unmap the code under the thread
    (which would SIGSEGV the whole server): the host keeps every initialised image mapped. The
    same holds for a new version whose init starts such a thread and then refuses to load."""
    folder = pu.plugin_folder({"lingering": lingering(1), "ok": pu.test_plugin("ok")})
    with pu.running_server(folder) as srv:
        t1 = _lingering_ticks(srv.port, 1)
        assert pu.wait_for(lambda: _lingering_ticks(srv.port, 1) > t1, 3), "version 1's thread does not run"
        if new == "good":
            pu.deploy(folder, "lingering", lingering(2))
            mark = _reload(srv)
            assert pu.wait_for(lambda: pu.ok_get(srv.port, "/lingering").startswith(b"lingering 2 "), 5), \
                srv.stderr()[mark:]
            # Nothing uses version 1 any more: shut down and unloaded, its thread still running.
            assert pu.wait_log(srv, r"plugin lingering 1 unloaded", 3, since=mark), srv.stderr()[mark:]
            still = pu.wait_log(srv, r"lingering 1: thread still running after shutdown", 3, since=mark)
        else:
            pu.deploy(folder, "lingering", lingering(2, REFUSE_INIT=1))
            mark = _reload(srv)
            assert pu.wait_log(srv, r"lingering\.so not reloaded: .*the old version keeps serving", 3, since=mark), \
                srv.stderr()[mark:]
            still = pu.wait_log(srv, r"lingering 2: thread still running after a refused init", 3, since=mark)
        # The stray thread's loop goes on (a sleep, then the plugin's own code) a few hundred ms
        # after its version is gone: the server must be alive and serving all the while.
        time.sleep(0.4)
        assert srv.alive(), f"the server died (exit {srv.proc.poll()}):\n{srv.stderr()[mark:]}"
        assert still, f"the stray thread never logged:\n{srv.stderr()[mark:]}"
        version = 2 if new == "good" else 1
        ticks = _lingering_ticks(srv.port, version)
        assert pu.wait_for(lambda: _lingering_ticks(srv.port, version) > ticks, 3)
        assert pu.ok_get(srv.port, "/ok") == b"ok\n"
        assert pu.ok_get(srv.port, "/plain.txt") == b"a static file next to the plugins\n"
        assert srv.alive()
