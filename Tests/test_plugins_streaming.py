"""Streaming responses and request lifetimes: the stream example plugin under a slow and then
fast 1 GiB download (with the server's memory watched), clients that leave mid-stream, events
posted from a plugin thread, and the probe test plugin (Tests/plugins/probe.c), which keeps
request handles past their end and posts from a thread after the client has gone."""

import threading
import time
import zlib

import pytest

import awstest
import pluginutil as pu
from pluginutil import E_GONE, E_THREAD, OK

GIB = 1 << 30
MIB = 1 << 20


@pytest.fixture(scope="module")
def stream_so():
    return pu.example_plugin("stream")


@pytest.fixture(scope="module")
def srv():
    plugins = {"probe": pu.test_plugin("probe")}
    if pu.example_available("stream"):
        try:
            plugins["stream"] = pu.example_plugin("stream")
        except BaseException:  # skip/fail belongs to the stream tests, not to the probe ones
            pass
    with pu.running_server(pu.plugin_folder(plugins), name="streaming") as s:
        yield s


def _stats(srv) -> dict:
    return pu.report(pu.ok_get(srv.port, "/probe/stats"))


def _wait_stats(srv, pred, timeout):
    """Polls /probe/stats until pred(stats) holds; returns the stats, or None after timeout."""
    return pu.wait_for(lambda: (lambda st: st if pred(st) else None)(_stats(srv)), timeout)


def _still_serving(srv, stream=False):
    assert srv.alive(), f"server died:\n{srv.stderr()[-3000:]}"
    assert pu.ok_get(srv.port, "/probe/stats")
    if stream:
        assert pu.ok_get(srv.port, "/stream/lines?n=3") == b"line 1\nline 2\nline 3\n"


# --------------------------------------------------------------------------------------
# 1 GiB, slow then fast, with flat server memory
# --------------------------------------------------------------------------------------

def test_one_gib_stream_slow_then_fast_reader_exact_and_flat_memory(srv, stream_so):
    size = GIB
    pid = srv.server_pid()
    period = bytes(i % 251 for i in range(251))
    pattern = period * ((4 * MIB) // 251 + 2)   # any slice of <= 4 MiB at any phase
    received = 0
    samples = []          # (bytes received when sampled, VmRSS KiB)
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            try:
                samples.append((received, pu.rss_kib(pid)))
            except (OSError, RuntimeError):
                return
            time.sleep(0.02)

    rss_before = pu.rss_kib(pid)
    t = threading.Thread(target=sampler, daemon=True)
    t.start()
    crc_got = crc_want = 0
    started = time.monotonic()
    try:
        with awstest.connect(srv.port, timeout=10, rcvbuf=64 * 1024) as s:
            pu.send_request(s, "GET", f"/stream/bytes?size={size}", close=True)
            rd = pu.Reader(s)
            head = rd.read_head(time.monotonic() + 10)
            assert head.status == 200, head
            assert head.content_length == size, head
            assert head.header("transfer-encoding") is None, head
            buf = bytearray(4 * MIB)
            view = memoryview(buf)

            def take(data):
                nonlocal received, crc_got, crc_want
                phase = received % 251
                want = pattern[phase:phase + len(data)]
                if data != want:
                    bad = next(i for i in range(len(data)) if data[i] != want[i])
                    pytest.fail(f"byte {received + bad} is {data[bad]}, expected {(received + bad) % 251}")
                crc_got = zlib.crc32(data, crc_got)
                crc_want = zlib.crc32(want, crc_want)
                received += len(data)

            if rd.buf:
                take(bytes(rd.buf))
            # Slow: 64 KiB every 100 ms for about 2 s (the server must wait, not buffer).
            slow_until = time.monotonic() + 2.0
            while time.monotonic() < slow_until:
                n = s.recv_into(view[:64 * 1024])
                assert n > 0, f"EOF after {received} bytes"
                take(bytes(view[:n]))
                time.sleep(0.1)
            slow_bytes = received
            # Fast: as fast as we can until the end.
            deadline = time.monotonic() + 60
            while received < size:
                assert time.monotonic() < deadline, f"only {received} of {size} bytes after 60 s"
                n = s.recv_into(view[:min(len(buf), size - received)])
                assert n > 0, f"EOF after {received} of {size} bytes"
                take(bytes(view[:n]))
            s.settimeout(5)
            assert s.recv(1) == b"", "bytes after the declared length, or no close after Connection: close"
    finally:
        stop.set()
        t.join(2)
    elapsed = time.monotonic() - started
    assert received == size and crc_got == crc_want, (received, crc_got, crc_want)
    after64 = [rss for got, rss in samples if got >= 64 * MIB]
    assert len(after64) >= 3, f"too few memory samples after 64 MiB: {len(after64)} ({elapsed:.1f}s)"
    base, peak = after64[0], max(after64)
    all_peak = max(rss for _, rss in samples)
    print(f"1 GiB in {elapsed:.1f}s ({slow_bytes} B in the slow phase); RSS KiB: before {rss_before}, "
          f"at 64 MiB {base}, peak after {peak}, peak overall {all_peak}; {len(samples)} samples")
    assert peak - base < 32 * 1024, \
        f"server RSS grew from {base} KiB (after 64 MiB) to {peak} KiB during a 1 GiB stream"
    assert all_peak - rss_before < 64 * 1024, \
        f"server RSS grew from {rss_before} KiB before the stream to {all_peak} KiB (slow phase read {slow_bytes} B)"
    _still_serving(srv, stream=True)


# --------------------------------------------------------------------------------------
# Clients leaving mid-stream
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("target,read_bytes,marker", [
    ("/stream/lines?n=10000000", 200_000, b"line 1000\n"),
    ("/stream/bytes?size=1073741824", 1_000_000, b""),
    ("/stream/events?interval=50", 0, b"data: event 2\n\n"),
])
def test_client_leaving_mid_stream_is_aborted(srv, stream_so, target, read_bytes, marker):
    mark = pu.log_mark(srv)
    kind = target.split("/")[2].split("?")[0]
    with awstest.connect(srv.port, timeout=5) as s:
        pu.send_request(s, "GET", target)
        got = b""
        while len(got) < read_bytes or marker not in got:
            b = s.recv(65536)
            assert b, f"EOF after {len(got)} bytes"
            got += b
        assert got.startswith(b"HTTP/1.1 200 "), got[:200]
        # Leaving with unread bytes (a reset) or without (a plain close), then on_abort.
    t0 = time.monotonic()
    m = pu.wait_log(srv, rf"{kind} stream aborted", timeout=2.0, since=mark)
    assert m, f"no '{kind} stream aborted' line within 2 s of the client leaving:\n{srv.stderr()[mark:][-2000:]}"
    assert time.monotonic() - t0 <= 2.0
    _still_serving(srv, stream=True)


def test_many_clients_leaving_at_once(srv, stream_so):
    """Twenty streams of all three kinds, dropped together; each one is aborted once."""
    mark = pu.log_mark(srv)
    socks = []
    targets = ["/stream/lines?n=10000000", "/stream/bytes?size=1073741824", "/stream/events?interval=20"]
    for i in range(21):
        s = awstest.connect(srv.port, timeout=5)
        pu.send_request(s, "GET", targets[i % 3])
        socks.append(s)
    for s in socks:
        assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
    for s in socks:
        s.close()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if srv.stderr()[mark:].count("stream aborted") >= 21:
            break
        time.sleep(0.05)
    assert srv.stderr()[mark:].count("stream aborted") == 21, srv.stderr()[mark:][-3000:]
    _still_serving(srv, stream=True)


# --------------------------------------------------------------------------------------
# Events posted from a plugin thread
# --------------------------------------------------------------------------------------

def test_events_arrive_at_the_interval(srv, stream_so):
    count, interval_ms = 8, 100
    with awstest.connect(srv.port, timeout=5) as s:
        pu.send_request(s, "GET", f"/stream/events?interval={interval_ms}&count={count}", close=True)
        rd = pu.Reader(s)
        t0 = time.monotonic()
        head = rd.read_head(t0 + 5)
        assert head.status == 200 and head.media_type == "text/event-stream", head
        assert "chunked" in (head.header("transfer-encoding") or ""), head
        # Read chunk by chunk and note when each event arrives.
        arrivals, text = [], b""
        deadline = t0 + 10
        while text.count(b"\n\n") < count:
            assert time.monotonic() < deadline, f"events so far: {text!r}"
            while b"\r\n" not in rd.buf:
                assert rd._fill(deadline), f"EOF; events so far: {text!r}"
            size_line, rest = rd.buf.split(b"\r\n", 1)
            n = int(size_line, 16)
            assert n > 0, f"the last chunk came after {text!r}"
            while len(rest) < n + 2:
                assert rd._fill(deadline), f"EOF inside a chunk; events so far: {text!r}"
                size_line, rest = rd.buf.split(b"\r\n", 1)
            rd.buf = rest[n + 2:]
            text += rest[:n]
            arrivals.extend([time.monotonic()] * rest[:n].count(b"\n\n"))
        elapsed = arrivals[-1] - t0
        # Then the last chunk, and the close (Connection: close).
        rest, complete = rd.read_chunked_body(deadline)
        assert complete and rest == b"", (rest, complete)
    assert text == b"".join(b"data: event %d\n\n" % i for i in range(1, count + 1)), text
    expected = count * interval_ms / 1000
    assert expected * 0.8 <= elapsed <= expected + 2.0, f"{count} events every {interval_ms} ms took {elapsed:.2f}s"
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert max(gaps) < 1.0, f"gaps between events: {gaps}"
    _still_serving(srv, stream=True)


# --------------------------------------------------------------------------------------
# Request handles after the request: the probe plugin
# --------------------------------------------------------------------------------------

HOST_CALLS = ["set_status", "add_header", "set_content_length", "send_part", "finish", "fail",
              "set_request_data"]


def _assert_all_gone(rep: dict):
    assert rep["handle_nonzero"] == 1, rep
    bad = {k: rep[k] for k in HOST_CALLS if rep[k] != E_GONE}
    assert not bad, f"host functions given an ended handle must return AWS_E_GONE (-1): {bad}; all: {rep}"
    assert rep["request_data_null"] == 1, rep
    assert rep["request_header_found"] == 0 and rep["request_header_null"] == 1, rep
    assert rep["request_scratch_null"] == 1, rep
    assert rep["post"] == OK, f"post with an ended (once valid) handle returns 0 and calls fn with alive=0: {rep}"


def test_old_handle_on_the_same_connection_is_gone(srv):
    """The stored handle names the same connection slot as the checking request (keep-alive),
    one generation earlier: every call must see that it has ended."""
    before = _stats(srv)
    with awstest.connect(srv.port, timeout=5) as s:
        rd = pu.Reader(s)
        pu.send_request(s, "GET", "/probe/store")
        r, complete = rd.read_response(timeout=5)
        assert r.status == 200 and r.body == b"stored\n" and complete, r
        pu.send_request(s, "GET", "/probe/check", close=True)
        r, complete = rd.read_response(timeout=5)
        assert r.status == 200 and complete, r
        assert r.header("x-old") is None, f"a call with the old handle changed the new response: {r!r}"
    _assert_all_gone(pu.report(r.body))
    after = _wait_stats(srv, lambda st: st["check_post_alive0"] > before["check_post_alive0"], 2)
    assert after, "the function posted with an ended handle was not called with alive=0"
    assert after["check_post_alive1"] == before["check_post_alive1"], after
    _still_serving(srv)


def test_old_handle_from_another_connection_is_gone(srv):
    assert pu.ok_get(srv.port, "/probe/store") == b"stored\n"
    _assert_all_gone(pu.report(pu.ok_get(srv.port, "/probe/check")))


def test_aborted_request_runs_on_abort_and_its_handle_is_gone(srv):
    before = _stats(srv)
    with awstest.connect(srv.port, timeout=5) as s:
        pu.send_request(s, "GET", "/probe/hang")
        got = b""
        while b"started\n" not in got:
            b = s.recv(4096)
            assert b, got
            got += b
        assert got.startswith(b"HTTP/1.1 200 "), got
    # The client has left while the plugin was idle (nothing to send): on_abort, then on_end.
    st = _wait_stats(srv, lambda x: x["hang_ends"] > before["hang_ends"], 2.0)
    assert st, f"on_abort/on_end did not run within 2 s of the client leaving an idle stream: {_stats(srv)}"
    assert st["hang_aborts"] == before["hang_aborts"] + 1, f"on_abort must run before on_end: {st}"
    assert st["abort_set_status"] == E_GONE, f"inside on_abort the handle is already invalid: {st}"
    _assert_all_gone(pu.report(pu.ok_get(srv.port, "/probe/check?hang=1")))
    _still_serving(srv)


def test_post_from_a_thread_after_the_client_left_gets_alive_0(srv):
    before = _stats(srv)
    with awstest.connect(srv.port, timeout=5) as s:
        pu.send_request(s, "GET", "/probe/late?delay=300")
        got = b""
        while b"waiting\n" not in got:
            b = s.recv(4096)
            assert b, got
            got += b
    st = _wait_stats(srv, lambda x: x["late_alive0"] > before["late_alive0"], 3.0)
    assert st, f"the posted function was not called with alive=0: {_stats(srv)}"
    assert st["late_alive1"] == before["late_alive1"], st
    assert st["late_dead_send"] == E_GONE, f"send_part inside a posted function with alive=0: {st}"
    assert st["late_thread_set_status"] == E_THREAD, f"set_status from a plugin thread: {st}"
    assert st["late_post"] == OK, st
    assert st["aborts"] > before["aborts"], f"on_abort did not run for the request the client left: {st}"
    _still_serving(srv)


def test_post_from_a_thread_while_the_client_waits_gets_alive_1(srv):
    before = _stats(srv)
    t0 = time.monotonic()
    r, complete = pu.http(srv.port, "GET", "/probe/late?delay=200", timeout=5)
    assert r.status == 200 and complete and r.body == b"waiting\ndone\n", (r, complete)
    assert time.monotonic() - t0 >= 0.15
    st = _stats(srv)
    assert st["late_alive1"] == before["late_alive1"] + 1, st
    assert st["late_thread_set_status"] == E_THREAD, st
    _still_serving(srv)


def test_http10_stream_without_length_is_close_delimited(srv, stream_so):
    """No declared length on HTTP/1.0: no chunked framing, the close ends the body."""
    data = awstest.raw_request(srv.port, b"GET /stream/lines?n=20000 HTTP/1.0\r\nHost: x\r\n\r\n", timeout=10)
    r = awstest.parse_response(data)
    assert r.status == 200 and r.header("transfer-encoding") is None and r.content_length is None, r
    assert r.body == b"".join(b"line %d\n" % i for i in range(1, 20001)), r
    data = awstest.raw_request(srv.port, b"GET /stream/bytes?size=300000 HTTP/1.0\r\nHost: x\r\n\r\n", timeout=10)
    r = awstest.parse_response(data)
    assert r.status == 200 and r.content_length == 300000 and len(r.body) == 300000 and r.rest == b"", r
