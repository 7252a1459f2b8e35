"""The plugin ABI as the loader and the host functions enforce it, with test plugins of our own
(Tests/plugins/*.c, compiled at test time): version checks (a 1.0 plugin with smaller structs,
another major), bad descriptors, overlapping routes, names and configuration, error statuses
from handlers, plugins that misuse the host API, request bodies (streamed and buffered), and
response parts of every kind (memory copied or lent, FILE by sendfile or AIO)."""

import os
import re

import pytest

import awstest
import pluginutil as pu
from pluginutil import E_GONE, E_INVALID, E_STATE, OK


def _refused_line(log: str, file_name: str) -> str:
    lines = [ln for ln in log.splitlines() if file_name in ln]
    assert lines, f"no log line names {file_name}:\n{log[-3000:]}"
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Loading: versions and broken libraries
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("major", [2, 0])
def test_other_abi_major_is_refused_and_others_serve(major):
    folder = pu.plugin_folder({"ok": pu.test_plugin("ok"), "abi2": pu.test_plugin("abi2", ABI_MAJOR=major)})
    with pu.running_server(folder) as srv:
        assert pu.ok_get(srv.port, "/ok") == b"ok\n"
        r, _ = pu.http(srv.port, "GET", "/abi2")
        assert r.status == 404, f"a refused plugin's route must not exist: {r!r}"
        log = srv.stderr()
        line = _refused_line(log, "abi2.so")
        assert f"ABI {major}.0" in line and f"host's ABI {pu.HOST_ABI}" in line, \
            f"the refusal must name the plugin's ABI {major}.0 and the host's {pu.HOST_ABI}: {line}"
        assert "init was called" not in log, "init of a plugin with another ABI major must not run"
        assert re.search(rf"plugin ok \S+ \(ABI {pu.HOST_ABI_RE}\): GET /ok", log), log[-2000:]


def test_other_abi_major_with_strict_plugins_exits_nonzero():
    folder = pu.plugin_folder({"ok": pu.test_plugin("ok"), "abi2": pu.test_plugin("abi2")})
    rc, out = pu.run_until_exit(folder, extra=["--strict-plugins"])
    assert rc != 0, f"--strict-plugins with an incompatible plugin must exit non-zero, got {rc}:\n{out}"
    assert rc > 0, f"exited by a signal ({rc}), not with an error status:\n{out}"
    line = _refused_line(out, "abi2.so")
    assert "ABI 2.0" in line and f"host's ABI {pu.HOST_ABI}" in line, line
    assert "init was called" not in out


def test_abi_1_0_plugin_with_smaller_structs_loads_and_serves():
    """abi10 declares ABI 1.0 and struct sizes that end before descriptor.shutdown and after
    handler.on_request; the fields beyond hold poison pointers the host must never call (a
    body, the end of a request, shutdown)."""
    folder = pu.plugin_folder({"abi10": pu.test_plugin("abi10"), "ok": pu.test_plugin("ok")})
    with pu.running_server(folder) as srv:
        log = srv.stderr()
        assert re.search(r"plugin abi10 1\.0\.7 \(ABI 1\.0\): \* /abi10", log), log[-2000:]
        body = pu.ok_get(srv.port, "/abi10").decode()
        m = re.fullmatch(r"abi10 ok method=GET host-abi=1\.(\d+) host-size=(\d+) has-scratch=1 user=ok\n", body)
        assert m and int(m.group(1)) >= 1 and int(m.group(2)) >= 160, \
            f"a 1.0 plugin sees the host's table (1.1: 18 functions, 160 bytes) and its user pointer: {body!r}"
        # Bodies (Content-Length and chunked) on a keep-alive connection: the plugin has no
        # on_body, so the host drains them; the next request on the connection still works.
        payload = os.urandom(100_000)
        with awstest.connect(srv.port) as s:
            rd = pu.Reader(s)
            pu.send_request(s, "POST", "/abi10", payload)
            r, complete = rd.read_response()
            assert r.status == 200 and complete and r.body.startswith(b"abi10 ok method=POST"), r
            pu.send_request(s, "PUT", "/abi10", payload, chunked=True, chunk_size=7000)
            r, complete = rd.read_response()
            assert r.status == 200 and complete and r.body.startswith(b"abi10 ok method=PUT"), r
            pu.send_request(s, "GET", "/abi10", close=True)
            r, complete = rd.read_response()
            assert r.status == 200 and complete and r.body.startswith(b"abi10 ok method=GET"), r
        assert pu.ok_get(srv.port, "/ok") == b"ok\n"
    # running_server checked the exit: a host that called the poisoned shutdown would crash.


def test_bad_magic_is_refused():
    folder = pu.plugin_folder({"badmagic": pu.test_plugin("badmagic"), "ok": pu.test_plugin("ok")})
    with pu.running_server(folder) as srv:
        assert pu.ok_get(srv.port, "/ok") == b"ok\n"
        r, _ = pu.http(srv.port, "GET", "/badmagic")
        assert r.status == 404, r
        log = srv.stderr()
        line = _refused_line(log, "badmagic.so")
        assert "magic" in line.lower(), line
        assert "init was called" not in log


def test_missing_entry_symbol_and_garbage_file_are_skipped():
    folder = pu.plugin_folder({"noentry": pu.test_plugin("noentry"), "ok": pu.test_plugin("ok")})
    with open(os.path.join(folder, "garbage.so"), "wb") as f:
        f.write(b"\x7fELF but not really" + os.urandom(4000))
    with open(os.path.join(folder, "notes.txt"), "wb") as f:
        f.write(b"not a plugin, not even named like one\n")
    with pu.running_server(folder) as srv:
        assert pu.ok_get(srv.port, "/ok") == b"ok\n"
        log = srv.stderr()
        line = _refused_line(log, "noentry.so")
        assert "aws_plugin_entry" in line, line
        _refused_line(log, "garbage.so")
        assert "notes.txt" not in log
        assert re.search(r"\b1 plugin\(s\) loaded", log), log[-2000:]


def test_missing_entry_with_strict_plugins_exits_nonzero():
    folder = pu.plugin_folder({"noentry": pu.test_plugin("noentry"), "ok": pu.test_plugin("ok")})
    rc, out = pu.run_until_exit(folder, extra=["--strict-plugins"])
    assert rc > 0, f"expected a non-zero exit status, got {rc}:\n{out}"
    _refused_line(out, "noentry.so")


def test_two_plugins_with_the_same_route_stop_the_server():
    folder = pu.plugin_folder({
        "dupa": pu.compile_c(os.path.join(pu.TEST_PLUGINS, "dup.c"), {"NAME": '"dupa"'}),
        "dupb": pu.compile_c(os.path.join(pu.TEST_PLUGINS, "dup.c"), {"NAME": '"dupb"'}),
        "ok": pu.test_plugin("ok"),
    })
    rc, out = pu.run_until_exit(folder)
    assert rc > 0, f"overlapping routes must stop the server with an error status, got {rc}:\n{out}"
    err = [ln for ln in out.splitlines() if "dupa" in ln and "dupb" in ln]
    assert err, f"no line names both plugins dupa and dupb:\n{out[-3000:]}"
    assert "/dup/route" in "\n".join(err), err


# --------------------------------------------------------------------------------------
# Error statuses and API misuse (one server for the misuse plugin)
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def misuse_server():
    folder = pu.plugin_folder({"misuse": pu.test_plugin("misuse"), "ok": pu.test_plugin("ok")})
    with pu.running_server(folder, name="misuse") as srv:
        yield srv


def _report(srv) -> dict:
    return pu.report(pu.ok_get(srv.port, "/misuse/report"))


def _assert_serving(srv):
    assert srv.alive(), f"server died:\n{srv.stderr()[-3000:]}"
    assert pu.ok_get(srv.port, "/ok") == b"ok\n"


def _error_page(r, status):
    assert r.status == status, f"expected the host's {status} page, got {r!r}"
    assert r.media_type == "text/html", r
    assert r.content_length == len(r.body), r
    assert str(status).encode() in r.body, r


@pytest.mark.parametrize("status", [418, 503, 400, 422])
def test_on_request_returning_a_status_gets_the_host_error_page(misuse_server, status):
    srv = misuse_server
    with awstest.connect(srv.port) as s:
        rd = pu.Reader(s)
        pu.send_request(s, "GET", f"/misuse/status?code={status}")
        r, complete = rd.read_response(timeout=5)
        assert complete
        _error_page(r, status)
        # The connection stays usable (a GET without a body has nothing left to drain).
        pu.send_request(s, "GET", "/ok", close=True)
        r2, complete = rd.read_response(timeout=5)
        assert r2.status == 200 and r2.body == b"ok\n" and complete, r2
    _assert_serving(srv)


def test_on_request_returning_a_non_error_status_is_a_500(misuse_server):
    r, complete = pu.http(misuse_server.port, "GET", "/misuse/status?code=200", timeout=5)
    # 200 is neither 0 (taken) nor 400..599: the host must answer with an error, not hang.
    assert complete and r.status == 500, r
    _assert_serving(misuse_server)


def test_fail_500_before_the_head(misuse_server):
    r, complete = pu.http(misuse_server.port, "GET", "/misuse/fail500", timeout=5)
    assert complete
    _error_page(r, 500)
    assert _report(misuse_server)["fail500"] == OK
    _assert_serving(misuse_server)


def test_send_part_twice_without_on_proceed(misuse_server):
    srv = misuse_server
    with awstest.connect(srv.port, timeout=5) as s:
        pu.send_request(s, "GET", "/misuse/twice")
        try:
            r, complete = pu.Reader(s).read_response(timeout=5)
        except (awstest.IncompleteResponse, ConnectionError):
            r, complete = None, False
    if r is not None and complete:
        assert r.status >= 500, f"a misused request must end with an error status or a closed connection: {r!r}"
    rep = _report(srv)
    assert rep["twice"].split(",")[:2] == ["0", str(E_STATE)], \
        f"send_part, send_part without on_proceed -> 0, AWS_E_STATE expected, got {rep['twice']}"
    assert int(rep["twice"].split(",")[2]) in (E_STATE, E_GONE), f"finish after the misuse: {rep['twice']}"
    assert pu.wait_log(srv, r"misuse.*outstanding", 2), "the misuse must be logged"
    _assert_serving(srv)


def test_send_part_twice_after_the_head_closes_the_connection(misuse_server):
    srv = misuse_server
    with awstest.connect(srv.port, timeout=5) as s:
        pu.send_request(s, "GET", "/misuse/twice-streamed")
        r, complete = pu.Reader(s).read_response(timeout=5)
        assert r.status == 200 and not complete, \
            f"after the head a misuse can only cut the response short (no last chunk): {r!r} complete={complete}"
        assert r.body.startswith(b"first\n"), r
        assert s.recv(100) == b"", "the connection must be closed"
    rep = _report(srv)
    codes = [int(x) for x in rep["streamed"].split(",")]
    assert codes[:3] == [OK, OK, E_STATE], f"send_part, send_part, send_part(outstanding): {codes}"
    # codes[3] is finish in the same callback, after the misuse: not asserted (the request
    # ends once the callback returns).
    _assert_serving(srv)


def test_calls_after_finish_get_errors_and_the_response_is_intact(misuse_server):
    srv = misuse_server
    r, complete = pu.http(srv.port, "GET", "/misuse/header-after-finish", timeout=5)
    if complete and r.status == 200:
        assert r.body == b"complete\n", r
        assert r.header("x-late") is None, f"a header added after finish was sent: {r!r}"
    else:
        assert r.status >= 500 or not complete, r
    rep = _report(srv)
    codes = [int(x) for x in rep["late"].split(",")]
    assert codes == [E_STATE] * 4, f"add_header, set_status, send_part, finish after finish: {codes}"
    _assert_serving(srv)


def test_fail_after_the_head_truncates_the_response(misuse_server):
    srv = misuse_server
    with awstest.connect(srv.port, timeout=5) as s:
        pu.send_request(s, "GET", "/misuse/fail-after-head")
        r, complete = pu.Reader(s).read_response(timeout=5)
        assert r.status == 200 and not complete and r.body == b"partial\n", (r, complete)
        assert s.recv(100) == b""
    assert _report(srv)["fail-after-head"] == "0,0"
    _assert_serving(srv)


def test_finish_short_of_the_declared_length_closes_the_connection(misuse_server):
    srv = misuse_server
    with awstest.connect(srv.port, timeout=5) as s:
        pu.send_request(s, "GET", "/misuse/declared-short")
        r, complete = pu.Reader(s).read_response(timeout=5)
        assert r.status == 200 and r.content_length == 100, r
        assert not complete and r.body == b"0123456789", (r, complete)
    _assert_serving(srv)


def test_invalid_arguments_are_refused(misuse_server):
    srv = misuse_server
    r, complete = pu.http(srv.port, "GET", "/misuse/invalid", timeout=5)
    assert r.status == 200 and complete, r
    got = dict(kv.split("=") for kv in r.body.decode().split())
    expected = {k: str(E_INVALID) for k in (
        "status99", "status600", "status101", "content-length", "transfer-encoding", "connection",
        "crlf", "badname", "emptyname", "nullpart", "post0")}
    assert got == expected, f"expected AWS_E_INVALID for every bad argument: {got}"
    assert r.header("injected") is None and r.header("x-bad") is None, r
    _assert_serving(srv)


def test_refused_parts_do_not_count_towards_the_body(misuse_server):
    """send_part with a NULL memory pointer, an unknown kind or a bad descriptor is refused with
    AWS_E_INVALID and queues nothing: a normal answer with an exact Content-Length follows."""
    srv = misuse_server
    r, complete = pu.http(srv.port, "GET", "/misuse/invalid-part-then-length", timeout=5)
    rep = _report(srv)
    assert rep["refused-parts"] == f"{E_INVALID},{E_INVALID},{E_INVALID}", rep
    assert r.status == 200 and complete and r.body == b"fine after refused parts\n", \
        f"refused parts must not change the response: {r!r} complete={complete}"
    _assert_serving(srv)


def test_misuse_server_still_serves_many_requests(misuse_server):
    """After all the misuse above: a burst of normal requests on one keep-alive connection."""
    srv = misuse_server
    with awstest.connect(srv.port, timeout=5) as s:
        rd = pu.Reader(s)
        for i in range(50):
            pu.send_request(s, "GET", "/ok" if i % 2 else "/misuse/status?code=404")
            r, complete = rd.read_response(timeout=5)
            assert complete and r.status == (200 if i % 2 else 404), r
    _assert_serving(srv)


# --------------------------------------------------------------------------------------
# Request bodies: streamed through on_body, or buffered into the view
# --------------------------------------------------------------------------------------

def _fnv(data: bytes) -> str:
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


@pytest.fixture(scope="module")
def body_server():
    folder = pu.plugin_folder({"body": pu.test_plugin("body")})
    with pu.running_server(folder, name="body") as srv:
        yield srv


@pytest.mark.parametrize("size", [1, 5000, 300_000])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_streamed_body_arrives_in_order_with_one_last_call(body_server, size, chunked):
    """on_body gets every byte in order and exactly one call with last=1, whether the length
    is declared or the body is chunked."""
    data = os.urandom(size)
    r, complete = pu.http(body_server.port, "POST", "/body/count", data, chunked=chunked,
                          chunk_size=4099, timeout=3)
    assert complete and r.status == 200, r
    got = dict(kv.split("=") for kv in r.body.decode().split())
    assert got["bytes"] == str(size) and got["fnv"] == _fnv(data), got
    assert got["lasts"] == "1", f"on_body must be called exactly once with last=1: {got}"
    assert got["content_length"] == (str(-1) if chunked else str(size)), got


def test_streamed_body_sent_with_the_head_in_one_packet(body_server):
    data = awstest.raw_request(body_server.port, b"POST /body/count HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                                 b"Connection: close\r\n\r\nhello", timeout=3)
    r = awstest.parse_response(data)
    assert r.status == 200 and f"fnv={_fnv(b'hello')}".encode() in r.body and b"lasts=1" in r.body, r


def test_no_body_means_no_on_body(body_server):
    r, complete = pu.http(body_server.port, "GET", "/body/count", timeout=5)
    assert complete and r.status == 200 and r.body.startswith(b"bytes=0 calls=0 lasts=0"), r


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_buffered_body_view_has_the_body_and_its_length(body_server, chunked):
    data = os.urandom(123_457)
    r, complete = pu.http(body_server.port, "PUT", "/bodybuf", data, chunked=chunked, chunk_size=10_000, timeout=5)
    assert complete and r.status == 200, r
    got = dict(kv.split("=") for kv in r.body.decode().split())
    assert got["bytes"] == str(len(data)) and got["fnv"] == _fnv(data), got
    assert got["content_length"] == (str(-1) if chunked else str(len(data))), \
        f"view->content_length must be the request's Content-Length (-1 when chunked): {got}"


# --------------------------------------------------------------------------------------
# Names and configuration
# --------------------------------------------------------------------------------------

def test_plugin_is_named_after_its_file_and_configured_by_that_name():
    """ok.c calls itself "ok"; installed as renamed.so it is the plugin "renamed": the log,
    plugin_name() and --plugin-config renamed.KEY all use the file name."""
    root = pu.small_root()
    folder = pu.plugin_folder({"renamed": pu.test_plugin("ok")})
    config = {"renamed.greeting": "hi there=1", "ok.greeting": "wrong plugin"}
    with pu.running_server(folder, config=config, root=root) as srv:
        assert re.search(rf"plugin renamed 0\.1 \(ABI {pu.HOST_ABI_RE}, calls itself ok\): GET /ok, GET /ok/info", srv.stderr()), \
            srv.stderr()[-2000:]
        body = pu.ok_get(srv.port, "/ok/info").decode()
        assert body == f"name=renamed greeting=hi there=1 missing=- root={os.path.realpath(root)}\n", body


# --------------------------------------------------------------------------------------
# Part kinds and ownership: FILE parts (sendfile, AIO), borrowed memory with release
# --------------------------------------------------------------------------------------

PARTS_FILE_SIZE = 3 * 1024 * 1024 + 1234


@pytest.fixture(scope="module")
def parts_server():
    root = pu.small_root()
    data = awstest.content("parts.bin", PARTS_FILE_SIZE)
    with open(os.path.join(root, "parts.bin"), "wb") as f:
        f.write(data)
    folder = pu.plugin_folder({"parts": pu.test_plugin("parts")})
    with pu.running_server(folder, root=root, name="parts") as srv:
        srv.parts_data = data
        yield srv


def _parts_stats(srv):
    body = pu.ok_get(srv.port, "/parts/stats").decode()
    return {k: int(v) for k, v in (kv.split("=") for kv in body.split())}


@pytest.mark.parametrize("aio,release,pieces", [
    (0, 0, 1), (0, 1, 3), (0, 0, 3), (1, 0, 1), (1, 1, 3),
], ids=["sendfile-dup-1", "sendfile-release-3", "sendfile-dup-3", "aio-dup-1", "aio-release-3"])
def test_file_parts(parts_server, aio, release, pieces):
    srv = parts_server
    off, length = 12345, 1_000_003
    before = _parts_stats(srv)
    r, complete = pu.http(srv.port, "GET", f"/parts/file?off={off}&len={length}&aio={aio}&release={release}"
                                           f"&pieces={pieces}", timeout=4)
    assert r.status == 200 and complete and r.content_length == length, r
    assert r.body == srv.parts_data[off:off + length], "file part bytes differ"
    st = pu.wait_for(lambda: (lambda s: s if s["open_fds"] == 0 else None)(_parts_stats(srv)), 2)
    assert st, f"descriptors still open (release not called?): {_parts_stats(srv)}"
    assert st["bad_offsets"] == 0, f"the host moved the plugin's file offset: {st}"
    assert st["early_proceeds"] == 0, st
    assert st["releases"] - before["releases"] == (pieces if release else 0), (before, st)


def test_whole_file_with_aio_on_keep_alive(parts_server):
    srv = parts_server
    with awstest.connect(srv.port, timeout=4) as s:
        rd = pu.Reader(s)
        for aio in (0, 1, 0):
            pu.send_request(s, "GET", f"/parts/file?off=0&len={PARTS_FILE_SIZE}&aio={aio}&pieces=2")
            r, complete = rd.read_response(timeout=4)
            assert complete and r.body == srv.parts_data, (aio, r)


def test_borrowed_memory_parts_are_released_once_each(parts_server):
    srv = parts_server
    size, part = 1_000_003, 65536
    before = _parts_stats(srv)
    r, complete = pu.http(srv.port, "GET", f"/parts/borrowed?size={size}&part={part}", timeout=10)
    assert r.status == 200 and complete and len(r.body) == size, r
    assert r.body == bytes(i * 7 % 256 for i in range(size)), "borrowed part bytes differ"
    st = _parts_stats(srv)
    assert st["early_proceeds"] == 0, f"on_proceed came before the lent buffer was released: {st}"
    assert st["releases"] - before["releases"] == -(-size // part), (before, st)


@pytest.mark.parametrize("target", ["/parts/file?off=0&len=3000000&release=1&aio=0",
                                    "/parts/file?off=0&len=3000000&release=1&aio=1",
                                    "/parts/borrowed?size=100000000&part=1000000"])
def test_parts_of_an_aborted_response_are_released(parts_server, target):
    srv = parts_server
    with awstest.connect(srv.port, timeout=3, rcvbuf=32 * 1024) as s:
        pu.send_request(s, "GET", target)
        got = b""
        while len(got) < 100_000:
            b = s.recv(65536)
            assert b, got[:200]
            got += b
    st = pu.wait_for(lambda: (lambda x: x if x["open_fds"] == 0 else None)(_parts_stats(srv)), 2)
    assert st, f"the outstanding part was not released after the client left: {_parts_stats(srv)}"
    # The next request must not see anything of the aborted one.
    r, complete = pu.http(srv.port, "GET", "/parts/borrowed?size=1000&part=100", timeout=5)
    assert complete and r.body == bytes(i * 7 % 256 for i in range(1000)), r
