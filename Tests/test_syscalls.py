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
