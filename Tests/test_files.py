"""Files come back byte for byte: static/ (sendfile), dynamic/ (libaio), symlinks, URL forms."""

import http.client
import os

import pytest

from awstest import FILE_SIZES, OUTSIDE_MARKER, get, sha256

KINDS = ["static", "dynamic"]


def size_id(n):
    return f"{n}B"


@pytest.mark.parametrize("size", FILE_SIZES, ids=size_id)
@pytest.mark.parametrize("kind", KINDS)
def test_exact_bytes_raw_socket(server, docroot, kind, size):
    path = f"/{kind}/f_{size}.bin"
    want = docroot.files[path]
    r = get(server.port, path, timeout=60)
    assert r.status == 200, r
    assert r.content_length == size, r
    assert len(r.body) == size
    assert sha256(r.body) == sha256(want), f"{path}: body differs from the file"


@pytest.mark.parametrize("size", FILE_SIZES, ids=size_id)
@pytest.mark.parametrize("kind", KINDS)
def test_exact_bytes_http_client(server, docroot, kind, size):
    path = f"/{kind}/f_{size}.bin"
    want = docroot.files[path]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200
        assert int(resp.getheader("Content-Length")) == size
        assert len(body) == size
        assert sha256(body) == sha256(want), f"{path}: body differs from the file"
    finally:
        conn.close()


def test_root_serves_index_html(server, docroot):
    r = get(server.port, "/")
    assert r.status == 200, r
    assert r.body == docroot.files["/index.html"]
    assert r.media_type == "text/html"
    assert "charset=utf-8" in r.header("content-type").lower().replace(" ", "")


def test_index_html_by_name(server, docroot):
    r = get(server.port, "/index.html")
    assert r.status == 200, r
    assert r.body == docroot.files["/index.html"]


def test_other_file_under_root_is_served(server, docroot):
    r = get(server.port, "/other.txt")
    assert r.status == 200, r
    assert r.body == docroot.files["/other.txt"]


def test_nested_directory(server, docroot):
    r = get(server.port, "/static/sub/deep.txt")
    assert r.status == 200, r
    assert r.body == docroot.files["/static/sub/deep.txt"]


@pytest.mark.parametrize("link", ["link_rel.bin", "link_rel_up.bin", "link_abs.bin"])
def test_symlink_inside_root_is_served(server, docroot, link):
    path = f"/dynamic/{link}"
    assert os.path.islink(docroot.path(path))
    r = get(server.port, path)
    assert r.status == 200, f"symlink {path} -> {os.readlink(docroot.path(path))}: {r!r}"
    assert sha256(r.body) == sha256(docroot.files[path])


@pytest.mark.parametrize("path", [
    "/dynamic/link_out_abs.txt",
    "/dynamic/link_out_rel.txt",
    "/static/link_out_abs.txt",
    "/static/outdir/secret.txt",
])
def test_symlink_leaving_root_is_not_served(server, path):
    r = get(server.port, path)
    assert r.status in (403, 404), r
    assert OUTSIDE_MARKER not in r.body
    assert OUTSIDE_MARKER.strip() not in r.head


@pytest.mark.parametrize("path,file", [
    ("/static/a.txt?x=1", "/static/a.txt"),
    ("/static/a.txt?x=1&y=%2e%2e/../z", "/static/a.txt"),
    ("/dynamic/a.txt?v=2", "/dynamic/a.txt"),
    ("/?page=1", "/index.html"),
])
def test_query_string_is_ignored(server, docroot, path, file):
    r = get(server.port, path)
    assert r.status == 200, r
    assert r.body == docroot.files[file]


@pytest.mark.parametrize("path,file", [
    ("/static/hello%20world.txt", "/static/hello world.txt"),
    ("/dynamic/hello%20world.txt", "/dynamic/hello world.txt"),
    ("/static/%61.txt", "/static/a.txt"),
    ("/%73tatic/%78%2Etxt", "/static/x.txt"),
])
def test_percent_decoding(server, docroot, path, file):
    r = get(server.port, path)
    assert r.status == 200, r
    assert r.body == docroot.files[file]
