"""How /dynamic/ files are read (issue 11): libaio on the buffered descriptor with RWF_NOWAIT
first — served from the page cache inside io_submit — and, for what the cache does not hold, the
same range from the device through an O_DIRECT descriptor, asynchronously (completion through the
eventfd). `--dynamic-io direct` reads everything O_DIRECT.

The evidence is the server's own system calls, recorded with strace: which descriptor each
io_submit reads, at which offset, with which flags. (Completions are taken from the ring the
kernel shares with the process, not with io_getevents, so strace does not show their results: a
page-cache read that came up short shows as the device read that follows it, at the offset where
the cache ran out.) The page-cache state of each
file is set up by the test (fsync + POSIX_FADV_DONTNEED to evict, a read to load) and checked
with mincore(2) before each request, so each case is exactly the one it claims to be.
"""

import ctypes
import mmap
import os
import re
import shutil
import tempfile
import time

import pytest

from awstest import KIB, content, get, raw_request, sha256, wait_for

pytestmark = pytest.mark.skipif(not shutil.which("strace"), reason="strace is not installed (make test installs it)")

FILES = {
    "cold.bin": 256 * KIB,
    "warm.bin": 256 * KIB,
    "part.bin": 256 * KIB,
    "small.bin": 1 * KIB,
    "direct.bin": 64 * KIB,
}
PAGE = os.sysconf("SC_PAGE_SIZE")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def resident_pages(path):
    """Which pages of the file are in the page cache: mincore(2) on a shared read-only mapping."""
    size = os.path.getsize(path)
    pages = (size + PAGE - 1) // PAGE
    vec = ctypes.create_string_buffer(pages)
    fd = os.open(path, os.O_RDONLY)
    try:
        p = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert p not in (None, ctypes.c_void_p(-1).value), "mmap failed"
        try:
            assert _libc.mincore(p, size, vec) == 0, os.strerror(ctypes.get_errno())
        finally:
            _libc.munmap(p, size)
    finally:
        os.close(fd)
    return [i for i in range(pages) if vec.raw[i] & 1]


def readable_without_waiting(path):
    """The page cache can give the whole file to a read that may not wait (RWF_NOWAIT, as aws
    asks it): every page is there *and* up to date. mincore(2) also counts pages whose read
    from the device is still in flight, which such a read stops at (a short read)."""
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.preadv(fd, [bytearray(size)], 0, os.RWF_NOWAIT) == size
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages are not dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    assert resident_pages(path) == [], f"{path} is still in the page cache after POSIX_FADV_DONTNEED"


def load(path, length=None):
    """Reads the first `length` bytes (all by default) into the page cache, without readahead."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        size = os.path.getsize(path) if length is None else length
        done = 0
        while done < size:
            n = len(os.pread(fd, min(size - done, 64 * KIB), done))
            assert n > 0
            done += n
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def disk_root():
    """A document root on a filesystem with O_DIRECT (tmpfs has none; /var/tmp is on disk)."""
    base = tempfile.mkdtemp(prefix="aws-dynio-", dir="/var/tmp" if os.path.isdir("/var/tmp") else None)
    os.chmod(base, 0o755)
    os.makedirs(os.path.join(base, "dynamic"))
    files = {}
    for name, size in FILES.items():
        data = content(f"dynio/{name}", size)
        path = os.path.join(base, "dynamic", name)
        with open(path, "wb") as f:
            f.write(data)
        files[name] = data
    try:
        os.close(os.open(os.path.join(base, "dynamic", "cold.bin"), os.O_RDONLY | os.O_DIRECT))
    except OSError as e:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"no O_DIRECT on the filesystem of {base}: {e}")
    yield base, files
    shutil.rmtree(base, ignore_errors=True)


class Trace:
    """The strace log of one server, read from where the last look ended."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.history = []   # every call seen so far, joined

    def _text(self):
        try:
            with open(self.path, errors="replace") as f:
                f.seek(self.offset)
                return f.read()
        except OSError:
            return ""

    def skip(self):
        """Everything so far is old news (waits for strace to stop writing)."""
        self.offset += len(self.settled())

    def settled(self):
        prev = None
        for _ in range(40):
            text = self._text()
            if text == prev and text.endswith("\n"):
                return text
            prev = text
            time.sleep(0.1)
        return prev or ""

    def take(self):
        text = self.settled()
        self.offset += len(text)
        # strace splits calls that block across lines ("<unfinished ...>" / "<... resumed>"):
        # join each pair back into one line per call.
        lines, pending = [], {}
        for line in text.splitlines():
            m = re.match(r"(\d+)\s+(.*)", line)
            if not m:
                continue
            pid, rest = m.groups()
            if rest.endswith("<unfinished ...>"):
                pending[pid] = rest[: -len("<unfinished ...>")]
                continue
            r = re.match(r"<\.\.\. \w+ resumed>(.*)", rest)
            if r:
                rest = pending.pop(pid, "") + r.group(1)
            lines.append(rest)
        self.history += lines
        return lines


def file_fd(lines, name):
    """The descriptor the server opened `name` on (openat2 beneath the root) in these calls."""
    fds = file_fds(lines, name)
    return fds[0] if fds else None


def file_fds(lines, name):
    """Every descriptor opened on `name` (each worker caches its own)."""
    return [int(m.group(1)) for line in lines
            for m in [re.match(r'openat2\(\d+, "dynamic/' + re.escape(name) + r'", .*\) = (\d+)$', line)] if m]


def submits(lines):
    """(fildes, offset, nbytes, nowait, eventfd) of each io_submit."""
    out = []
    for line in lines:
        if not line.startswith("io_submit("):
            continue
        fd = int(re.search(r"aio_fildes=(\d+)", line).group(1))
        off = int(re.search(r"aio_offset=(\d+)", line).group(1))
        nbytes = int(re.search(r"aio_nbytes=(\d+)", line).group(1))
        out.append((fd, off, nbytes, "RWF_NOWAIT" in line, "IOCB_FLAG_RESFD" in line))
    return out


def direct_reopens(lines, fd):
    """Descriptors opened O_DIRECT on `fd`'s file (through /proc/self/fd)."""
    return [int(m.group(1)) for line in lines
            for m in [re.match(r'openat\(AT_FDCWD, "/proc/self/fd/' + str(fd) + r'", [^)]*O_DIRECT[^)]*\) = (\d+)$', line)] if m]


STRACE_CALLS = "trace=openat,openat2,io_submit,io_getevents,sendto,pread64,preadv2,read"


def traced_server(make_server, log_dir, root, name, args=()):
    log = os.path.join(log_dir, f"{name}.strace")
    if os.path.exists(log):
        os.remove(log)
    srv = make_server(args=list(args), root=root, prefix=["strace", "-f", "-qq", "-e", STRACE_CALLS, "-e", "signal=none", "-o", log],
                      ready_timeout=20, name=name)
    return srv, Trace(log)


def fetch(srv, trace, files, name):
    trace.skip()
    r = get(srv.port, f"/dynamic/{name}")
    assert r.status == 200, r
    assert sha256(r.body) == sha256(files[name]), f"wrong bytes for {name}"
    return r, trace.take()


def test_cached_file_is_read_from_the_page_cache_in_io_submit(disk_root, make_server, log_dir):
    root, files = disk_root
    path = os.path.join(root, "dynamic", "warm.bin")
    load(path)
    assert len(resident_pages(path)) == FILES["warm.bin"] // PAGE
    srv, trace = traced_server(make_server, log_dir, root, "dynio-auto-warm")
    _, lines = fetch(srv, trace, files, "warm.bin")
    fd = file_fd(lines, "warm.bin")
    assert fd is not None, "\n".join(lines)
    subs = submits(lines)
    assert subs, "no io_submit for a /dynamic/ file:\n" + "\n".join(lines)
    # Every read: the buffered descriptor, RWF_NOWAIT, no eventfd; each completed in full (no
    # read follows from the device), and they cover the file.
    assert all(s[0] == fd and s[3] and not s[4] for s in subs), subs
    assert sum(s[2] for s in subs) == FILES["warm.bin"], subs
    assert not any(line.startswith("io_getevents(") for line in lines), "a system call to reap completions"
    assert direct_reopens(lines, fd) == [], "an O_DIRECT descriptor was opened for a cached file"
    assert not any(line.startswith(("pread64(", "preadv2(")) for line in lines), "a blocking read"


def test_cold_file_is_read_with_o_direct_then_cached_for_the_next_request(disk_root, make_server, log_dir):
    root, files = disk_root
    path = os.path.join(root, "dynamic", "cold.bin")
    evict(path)
    srv, trace = traced_server(make_server, log_dir, root, "dynio-auto-cold")
    _, lines = fetch(srv, trace, files, "cold.bin")
    fd = file_fd(lines, "cold.bin")
    assert fd is not None, "\n".join(lines)
    subs = submits(lines)
    # First the page cache, which has nothing (EAGAIN at once: the read did not wait)...
    assert subs[0][0] == fd and subs[0][3] and subs[0][1] == 0, subs
    # ...then the same range from the device, on an O_DIRECT descriptor of the same file,
    # completing asynchronously through the eventfd; never a blocking read.
    direct = direct_reopens(lines, fd)
    assert len(direct) == 1, "\n".join(lines)
    device = [s for s in subs if s[0] == direct[0]]
    assert device and device[0][1] == 0, subs
    assert all(not s[3] and s[4] for s in device), subs
    assert not any(line.startswith(("pread64(", "preadv2(")) for line in lines), "a blocking read"
    # The miss was handed to the warmer: the file comes into the page cache...
    assert wait_for(lambda: len(resident_pages(path)) == FILES["cold.bin"] // PAGE, 10), \
        f"cold.bin was not brought into the page cache: {len(resident_pages(path))} pages"
    # (Its pages can be resident while the warmer's reads of the last ones are still in flight.)
    assert wait_for(lambda: readable_without_waiting(path), 10), "cold.bin never became readable without waiting"
    # ...and the next request is served from it, with no device read (by either worker: each
    # has its own descriptor).
    _, lines = fetch(srv, trace, files, "cold.bin")
    subs = submits(lines)
    assert subs and all(s[0] in file_fds(trace.history, "cold.bin") and s[3] for s in subs), subs
    assert sum(s[2] for s in subs) == FILES["cold.bin"], subs


def test_partly_cached_file_reads_the_rest_from_the_device(disk_root, make_server, log_dir):
    root, files = disk_root
    path = os.path.join(root, "dynamic", "part.bin")
    evict(path)
    load(path, 2 * PAGE)
    assert resident_pages(path) == [0, 1], resident_pages(path)
    srv, trace = traced_server(make_server, log_dir, root, "dynio-auto-part")
    _, lines = fetch(srv, trace, files, "part.bin")
    fd = file_fd(lines, "part.bin")
    subs = submits(lines)
    # The cache is asked for the range, gives the two pages it has (a short read), and the rest
    # of that range comes from the device, from the first page it lacked.
    assert subs[0][0] == fd and subs[0][3] and subs[0][1] == 0, subs
    direct = direct_reopens(lines, fd)
    assert len(direct) == 1, "\n".join(lines)
    device = [s for s in subs if s[0] == direct[0]]
    assert device and device[0][1] == 2 * PAGE and not device[0][3], subs


def test_small_cached_file_goes_out_with_its_head_in_one_send(disk_root, make_server, log_dir):
    root, files = disk_root
    path = os.path.join(root, "dynamic", "small.bin")
    load(path)
    srv, trace = traced_server(make_server, log_dir, root, "dynio-auto-small")
    trace.skip()
    response = raw_request(srv.port, b"GET /dynamic/small.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(files["small.bin"]), response[:200]
    lines = trace.take()
    assert any(s[3] for s in submits(lines)), "the body was not read with io_submit"
    sends = [int(m.group(1)) for line in lines for m in [re.match(r"sendto\(.*\) = (\d+)$", line)] if m]
    assert sends == [len(response)], f"head and body took sends of {sends} bytes, response {len(response)}"


def test_dynamic_io_direct_reads_everything_from_the_device(disk_root, make_server, log_dir):
    root, files = disk_root
    path = os.path.join(root, "dynamic", "direct.bin")
    load(path)
    srv, trace = traced_server(make_server, log_dir, root, "dynio-direct", args=["--dynamic-io", "direct"])
    _, lines = fetch(srv, trace, files, "direct.bin")
    fd = file_fd(lines, "direct.bin")
    subs = submits(lines)
    assert subs and not any(s[3] for s in subs), f"RWF_NOWAIT under --dynamic-io direct: {subs}"
    direct = direct_reopens(lines, fd)
    assert len(direct) == 1 and all(s[0] == direct[0] and s[4] for s in subs), (direct, subs)


def test_dynamic_io_rejects_an_unknown_mode():
    import subprocess

    from awstest import aws_bin
    r = subprocess.run([aws_bin(), "--dynamic-io", "sometimes", "--port", "1"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "--dynamic-io" in r.stderr and "sometimes" in r.stderr, r.stderr
