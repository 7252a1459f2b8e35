"""`--metrics ADDR:PORT` (issue 12): Prometheus text at /metrics on a listener of its own.

Every scrape is checked by `promtool check metrics` (Debian package prometheus): exit 0 and no
lint complaint. The counts are exact: each test makes a known set of requests and compares the
counters (the `aws_*` totals, and the sum of the `aws_worker_*` series per worker, which must
equal them) with what it sent and received. The server's own readiness probe opens a connection
without a request: it moves the connection counters, never the request counters.
"""

import os
import re
import shutil
import socket
import subprocess
import tempfile
from decimal import Decimal

import pytest

import awstest
import pluginutil as pu

PROMTOOL = shutil.which("promtool")

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"')


def parse(text):
    """{(name, frozenset(labels.items())): value} of every sample."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        key = (m.group(1), frozenset(LABEL.findall(m.group(2) or "")))
        assert key not in out, f"sample given twice: {line!r}"
        out[key] = Decimal(m.group(3))  # exact: sums of per-worker values compare equal
    return out


class Metrics:
    def __init__(self, text):
        self.text = text
        self.samples = parse(text)

    def get(self, name, **labels):
        """The one sample of `name` with exactly these labels."""
        key = (name, frozenset(labels.items()))
        assert key in self.samples, f"no sample {name}{labels}"
        return self.samples[key]

    def total(self, name, **labels):
        """aws_NAME{labels}, after checking it equals the sum of aws_worker_NAME over the workers."""
        whole = self.get("aws_" + name, **labels)
        per_worker = [v for (n, ls), v in self.samples.items()
                      if n == "aws_worker_" + name and {k: v for k, v in ls if k != "worker"} == labels]
        assert per_worker, f"no per-worker series of {name}{labels}"
        assert sum(per_worker) == whole, f"aws_worker_{name}{labels} sums to {sum(per_worker)}, aws_{name} is {whole}"
        return whole

    def nonzero(self, name):
        """{frozenset(labels): value} of the non-zero aws_NAME samples (totals)."""
        return {ls: v for (n, ls), v in self.samples.items() if n == "aws_" + name and v != 0}


def promtool_check(text):
    assert PROMTOOL, "promtool is missing: install the Debian package prometheus (make deps)"
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    out = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 0 and out.strip() == "", f"promtool check metrics: exit {r.returncode}\n{out}"


def scrape(port, check=True):
    raw = awstest.raw_request(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", timeout=10)
    r = awstest.parse_response(raw)
    assert r.status == 200, r
    assert r.header("content-type") == "text/plain; version=0.0.4; charset=utf-8"
    text = r.body.decode()
    if check:
        promtool_check(text)
    return Metrics(text)


def start(make_server, root=None, args=(), workers=None):
    port = awstest.free_port()
    extra = ["--metrics", f"{awstest.HOST}:{port}", *args]
    if workers:
        extra += ["--workers", str(workers)]
    srv = make_server(args=extra, root=root)
    awstest.wait_for(lambda: _accepts(port), timeout=5)
    srv.metrics_port = port
    return srv


def _accepts(port):
    try:
        with socket.create_connection((awstest.HOST, port), timeout=1):
            return True
    except OSError:
        return False


def exchange(port, data):
    """Sends a request on a fresh connection (closed by the server after the response): the
    bytes received."""
    return awstest.raw_request(port, data)


@pytest.fixture(scope="module")
def root():
    d = tempfile.mkdtemp(prefix="aws-metrics-", dir="/var/tmp" if os.path.isdir("/var/tmp") else None)
    os.chmod(d, 0o755)
    for sub in ("static", "dynamic"):
        os.makedirs(os.path.join(d, sub))
        os.chmod(os.path.join(d, sub), 0o755)
    files = {"static/a.txt": b"metrics test\n", "static/once.txt": b"looked up twice\n",
             "dynamic/warm.bin": awstest.content("metrics/warm", 100_000),
             "dynamic/cold.bin": awstest.content("metrics/cold", 100_000)}
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("workers", [1, 2])
def test_counters_match_a_known_set_of_requests(make_server, root, workers):
    srv = start(make_server, root=root, workers=workers)
    received = 0

    def send(data, status):
        nonlocal received
        raw = exchange(srv.port, data)
        assert raw.startswith(f"HTTP/1.1 {status} ".encode()), raw[:80]
        received += len(raw)

    for _ in range(7):
        send(b"GET /static/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200)
    for i in range(3):
        send(f"GET /missing-{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(), 404)
    for _ in range(2):
        send(b"HEAD /static/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200)
    send(b"POST /static/a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc", 405)
    send(b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200)
    # Not a request line: answered 400 before any head was read, so its method is not known.
    send(b"hello\r\n\r\n", 400)
    connections = 15

    m = scrape(srv.metrics_port)
    requests = {frozenset(ls): v for ls, v in m.nonzero("http_requests_total").items()}
    assert requests == {
        frozenset({("method", "GET"), ("status", "2xx")}): 7,
        frozenset({("method", "GET"), ("status", "4xx")}): 3,
        frozenset({("method", "HEAD"), ("status", "2xx")}): 2,
        frozenset({("method", "POST"), ("status", "4xx")}): 1,
        frozenset({("method", "OPTIONS"), ("status", "2xx")}): 1,
        frozenset({("method", "none"), ("status", "4xx")}): 1,
    }
    for method in ("GET", "HEAD", "POST", "OPTIONS", "other", "none"):
        for status in ("1xx", "2xx", "3xx", "4xx", "5xx"):
            m.total("http_requests_total", method=method, status=status)
    assert m.total("http_sent_bytes_total") == received
    assert m.get("aws_access_log_dropped_lines_total") == 0

    # The histogram: one observation per request, cumulative buckets ending in +Inf = count.
    count = m.total("http_request_duration_seconds_count")
    assert count == connections
    bounds = [ls for (n, ls) in m.samples if n == "aws_http_request_duration_seconds_bucket"]
    buckets = sorted(((float(dict(ls)["le"]), m.get("aws_http_request_duration_seconds_bucket", **dict(ls)))
                      for ls in bounds), key=lambda b: b[0])
    assert buckets[-1] == (float("inf"), count)
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), buckets
    assert m.total("http_request_duration_seconds_sum") > 0
    for w in range(workers):
        assert m.get("aws_worker_http_request_duration_seconds_bucket", worker=str(w), le="+Inf") == \
            m.get("aws_worker_http_request_duration_seconds_count", worker=str(w))

    # Connections: each request had its own; the readiness probe's comes on top. Once the
    # server has closed them all, none is open and every accepted one is closed.
    assert m.total("connections_accepted_total") >= connections
    assert m.total("connections_refused_total") == 0
    awstest.wait_for(lambda: scrape(srv.metrics_port, check=False).total("connections_open") == 0, timeout=5)
    assert sorted({dict(ls)["worker"] for (n, ls) in m.samples if n == "aws_worker_connections_open"}) == \
        [str(w) for w in range(workers)]


def test_open_file_cache_hit_on_the_second_request_for_a_file(make_server, root):
    srv = start(make_server, root=root, workers=2)
    before = scrape(srv.metrics_port)
    # Both on one keep-alive connection: one worker, one cache.
    with awstest.connect(srv.port) as s:
        for _ in range(2):
            s.sendall(b"GET /static/once.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            assert awstest.read_response(s).status == 200
    after = scrape(srv.metrics_port)
    assert after.total("open_file_cache_misses_total") - before.total("open_file_cache_misses_total") == 1
    assert after.total("open_file_cache_hits_total") - before.total("open_file_cache_hits_total") == 1


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_dynamic_requests_move_the_aio_counters(make_server, root):
    srv = start(make_server, root=root)
    cold = os.path.join(root, "dynamic", "cold.bin")
    try:
        os.close(os.open(cold, os.O_RDONLY | os.O_DIRECT))
    except OSError as e:
        pytest.skip(f"no O_DIRECT on the filesystem of {root}: {e}")

    def counts():
        m = scrape(srv.metrics_port)
        return (m.total("aio_reads_total", source="page_cache"), m.total("aio_reads_total", source="device"),
                m.total("aio_direct_fallbacks_total"), m.total("aio_reads_in_flight"))

    # A file read just now is in the page cache: one read (100 kB fits one buffer), from there.
    with open(os.path.join(root, "dynamic", "warm.bin"), "rb") as f:
        f.read()
    awstest.raw_request(srv.port, b"GET /dynamic/warm.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert counts() == (1, 0, 0, 0)
    # A file evicted from it: the page-cache read misses and the range is read with O_DIRECT.
    evict(cold)
    r = awstest.get(srv.port, "/dynamic/cold.bin")
    assert r.status == 200 and r.body == awstest.content("metrics/cold", 100_000)
    assert counts() == (2, 1, 1, 0)


def test_plugin_calls_errors_and_slow_callbacks(make_server):
    folder = pu.plugin_folder({"ok": pu.test_plugin("ok"), "misuse": pu.test_plugin("misuse"),
                               "sleepy": pu.test_plugin("sleepy")})
    srv = start(make_server, root=pu.small_root(), args=["--plugins", folder, "--plugin-slow-ms", "50"])
    assert awstest.get(srv.port, "/ok").status == 200
    assert awstest.get(srv.port, "/misuse/status?code=503").status == 503   # on_request returns 503
    assert awstest.get(srv.port, "/misuse/fail500").status == 500           # fail before the head
    # A complete answer, then add_header, set_status, send_part and finish: four misuses.
    awstest.raw_request(srv.port, b"GET /misuse/header-after-finish HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert awstest.get(srv.port, "/sleepy?ms=100").status == 200            # on_request sleeps 100 ms
    m = scrape(srv.metrics_port)
    assert m.total("plugin_requests_total") == 5
    assert m.total("plugin_errors_total", kind="on_request") == 1
    assert m.total("plugin_errors_total", kind="fail") == 1
    assert m.total("plugin_errors_total", kind="misuse") == 4
    assert m.total("plugin_slow_callbacks_total") == 1


def test_metrics_listener_answers_only_get_and_head_of_metrics(make_server, root):
    srv = start(make_server, root=root)
    port = srv.metrics_port
    get = awstest.parse_response(awstest.raw_request(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
    head = awstest.parse_response(awstest.raw_request(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
                                  head_request=True)
    assert head.status == 200 and head.body == b""
    assert head.header("content-type") == get.header("content-type")
    query = awstest.parse_response(awstest.raw_request(port, b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert query.status == 200
    other = awstest.parse_response(awstest.raw_request(port, b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert other.status == 404
    post = awstest.parse_response(awstest.raw_request(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab"))
    assert post.status == 405 and post.header("allow") == "GET, HEAD"
    bad = awstest.parse_response(awstest.raw_request(port, b"nonsense\r\n\r\n"))
    assert bad.status == 400
    # Scrapes are not requests of the server.
    assert scrape(port).total("http_requests_total", method="GET", status="2xx") == 0


def listening_ports(pid):
    """TCP ports the process listens on (/proc/PID/fd sockets in LISTEN state)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_metrics_are_off_by_default(make_server, root):
    srv = make_server(root=root, args=["--workers", "2"])
    assert listening_ports(srv.server_pid()) == {srv.port}
    on = start(make_server, root=root, workers=2)
    assert listening_ports(on.server_pid()) == {on.port, on.metrics_port}


@pytest.mark.parametrize("value", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "localhost:9100",
                                   "::1:9100", "[::1]", "[::1]:", "127.0.0.1:x"])
def test_a_bad_metrics_value_stops_the_server_at_start(value):
    r = subprocess.run([awstest.aws_bin(), "--metrics", value], capture_output=True, timeout=30)
    assert r.returncode == 64
    assert f"--metrics wants ADDR:PORT" in r.stderr.decode()


def test_a_metrics_port_in_use_stops_the_server_at_start(root):
    with socket.socket() as taken:
        taken.bind((awstest.HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([awstest.aws_bin(), "--root", root, "--address", awstest.HOST,
                            "--port", str(awstest.free_port()), "--metrics", f"{awstest.HOST}:{port}"],
                           capture_output=True, timeout=30)
    assert r.returncode == 1
    assert f"--metrics {awstest.HOST}:{port}: bind: Address already in use" in r.stderr.decode()


def test_metrics_on_ipv6_loopback(make_server, root):
    if not socket.has_ipv6 or not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("no IPv6")
    port = awstest.free_port()
    make_server(root=root, args=["--metrics", f"[::1]:{port}"])
    awstest.wait_for(lambda: _accepts6(port), timeout=5)
    with socket.create_connection(("::1", port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        r = awstest.parse_response(awstest.recv_until_eof(s))
    assert r.status == 200
    promtool_check(r.body.decode())


def _accepts6(port):
    try:
        with socket.create_connection(("::1", port), timeout=1):
            return True
    except OSError:
        return False
