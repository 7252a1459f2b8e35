#!/usr/bin/env python3
"""Slowloris against aws: many connections that send a request head one line at a time and
never finish it, while a normal client keeps fetching a small file.

    python3 bench/slowloris.py --bin .build/release/aws [--connections 1000]
                               [--header-timeout 10] [--line-every 1] [--workers N]

The script starts aws on a free loopback port with a temporary document root and
--header-timeout, opens --connections slow connections (each sends a request line, then one
header line every --line-every seconds, never the blank line that ends the head), and meanwhile
fetches /static/x on fresh connections in a loop. It reports:
- how many slow connections the server answered 408 and closed, and when (seconds after their
  first byte; the header timeout counts from there);
- the normal client's requests during the attack: count, failures, median / p99 / max latency;
- the server's open descriptors before, during (all slow connections open) and after, and its
  sockets before and after.
Exit status 1 when a slow connection outlived the timeout by more than 2 s, a normal request
failed, or a socket was left over. Python 3 stdlib only.
"""

import argparse
import os
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def fd_targets(pid):
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return out


def fds(pid):
    return len(fd_targets(pid))


def wait_ready(port, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"slowloris: aws exited with status {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit("slowloris: aws did not start listening")


def fetch(port):
    """One GET on a fresh connection; the latency in seconds, or None when it failed."""
    t0 = time.monotonic()
    try:
        with socket.create_connection((HOST, port), timeout=5) as s:
            s.sendall(b"GET /static/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        if not data.startswith(b"HTTP/1.1 200 ") or not data.endswith(b"x" * 1024):
            return None
        return time.monotonic() - t0
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=".build/release/aws")
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--header-timeout", type=float, default=10.0)
    ap.add_argument("--line-every", type=float, default=1.0)
    ap.add_argument("--workers", default=None)
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    root = tempfile.mkdtemp(prefix="aws-slowloris-")
    os.makedirs(os.path.join(root, "static"))
    with open(os.path.join(root, "static", "x"), "wb") as f:
        f.write(b"x" * 1024)
    port = free_port()
    cmd = [os.path.abspath(args.bin), "--root", root, "--port", str(port), "--address", HOST,
           "--header-timeout", str(args.header_timeout), "--log-level", "warning"]
    if args.workers:
        cmd += ["--workers", args.workers]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    failed = False
    try:
        wait_ready(port, proc)
        fetch(port)  # the open-file cache holds the file from here on
        time.sleep(0.3)
        targets_before = fd_targets(proc.pid)
        fds_before = len(targets_before)

        # The normal client, on its own thread for the whole attack.
        latencies, failures, stop = [], [0], threading.Event()

        def normal_client():
            while not stop.is_set():
                t = fetch(port)
                if t is None:
                    failures[0] += 1
                else:
                    latencies.append(t)
                time.sleep(0.01)

        client = threading.Thread(target=normal_client)
        client.start()

        sel = selectors.DefaultSelector()
        started, answered, cut_at = {}, {}, {}
        t_open = time.monotonic()
        for i in range(args.connections):
            s = socket.create_connection((HOST, port), timeout=5)
            s.setblocking(False)
            s.sendall(b"GET /static/x HTTP/1.1\r\nHost: x\r\n")
            started[s] = time.monotonic()
            answered[s] = b""
            sel.register(s, selectors.EVENT_READ)
        opened = time.monotonic() - t_open
        time.sleep(0.2)
        fds_during = fds(proc.pid)

        line, next_line = 0, time.monotonic() + args.line_every
        deadline = time.monotonic() + args.header_timeout + 5
        while started.keys() - cut_at.keys() and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.1):
                s = key.fileobj
                try:
                    chunk = s.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    answered[s] += chunk
                    continue
                cut_at[s] = time.monotonic() - started[s]
                sel.unregister(s)
            if time.monotonic() >= next_line:
                for s in started.keys() - cut_at.keys():
                    try:
                        s.send(f"X-Slow-{line}: {line}\r\n".encode())
                    except OSError:
                        pass
                line += 1
                next_line += args.line_every
        stop.set()
        client.join()
        for s in started:
            s.close()
        time.sleep(0.5)
        targets_after = fd_targets(proc.pid)
        fds_after = len(targets_after)

        cuts = sorted(cut_at.values())
        got_408 = sum(1 for s in cut_at if answered[s].startswith(b"HTTP/1.1 408 "))
        still_open = len(started) - len(cut_at)
        late = sum(1 for t in cuts if t > args.header_timeout + 2)
        lat = sorted(latencies)
        print(f"aws {' '.join(cmd[1:])}")
        print(f"slow connections:        {len(started)} opened in {opened:.1f} s, one header line every {args.line_every:g} s")
        print(f"answered 408 and closed: {got_408}; closed without 408: {len(cut_at) - got_408}; still open: {still_open}")
        if cuts:
            print(f"closed after (s):        first {cuts[0]:.1f}, median {statistics.median(cuts):.1f}, last {cuts[-1]:.1f} "
                  f"(--header-timeout {args.header_timeout:g})")
        if lat:
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            print(f"normal client meanwhile: {len(lat)} requests, {failures[0]} failed, latency median "
                  f"{statistics.median(lat) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")
        print(f"server descriptors:      {fds_before} before, {fds_during} during, {fds_after} after")
        sockets_before = sum(1 for t in targets_before.values() if t.startswith("socket:"))
        sockets_after = sum(1 for t in targets_after.values() if t.startswith("socket:"))
        print(f"server sockets:          {sockets_before} before, {sockets_after} after "
              f"(other descriptors after: each worker's open-file cache may hold the file)")
        failed = still_open > 0 or late > 0 or failures[0] > 0 or not lat or sockets_after > sockets_before
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
