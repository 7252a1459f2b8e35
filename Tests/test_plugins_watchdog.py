"""The watch over slow plugin callbacks (--plugin-slow-ms, default 100 ms).

A plugin callback runs on its worker's event loop: while it blocks, every other connection of
that worker waits. The host cannot prevent it, but it must not stay silent about it: a callback
(on_request, on_body, on_proceed, on_abort, on_end, a part's release, a posted function, a
function endpoint) that runs past the limit is logged with the plugin, the route and the time,
and counted per worker; one still running after a second is reported while it runs. The test
plugin is Tests/plugins/sleepy.c, which sleeps in each kind of callback. Every server here runs
one worker, so the counts and the stall are deterministic.
"""

import json
import re
import time

import awstest
import pluginutil as pu

ONE_WORKER = ["--workers", "1"]


def _folder():
    return pu.plugin_folder({"sleepy": pu.test_plugin("sleepy")})


def _slow_line(kind, route, limit=100):
    """The worker's line for a slow callback: groups (milliseconds, slow callbacks so far)."""
    return (rf"plugin sleepy: {re.escape(kind)} for {re.escape(route)} took (\d+)\.\d ms "
            rf"\(limit {limit} ms\): worker 0 served nothing else meanwhile \((\d+) slow callbacks? so far\)")


def _access_millis(srv, target, since):
    """duration_ms of the request's json access line (the servers here log json)."""
    m = pu.wait_log(srv, rf'(?m)^\{{.*"target":"{re.escape(target)}".*\}}$', 3, since=since)
    assert m, f"no access-log line for {target}:\n{srv.stderr()[since:]}"
    o = json.loads(m.group(0))
    assert o["method"] == "GET" and o["status"] == 200, o
    return o["duration_ms"]


def test_slow_callback_is_logged_with_plugin_route_and_time_and_stalls_its_worker():
    with pu.running_server(_folder(), extra=ONE_WORKER + ["--log-format", "json"]) as srv:
        # A quick callback is not reported (the count below starts at 1).
        assert pu.ok_get(srv.port, "/sleepy?ms=0") == b"slept 0 ms\n"
        mark = pu.log_mark(srv)
        with awstest.connect(srv.port, timeout=10) as a:
            pu.send_request(a, "GET", "/sleepy?ms=300", close=True)
            a_sent = time.monotonic()
            # The plugin logs before it sleeps: from then on the worker's only loop is blocked.
            assert pu.wait_log(srv, r"sleepy: on_request sleeping 300 ms", 3, since=mark), srv.stderr()[mark:]
            b_sent = time.monotonic()
            b = pu.ok_get(srv.port, "/plain.txt")
            b_done = time.monotonic()
            r, complete = pu.Reader(a).read_response(timeout=10)
        assert r.status == 200 and complete and r.body == b"slept 300 ms\n", r
        assert b == b"a static file next to the plugins\n"
        # The stall is real: a static file asked for while the callback slept was answered only
        # once it returned.
        assert b_sent - a_sent < 0.25, "the second request was sent too late to show the stall"
        assert b_done - a_sent >= 0.3, f"a request on the same worker was answered during the callback ({b_done - b_sent:.3f}s)"
        m = pu.wait_log(srv, _slow_line("on_request", "GET /sleepy*"), 3, since=mark)
        assert m, f"no slow-callback line:\n{srv.stderr()[mark:]}"
        assert 300 <= int(m.group(1)) < 5000 and m.group(2) == "1", m.group(0)
        # The access log's duration includes the time spent in the callback.
        assert _access_millis(srv, "/sleepy?ms=300", mark) >= 300
        # The count goes on.
        mark = pu.log_mark(srv)
        assert pu.ok_get(srv.port, "/sleepy?ms=150") == b"slept 150 ms\n"
        m = pu.wait_log(srv, _slow_line("on_request", "GET /sleepy*"), 3, since=mark)
        assert m and m.group(2) == "2", srv.stderr()[mark:]


def test_every_kind_of_callback_is_watched():
    with pu.running_server(_folder(), extra=ONE_WORKER) as srv:
        count = 0

        def expect(kind, route, request):
            nonlocal count
            mark = pu.log_mark(srv)
            request()
            count += 1
            m = pu.wait_log(srv, _slow_line(kind, route), 3, since=mark)
            assert m, f"{kind}: no slow-callback line:\n{srv.stderr()[mark:]}"
            assert int(m.group(1)) >= 150 and m.group(2) == str(count), m.group(0)

        def get(target, body):
            def run():
                r, complete = pu.http(srv.port, "GET", target, timeout=10)
                assert r.status == 200 and complete and r.body == body, (target, r)
            return run

        expect("on_request", "GET /sleepy*", get("/sleepy?ms=150", b"slept 150 ms\n"))
        expect("on_proceed", "GET /sleepy*", get("/sleepy/proceed?ms=150", b"slept 150 ms\n"))
        expect("posted function", "GET /sleepy*", get("/sleepy/post?ms=150", b"slept 150 ms\n"))
        expect("function", "* /sleepy/fn", get("/sleepy/fn?ms=150", b"150\n"))

        def post_body():
            r, complete = pu.http(srv.port, "POST", "/sleepy/body?ms=150", body=b"x" * 1000, timeout=10)
            assert r.status == 200 and complete and r.body == b"slept 150 ms\n", r
        expect("on_body", "POST /sleepy/body", post_body)

        # A function posted for a request that has ended: no route any more, the plugin is
        # named from the library its code is in.
        mark = pu.log_mark(srv)
        assert pu.ok_get(srv.port, "/sleepy/post-late?ms=150") == b"posting later\n"
        m = pu.wait_log(srv, r"plugin sleepy: posted function \(its request had ended\) took (\d+)\.\d ms "
                             r"\(limit 100 ms\): worker 0 served nothing else meanwhile \((\d+) slow callbacks so far\)",
                        3, since=mark)
        assert m, srv.stderr()[mark:]
        assert int(m.group(1)) >= 150 and m.group(2) == str(count + 1), m.group(0)


def test_the_limit_is_a_flag_and_0_turns_the_watch_off():
    with pu.running_server(_folder(), extra=ONE_WORKER + ["--plugin-slow-ms", "1000"]) as srv:
        mark = pu.log_mark(srv)
        assert pu.ok_get(srv.port, "/sleepy?ms=300") == b"slept 300 ms\n"   # under 1000 ms
        assert pu.ok_get(srv.port, "/sleepy?ms=1100") == b"slept 1100 ms\n"
        m = pu.wait_log(srv, _slow_line("on_request", "GET /sleepy*", limit=1000), 3, since=mark)
        assert m, srv.stderr()[mark:]
        assert int(m.group(1)) >= 1100 and m.group(2) == "1", m.group(0)  # the 300 ms one was not counted
    with pu.running_server(_folder(), extra=ONE_WORKER + ["--plugin-slow-ms", "0"]) as srv:
        mark = pu.log_mark(srv)
        assert pu.ok_get(srv.port, "/sleepy?ms=1300") == b"slept 1300 ms\n"
        time.sleep(0.3)
        log = srv.stderr()[mark:]
        assert "sleepy: on_request sleeping 1300 ms" in log
        assert "took" not in log and "still running" not in log, log


def test_a_stuck_callback_is_reported_while_it_runs():
    with pu.running_server(_folder(), extra=ONE_WORKER) as srv:
        mark = pu.log_mark(srv)
        with awstest.connect(srv.port, timeout=10) as a:
            pu.send_request(a, "GET", "/sleepy?ms=3000", close=True)
            sent = time.monotonic()
            # The control thread looks once a second and reports a callback running for 1 s or more.
            m = pu.wait_log(srv, r"plugin sleepy: on_request for GET /sleepy\* still running after (\d+)\.\d ms: "
                                 r"every connection of worker 0 waits for it", 2.3, since=mark)
            seen = time.monotonic()
            assert m, f"no report of the stuck callback within {seen - sent:.2f}s:\n{srv.stderr()[mark:]}"
            assert 1000 <= int(m.group(1)) < 3000, m.group(0)
            # Reported while it was stuck: the response has not come yet.
            a.setblocking(False)
            try:
                early = a.recv(100)
            except BlockingIOError:
                early = None
            assert early is None, f"the response had arrived already: {early!r}"
            a.setblocking(True)
            a.settimeout(10)
            r, complete = pu.Reader(a).read_response(timeout=10)
        assert r.status == 200 and complete and r.body == b"slept 3000 ms\n", r
        m = pu.wait_log(srv, _slow_line("on_request", "GET /sleepy*"), 3, since=mark)
        assert m and int(m.group(1)) >= 3000, srv.stderr()[mark:]
