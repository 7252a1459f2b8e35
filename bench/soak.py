#!/usr/bin/env python3
"""Memory and descriptors of aws after aborted big transfers and a keep-alive soak.

    python3 bench/soak.py --bin .build/release/aws [--aborts 7000] [--soak-seconds 300]
                          [--workers auto,1] [--concurrency 64] [--file-mib 100] [--idle-seconds 5]

For each worker setting in --workers (comma-separated, `auto` = the server's default: no
--workers flag) the script:

1. writes a temporary document root ON DISK (tmpfs has no O_DIRECT, and /dynamic/ must go
   through the real libaio path): static/big.bin and dynamic/big.bin (--file-mib MiB each) and
   small/medium files for the soak; under --dir (default /var/tmp), removed at the end;
2. starts aws on a free loopback port (127.0.0.1 only, --log-level warning: no access lines);
3. reads VmRSS, VmHWM (from /proc/PID/status) and the open descriptors (/proc/PID/fd):
   at start (after one request), after the aborts, after the soak, after --idle-seconds idle;
4. aborts: --aborts requests for big files from --concurrency threads, half /static/
   (sendfile) and half /dynamic/ (libaio), some with a Range from an unaligned offset; each
   client reads a random amount (nothing, a few KiB, up to 1 MiB, up to 8 MiB), sometimes with a
   small receive buffer, sometimes pausing so the server's send blocks, then closes — half of
   the time with a reset (SO_LINGER 0);
5. soak: mixed keep-alive GETs (1 KiB, 64 KiB, 1 MiB static; 4 KiB, 256 KiB, 1 MiB dynamic;
   a 404) for --soak-seconds with wrk (-t2 -c64, a Lua script rotating the paths), or with
   Python keep-alive clients when wrk is not installed (`apt-get install wrk`);
6. prints a table per setting and a summary at the end.

--smaps adds, per phase, the server's anonymous memory by kind from /proc/PID/smaps (the
[heap], mappings of 64 MiB-aligned malloc arenas, other anonymous mappings). Python 3 stdlib
only; any user can run it. Exit status 1 when the server died or a phase could not run.
"""

import argparse
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"  # never anything else
KIB = 1024
MIB = 1024 * KIB


def log(msg):
    print(f"soak: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------
# The server
# ----------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def write_file(path, size, seed):
    """Deterministic bytes, written in 1 MiB pieces (a 100 MiB file never sits in memory)."""
    rng = random.Random(seed)
    block = rng.randbytes(MIB)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, MIB)
            f.write(block[:n])
            left -= n


def make_root(base, file_mib):
    root = os.path.join(base, "root")
    for d in ("static", "dynamic"):
        os.makedirs(os.path.join(root, d))
        write_file(os.path.join(root, d, "big.bin"), file_mib * MIB, f"{d}/big")
    for name, size in (("1k.bin", KIB), ("64k.bin", 64 * KIB), ("1m.bin", MIB)):
        write_file(os.path.join(root, "static", name), size, f"static/{name}")
    for name, size in (("4k.bin", 4 * KIB), ("256k.bin", 256 * KIB), ("1m.bin", MIB)):
        write_file(os.path.join(root, "dynamic", name), size, f"dynamic/{name}")
    os.chmod(base, 0o755)
    return root


def o_direct_works(path):
    flag = getattr(os, "O_DIRECT", 0o40000)
    try:
        fd = os.open(path, os.O_RDONLY | flag)
    except OSError:
        return False
    os.close(fd)
    return True


class Aws:
    def __init__(self, binary, root, workers, log_path):
        self.port = free_port()
        cmd = [binary, "--root", root, "--port", str(self.port), "--address", HOST, "--log-level", "warning"]
        if workers != "auto":
            cmd += ["--workers", workers]
        self.cmd = cmd
        self.log = open(log_path, "wb")
        self.log_path = log_path
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"aws exited with {self.proc.returncode}: {self.tail()}")
            try:
                socket.create_connection((HOST, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("aws did not accept connections within 15 s")

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def tail(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read()[-2000:].decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


# ----------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------

def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def smaps_summary(pid):
    """Rss (KiB) of anonymous memory by kind. glibc's per-thread arenas are heaps of 64 MiB
    (HEAP_MAX_SIZE on 64-bit) aligned to 64 MiB: an anonymous mapping starting on such a boundary
    is counted as one (with its PROT_NONE tail, which has no Rss)."""
    kinds = {"heap": 0, "arenas": 0, "anon": 0, "stacks": 0}
    arenas = 0
    current = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                parts = line.split()
                start, end = (int(x, 16) for x in parts[0].split("-"))
                name = parts[5] if len(parts) > 5 else ""
                if name == "[heap]":
                    current = "heap"
                elif name.startswith("[stack"):
                    current = "stacks"
                elif name == "":
                    if start % (64 * MIB) == 0 and end - start <= 64 * MIB:
                        current = "arenas"
                        arenas += 1
                    else:
                        current = "anon"
                else:
                    current = None
            elif first == "Rss:" and current:
                kinds[current] += int(line.split()[1])
    return kinds, arenas


class Figures:
    def __init__(self, pid, smaps):
        self.pid = pid
        self.smaps = smaps
        self.rows = []

    def take(self, phase):
        pid = self.pid
        row = {"phase": phase, "rss": status_kib(pid, "VmRSS"), "hwm": status_kib(pid, "VmHWM"),
               "fds": fd_count(pid), "threads": status_kib(pid, "Threads")}
        if self.smaps:
            row["smaps"] = smaps_summary(pid)
        self.rows.append(row)
        extra = ""
        if self.smaps:
            kinds, arenas = row["smaps"]
            extra = "  " + " ".join(f"{k}={v / 1024:.1f}M" for k, v in kinds.items()) + f" ({arenas} arena heaps)"
        log(f"{phase}: VmRSS {row['rss'] / 1024:.1f} MiB, VmHWM {row['hwm'] / 1024:.1f} MiB, {row['fds']} fds{extra}")
        return row


# ----------------------------------------------------------------------------------------
# Aborted transfers
# ----------------------------------------------------------------------------------------

def abort_one(rng, port, file_size, counters):
    kind = "static" if rng.random() < 0.5 else "dynamic"
    headers = f"GET /{kind}/big.bin HTTP/1.1\r\nHost: {HOST}\r\n"
    if rng.random() < 0.2:  # a range from an unaligned offset: AIO reads from an aligned one
        headers += f"Range: bytes={rng.randrange(1, file_size // 2)}-\r\n"
    request = (headers + "\r\n").encode()
    roll = rng.random()
    if roll < 0.15:
        want = 0                                   # gone right after asking
    elif roll < 0.45:
        want = rng.randrange(1, 64 * KIB)          # the head and a little
    elif roll < 0.85:
        want = rng.randrange(64 * KIB, MIB)
    else:
        want = rng.randrange(MIB, 8 * MIB)
    s = socket.socket()
    try:
        if rng.random() < 0.3:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KIB)
        s.settimeout(10)
        s.connect((HOST, port))
        s.sendall(request)
        got = 0
        while got < want:
            b = s.recv(min(256 * KIB, want - got))
            if not b:
                counters["eof"] += 1
                break
            got += len(b)
        if rng.random() < 0.3:                     # let the server's send block on a full socket
            time.sleep(rng.random() * 0.02)
        if rng.random() < 0.5:                     # reset instead of FIN
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            counters["rst"] += 1
        counters[kind] += 1
        counters["bytes"] += got
    except OSError:
        counters["errors"] += 1
    finally:
        s.close()


def run_aborts(port, total, concurrency, file_size, seed):
    counters = {"static": 0, "dynamic": 0, "rst": 0, "eof": 0, "errors": 0, "bytes": 0}
    lock = threading.Lock()
    next_index = [0]

    def worker(n):
        rng = random.Random(f"{seed}:{n}")
        local = dict.fromkeys(counters, 0)
        while True:
            with lock:
                if next_index[0] >= total:
                    break
                next_index[0] += 1
            abort_one(rng, port, file_size, local)
        with lock:
            for k, v in local.items():
                counters[k] += v

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    log(f"aborts: {total} in {elapsed:.1f} s ({counters['static']} static, {counters['dynamic']} dynamic, "
        f"{counters['rst']} reset, {counters['errors']} errors, {counters['eof']} early EOF, "
        f"{counters['bytes'] / MIB:.0f} MiB read)")
    return counters


# ----------------------------------------------------------------------------------------
# Soak
# ----------------------------------------------------------------------------------------

SOAK_PATHS = ["/static/1k.bin", "/static/64k.bin", "/dynamic/4k.bin", "/static/1k.bin", "/static/1m.bin",
              "/dynamic/256k.bin", "/static/1k.bin", "/dynamic/1m.bin", "/missing.bin", "/dynamic/4k.bin"]

WRK_SCRIPT = """
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
""" % ", ".join(f'"{p}"' for p in SOAK_PATHS)


def soak_wrk(wrk, port, seconds, base):
    script = os.path.join(base, "mix.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT)
    cmd = [wrk, "-t2", "-c64", f"-d{max(1, round(seconds))}s", "-s", script, f"http://{HOST}:{port}/"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    out = run.stdout
    if run.returncode != 0:
        raise RuntimeError(f"wrk failed ({run.returncode}): {run.stderr.strip() or out.strip()}")
    summary = [l.strip() for l in out.splitlines()
               if l.strip().startswith(("Requests/sec", "Transfer/sec", "Socket errors", "Non-2xx"))
               or "requests in" in l]
    log("soak (wrk -t2 -c64): " + "; ".join(summary))


def soak_python(port, seconds, clients=32):
    """Keep-alive clients rotating the same paths, reading each response whole."""
    import http.client
    deadline = time.monotonic() + seconds
    done = [0, 0]
    lock = threading.Lock()

    def client(n):
        i, ok, bad = n, 0, 0
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        while time.monotonic() < deadline:
            try:
                conn.request("GET", SOAK_PATHS[i % len(SOAK_PATHS)])
                r = conn.getresponse()
                r.read()
                ok += 1
            except (OSError, http.client.HTTPException):
                bad += 1
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=10)
            i += 1
        conn.close()
        with lock:
            done[0] += ok
            done[1] += bad

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log(f"soak (python, {clients} keep-alive clients): {done[0]} responses, {done[1]} errors, "
        f"{done[0] / seconds:.0f} req/s")


# ----------------------------------------------------------------------------------------

def run_setting(args, workers, root, base):
    log(f"--- workers {workers} ---")
    srv = Aws(args.bin, root, workers, os.path.join(base, f"aws-{workers}.log"))
    figures = Figures(srv.pid, args.smaps)
    ok = True
    try:
        socket.create_connection((HOST, srv.port)).close()
        with socket.create_connection((HOST, srv.port), timeout=5) as s:
            s.sendall(b"GET /static/1k.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while s.recv(65536):
                pass
        time.sleep(0.5)
        figures.take("start")
        run_aborts(srv.port, args.aborts, args.concurrency, args.file_mib * MIB, args.seed)
        time.sleep(0.5)  # the server sees the last resets
        figures.take("after aborts")
        if args.soak_seconds > 0:
            wrk = None if args.no_wrk else shutil.which("wrk")
            if wrk:
                soak_wrk(wrk, srv.port, args.soak_seconds, base)
            else:
                log("wrk not found (apt-get install wrk): Python clients instead")
                soak_python(srv.port, args.soak_seconds)
            time.sleep(0.5)
            figures.take("after soak")
        time.sleep(args.idle_seconds)
        figures.take(f"after {args.idle_seconds:g} s idle")
    except Exception as e:  # noqa: BLE001 — reported with the server's log, then the next setting
        log(f"failed: {e!r}")
        ok = False
    finally:  # also on Ctrl-C: the server runs in a session of its own and would outlive us
        died = not srv.alive()
        rc = srv.stop()
    if died:
        log(f"the server died (exit {rc}); its log:\n{srv.tail()}")
        ok = False
    elif rc not in (0, -signal.SIGTERM):
        log(f"the server exited with {rc} on SIGTERM; its log:\n{srv.tail()}")
        ok = False
    return figures.rows, ok


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", required=True, help="the aws binary (by path: a bare `aws` may be the AWS CLI)")
    p.add_argument("--aborts", type=int, default=7000)
    p.add_argument("--soak-seconds", type=float, default=300)
    p.add_argument("--idle-seconds", type=float, default=5)
    p.add_argument("--workers", default="auto,1", help="comma-separated settings: auto (the default) or N")
    p.add_argument("--concurrency", type=int, default=64, help="aborting clients at once")
    p.add_argument("--file-mib", type=int, default=100, help="size of the big files")
    p.add_argument("--dir", default=os.environ.get("SOAK_DIR", "/var/tmp"), help="where the document root goes (not tmpfs)")
    p.add_argument("--seed", default="1")
    p.add_argument("--smaps", action="store_true", help="anonymous memory by kind at each phase")
    p.add_argument("--no-wrk", action="store_true", help="soak with Python clients even if wrk is installed")
    args = p.parse_args()
    binary = os.path.abspath(args.bin)
    if not os.access(binary, os.X_OK):
        sys.exit(f"soak: {binary} is not an executable (build it: swift build -c release --product aws)")
    args.bin = binary

    base = tempfile.mkdtemp(prefix="aws-soak-", dir=args.dir)
    results = []
    ok = True
    try:
        log(f"writing the document root under {base} ({2 * args.file_mib} MiB of big files)")
        root = make_root(base, args.file_mib)
        if not o_direct_works(os.path.join(root, "dynamic", "big.bin")):
            log(f"WARNING: {args.dir} refuses O_DIRECT (tmpfs?): /dynamic/ falls back to buffered reads; use --dir")
        for workers in [w.strip() for w in args.workers.split(",") if w.strip()]:
            rows, good = run_setting(args, workers, root, base)
            results.append((workers, rows))
            ok = ok and good
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print(f"\naws soak: {args.aborts} aborted transfers of {args.file_mib} MiB files "
          f"({args.concurrency} clients at once), {args.soak_seconds:g} s keep-alive soak, {args.idle_seconds:g} s idle")
    print(f"binary: {args.bin}")
    print(f"{'workers':<8} {'phase':<16} {'VmRSS MiB':>10} {'VmHWM MiB':>10} {'fds':>5}")
    for workers, rows in results:
        for r in rows:
            print(f"{workers:<8} {r['phase']:<16} {r['rss'] / 1024:>10.1f} {r['hwm'] / 1024:>10.1f} {r['fds']:>5}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
