"""Process-level behaviour: access log, signals."""

import os
import re
import signal
import subprocess
import uuid

import pytest

from awstest import OK_EXIT, connect, get, read_response, wait_for


def lines_with(text, *needles):
    return [line for line in text.splitlines() if all(n in line for n in needles)]


# The default access-log format, Apache/nginx combined (no Referer or User-Agent sent here).
COMBINED = r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "%s %s HTTP/1\.1" %d (\d+|-) "-" "-"'


def combined(method, target, status):
    return re.compile(COMBINED % (method, re.escape(target), status))


def test_access_log_file(make_server, log_dir):
    path = os.path.join(log_dir, f"access-{uuid.uuid4().hex}.log")
    srv = make_server(args=["--access-log", path], name="accesslog")
    assert get(srv.port, "/static/x.txt").status == 200
    assert get(srv.port, "/static/missing-for-log.txt").status == 404

    def read():
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def complete():
        t = read()
        return (lines_with(t, "GET", "/static/x.txt", "200")
                and lines_with(t, "GET", "/static/missing-for-log.txt", "404"))

    assert wait_for(complete, 3.0), f"access log {path} lacks the requests; it holds:\n{read()!r}"
    text = read()
    ok = lines_with(text, "GET", "/static/x.txt", "200")
    assert len(ok) == 1, f"expected one line for the request, got {ok}"
    m = combined("GET", "/static/x.txt", 200).fullmatch(ok[0])
    assert m and m.group(1) == "17", f"not a combined line for the 17-byte file: {ok[0]!r}"
    missing = lines_with(text, "GET", "/static/missing-for-log.txt", "404")
    assert len(missing) == 1 and combined("GET", "/static/missing-for-log.txt", 404).fullmatch(missing[0]), missing


def test_access_log_flushed_on_shutdown(make_server, log_dir):
    path = os.path.join(log_dir, f"access-{uuid.uuid4().hex}.log")
    srv = make_server(args=["--access-log", path], name="accesslog-exit")
    paths = [f"/static/x.txt?n={i}" for i in range(5)] + ["/static/nothing-here.txt"]
    for p in paths:
        get(srv.port, p)
    rc, killed = srv.stop()
    assert not killed and rc in OK_EXIT, srv.crash_message(rc)
    with open(path, errors="replace") as f:
        text = f.read()
    assert len(lines_with(text, "GET", "/static/x.txt", "200")) == 5, text
    assert len(lines_with(text, "GET", "/static/nothing-here.txt", "404")) == 1, text


def test_access_log_stderr_by_default(server):
    probe = f"/static/probe-{uuid.uuid4().hex}.txt"
    assert get(server.port, probe).status == 404
    found = wait_for(lambda: lines_with(server.stderr(), probe), 3.0)
    assert found, f"no access-log line for {probe} on stderr; stderr tail:\n{server.stderr()[-2000:]}"
    assert len(found) == 1, found
    assert combined("GET", probe, 404).fullmatch(found[0]), found[0]


def _stop_within(srv, sig, limit):
    srv.signal(sig)
    try:
        rc = srv.proc.wait(limit)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"server still running {limit} s after {sig.name}; stderr tail:\n"
                             f"{srv.stderr()[-2000:]}")
    assert rc in OK_EXIT, srv.crash_message(rc)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_exits_on_signal_with_idle_connections(make_server, sig):
    srv = make_server(name=f"sig{int(sig)}")
    idle = connect(srv.port, timeout=5)            # connected, says nothing
    kept = connect(srv.port, timeout=5)            # a kept-alive connection after a response
    kept.sendall(b"GET /static/a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(kept).status == 200
    try:
        _stop_within(srv, sig, 5)
    finally:
        idle.close()
        kept.close()


def test_exits_on_sigterm_with_stalled_response(make_server):
    """A response in flight to a client that stopped reading may get a grace period, but the
    server must still exit in bounded time."""
    srv = make_server(name="sigterm-stalled")
    busy = connect(srv.port, timeout=5)
    busy.sendall(b"GET /static/f_20971520.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert busy.recv(100).startswith(b"HTTP/1.1 200")
    try:
        _stop_within(srv, signal.SIGTERM, 15)
    finally:
        busy.close()
