"""Conditional requests on static and dynamic files: If-None-Match, If-Modified-Since,
If-Match, If-Unmodified-Since (and their precedence, RFC 9110 §13.2.2), and validators that
change when the file is rewritten or its mtime is bumped."""

import email.utils
import os
import time

import pytest

from http11util import Conn, Root, count_header, data, get_req, running_server

FILES = {
    "/static/c.txt": data("cond-static", 5000),
    "/dynamic/c.bin": data("cond-dynamic", 70000),
    "/static/mut.txt": b"version one\n",
    "/dynamic/mut.bin": b"dynamic version one\n",
}
PATHS = ["/static/c.txt", "/dynamic/c.bin"]
OLD_DATE = "Sun, 06 Nov 1994 08:49:37 GMT"
FUTURE_DATE = "Fri, 01 Jan 2100 00:00:00 GMT"


@pytest.fixture(scope="module")
def root():
    r = Root(FILES)
    # mtimes well in the past, on whole seconds, so date comparisons are unambiguous
    for url in FILES:
        t = time.time() - 3600
        os.utime(r.path(url), ns=(int(t) * 10**9, int(t) * 10**9))
    yield r
    r.cleanup()


@pytest.fixture(scope="module")
def srv(root):
    with running_server(root.root, name="h11-cond") as s:
        yield s


def fetch(port, path, extra="", method="GET"):
    """Sends the request and a follow-up GET on the same connection; the follow-up proves that
    no body bytes followed a 304/412 (they would corrupt its status line)."""
    with Conn(port, timeout=10) as c:
        r = c.request(get_req(path, method=method, extra=extra), head=(method == "HEAD"))
        follow = c.request(get_req(path, method="HEAD"), head=True)
        assert follow.status == 200, f"follow-up after {r!r} broke: {follow!r}"
        assert c.buf == b"", f"stray bytes: {c.buf[:100]!r}"
    return r


def validators(port, path):
    r = fetch(port, path, method="HEAD")
    assert r.status == 200, r
    etag, lm = r.header("etag"), r.header("last-modified")
    assert etag and etag.startswith('"') and etag.endswith('"'), f"strong ETag expected: {r!r}"
    assert lm and email.utils.parsedate_to_datetime(lm), r
    return etag, lm


def shifted(date: str, seconds: int) -> str:
    return email.utils.formatdate(email.utils.parsedate_to_datetime(date).timestamp() + seconds, usegmt=True)


def assert_304(r, etag):
    assert r.status == 304, r
    assert r.body == b""
    assert r.header("etag") == etag, f"304 must carry the ETag: {r!r}"
    assert count_header(r, "Date") == 1, r


# ---- If-None-Match ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", PATHS)
def test_last_modified_is_the_mtime(srv, root, path):
    _, lm = validators(srv.port, path)
    mtime = int(os.stat(root.path(path)).st_mtime)
    assert lm == email.utils.formatdate(mtime, usegmt=True), (lm, mtime)


@pytest.mark.parametrize("path", PATHS)
def test_if_none_match(srv, path):
    etag, _ = validators(srv.port, path)
    assert_304(fetch(srv.port, path, f"If-None-Match: {etag}\r\n"), etag)
    assert_304(fetch(srv.port, path, f"If-None-Match: {etag}\r\n", method="HEAD"), etag)
    assert_304(fetch(srv.port, path, "If-None-Match: *\r\n"), etag)
    assert_304(fetch(srv.port, path, f'If-None-Match: "nope", {etag}\r\n'), etag)
    assert_304(fetch(srv.port, path, f"If-None-Match: W/{etag}\r\n"), etag)  # weak comparison
    r = fetch(srv.port, path, 'If-None-Match: "nope"\r\n')
    assert r.status == 200 and r.body == FILES[path], r


# ---- If-Modified-Since ----------------------------------------------------------------------

@pytest.mark.parametrize("path", PATHS)
def test_if_modified_since(srv, path):
    etag, lm = validators(srv.port, path)
    assert_304(fetch(srv.port, path, f"If-Modified-Since: {lm}\r\n"), etag)
    assert_304(fetch(srv.port, path, f"If-Modified-Since: {shifted(lm, 60)}\r\n"), etag)
    for date in (shifted(lm, -1), OLD_DATE):
        r = fetch(srv.port, path, f"If-Modified-Since: {date}\r\n")
        assert r.status == 200 and r.body == FILES[path], (date, r)
    # an unparsable date is ignored
    r = fetch(srv.port, path, "If-Modified-Since: yesterday\r\n")
    assert r.status == 200 and r.body == FILES[path], r


@pytest.mark.parametrize("path", PATHS)
def test_if_none_match_takes_precedence_over_ims(srv, path):
    _, lm = validators(srv.port, path)
    r = fetch(srv.port, path, f'If-None-Match: "nope"\r\nIf-Modified-Since: {lm}\r\n')
    assert r.status == 200 and r.body == FILES[path], r


# ---- If-Match / If-Unmodified-Since ------------------------------------------------------------

@pytest.mark.parametrize("path", PATHS)
def test_if_match(srv, path):
    etag, _ = validators(srv.port, path)
    r = fetch(srv.port, path, 'If-Match: "wrong"\r\n')
    assert r.status == 412, r
    assert FILES[path][:64] not in r.body
    for value in (etag, "*", f'"wrong", {etag}'):
        r = fetch(srv.port, path, f"If-Match: {value}\r\n")
        assert r.status == 200 and r.body == FILES[path], (value, r)
    r = fetch(srv.port, path, f"If-Match: W/{etag}\r\n")  # strong comparison: a weak tag fails
    assert r.status == 412, r


@pytest.mark.parametrize("path", PATHS)
def test_if_unmodified_since(srv, path):
    _, lm = validators(srv.port, path)
    for date in (OLD_DATE, shifted(lm, -1)):
        r = fetch(srv.port, path, f"If-Unmodified-Since: {date}\r\n")
        assert r.status == 412, (date, r)
    for date in (lm, FUTURE_DATE):
        r = fetch(srv.port, path, f"If-Unmodified-Since: {date}\r\n")
        assert r.status == 200 and r.body == FILES[path], (date, r)


@pytest.mark.parametrize("path", PATHS)
def test_if_match_takes_precedence_over_ius(srv, path):
    etag, _ = validators(srv.port, path)
    r = fetch(srv.port, path, f"If-Match: {etag}\r\nIf-Unmodified-Since: {OLD_DATE}\r\n")
    assert r.status == 200 and r.body == FILES[path], r


@pytest.mark.parametrize("path", PATHS)
def test_precondition_failure_before_not_modified(srv, path):
    etag, _ = validators(srv.port, path)
    r = fetch(srv.port, path, f'If-Match: "wrong"\r\nIf-None-Match: {etag}\r\n')
    assert r.status == 412, r


# ---- validators change with the file --------------------------------------------------------

# Every worker keeps its own open-file cache and trusts a cached fstat for 100 ms (README):
# after this long, every connection, whichever worker it lands on, sees the new file.
REVALIDATE = 0.3


def poll_change(port, path, old_etag):
    time.sleep(REVALIDATE)
    with Conn(port, timeout=10) as c:
        return c.request(get_req(path))


@pytest.mark.parametrize("path", ["/static/mut.txt", "/dynamic/mut.bin"])
def test_etag_changes_when_file_changes(srv, root, path):
    etag1, lm1 = validators(srv.port, path)

    # 1. new content of a different size, rewritten in place
    new = b"the second version is longer than the first one\n" * 3
    with open(root.path(path), "wb") as f:
        f.write(new)
    r = poll_change(srv.port, path, etag1)
    etag2 = r.header("etag")
    assert etag2 != etag1, f"ETag unchanged {REVALIDATE} s after rewriting the file: {r!r}"
    assert r.status == 200 and r.body == new and r.content_length == len(new), r
    r = fetch(srv.port, path, f"If-None-Match: {etag1}\r\n")
    assert r.status == 200 and r.body == new, f"the old ETag still validates: {r!r}"
    assert_304(fetch(srv.port, path, f"If-None-Match: {etag2}\r\n"), etag2)
    r = fetch(srv.port, path, f"If-Match: {etag1}\r\n")
    assert r.status == 412, r

    # 2. same content, mtime bumped by 10 s
    st = os.stat(root.path(path))
    os.utime(root.path(path), ns=(st.st_atime_ns, st.st_mtime_ns + 10 * 10**9))
    r = poll_change(srv.port, path, etag2)
    etag3 = r.header("etag")
    assert etag3 != etag2, f"ETag unchanged {REVALIDATE} s after os.utime: {r!r}"
    assert r.status == 200 and r.body == new, r
    lm3 = r.header("last-modified")
    assert email.utils.parsedate_to_datetime(lm3) > email.utils.parsedate_to_datetime(lm1), (lm1, lm3)
    r = fetch(srv.port, path, f"If-Modified-Since: {lm1}\r\n")
    assert r.status == 200 and r.body == new, r
    assert_304(fetch(srv.port, path, f"If-None-Match: {etag3}\r\n"), etag3)
