"""Byte ranges on static (sendfile) and dynamic (libaio) files.

A ~300 KiB file and one of 1.3 MiB (past 1 MiB, so ranges cross the 128 KiB AIO buffers and
4 KiB alignment boundaries); single ranges of every form, 416 past the end, several ranges →
200 with the whole file, If-Range with an ETag or a date, Accept-Ranges, HEAD with Range."""

import email.utils

import pytest

from http11util import KIB, MIB, Conn, data, get_req, root_fixture, server_fixture

SIZES = {"r300k.bin": 300 * KIB + 7, "r1m.bin": MIB + 300 * KIB + 13}
FILES = {f"/{kind}/{name}": data(f"{kind}/{name}", size)
         for kind in ("static", "dynamic") for name, size in SIZES.items()}
PATHS = list(FILES)
EMPTY = {"/static/empty.bin": b"", "/dynamic/empty.bin": b""}


root = root_fixture({**FILES, **EMPTY})


srv = server_fixture("h11-ranges")


class SharedConn:
    """One persistent connection reused across the module: every range response must leave
    it clean for the next. After a failure it is replaced so one bug does not cascade."""

    def __init__(self, port):
        self.port = port
        self.c = Conn(port, timeout=10)

    def reset(self):
        self.c.close()
        self.c = Conn(self.port, timeout=10)


@pytest.fixture(scope="module")
def conn(srv):
    sc = SharedConn(srv.port)
    yield sc
    sc.c.close()


def fetch(conn, path, extra="", method="GET"):
    try:
        r = conn.c.request(get_req(path, method=method, extra=extra), head=(method == "HEAD"))
        assert conn.c.buf == b"", f"stray bytes after the response: {conn.c.buf[:100]!r}"
        assert not conn.c.eof, f"the server closed the connection after {r!r}"
    except BaseException:
        conn.reset()
        raise
    return r


def range_specs(n):
    """(Range value, first, last) with the expected inclusive bounds for a file of n bytes."""
    specs = [
        ("0-0", 0, 0),
        ("-1", n - 1, n - 1),
        ("-500", n - 500, n - 1),
        ("1000-", 1000, n - 1),
        ("0-", 0, n - 1),
        ("100-199", 100, 199),
        ("4095-4097", 4095, 4097),
        ("4096-8191", 4096, 8191),
        ("131071-131073", 131071, 131073),
        ("131072-262143", 131072, 262143),
        ("130000-270000", 130000, 270000),
        (f"{n - 2}-", n - 2, n - 1),
        (f"{n - 1}-{n - 1}", n - 1, n - 1),
        (f"5-{n + 1000}", 5, n - 1),          # last-pos past the end is clamped
        (f"-{n + 1000}", 0, n - 1),           # suffix longer than the file: the whole file
        ("-131073", n - 131073, n - 1),
    ]
    if n > MIB:
        specs += [
            ("1048575-1048577", 1048575, 1048577),
            ("262143-262145", 262143, 262145),
            ("393215-1179649", 393215, 1179649),
            ("1048576-", 1048576, n - 1),
        ]
    return specs


CASES = [(path, spec, a, b) for path in PATHS for spec, a, b in range_specs(len(FILES[path]))]


@pytest.mark.parametrize("path,spec,first,last", CASES,
                         ids=[f"{p.strip('/')}:{s}" for p, s, _, _ in CASES])
def test_single_range_206(conn, path, spec, first, last):
    body = FILES[path]
    r = fetch(conn, path, f"Range: bytes={spec}\r\n")
    assert r.status == 206, r
    assert r.header("content-range") == f"bytes {first}-{last}/{len(body)}", r
    assert r.content_length == last - first + 1, r
    assert r.body == body[first:last + 1], (f"wrong bytes for bytes={spec}: got {len(r.body)} bytes, "
                                             f"first mismatch at {next((i for i, (x, y) in enumerate(zip(r.body, body[first:])) if x != y), None)}")
    assert r.header("accept-ranges") == "bytes", r
    assert r.header("etag"), r


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("which", ["at-end", "past-end", "far"])
def test_unsatisfiable_416(conn, path, which):
    n = len(FILES[path])
    spec = {"at-end": f"{n}-", "past-end": f"{n + 5}-{n + 10}", "far": "99999999-"}[which]
    r = fetch(conn, path, f"Range: bytes={spec}\r\n")
    assert r.status == 416, r
    assert r.header("content-range") == f"bytes */{n}", r
    assert r.content_length == len(r.body), r
    assert FILES[path][:64] not in r.body


@pytest.mark.parametrize("path", list(EMPTY))
def test_empty_file_ranges(conn, path):
    r = fetch(conn, path)
    assert r.status == 200 and r.content_length == 0 and r.body == b"", r
    for spec in ("0-0", "0-"):
        r = fetch(conn, path, f"Range: bytes={spec}\r\n")
        assert r.status == 416, (spec, r)
        assert r.header("content-range") == "bytes */0", (spec, r)
    # a non-zero suffix on an empty file: RFC 7233 calls it satisfiable, but no 206 can express
    # it; either the whole (empty) file or 416 is acceptable, never a broken 206
    r = fetch(conn, path, "Range: bytes=-5\r\n")
    assert r.status in (200, 416), r
    assert r.content_length == len(r.body), r
    if r.status == 200:
        assert r.body == b"", r
    else:
        assert r.header("content-range") == "bytes */0", r


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("spec", ["0-0,5-9", "0-99,200-299,-10", "500-,0-0"])
def test_multiple_ranges_200_whole_file(conn, path, spec):
    r = fetch(conn, path, f"Range: bytes={spec}\r\n")
    assert r.status == 200, r
    assert r.header("content-range") is None, r
    assert r.body == FILES[path]


@pytest.mark.parametrize("path", PATHS)
def test_accept_ranges_on_full_response(conn, path):
    r = fetch(conn, path)
    assert r.status == 200, r
    assert r.header("accept-ranges") == "bytes", r
    assert r.body == FILES[path]


@pytest.mark.parametrize("path", PATHS)
def test_if_range(conn, path):
    body = FILES[path]
    full = fetch(conn, path, method="HEAD")
    etag, lm = full.header("etag"), full.header("last-modified")
    assert etag and lm, full
    # current ETag → the range
    r = fetch(conn, path, f"Range: bytes=10-19\r\nIf-Range: {etag}\r\n")
    assert r.status == 206 and r.body == body[10:20], r
    assert r.header("content-range") == f"bytes 10-19/{len(body)}", r
    # stale ETag → the whole file
    r = fetch(conn, path, 'Range: bytes=10-19\r\nIf-Range: "stale-0-0"\r\n')
    assert r.status == 200 and r.body == body, r
    # weak ETag never matches If-Range (strong comparison)
    r = fetch(conn, path, f"Range: bytes=10-19\r\nIf-Range: W/{etag}\r\n")
    assert r.status == 200 and r.body == body, r
    # the Last-Modified date → the range
    r = fetch(conn, path, f"Range: bytes=131070-131080\r\nIf-Range: {lm}\r\n")
    assert r.status == 206 and r.body == body[131070:131081], r
    # an earlier date → the whole file
    old = email.utils.formatdate(email.utils.parsedate_to_datetime(lm).timestamp() - 86400, usegmt=True)
    r = fetch(conn, path, f"Range: bytes=10-19\r\nIf-Range: {old}\r\n")
    assert r.status == 200 and r.body == body, r


@pytest.mark.parametrize("path", PATHS)
def test_head_with_range_has_no_body(conn, path):
    n = len(FILES[path])
    r = fetch(conn, path, "Range: bytes=0-99\r\n", method="HEAD")
    assert r.status in (200, 206), r
    if r.status == 206:
        assert r.header("content-range") == f"bytes 0-99/{n}", r
        assert r.content_length == 100, r
    else:
        assert r.content_length == n, r
    assert r.body == b""
    # a following request on the connection parses cleanly: no body bytes were sent
    r2 = fetch(conn, path, "Range: bytes=-3\r\n")
    assert r2.status == 206 and r2.body == FILES[path][-3:], r2


@pytest.mark.parametrize("path", ["/static/r300k.bin", "/dynamic/r1m.bin"])
@pytest.mark.parametrize("value", ["bytes=abc", "items=0-5", "bytes=5-1"])
def test_invalid_range_ignored_or_416(conn, path, value):
    # An unparsable or non-bytes Range is ignored (200); a reversed one is invalid (200 or 416).
    r = fetch(conn, path, f"Range: {value}\r\n")
    assert r.status in (200, 416), r
    if r.status == 200:
        assert r.body == FILES[path]
    assert value != "items=0-5" or r.status == 200, r


def test_pipelined_ranges(srv):
    """Several range requests in one write, static and dynamic interleaved."""
    reqs = [("/static/r1m.bin", 131071, 131073), ("/dynamic/r1m.bin", 1048575, 1048577),
            ("/dynamic/r300k.bin", 0, 0), ("/static/r300k.bin", 300000, 300100),
            ("/dynamic/r1m.bin", 100, 400000)]
    with Conn(srv.port, timeout=10) as c:
        c.send(b"".join(get_req(p, extra=f"Range: bytes={a}-{b}\r\n") for p, a, b in reqs))
        for p, a, b in reqs:
            r = c.final_response()
            assert r.status == 206 and r.body == FILES[p][a:b + 1], (p, a, b, r)
