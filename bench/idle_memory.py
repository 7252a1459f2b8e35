#!/usr/bin/env python3
"""Memory per idle keep-alive connection of a server on 127.0.0.1.

    python3 bench/idle_memory.py --port PORT --pid PID [--connections 10000] [--path /static/1k.bin]

PID is the server's main process; its descendants (e.g. nginx workers, lighttpd's forked
workers) are counted with it. The script:

1. raises its own RLIMIT_NOFILE so it can hold the connections;
2. warms the server up with one request on a throw-away connection;
3. reads the summed RSS of the server's processes ("before");
4. opens CONNECTIONS keep-alive connections with non-blocking sockets (at most --in-flight
   of them connecting or waiting for their response at a time), sends one GET for PATH on each
   and reads the full response (status 200, Content-Length bytes, no "Connection: close");
5. leaves them all open and idle for --settle seconds, reads the RSS again ("after") and
   checks that every connection is still open;
6. prints one line: IDLE connections=N open=N before=B after=A per_connection=P processes=K
   (bytes), and closes the connections with a reset (SO_LINGER 0: no TIME_WAIT left behind).

RSS is read from /proc/PID/smaps_rollup (Rss), or /proc/PID/status (VmRSS) on kernels without
it. It is user-space memory only: the kernel's socket buffers are not in it.
Exit status 0 on success, 1 when a request failed or a connection was closed (details on stderr).
"""

import argparse
import errno
import os
import resource
import selectors
import socket
import struct
import sys
import time

HOST = "127.0.0.1"  # never anything else


def log(msg):
    print(f"idle_memory: {msg}", file=sys.stderr, flush=True)


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        try:  # only root can raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return
        except (ValueError, OSError):
            sys.exit(f"idle_memory: descriptor limit {hard} < {need} needed; raise ulimit -n")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else hard, hard))


def server_pids(root):
    """root and all its descendants (by parent pid)."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # comm may contain spaces and parentheses: the fields start after the last ')'.
        fields = stat[stat.rfind(b")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(name))
    pids, todo = [], [root]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(children.get(p, []))
    return pids


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def total_rss(root):
    pids = server_pids(root)
    total = 0
    for p in pids:
        try:
            total += rss_bytes(p)
        except OSError:  # a process that went away in between
            pass
    return total, len(pids)


class Conn:
    __slots__ = ("sock", "state", "out", "buf", "need")

    def __init__(self, sock, request):
        self.sock = sock
        self.state = "connect"
        self.out = request
        self.buf = b""
        self.need = None  # total bytes of head + body, once the head is parsed


def parse_head(c, path):
    """Returns None while the head is incomplete, else an error string ('' when fine)."""
    end = c.buf.find(b"\r\n\r\n")
    if end < 0:
        return None if len(c.buf) < 65536 else "response head too long"
    lines = c.buf[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[1] != "200":
        return f"GET {path}: status line {lines[0]!r}"
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "connection" and "close" in value.lower():
            return f"GET {path}: the server answered Connection: close"
    if length is None:
        return f"GET {path}: no Content-Length"
    c.need = end + 4 + length
    return ""


def open_idle(port, path, count, in_flight, deadline):
    request = (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
               "User-Agent: aws-bench-idle\r\nAccept: */*\r\n\r\n").encode()
    sel = selectors.DefaultSelector()
    done, errors, started, busy = [], [], 0, 0

    def start_one():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        c = Conn(s, request)
        rc = s.connect_ex((HOST, port))
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            raise OSError(rc, f"connect: {os.strerror(rc)}")
        sel.register(s, selectors.EVENT_WRITE, c)

    def finish(c, err=None):
        nonlocal busy
        sel.unregister(c.sock)
        busy -= 1
        if err:
            errors.append(err)
            c.sock.close()
        else:
            done.append(c.sock)

    while len(done) + len(errors) < count:
        while busy < in_flight and started < count:
            start_one()
            started += 1
            busy += 1
        if time.monotonic() > deadline:
            errors.append(f"timed out with {busy} connections unanswered")
            break
        for key, _ in sel.select(timeout=1.0):
            c = key.data
            s = c.sock
            try:
                if c.state == "connect":
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        finish(c, f"connect: {os.strerror(err)}")
                        continue
                    c.state = "send"
                if c.state == "send":
                    c.out = c.out[s.send(c.out):]
                    if not c.out:
                        c.state = "read"
                        sel.modify(s, selectors.EVENT_READ, c)
                    continue
                data = s.recv(262144)
                if not data:
                    finish(c, f"GET {path}: connection closed after {len(c.buf)} bytes of response")
                    continue
                c.buf += data
                if c.need is None:
                    problem = parse_head(c, path)
                    if problem is None:
                        continue
                    if problem:
                        finish(c, problem)
                        continue
                if len(c.buf) > c.need:
                    finish(c, f"GET {path}: {len(c.buf) - c.need} bytes past the response")
                elif len(c.buf) == c.need:
                    c.buf = b""
                    finish(c)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                finish(c, f"GET {path}: {e}")
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    sel.close()
    return done, errors


def still_open(socks):
    alive = 0
    for s in socks:
        try:
            if s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                continue  # closed by the server
            alive += 1  # unexpected bytes, but open
        except (BlockingIOError, InterruptedError):
            alive += 1
        except OSError:
            pass
    return alive


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="the server's main process")
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--path", default="/static/1k.bin")
    ap.add_argument("--in-flight", type=int, default=128,
                    help="connections connecting or awaiting their response at a time")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds the connections stay idle before the second reading")
    ap.add_argument("--timeout", type=float, default=120.0, help="for opening all connections")
    a = ap.parse_args()
    if a.connections < 1:
        sys.exit("idle_memory: --connections must be positive")
    raise_nofile(a.connections + 256)
    if not os.path.exists(f"/proc/{a.pid}"):
        sys.exit(f"idle_memory: no process {a.pid}")

    # Warm-up: one request on a throw-away connection (caches, lazily set-up state).
    warm, errors = open_idle(a.port, a.path, 1, 1, time.monotonic() + 10)
    for s in warm:
        s.close()
    if errors:
        sys.exit(f"idle_memory: warm-up failed: {errors[0]}")
    time.sleep(0.5)

    before, _ = total_rss(a.pid)
    t0 = time.monotonic()
    socks, errors = open_idle(a.port, a.path, a.connections, a.in_flight, t0 + a.timeout)
    opened = time.monotonic() - t0
    time.sleep(a.settle)
    after, nproc = total_rss(a.pid)
    alive = still_open(socks)
    log(f"{len(socks)} connections answered in {opened:.1f}s, {alive} still open after "
        f"{a.settle:g}s idle; RSS {before // 1024} KiB -> {after // 1024} KiB ({nproc} processes)")

    per = (after - before) / a.connections
    print(f"IDLE connections={a.connections} open={alive} before={before} after={after} "
          f"per_connection={per:.0f} processes={nproc} seconds={opened:.1f}", flush=True)

    linger = struct.pack("ii", 1, 0)
    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        except OSError:
            pass
        s.close()
    if errors:
        counts = {}
        for e in errors:
            counts[e] = counts.get(e, 0) + 1
        for e, n in sorted(counts.items(), key=lambda kv: -kv[1])[:5]:
            log(f"{n} x {e}")
        return 1
    if alive < a.connections:
        log(f"{a.connections - alive} connections were closed by the server while idle")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
