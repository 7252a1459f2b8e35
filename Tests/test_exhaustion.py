"""The server short of resources: a flood of connections over --max-connections (refused with
503, logged at most once a second per worker with a count instead of one line per connection)."""

import math
import re
import time

import pytest

import awstest

REFUSED = 200


def test_refused_connections_are_logged_once_a_second_with_a_count(make_server, docroot):
    """Each connection over --max-connections used to log its own warning: a flood of them
    flooded the log. Now a worker logs at most one line a second, carrying how many it refused
    since its last line; the counts add up to every refusal."""
    workers = 2
    srv = make_server(args=["--max-connections", "2", "--workers", str(workers)], name="refusals")
    held = [awstest.connect(srv.port, timeout=5) for _ in range(2)]
    try:
        for s in held:  # both accepted and counted before the flood starts
            s.sendall(b"GET /static/x.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert awstest.read_response(s, timeout=5).status == 200
        start = time.monotonic()
        for _ in range(REFUSED):
            # Nothing sent: the refusal is answered at accept, and a request it never reads
            # would turn its close into a reset.
            with awstest.connect(srv.port, timeout=5) as s:
                r = awstest.parse_response(awstest.recv_until_eof(s, timeout=5))
            assert r.status == 503 and r.header("retry-after") == "1", r
        elapsed = time.monotonic() - start

        line = re.compile(r"connection limit \(2\) reached: refused (\d+) connection")

        def counted():
            return sum(int(n) for n in line.findall(srv.stderr()))
        # A burst's tail is reported by the tick once its second is over.
        assert awstest.wait_for(lambda: counted() >= REFUSED, timeout=5), \
            f"the log counts {counted()} of {REFUSED} refusals:\n{srv.stderr()[-3000:]}"
        assert counted() == REFUSED, srv.stderr()[-3000:]
        lines = [l for l in srv.stderr().splitlines() if "connection limit" in l]
        allowed = workers * (math.ceil(elapsed) + 2)
        assert len(lines) <= allowed, \
            f"{len(lines)} log lines for {REFUSED} refusals in {elapsed:.1f} s (at most {allowed}):\n" \
            + "\n".join(lines[:20])
        assert all(line.search(l) for l in lines), lines
    finally:
        for s in held:
            s.close()
