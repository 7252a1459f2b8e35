"""--config FILE (TOML): virtual hosts by Host and by SNI, per-path settings, flags as keys
(the command line wins), `--check` naming the broken line, SIGHUP re-reading the file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import pytest

import awstest
import pluginutil as pu
import tlsutil
from tlsutil import make_tls_server, pki  # noqa: F401  (fixtures)


def write(path, data: bytes | str, mode: int = 0o644) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)
    return str(path)


def ask(port: int, path: str, host: str | None, extra: str = "", version: str = "1.1") -> awstest.Response:
    head = f"GET {path} HTTP/{version}\r\n" + (f"Host: {host}\r\n" if host is not None else "")
    return awstest.request(port, (head + extra + "Connection: close\r\n\r\n").encode())


@pytest.fixture
def sites(tmp_path):
    """Three roots, each with a file only it has, and a config naming them."""
    roots = {}
    for name in ("a", "b", "d", "top"):
        root = tmp_path / name
        write(root / "static" / f"{name}.txt", f"site {name}\n")
        write(root / "static" / "shared.txt", f"shared of {name}\n")
        (root / "static" / "list").mkdir()
        write(root / "static" / "list" / "item.txt", "x")
        roots[name] = str(root)
    config = tmp_path / "aws.toml"
    config.write_text(f"""# two virtual hosts and a default one
log-level = "info"

[[server]]
names = ["a.test", "*.a.test"]
root = "{roots['a']}"

  [[server.path]]
  prefix = "/static/"
  cache-control = "public, max-age=60"
  headers = {{ "X-Site" = "a", "X-Frame-Options" = "DENY" }}

  [[server.path]]
  prefix = "/static/list/"
  autoindex = true

[[server]]
names = ["b.test"]
root = "{roots['b']}"

[[server]]
names = ["d.test"]
default = true
root = "{roots['d']}"
""")
    return str(config), roots


def test_each_host_gets_its_own_root(make_server, sites):
    config, roots = sites
    srv = make_server(args=["--config", config], root=roots["top"])
    port = srv.port
    r = ask(port, "/static/a.txt", "a.test")
    assert (r.status, r.body) == (200, b"site a\n"), r
    assert ask(port, "/static/b.txt", "a.test").status == 404
    r = ask(port, "/static/b.txt", "b.test")
    assert (r.status, r.body) == (200, b"site b\n"), r
    assert ask(port, "/static/a.txt", "b.test").status == 404
    # The same name in both roots: each host its own file (one open-file cache per root).
    for _ in range(2):
        assert ask(port, "/static/shared.txt", "a.test").body == b"shared of a\n"
        assert ask(port, "/static/shared.txt", "b.test").body == b"shared of b\n"
    # Case, a port and a trailing dot do not change the host.
    assert ask(port, "/static/a.txt", "A.Test:8080").body == b"site a\n"
    assert ask(port, "/static/b.txt", "b.test.").body == b"site b\n"
    # *.a.test: one label.
    assert ask(port, "/static/a.txt", "www.a.test").body == b"site a\n"
    assert ask(port, "/static/a.txt", "x.www.a.test").status == 404
    assert ask(port, "/static/d.txt", "x.www.a.test").body == b"site d\n"


def test_unknown_or_missing_host_gets_the_default_server(make_server, sites):
    config, roots = sites
    srv = make_server(args=["--config", config], root=roots["top"])
    for host in ("unknown.test", "127.0.0.1", "[::1]:80", "d.test"):
        r = ask(srv.port, "/static/d.txt", host)
        assert (r.status, r.body) == (200, b"site d\n"), (host, r)
    r = ask(srv.port, "/static/d.txt", None, version="1.0")
    assert (r.status, r.body) == (200, b"site d\n"), r


def test_first_server_is_the_default_without_default_key(make_server, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write(a / "static" / "x.txt", "A")
    write(b / "static" / "x.txt", "B")
    config = write(tmp_path / "c.toml", f'[[server]]\nnames = ["a.test"]\nroot = "{a}"\n\n'
                                         f'[[server]]\nnames = ["b.test"]\nroot = "{b}"\n')
    srv = make_server(args=["--config", config], root=str(a))
    assert ask(srv.port, "/static/x.txt", "other.test").body == b"A"
    assert ask(srv.port, "/static/x.txt", "b.test").body == b"B"


def test_path_settings_add_headers_under_their_prefix(make_server, sites):
    config, roots = sites
    srv = make_server(args=["--config", config], root=roots["top"])
    r = ask(srv.port, "/static/a.txt", "a.test")
    assert r.status == 200
    assert r.header("cache-control") == "public, max-age=60", r.headers
    assert r.header("x-site") == "a" and r.header("x-frame-options") == "DENY", r.headers
    # A 304 carries them too (RFC 9110 §15.4.5: Cache-Control as on the 200).
    r2 = ask(srv.port, "/static/a.txt", "a.test", extra=f"If-None-Match: {r.header('etag')}\r\n")
    assert r2.status == 304 and r2.header("cache-control") == "public, max-age=60", r2
    # Not on errors, not outside the prefix, not on another host.
    r = ask(srv.port, "/static/missing.txt", "a.test")
    assert r.status == 404 and r.header("cache-control") is None and r.header("x-site") is None, r
    r = ask(srv.port, "/static/b.txt", "b.test")
    assert r.status == 200 and r.header("cache-control") is None and r.header("x-site") is None, r


def test_autoindex_per_path(make_server, sites):
    config, roots = sites
    srv = make_server(args=["--config", config], root=roots["top"])
    r = ask(srv.port, "/static/list/", "a.test")
    assert r.status == 200 and b"item.txt" in r.body, r
    # Only the longest prefix's settings apply: /static/list/ has no headers of its own.
    assert r.header("x-site") is None
    assert ask(srv.port, "/static/list/", "b.test").status == 403


def test_top_level_keys_are_flags_and_the_command_line_wins(make_server, tmp_path, docroot):
    config = write(tmp_path / "c.toml", 'strict-host = true\nmax-headers = 3\n')
    srv = make_server(args=["--config", config])
    # strict-host from the file: HTTP/1.1 without Host is refused.
    assert ask(srv.port, "/static/x.txt", None).status == 400
    many = "".join(f"X-{i}: {i}\r\n" for i in range(5))
    assert ask(srv.port, "/static/x.txt", "x", extra=many).status == 431
    srv2 = make_server(args=["--config", config, "--max-headers", "100"])
    r = ask(srv2.port, "/static/x.txt", "x", extra=many)
    assert r.status == 200, r


def test_plugins_and_cgi_per_server(make_server, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write(a / "static" / "x.txt", "A")
    write(b / "static" / "x.txt", "B")
    write(a / "cgi" / "who.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\nContent-Length: 8\\r\\n\\r\\ncgi of a'\n", 0o755)
    write(b / "cgi" / "who.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\ncgi of b'\n", 0o755)
    plugins = pu.plugin_folder({"echo": pu.example_plugin("echo")})
    config = write(tmp_path / "c.toml", f'[[server]]\nnames = ["a.test"]\nroot = "{a}"\nplugins = "{plugins}"\n\n'
                                         f'[[server]]\nnames = ["b.test"]\nroot = "{b}"\nno-cgi = true\n')
    srv = make_server(args=["--config", config], root=str(a))
    body = b"ping"
    req = (b"POST /echo HTTP/1.1\r\nHost: %s\r\nContent-Length: 4\r\nConnection: close\r\n\r\n" + body)
    r = awstest.request(srv.port, req % b"a.test")
    assert r.status == 200 and body in r.body, r
    assert awstest.request(srv.port, req % b"b.test").status == 405, "b has no plugins: /echo is a file path"
    r = ask(srv.port, "/cgi/who.sh", "a.test")
    assert r.status == 200 and r.body == b"cgi of a", r
    r = ask(srv.port, "/cgi/who.sh", "b.test")
    assert r.status == 200 and r.body.startswith(b"#!/bin/sh"), f"no-cgi on b: /cgi/ is a file path: {r!r}"


def test_tls_certificate_and_site_by_name(make_tls_server, pki, tmp_path):  # noqa: F811
    a, b = tmp_path / "a", tmp_path / "b"
    write(a / "static" / "x.txt", "A")
    write(b / "static" / "x.txt", "B")
    exact = pki["exact"]
    config = write(tmp_path / "c.toml",
                   f'tls-cert = "{pki["default"].cert}"\ntls-key = "{pki["default"].key}"\n\n'
                   f'[[server]]\nnames = ["a.test"]\nroot = "{a}"\ndefault = true\n\n'
                   f'[[server]]\nnames = ["b.example.test"]\nroot = "{b}"\n'
                   f'tls-cert = "{exact.cert}"\ntls-key = "{exact.key}"\n')
    srv = make_tls_server(str(a), args=["--config", config])
    assert tlsutil.peer_cert(pki.root, srv.tls_port, sni="b.example.test") == exact.der
    assert tlsutil.peer_cert(pki.root, srv.tls_port) == pki["default"].der
    with tlsutil.tls_connect(pki.root, srv.tls_port, sni="b.example.test") as s:
        s.sendall(b"GET /static/x.txt HTTP/1.1\r\nHost: b.example.test\r\nConnection: close\r\n\r\n")
        r = awstest.parse_response(awstest.recv_until_eof(s))
    assert (r.status, r.body) == (200, b"B"), r
    # HTTP/1.0 without Host: the SNI name chooses the site.
    with tlsutil.tls_connect(pki.root, srv.tls_port, sni="b.example.test") as s:
        s.sendall(b"GET /static/x.txt HTTP/1.0\r\n\r\n")
        r = awstest.parse_response(awstest.recv_until_eof(s))
    assert (r.status, r.body) == (200, b"B"), r


# ---------------------------------------------------------------- --check

def check(config: str, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([awstest.aws_bin(), "--config", config, "--check", *extra],
                          capture_output=True, text=True, timeout=30)


def test_check_accepts_a_good_file(sites):
    config, _ = sites
    p = check(config)
    assert p.returncode == 0, p.stderr
    assert "configuration OK" in p.stderr


@pytest.mark.parametrize("text,line,needle", [
    ('port = 8080\nbogus = 1\n', 2, "unknown key 'bogus'"),
    ('log-level = "info"\nport = 70000\n', 2, "--port"),
    ('port = "eighty"\n', 1, "--port"),
    ('\n[[server]]\nnames = ["a.test"]\nroot = "/nonexistent/aws-root"\n', 4, "/nonexistent/aws-root"),
    ('[[server]]\nnames = ["a.test"]\nrooot = "/tmp"\n', 3, "unknown key 'rooot'"),
    ('[[server]]\nnames = ["a.test"]\n[[server]]\nnames = ["A.test"]\n', 4, "already a name"),
    ('[[server]]\nnames = ["a..test"]\n', 2, "not a host name"),
    ('port = 80\nworkers = [1\n', 2, ""),
    ('tls-cert = "/nonexistent.pem"\n', 1, "--tls-key"),
    ('[[server]]\nnames = ["a.test"]\n  [[server.path]]\n  prefix = "/x/"\n  headers = { "Bad Name" = "v" }\n', 5, "not a header name"),
])
def test_check_names_the_broken_line(tmp_path, text, line, needle):
    config = write(tmp_path / "broken.toml", text)
    p = check(config)
    assert p.returncode != 0, f"--check accepted:\n{text}\n{p.stderr}"
    assert f"{config}:{line}" in p.stderr, f"line {line} not named:\n{p.stderr}"
    assert needle in p.stderr, p.stderr


def test_check_loads_plugins_and_certificates(tmp_path, pki):  # noqa: F811
    bad_plugins = pu.new_dir("bad-plugins-")
    write(os.path.join(bad_plugins, "broken.so"), b"not an ELF file")
    config = write(tmp_path / "p.toml", f'plugins = "{bad_plugins}"\n')
    p = check(config, "--root", str(tmp_path))
    assert p.returncode != 0 and "broken" in p.stderr, p.stderr
    config = write(tmp_path / "t.toml", f'tls-cert = "{pki["default"].cert}"\ntls-key = "{pki["exact"].key}"\n')
    p = check(config, "--root", str(tmp_path))
    assert p.returncode != 0 and "TLS" in p.stderr, p.stderr
    good = pu.plugin_folder({"echo": pu.example_plugin("echo")})
    config = write(tmp_path / "g.toml", f'plugins = "{good}"\ntls-cert = "{pki["default"].cert}"\ntls-key = "{pki["default"].key}"\n')
    p = check(config, "--root", str(tmp_path))
    assert p.returncode == 0, p.stderr


def test_a_broken_file_stops_the_start(tmp_path):
    config = write(tmp_path / "broken.toml", 'port = 8080\n[[server]\n')
    p = subprocess.run([awstest.aws_bin(), "--config", config, "--port", str(awstest.free_port())],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and f"{config}:2" in p.stderr, p.stderr


# ---------------------------------------------------------------- SIGHUP

def keep_alive_get(s: socket.socket, path: str, host: str) -> awstest.Response:
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return awstest.read_response(s)


def test_sighup_rereads_the_file_for_new_connections(make_server, sites, tmp_path):
    config, roots = sites
    srv = make_server(args=["--config", config], root=roots["top"])
    new_b = tmp_path / "b2"
    write(new_b / "static" / "b.txt", "site b, reloaded\n")
    with awstest.connect(srv.port) as old:
        assert keep_alive_get(old, "/static/b.txt", "b.test").body == b"site b\n"
        text = open(config).read().replace(roots["b"], str(new_b))
        text = text.replace('names = ["b.test"]', 'names = ["b.test", "c.test"]')
        write(config, text)
        srv.signal(signal.SIGHUP)
        awstest.wait_for(lambda: ask(srv.port, "/static/b.txt", "b.test").body == b"site b, reloaded\n", timeout=5)
        assert ask(srv.port, "/static/b.txt", "c.test").body == b"site b, reloaded\n"
        # The connection opened before the reload keeps the sites it started with.
        assert keep_alive_get(old, "/static/b.txt", "b.test").body == b"site b\n"
    assert "configuration reloaded" in srv.stderr()

    # A broken file: logged, and the last good configuration stays.
    write(config, text + "\n[[server]\n")
    srv.signal(signal.SIGHUP)
    awstest.wait_for(lambda: "configuration not reloaded" in srv.stderr(), timeout=5)
    assert f"{config}:" in srv.stderr().split("configuration not reloaded", 1)[1]
    assert ask(srv.port, "/static/b.txt", "c.test").body == b"site b, reloaded\n"


def test_sighup_loads_a_plugins_folder_named_for_the_first_time(make_server, tmp_path):
    a = tmp_path / "a"
    write(a / "static" / "x.txt", "A")
    config = write(tmp_path / "c.toml", f'[[server]]\nnames = ["a.test"]\nroot = "{a}"\n')
    srv = make_server(args=["--config", config], root=str(a))
    req = b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    assert awstest.request(srv.port, req).status == 405
    plugins = pu.plugin_folder({"echo": pu.example_plugin("echo")})
    write(config, f'[[server]]\nnames = ["a.test"]\nroot = "{a}"\nplugins = "{plugins}"\n')
    srv.signal(signal.SIGHUP)
    awstest.wait_for(lambda: awstest.request(srv.port, req).status == 200, timeout=5)


def test_the_readme_example_is_a_good_file(tmp_path, pki):  # noqa: F811
    """The README's example config, its paths moved into a scratch folder, passes --check."""
    import re
    readme = open(os.path.join(awstest.REPO, "README.md")).read()
    text = readme.split("### Configuration file and virtual hosts", 1)[1].split("```toml", 1)[1].split("```", 1)[0]

    def local(m):
        key, path = m.group(1), m.group(2)
        if key == "tls-cert":
            return f'{key} = "{pki["default"].cert}"'
        if key == "tls-key":
            return f'{key} = "{pki["default"].key}"'
        moved = str(tmp_path) + path
        if key in ("root", "plugins"):
            os.makedirs(moved, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(moved), exist_ok=True)
        return f'{key} = "{moved}"'

    config = write(tmp_path / "aws.toml", re.sub(r'^\s*([a-z-]+) = "(/[^"]*)"', local, text, flags=re.M))
    p = check(config)
    assert p.returncode == 0, f"{p.stderr}\n{open(config).read()}"


def test_access_log_per_server(make_server, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write(a / "static" / "x.txt", "A")
    write(b / "static" / "x.txt", "B")
    main_log, a_log, b_log = tmp_path / "main.log", tmp_path / "a.log", tmp_path / "b.log"
    text = (f'access-log = "{main_log}"\nlog-format = "common"\n\n'
            f'[[server]]\nnames = ["a.test"]\nroot = "{a}"\naccess-log = "{a_log}"\n\n'
            f'[[server]]\nnames = ["b.test"]\nroot = "{b}"\n')
    config = write(tmp_path / "c.toml", text)
    srv = make_server(args=["--config", config, "--workers", "1"], root=str(a))

    def lines(path):
        return open(path).read().splitlines() if os.path.exists(path) else []

    for i in range(3):
        assert ask(srv.port, f"/static/x.txt?a{i}", "a.test").body == b"A"
    assert ask(srv.port, "/static/x.txt?b0", "b.test").body == b"B"
    assert ask(srv.port, "/static/x.txt?other", "other.test").body == b"A"   # the first server is the default
    assert awstest.wait_for(lambda: len(lines(a_log)) == 4 and len(lines(main_log)) == 1, timeout=5), (lines(a_log), lines(main_log))
    assert [l.split('"')[1] for l in lines(a_log)] == [f"GET /static/x.txt?a{i} HTTP/1.1" for i in range(3)] + ["GET /static/x.txt?other HTTP/1.1"]
    assert lines(main_log)[0].split('"')[1] == "GET /static/x.txt?b0 HTTP/1.1"

    # A reload that gives b a file of its own: b's next lines go there.
    write(config, text + f'access-log = "{b_log}"\n')
    srv.signal(signal.SIGHUP)
    awstest.wait_for(lambda: "configuration reloaded" in srv.stderr(), timeout=5)
    assert ask(srv.port, "/static/x.txt?b1", "b.test").body == b"B"
    assert awstest.wait_for(lambda: len(lines(b_log)) == 1, timeout=5), srv.stderr()[-2000:]
    assert lines(b_log)[0].split('"')[1] == "GET /static/x.txt?b1 HTTP/1.1"
    assert len(lines(main_log)) == 1


def test_absolute_form_target_chooses_the_site(make_server, sites):
    config, roots = sites
    srv = make_server(args=["--config", config], root=roots["top"])
    r = awstest.request(srv.port, b"GET http://b.test/static/b.txt HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    assert (r.status, r.body) == (200, b"site b\n"), r


def test_sighup_applies_reloadable_keys_and_names_the_others(make_server, sites):
    config, roots = sites
    srv = make_server(args=["--config", config], root=roots["top"])
    assert ask(srv.port, "/static/d.txt", None).status == 200
    text = open(config).read()
    write(config, 'strict-host = true\nlog-format = "json"\n' + text)
    srv.signal(signal.SIGHUP)
    awstest.wait_for(lambda: "configuration reloaded" in srv.stderr(), timeout=5)
    # strict-host applies to new requests; log-format was fixed at start.
    assert ask(srv.port, "/static/d.txt", None).status == 400
    assert "'log-format' changed; it takes effect at the next restart" in srv.stderr()
    assert "'strict-host' changed" not in srv.stderr()


def test_sighup_with_a_certificate_that_does_not_load_changes_nothing(make_tls_server, pki, tmp_path):  # noqa: F811
    a, a2 = tmp_path / "a", tmp_path / "a2"
    write(a / "static" / "x.txt", "A")
    write(a2 / "static" / "x.txt", "A2")
    head = f'tls-cert = "{pki["default"].cert}"\ntls-key = "{pki["default"].key}"\n\n'
    config = write(tmp_path / "c.toml", head + f'[[server]]\nnames = ["a.test"]\nroot = "{a}"\n')
    srv = make_tls_server(str(a), args=["--config", config])
    # A new root and a certificate that is not there, in one edit: neither applies.
    write(config, head + f'[[server]]\nnames = ["a.test"]\nroot = "{a2}"\n'
                         f'tls-cert = "{tmp_path}/missing.pem"\ntls-key = "{tmp_path}/missing.key"\n')
    srv.signal(signal.SIGHUP)
    assert awstest.wait_for(lambda: "configuration not reloaded" in srv.stderr(), timeout=5), srv.stderr()[-2000:]
    assert "TLS" in srv.stderr().split("configuration not reloaded", 1)[1]
    assert ask(srv.port, "/static/x.txt", "a.test").body == b"A"
    assert "configuration reloaded" not in srv.stderr()


def test_sighup_with_a_new_plugins_folder_that_fails_under_strict_plugins(make_server, tmp_path):
    a = tmp_path / "a"
    write(a / "static" / "x.txt", "A")
    plugins = pu.new_dir("late-plugins-")
    write(os.path.join(plugins, "broken.so"), b"not an ELF file")
    body = 'strict-plugins = true\n[[server]]\nnames = ["a.test"]\nroot = "%s"\n' % a
    config = write(tmp_path / "c.toml", body)
    srv = make_server(args=["--config", config], root=str(a))
    write(config, body + f'plugins = "{plugins}"\n')
    srv.signal(signal.SIGHUP)
    assert awstest.wait_for(lambda: "configuration not reloaded" in srv.stderr(), timeout=5), srv.stderr()[-2000:]
    # Fixed: the next SIGHUP loads the folder.
    os.remove(os.path.join(plugins, "broken.so"))
    pu.deploy(plugins, "echo", pu.example_plugin("echo"))
    srv.signal(signal.SIGHUP)
    req = b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    assert awstest.wait_for(lambda: awstest.request(srv.port, req).status == 200, timeout=5), srv.stderr()[-2000:]


def test_check_names_the_line_of_users_logs_certificates_and_plugins(tmp_path, pki):  # noqa: F811
    root = str(tmp_path)
    cases = [
        ('port = 8080\nuser = "no-such-user-aws"\n', 2, "no such user"),
        ('\naccess-log = "/nonexistent-dir/access.log"\n', 2, "access log"),
        (f'tls-cert = "{pki["default"].cert}"\ntls-key = "{pki["default"].key}"\n[[server]]\nnames = ["a.test"]\n'
         f'access-log = "/nonexistent-dir/a.log"\n', 5, "access log"),
        (f'tls-cert = "{pki["default"].cert}"\ntls-key = "{pki["default"].key}"\n\n[[server]]\nnames = ["a.test"]\n'
         f'tls-cert = "{tmp_path}/missing.pem"\ntls-key = "{tmp_path}/missing.key"\n', 6, "TLS"),
    ]
    broken = pu.new_dir("check-plugins-")
    write(os.path.join(broken, "broken.so"), b"not an ELF file")
    cases.append((f'[[server]]\nnames = ["a.test"]\nplugins = "{broken}"\n', 3, "broken"))
    for text, line, needle in cases:
        config = write(tmp_path / "c.toml", text)
        p = check(config, "--root", root)
        assert p.returncode != 0 and f"{config}:{line}" in p.stderr and needle in p.stderr, (text, p.stderr)


def test_sighup_keeps_the_started_value_of_a_restart_key(make_server, sites):
    """A key that needs a restart is named at every reload and keeps its first value meanwhile,
    even when other keys of the same file apply."""
    config, roots = sites
    text = open(config).read()
    write(config, 'header = ["X-Test=one"]\n' + text)
    srv = make_server(args=["--config", config], root=roots["top"])
    assert ask(srv.port, "/static/d.txt", "d.test").header("x-test") == "one"
    write(config, 'header = ["X-Test=two"]\nstrict-host = true\n' + text)
    srv.signal(signal.SIGHUP)
    assert awstest.wait_for(lambda: "configuration reloaded" in srv.stderr(), timeout=5), srv.stderr()[-2000:]
    assert "'header' changed; it takes effect at the next restart" in srv.stderr()
    assert ask(srv.port, "/static/d.txt", None).status == 400          # strict-host applied
    assert ask(srv.port, "/static/d.txt", "d.test").header("x-test") == "one"


def test_failed_sighup_closes_the_log_files_it_opened(make_server, tmp_path):
    """A reload that names a new server's access log and then fails (here at its plugins folder,
    under strict-plugins) keeps no descriptor of that log open."""
    a = tmp_path / "a"
    write(a / "static" / "x.txt", "A")
    plugins = pu.new_dir("broken-plugins-")
    write(os.path.join(plugins, "broken.so"), b"not an ELF file")
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    body = f'strict-plugins = true\naccess-log = "{first}"\n[[server]]\nnames = ["a.test"]\nroot = "{a}"\n'
    config = write(tmp_path / "c.toml", body)
    srv = make_server(args=["--config", config, "--log-level", "info"], root=str(a))
    pid = srv.server_pid()

    def open_logs():
        out = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
        return out & {str(first), str(second)}

    assert open_logs() == {str(first)}
    write(config, body + f'[[server]]\nnames = ["b.test"]\nroot = "{a}"\naccess-log = "{second}"\nplugins = "{plugins}"\n')
    srv.signal(signal.SIGHUP)
    assert awstest.wait_for(lambda: "configuration not reloaded" in srv.stderr(), timeout=5), srv.stderr()[-2000:]
    assert os.path.exists(second), "the reload did not get as far as opening the new log"
    assert awstest.wait_for(lambda: open_logs() == {str(first)}, timeout=5), open_logs()
    # The old configuration still logs to its file.
    assert ask(srv.port, "/static/x.txt", "a.test").status == 200
    assert awstest.wait_for(lambda: first.exists() and b"/static/x.txt" in first.read_bytes(), timeout=5)
