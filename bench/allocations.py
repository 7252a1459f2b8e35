#!/usr/bin/env python3
"""Heap allocations per keep-alive request of a running HTTP server.

The server runs with the counting shim Tests/alloc/malloc_count.c preloaded:

    cc -O2 -shared -fPIC -pthread -o /tmp/malloc_count.so Tests/alloc/malloc_count.c
    MALLOC_COUNT_FILE=/tmp/counts LD_PRELOAD=/tmp/malloc_count.so SERVER ...
    python3 bench/allocations.py --port P --counter /tmp/counts --path /static/1k.bin

This sends --warmup GET requests over --connections persistent HTTP/1.1 connections (round
robin, one request at a time, no pipelining; every response read whole, by Content-Length or
chunked, and must be 200), reads the counters, sends --requests more over the same connections,
reads the counters again and prints one line of JSON:

    {"path": ..., "requests": N, "allocations": A, "frees": F, "bytes": B, "per_request": A/N,
     "reconnects": R}

A, F and B are the differences over the measured requests (whatever the server did meanwhile,
e.g. a timer, is included). R counts the connections the server closed during the measured
requests (e.g. nginx's keepalive_requests, 1000 by default) and that were opened again: the
cost of those new connections is in the figures. Exits 1 with a message on stderr on any other
status than 200, a malformed response, a connection error or a missing counter file.

Importable: measure(host, port, counter, path, requests, warmup, connections, headers) -> dict.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys

TIMEOUT = 10.0


class MeasureError(Exception):
    pass


def read_counters(counter: str) -> tuple:
    """(allocations, frees, bytes) from the shim's counter file."""
    try:
        with open(counter, "rb") as f:
            data = f.read(24)
    except OSError as e:
        raise MeasureError(f"cannot read the counter file {counter}: {e} (is the server running "
                           f"with LD_PRELOAD=malloc_count.so and MALLOC_COUNT_FILE={counter}?)")
    if len(data) < 24:
        raise MeasureError(f"the counter file {counter} has {len(data)} bytes, not a 4096-byte "
                           f"counter file written by malloc_count.so")
    return struct.unpack("<3Q", data)


class Connection:
    def __init__(self, host: str, port: int, request: bytes):
        self.host, self.port, self.request = host, port, request
        self.sock = None
        self.buf = b""
        self.closing = False   # the last response said Connection: close
        self.open()

    def open(self) -> None:
        self.close()
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=TIMEOUT)
        except OSError as e:
            raise MeasureError(f"cannot connect to {self.host}:{self.port}: {e}")
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.closing = False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _fill(self) -> None:
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            raise EOFError
        except OSError as e:
            raise MeasureError(f"receiving from {self.host}:{self.port}: {e}")
        if not data:
            raise EOFError
        self.buf += data

    def _line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            if len(self.buf) > 65536:
                raise MeasureError("a line longer than 64 KiB in a response")
            self._fill()

    def _take(self, n: int) -> None:
        while len(self.buf) < n:
            self._fill()
        self.buf = self.buf[n:]

    def exchange(self) -> bool:
        """Sends the request and reads the whole response. Returns False when the server
        closed the connection before answering (a keep-alive limit or timeout), which the
        caller answers by reconnecting; raises MeasureError on anything else."""
        return self.send() and self.receive()

    def send(self) -> bool:
        """Sends the request; False when the connection is closed (see exchange)."""
        if self.closing:
            return False
        try:
            self.sock.sendall(self.request)
        except (BrokenPipeError, ConnectionResetError):
            return False
        except OSError as e:
            raise MeasureError(f"sending to {self.host}:{self.port}: {e}")
        return True

    def receive(self) -> bool:
        """Reads the whole response to the request sent; False when the server closed the
        connection before answering (see exchange)."""
        try:
            status_line = self._line()
        except EOFError:
            if self.buf:
                raise MeasureError(f"connection closed in a status line: {self.buf[:200]!r}")
            return False
        try:
            self._response(status_line)
        except EOFError:
            raise MeasureError(f"connection closed in the middle of a response "
                               f"(status line {status_line!r})")
        return True

    def _response(self, status_line: bytes) -> None:
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise MeasureError(f"bad status line {status_line[:200]!r}")
        if parts[1] != b"200":
            raise MeasureError(f"status {status_line.decode('latin-1')!r}, not 200")
        length, chunked = None, False
        while True:
            line = self._line()
            if not line:
                break
            name, sep, value = line.partition(b":")
            if not sep:
                raise MeasureError(f"bad header line {line[:200]!r}")
            name = name.strip().lower()
            value = value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.endswith(b"chunked")
            elif name == b"connection":
                self.closing = b"close" in value
        if status_line.startswith(b"HTTP/1.0") and not self.closing:
            self.closing = True   # a 1.0 answer without a keep-alive promise: treat as close
        if chunked:
            while True:
                size_line = self._line()
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise MeasureError(f"bad chunk size line {size_line[:200]!r}")
                if size == 0:
                    while self._line():   # trailers up to the empty line
                        pass
                    break
                self._take(size + 2)
        elif length is not None:
            self._take(length)
        else:
            raise MeasureError("a 200 response with neither Content-Length nor chunked "
                               "encoding (its end is the end of the connection: no keep-alive)")


def _run(conns: list, count: int) -> int:
    """`count` request/response exchanges, round robin over conns; returns how many
    connections had to be opened again."""
    reconnects = 0
    n = len(conns)
    for i in range(count):
        c = conns[i % n]
        if not c.exchange():
            reconnects += 1
            c.open()
            if not c.exchange():
                raise MeasureError(f"the server closed a fresh connection without answering "
                                   f"{c.request.split(b' ', 2)[1].decode('latin-1')}")
    return reconnects


def _run_together(conns: list, count: int) -> int:
    """`count` requests in rounds: each round sends one request on every connection before
    reading any response, so the server has them all in flight at once (many in one pass of
    its event loop). Returns how many connections had to be opened again."""
    reconnects = 0
    done = 0
    while done < count:
        batch = conns[:min(len(conns), count - done)]
        sent = [c.send() for c in batch]
        for c, ok in zip(batch, sent):
            if ok and c.receive():
                continue
            reconnects += 1
            c.open()
            if not c.exchange():
                raise MeasureError(f"the server closed a fresh connection without answering "
                                   f"{c.request.split(b' ', 2)[1].decode('latin-1')}")
        done += len(batch)
    return reconnects


def measure(host: str, port: int, counter: str, path: str, requests: int = 20000,
            warmup: int = 2000, connections: int = 8, headers=(), together: bool = False) -> dict:
    """`together`: one request in flight on every connection at once (`_run_together`);
    otherwise one at a time, round robin."""
    if requests <= 0 or connections <= 0 or warmup < 0:
        raise MeasureError("--requests and --connections must be positive, --warmup not negative")
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
    for h in headers or ():
        if ":" not in h:
            raise MeasureError(f"a header is 'Name: value', not {h!r}")
        lines.append(h.strip())
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    read_counters(counter)   # fail before sending anything when there is no counter file
    conns = []
    try:
        for _ in range(connections):
            conns.append(Connection(host, port, request))
        run = _run_together if together else _run
        run(conns, warmup)
        before = read_counters(counter)
        reconnects = run(conns, requests)
        after = read_counters(counter)
    finally:
        for c in conns:
            c.close()
    a, f, b = (x - y for x, y in zip(after, before))
    return {"path": path, "requests": requests, "allocations": a, "frees": f, "bytes": b,
            "per_request": round(a / requests, 4), "reconnects": reconnects}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--counter", required=True, help="the file named by MALLOC_COUNT_FILE")
    p.add_argument("--path", required=True, help="the request target, e.g. /static/1k.bin")
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--warmup", type=int, default=2000)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--header", action="append", default=[], metavar="'Name: value'",
                   help="an extra request header (repeatable)")
    a = p.parse_args(argv)
    try:
        result = measure(a.host, a.port, a.counter, a.path, a.requests, a.warmup,
                         a.connections, a.header)
    except MeasureError as e:
        print(f"allocations.py: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
