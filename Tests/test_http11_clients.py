"""Real HTTP/1.1 clients against ranges, conditional requests and keep-alive: curl (`-r`,
`-z`, `-C -`), wget (`-c`) and ApacheBench (`ab -k`)."""

import os
import re
import shutil
import subprocess
import tempfile

import pytest

from http11util import KIB, MIB, Conn, data, get_req, root_fixture, server_fixture

FILES = {
    "/static/c.bin": data("clients-static", 300 * KIB + 5),
    "/dynamic/c.bin": data("clients-dynamic", MIB + 200 * KIB + 3),
    "/static/tiny.txt": b"tiny static file for ab\n" * 20,
}
PATHS = ["/static/c.bin", "/dynamic/c.bin"]


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (make test installs curl, wget, apache2-utils)")


root = root_fixture(FILES)


srv = server_fixture("h11-clients")


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="aws-h11-cli-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def url(srv, path):
    return f"http://127.0.0.1:{srv.port}{path}"


def run(cmd, cwd=None, timeout=60):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def curl(*args, cwd=None):
    need("curl")
    return run(["curl", "--http1.1", "-sS", "--max-time", "30", *args], cwd=cwd)


def read(p):
    with open(p, "rb") as f:
        return f.read()


# ---- curl ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("rng,first,last", [("0-99", 0, 99), ("131000-262200", 131000, 262200)])
def test_curl_range(srv, tmp, path, rng, first, last):
    out = os.path.join(tmp, "out")
    rc, stdout, err = curl("-r", rng, "-o", out, "-w", "%{http_code}", url(srv, path))
    assert rc == 0, err
    assert stdout == "206", stdout
    assert read(out) == FILES[path][first:last + 1]


@pytest.mark.parametrize("path", PATHS)
def test_curl_time_condition(srv, tmp, path):
    with Conn(srv.port) as c:
        lm = c.request(get_req(path, method="HEAD"), head=True).header("last-modified")
    assert lm
    out = os.path.join(tmp, "out")
    rc, stdout, err = curl("-z", lm, "-o", out, "-w", "%{http_code} %{size_download}", url(srv, path))
    assert rc == 0, err
    assert stdout == "304 0", f"curl -z <Last-Modified>: {stdout}"
    assert not os.path.exists(out) or os.path.getsize(out) == 0, "a body was downloaded on 304"
    rc, stdout, err = curl("-z", "Sun, 06 Nov 1994 08:49:37 GMT", "-o", out, "-w", "%{http_code}", url(srv, path))
    assert rc == 0, err
    assert stdout == "200", stdout
    assert read(out) == FILES[path]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("have", [1, 4096, 131073])
def test_curl_resume(srv, tmp, path, have):
    out = os.path.join(tmp, "out")
    with open(out, "wb") as f:
        f.write(FILES[path][:have])
    rc, stdout, err = curl("-C", "-", "-o", out, "-w", "%{http_code} %{size_download}", url(srv, path))
    assert rc == 0, err
    assert stdout == f"206 {len(FILES[path]) - have}", stdout
    assert read(out) == FILES[path]


def test_curl_resume_complete_file(srv, tmp):
    # the local file is already whole: the server answers 416 and curl leaves it intact
    path = "/static/c.bin"
    out = os.path.join(tmp, "out")
    with open(out, "wb") as f:
        f.write(FILES[path])
    rc, stdout, err = curl("-C", "-", "-o", out, "-w", "%{http_code}", url(srv, path))
    assert stdout == "416", (rc, stdout, err)
    assert read(out) == FILES[path]


# ---- wget ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PATHS)
def test_wget_continue(srv, tmp, path):
    need("wget")
    name = os.path.basename(path)
    local = os.path.join(tmp, name)
    have = 100_000
    with open(local, "wb") as f:
        f.write(FILES[path][:have])
    rc, _, err = run(["wget", "-c", "-S", "-T", "30", "--tries=1", url(srv, path)], cwd=tmp)
    assert rc == 0, err
    assert "206" in err, f"wget did not get a partial response:\n{err}"
    assert read(local) == FILES[path]


# ---- ab ---------------------------------------------------------------------------------------

def test_ab_keepalive(srv):
    need("ab")
    rc, out, err = run(["ab", "-k", "-n", "2000", "-c", "10", "-s", "30", url(srv, "/static/tiny.txt")],
                       timeout=120)
    assert rc == 0, f"ab failed ({rc}):\n{out}\n{err}"

    def field(name):
        m = re.search(rf"^{name}:\s+(\d+)", out, re.M)
        assert m, f"no {name!r} in ab output:\n{out}"
        return int(m.group(1))
    assert field("Complete requests") == 2000, out
    assert field("Failed requests") == 0, out
    assert field("Keep-Alive requests") == 2000, out
    assert "Non-2xx responses" not in out, out
    assert field("Document Length") == len(FILES["/static/tiny.txt"]), out
