"""The server really uses epoll, sendfile(2) for static/ and libaio io_submit for dynamic/."""

import os
import re
import shutil
import subprocess
import time

import pytest

from awstest import aws_bin, get, sha256, wait_for


def undefined_symbols(path):
    out = subprocess.run(["nm", "-D", "--undefined-only", path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    names = set()
    for line in out.stdout.splitlines():
        parts = line.split()
        if parts:
            names.add(parts[-1].split("@")[0])
    return names


def defined_symbols(path):
    out = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {line.split()[-1].split("@")[0] for line in out.stdout.splitlines() if line.split()}


@pytest.fixture(scope="module")
def imports():
    if not shutil.which("nm"):
        pytest.skip("nm (binutils) is not installed")
    return undefined_symbols(aws_bin())


def test_imports_epoll_wait(imports):
    assert "epoll_wait" in imports, sorted(s for s in imports if "epoll" in s)


def test_imports_sendfile(imports):
    assert imports & {"sendfile", "sendfile64"}, sorted(s for s in imports if "send" in s)


def test_imports_io_submit(imports):
    if "io_submit" in imports:
        return
    # Fallback: linked against libaio, and that libaio exports io_submit.
    ldd = subprocess.run(["ldd", aws_bin()], capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"libaio\.so[.\d]*\s*=>\s*(\S+)", ldd)
    assert m, f"io_submit is not imported and libaio is not linked; ldd:\n{ldd}"
    assert "io_submit" in defined_symbols(m.group(1)), f"{m.group(1)} does not export io_submit"


def test_strace_sendfile_for_static_io_submit_for_dynamic(docroot, make_server, log_dir):
    if not shutil.which("strace"):
        pytest.skip("strace is not installed (make test installs it)")
    log = os.path.join(log_dir, "strace.log")
    if os.path.exists(log):
        os.remove(log)
    srv = make_server(prefix=["strace", "-f", "-qq", "-e", "trace=sendfile,io_submit", "-o", log],
                      ready_timeout=20, name="strace")

    def counts():
        try:
            with open(log, errors="replace") as f:
                text = f.read()
        except OSError:
            return 0, 0
        # "sendfile(" starts each call; "<... sendfile resumed>" continues one and is not counted.
        return text.count("sendfile("), text.count("io_submit(")

    def settled():
        """Counts once the log has stopped growing (strace may write a line a little late)."""
        prev = counts()
        for _ in range(30):
            time.sleep(0.2)
            now = counts()
            if now == prev:
                return now
            prev = now
        return prev

    base_sf, base_io = settled()

    path = "/static/big64k.bin"
    r = get(srv.port, path)
    assert r.status == 200 and sha256(r.body) == sha256(docroot.files[path]), r
    assert wait_for(lambda: counts()[0] > base_sf, 3), f"no sendfile( in the strace log after GET {path}"
    sf, io = settled()
    assert io == base_io, f"io_submit count went {base_io} -> {io} on a static-only fetch"

    path = "/dynamic/big64k.bin"
    r = get(srv.port, path)
    assert r.status == 200 and sha256(r.body) == sha256(docroot.files[path]), r
    assert wait_for(lambda: counts()[1] > io, 3), f"no io_submit( in the strace log after GET {path}"

    # A second static fetch: sendfile again, and still no io_submit for it.
    sf2, io2 = settled()
    path = "/static/f_1048579.bin"
    r = get(srv.port, path)
    assert r.status == 200 and sha256(r.body) == sha256(docroot.files[path]), r
    assert wait_for(lambda: counts()[0] > sf2, 3), f"no sendfile( after GET {path}"
    assert settled()[1] == io2, "io_submit on a static fetch"


# Issue 11: a small response — a static file, a cached dynamic file, a plugin's part with finish in
# one callback — leaves in exactly one send, head and body together; a keep-alive request costs one
# recv and that send (and, for /dynamic/, the io_submit that reads it: its completion is taken from
# the shared ring, no io_getevents).
SMALL_RESPONSE_REQUESTS = 40


@pytest.mark.parametrize("target,reads", [
    ("/static/f_4095.bin", 0),
    ("/dynamic/f_4095.bin", 1),
    ("/hello?name=syscalls", 0),
])
def test_small_response_is_one_send_per_request(docroot, make_server, log_dir, target, reads):
    from awstest import REPO, connect, read_response
    if not shutil.which("strace"):
        pytest.skip("strace is not installed (make test installs it)")
    plugins = os.path.join(REPO, "Plugins")
    if target.startswith("/hello") and not os.path.exists(os.path.join(plugins, "hello.so")):
        pytest.fail("Plugins/hello.so is missing: make test builds it (make plugins)")
    log = os.path.join(log_dir, "strace-small.log")
    if os.path.exists(log):
        os.remove(log)
    srv = make_server(args=["--plugins", plugins], name="strace-small",
                      prefix=["strace", "-f", "-qq", "-e", "trace=sendto,sendfile,writev,recvfrom,io_submit,io_getevents",
                              "-e", "signal=none", "-o", log], ready_timeout=20)
    s = connect(srv.port)
    request = f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    try:
        for _ in range(5):  # warm: open-file cache, page cache, exchange pool
            s.sendall(request)
            assert read_response(s).status == 200

        def text():
            with open(log, errors="replace") as f:
                return f.read()

        def settled():
            prev = None
            for _ in range(40):
                now = text()
                if now == prev:
                    return now
                prev = now
                time.sleep(0.1)
            return prev

        before = len(settled())
        for _ in range(SMALL_RESPONSE_REQUESTS):
            s.sendall(request)
            r = read_response(s)
            assert r.status == 200, r
    finally:
        s.close()
    calls = [line.split(None, 1)[1] for line in settled()[before:].splitlines() if " " in line]
    # The close at the end adds a recvfrom of 0 bytes; the calls of the requests come before it.
    count = {name: sum(1 for c in calls if c.startswith(name + "(")) for name in
             ("sendto", "sendfile", "writev", "io_submit", "io_getevents")}
    assert count["sendto"] == SMALL_RESPONSE_REQUESTS, (count, calls[:12])
    assert count["sendfile"] == count["writev"] == 0, count
    assert count["io_submit"] == reads * SMALL_RESPONSE_REQUESTS, count
    assert count["io_getevents"] == 0, count
    recvs = sum(1 for c in calls if c.startswith("recvfrom("))
    assert SMALL_RESPONSE_REQUESTS <= recvs <= SMALL_RESPONSE_REQUESTS + 2, (recvs, calls[:12])


def test_big_static_body_sets_a_low_unsent_mark_once(docroot, make_server, log_dir):
    """A big sendfile body (from 256 KiB) sets TCP_NOTSENT_LOWAT on its connection, once; small
    responses never do (it costs a system call; it matters for big transfers under BBR pacing)."""
    from awstest import connect, read_response
    if not shutil.which("strace"):
        pytest.skip("strace is not installed (make test installs it)")
    log = os.path.join(log_dir, "strace-lowat.log")
    if os.path.exists(log):
        os.remove(log)
    srv = make_server(name="strace-lowat", prefix=["strace", "-f", "-qq", "-e", "trace=setsockopt", "-o", log],
                      ready_timeout=20)
    s = connect(srv.port)
    try:
        for target in ["/static/f_4095.bin", "/static/f_4095.bin", "/static/f_1048579.bin",
                       "/static/f_1048579.bin", "/static/big64k.bin"]:
            s.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            r = read_response(s)
            assert r.status == 200 and sha256(r.body) == sha256(docroot.files[target]), target
    finally:
        s.close()
    def calls():
        with open(log, errors="replace") as f:
            return [line for line in f if "TCP_NOTSENT_LOWAT" in line]

    # strace may write a line a little after the call: wait for the first one (the responses
    # above came after it), then for the log to stop growing before counting.
    assert wait_for(lambda: calls(), 5), "no TCP_NOTSENT_LOWAT for a 1 MiB body"
    seen = None
    while seen != calls():
        seen = calls()
        time.sleep(0.2)
    assert len(seen) == 1 and "[65536]" in seen[0], seen
