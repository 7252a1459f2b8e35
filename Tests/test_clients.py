"""Real clients: curl, wget and Python's http.client."""

import http.client
import os
import shutil
import subprocess

import pytest

from awstest import sha256

# A stalled transfer fails after 5 s without progress, a whole one after 20 s.
CURL = ["curl", "-sS", "--max-time", "20", "--speed-time", "5", "--speed-limit", "1"]

PATHS = ["/static/f_1048579.bin", "/dynamic/f_1048579.bin", "/static/f_20971520.bin",
         "/dynamic/f_20971520.bin", "/static/f_0.bin", "/"]


def need(tool):
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed (make test installs it)")


def expected(docroot, path):
    return docroot.files["/index.html" if path == "/" else path]


def url(server, path):
    return f"http://127.0.0.1:{server.port}{path}"


@pytest.mark.parametrize("path", PATHS)
def test_curl_download(server, docroot, tmp_path, path):
    need("curl")
    out = tmp_path / "out"
    p = subprocess.run([*CURL, "-o", str(out), "-w", "%{http_code}",
                        url(server, path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "200"
    assert sha256(out.read_bytes()) == sha256(expected(docroot, path))


def test_curl_several_urls_one_invocation(server, docroot, tmp_path):
    """curl reuses the connection when the server keeps it alive, and reconnects otherwise."""
    need("curl")
    paths = ["/static/a.txt", "/dynamic/f_4097.bin", "/static/f_1048579.bin", "/dynamic/a.txt"]
    args = list(CURL)
    for i, path in enumerate(paths):
        args += ["-o", str(tmp_path / f"o{i}"), url(server, path)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    for i, path in enumerate(paths):
        assert (tmp_path / f"o{i}").read_bytes() == docroot.files[path], path


@pytest.mark.parametrize("path", ["/static/f_1048579.bin", "/dynamic/a.txt", "/static/style.css"])
def test_curl_head(server, docroot, path):
    need("curl")
    p = subprocess.run([*CURL, "-I", url(server, path)],
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode("latin-1").replace("\r\n", "\n").strip().split("\n")
    assert lines[0].startswith("HTTP/1.1 200"), lines
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert int(headers["content-length"]) == len(docroot.files[path])
    assert headers["server"].startswith("aws/")


def test_curl_404_exit_code(server):
    need("curl")
    p = subprocess.run([*CURL, "--fail", "-o", os.devnull,
                        url(server, "/static/does-not-exist")], capture_output=True, text=True, timeout=30)
    assert p.returncode == 22, (p.returncode, p.stderr)
    assert "404" in p.stderr


@pytest.mark.parametrize("path", PATHS)
def test_wget_download(server, docroot, tmp_path, path):
    need("wget")
    out = tmp_path / "out"
    p = subprocess.run(["wget", "-q", "-T", "5", "-t", "1", "-O", str(out), url(server, path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert sha256(out.read_bytes()) == sha256(expected(docroot, path))


def test_http_client_several_requests(server, docroot):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        for path in ["/", "/static/a.txt", "/dynamic/f_4097.bin", "/static/f_1048579.bin",
                     "/dynamic/f_1048579.bin", "/static/hello%20world.txt"]:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, path
            want = expected(docroot, path.replace("%20", " "))
            assert sha256(body) == sha256(want), path
            assert int(resp.getheader("Content-Length")) == len(want)

        conn.request("HEAD", "/static/f_1048579.bin")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.read() == b""
        assert int(resp.getheader("Content-Length")) == len(docroot.files["/static/f_1048579.bin"])

        conn.request("GET", "/static/missing.txt")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 404
        assert len(body) == int(resp.getheader("Content-Length"))

        conn.request("GET", "/dynamic/a.txt")  # still usable after an error
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.read() == docroot.files["/dynamic/a.txt"]
    finally:
        conn.close()
