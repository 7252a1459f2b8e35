"""Response headers (issue 13): the Content-Type table against Debian's /etc/mime.types read here
(an independent source) and the web's own types, charset only where UTF-8 is the sensible
default, --mime-type; --cache-control with Expires (HTTP/1.0 and 1.1, 304 too) and `immutable`
for fingerprinted names; X-Content-Type-Options: nosniff and --header on every response (files,
errors, redirects, a plugin's, a CGI program's); bad values refused at start."""

from __future__ import annotations

import email.utils
import http.client
import os
import re
import subprocess

import pytest

import awstest
import pluginutil as pu
from awstest import HOST

MIME_TYPES = "/etc/mime.types"

# The types the web wants where mime.types has none or another (RFC 9239 for JavaScript).
WEB_TYPES = {
    "js": "text/javascript", "mjs": "text/javascript", "cjs": "text/javascript",
    "json": "application/json", "map": "application/json",
    "webmanifest": "application/manifest+json", "wasm": "application/wasm",
    "avif": "image/avif", "webp": "image/webp", "svg": "image/svg+xml", "ico": "image/x-icon",
    "woff": "font/woff", "woff2": "font/woff2", "ttf": "font/ttf", "otf": "font/otf",
    "wav": "audio/wav", "rss": "application/rss+xml",
}

# Types sent with "; charset=utf-8"; every other one goes out bare.
UTF8_TYPES = {
    "text/html", "text/css", "text/javascript", "text/plain", "text/xml",
    "application/json", "application/manifest+json", "application/ld+json",
    "application/xml", "application/xhtml+xml", "application/atom+xml", "application/rss+xml",
    "image/svg+xml",
}

CSP = "default-src 'self'; frame-ancestors 'none'"
CACHE_RULES = [
    "/static/*.js=public, max-age=600",
    "*.css=no-cache",
    "/img/=max-age=120",
    "/static/=public, max-age=30",
]


def debian_table() -> dict:
    """ext -> type, the first type an extension is listed under winning."""
    if not os.path.isfile(MIME_TYPES):
        pytest.fail(f"{MIME_TYPES} is missing: install the media-types package (make deps)", pytrace=False)
    table = {}
    with open(MIME_TYPES, encoding="utf-8") as f:
        for line in f:
            words = line.split("#", 1)[0].split()
            for ext in words[1:]:
                if re.fullmatch(r"[A-Za-z0-9_+-]+", ext):
                    table.setdefault(ext.lower(), words[0].lower())
    return table


def expected_type(mime: str) -> str:
    return mime + "; charset=utf-8" if mime in UTF8_TYPES else mime


def write(path: str, data: bytes = b"x\n", mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


@pytest.fixture(scope="module")
def table():
    t = debian_table()
    assert len(t) > 1000, f"{MIME_TYPES} lists only {len(t)} extensions"
    return t


@pytest.fixture(scope="module")
def root(table):
    r = pu.new_dir("headers-root-")
    for ext in list(table) + list(WEB_TYPES):
        write(os.path.join(r, "types", f"f.{ext}"))
    for name in ["static/app.3f2a9c1b.js", "static/plain.js", "static/report.20240101.pdf",
                 "static/s.css", "img/a.png", "img/sub/b.css", "other/c.js", "dir/index.html",
                 "noext", "upper.PNG"]:
        write(os.path.join(r, name))
    write(os.path.join(r, "cgi", "hello"), b"#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhello from cgi\\n'\n", 0o755)
    return r


@pytest.fixture(scope="module")
def srv(root):
    args = ["--plugins", pu.plugin_folder({"echo": pu.example_plugin("echo")}),
            "--header", f"Content-Security-Policy={CSP}", "--header", "X-Frame-Options=DENY"]
    for rule in CACHE_RULES:
        args += ["--cache-control", rule]
    with awstest.running(awstest.Server(root, args=args, name="headers")) as s:
        yield s


def get(port, path, method="GET", extra="", version="1.1"):
    req = f"{method} {path} HTTP/{version}\r\nHost: {HOST}\r\n{extra}Connection: close\r\n\r\n"
    return awstest.parse_response(awstest.raw_request(port, req.encode("latin-1")), head_request=(method == "HEAD"))


def count(r, name) -> int:
    return sum(1 for n, _ in r.raw_headers if n.lower() == name.lower())


# ---- Content-Type -----------------------------------------------------------------------

def test_every_extension_of_mime_types(srv, table):
    """All of mime.types (not a sample: it is cheap over one keep-alive connection), each with
    the type the web table or mime.types gives and the charset rule."""
    conn = http.client.HTTPConnection(HOST, srv.port, timeout=awstest.OP_TIMEOUT)
    wrong = []
    try:
        for ext, mime in sorted(table.items()):
            conn.request("HEAD", f"/types/f.{ext}")
            r = conn.getresponse()
            r.read()
            want = expected_type(WEB_TYPES.get(ext, mime))
            if r.status != 200 or r.getheader("Content-Type") != want:
                wrong.append((ext, r.status, r.getheader("Content-Type"), want))
    finally:
        conn.close()
    assert not wrong, f"{len(wrong)} of {len(table)} wrong, first ones: {wrong[:10]}"


@pytest.mark.parametrize("ext,want", sorted(WEB_TYPES.items()))
def test_web_types(srv, ext, want):
    r = get(srv.port, f"/types/f.{ext}")
    assert r.status == 200 and r.header("content-type") == expected_type(want), r


@pytest.mark.parametrize("ext,want", [
    ("html", "text/html; charset=utf-8"), ("css", "text/css; charset=utf-8"),
    ("js", "text/javascript; charset=utf-8"), ("json", "application/json; charset=utf-8"),
    ("txt", "text/plain; charset=utf-8"), ("svg", "image/svg+xml; charset=utf-8"),
    ("xml", "application/xml; charset=utf-8"), ("xhtml", "application/xhtml+xml; charset=utf-8"),
    ("webmanifest", "application/manifest+json; charset=utf-8"),
    ("csv", "text/csv"), ("md", "text/markdown"), ("tex", "text/x-tex"), ("rtf", "application/rtf"),
    ("png", "image/png"), ("pdf", "application/pdf"), ("swf", "application/vnd.adobe.flash.movie"),
])
def test_charset_only_where_utf8_is_the_default(srv, table, ext, want):
    r = get(srv.port, f"/types/f.{ext}")
    assert r.status == 200 and r.header("content-type") == want, r


def test_case_and_no_extension(srv):
    assert get(srv.port, "/upper.PNG").header("content-type") == "image/png"
    assert get(srv.port, "/noext").header("content-type") == "application/octet-stream"
    # A directory's index.html is typed by its own name.
    assert get(srv.port, "/dir/").header("content-type") == "text/html; charset=utf-8"


def test_mime_type_adds_and_overrides_verbatim(make_server, root):
    s = make_server(args=["--mime-type", "txt=text/plain; charset=iso-8859-1", "--mime-type", "html=text/html",
                          "--mime-type", ".png=image/x-test", "--mime-type", "noext2=application/x-new"], root=root)
    assert get(s.port, "/types/f.txt").header("content-type") == "text/plain; charset=iso-8859-1"
    assert get(s.port, "/types/f.html").header("content-type") == "text/html"
    assert get(s.port, "/upper.PNG").header("content-type") == "image/x-test"
    assert get(s.port, "/types/f.css").header("content-type") == "text/css; charset=utf-8"  # the rest unchanged
    write(os.path.join(root, "new.noext2"))
    assert get(s.port, "/new.noext2").header("content-type") == "application/x-new"


# ---- Cache-Control, Expires, immutable -------------------------------------------------

def expires_offset(r) -> int:
    date = email.utils.parsedate_to_datetime(r.header("date"))
    expires = email.utils.parsedate_to_datetime(r.header("expires"))
    return int((expires - date).total_seconds())


@pytest.mark.parametrize("version", ["1.0", "1.1"])
@pytest.mark.parametrize("path,cache_control,max_age", [
    ("/static/plain.js", "public, max-age=600", 600),                 # path glob, first rule
    ("/static/app.3f2a9c1b.js", "public, max-age=600, immutable", 600),  # fingerprinted
    ("/static/s.css", "no-cache", None),                              # name glob before the prefix
    ("/img/sub/b.css", "no-cache", None),                             # first match wins over /img/
    ("/img/a.png", "max-age=120", 120),                               # prefix
    ("/static/report.20240101.pdf", "public, max-age=30", 30),        # a date is no fingerprint
    ("/other/c.js", None, None),                                      # no rule: nothing
])
def test_cache_control_and_expires_per_pattern(srv, version, path, cache_control, max_age):
    r = get(srv.port, path, version=version)
    assert r.status == 200, r
    assert r.header("cache-control") == cache_control, r
    assert count(r, "cache-control") == (cache_control is not None), r
    if max_age is None:
        assert r.header("expires") is None, r
    else:
        assert count(r, "expires") == 1 and expires_offset(r) == max_age, r


def test_cache_fields_on_304_and_206_not_on_errors(srv):
    r = get(srv.port, "/img/a.png")
    etag = r.header("etag")
    r304 = get(srv.port, "/img/a.png", extra=f"If-None-Match: {etag}\r\n")
    assert r304.status == 304 and r304.header("cache-control") == "max-age=120" and expires_offset(r304) == 120, r304
    r206 = get(srv.port, "/img/a.png", extra="Range: bytes=0-0\r\n")
    assert r206.status == 206 and r206.header("cache-control") == "max-age=120", r206
    r404 = get(srv.port, "/img/missing.png")
    assert r404.status == 404 and r404.header("cache-control") is None and r404.header("expires") is None, r404


def test_no_immutable(make_server, root):
    s = make_server(args=["--cache-control", "*.js=max-age=60", "--no-immutable"], root=root)
    r = get(s.port, "/static/app.3f2a9c1b.js")
    assert r.header("cache-control") == "max-age=60", r


def test_server_path_cache_control_wins_for_its_prefix(make_server, root, tmp_path):
    config = tmp_path / "aws.toml"
    config.write_text(f"""cache-control = ["*.png=max-age=5"]

[[server]]
names = ["a.test"]
root = "{root}"

  [[server.path]]
  prefix = "/img/"
  cache-control = "private, max-age=9"
""")
    s = make_server(args=["--config", str(config)])

    def fetch(path):
        return awstest.request(s.port, f"GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n".encode())
    r = fetch("/img/a.png")
    assert r.header("cache-control") == "private, max-age=9" and count(r, "cache-control") == 1, r
    assert r.header("expires") is None, r
    r = fetch("/upper.PNG")  # the glob is case-sensitive: *.png does not match
    assert r.header("cache-control") is None, r
    write(os.path.join(root, "top.png"))
    r = fetch("/top.png")
    assert r.header("cache-control") == "max-age=5" and expires_offset(r) == 5, r


# ---- nosniff and --header on every response ----------------------------------------------

def assert_site_fields(r):
    assert count(r, "x-content-type-options") == 1 and r.header("x-content-type-options") == "nosniff", r
    assert count(r, "content-security-policy") == 1 and r.header("content-security-policy") == CSP, r
    assert r.header("x-frame-options") == "DENY", r


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/types/f.html", 200), ("HEAD", "/img/a.png", 200), ("GET", "/missing", 404),
    ("GET", "/dir", 301), ("DELETE", "/types/f.html", 405), ("GET", "/cgi/hello", 200),
    ("GET", "/cgi/nothing-here", 404),
])
def test_site_fields_on_every_response(srv, method, path, status):
    r = get(srv.port, path, method=method)
    assert r.status == status, r
    assert_site_fields(r)


def test_site_fields_on_a_cgi_response(srv):
    r = get(srv.port, "/cgi/hello", version="1.0")  # 1.0: the body unchunked, up to the close
    assert r.status == 200 and r.body == b"hello from cgi\n", r
    assert_site_fields(r)


def test_site_fields_on_a_plugin_response(srv):
    req = f"POST /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    r = awstest.parse_response(awstest.raw_request(srv.port, req.encode()))
    assert r.status == 200 and r.body == b"hello", r
    assert_site_fields(r)


def test_site_fields_on_a_bad_request(srv):
    r = awstest.parse_response(awstest.raw_request(srv.port, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"))
    assert r.status == 400, r
    assert_site_fields(r)


def test_site_fields_on_the_over_limit_503(make_server, root):
    s = make_server(args=["--max-connections", "1", "--workers", "1", "--header", "X-Frame-Options=DENY"], root=root)
    with awstest.connect(s.port) as held:
        held.sendall(b"GET /types/f.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        awstest.read_response(held)  # the first connection is in
        r = awstest.parse_response(awstest.raw_request(s.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert r.status == 503, r
    assert r.header("x-content-type-options") == "nosniff" and r.header("x-frame-options") == "DENY", r


def test_no_nosniff(make_server, root):
    s = make_server(args=["--no-nosniff"], root=root)
    for path in ["/types/f.html", "/missing"]:
        r = get(s.port, path)
        assert r.header("x-content-type-options") is None, r


# ---- bad values refused at start ---------------------------------------------------------

@pytest.mark.parametrize("flag,value,needle", [
    ("--header", "NoEquals", "NAME=VALUE"),
    ("--header", "Bad Name=v", "NAME=VALUE"),
    ("--header", "X-Empty=", "non-empty"),
    ("--header", "X-Ctl=a\x01b", "control characters"),
    ("--header", "Content-Length=5", "set by the server itself"),
    ("--header", "date=x", "set by the server itself"),
    ("--header", "Content-Type=text/plain", "--mime-type"),
    ("--header", "Cache-Control=no-cache", "--cache-control"),
    ("--header", "X-Content-Type-Options=nosniff", "--no-nosniff"),
    ("--header", "Strict-Transport-Security=max-age=1", "--hsts"),
    ("--cache-control", "max-age=60", "PATTERN=VALUE"),
    ("--cache-control", "public, max-age=60", "PATTERN=VALUE"),
    ("--cache-control", "nothing", "PATTERN=VALUE"),
    ("--cache-control", "*.css=", "non-empty"),
    ("--cache-control", "=max-age=1", "PATTERN=VALUE"),
    ("--mime-type", "txt", "EXT=TYPE"),
    ("--mime-type", "txt=plain", "not a media type"),
    ("--mime-type", "a/b=text/plain", "not a file extension"),
    ("--mime-type", "=text/plain", "not a file extension"),
])
def test_bad_values_refused_at_start(root, flag, value, needle):
    p = subprocess.run([awstest.aws_bin(), "--root", root, "--port", str(awstest.free_port()), flag, value],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode != 0, f"{flag} {value!r} accepted:\n{p.stderr}"
    assert needle in p.stderr, p.stderr
