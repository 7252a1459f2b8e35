#!/usr/bin/env bash
# bench/run.sh — compare aws with nginx (and optionally lighttpd, h2o) on this machine.
#
#   bash bench/run.sh                 # or: make bench
#   BENCH_SECONDS=3 bash bench/run.sh
#   BENCH_PEERS="nginx lighttpd h2o" bash bench/run.sh
#
#   BENCH_WORKERS="1 2" bash bench/run.sh   # worker counts (the default)
#
# Every server is started from a config generated in a temporary folder and listens on
# 127.0.0.1 only. Rows are measured at each worker count of BENCH_WORKERS, with the same
# count for every server. With 1 worker the server is pinned to one CPU (BENCH_SERVER_CPU,
# default 1) and the load generator to another (BENCH_CLIENT_CPU, default 0); with N > 1
# workers both are pinned to N CPUs of their own when the machine has 2N, else nothing is
# pinned. Memory per idle connection is measured with bench/idle_memory.py. All servers are
# stopped on exit, including on Ctrl-C. See bench/README.md for what is measured and the knobs.
set -euo pipefail

# ---------------------------------------------------------------- settings
SECONDS_PER_RUN=${BENCH_SECONDS:-5}
PEERS=${BENCH_PEERS:-nginx}
WARMUP_SECONDS=${BENCH_WARMUP_SECONDS:-1}
CONNECTIONS=${BENCH_CONNECTIONS:-50}
CURL_RUNS=${BENCH_CURL_RUNS:-3}
BIG_WRK=${BENCH_BIG_WRK:-1}
SKIP_AWS=${BENCH_SKIP_AWS:-0}
SERVER_CPU=${BENCH_SERVER_CPU:-1}
CLIENT_CPU=${BENCH_CLIENT_CPU:-0}
KEEP=${BENCH_KEEP:-0}
AWS_EXTRA_ARGS=${AWS_ARGS:-}
WORKER_COUNTS=${BENCH_WORKERS:-1 2}
WORKERS_PATHS=${BENCH_WORKERS_PATHS:-static}
ROUNDS=${BENCH_ROUNDS:-1}
IDLE_CONNS=${BENCH_IDLE_CONNECTIONS:-10000}
IDLE_SETTLE=${BENCH_IDLE_SETTLE:-2}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
RESULTS_DIR="$HERE/results"
ADDR=127.0.0.1   # never anything else

log()  { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
warn() { printf '\033[33mwarning:\033[0m %s\n' "$*" >&2; }
die()  { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

[[ $SECONDS_PER_RUN =~ ^[0-9]+$ && $SECONDS_PER_RUN -ge 1 ]] || die "BENCH_SECONDS must be a positive integer"
[[ ${BASH_VERSINFO[0]} -ge 4 ]] || die "bash 4 or newer is needed"
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -ge 1 ]] || die "BENCH_ROUNDS must be a positive integer"
[[ $IDLE_CONNS =~ ^[0-9]+$ && $IDLE_CONNS -le 25000 ]] || die "BENCH_IDLE_CONNECTIONS must be 0 to 25000 (0: no idle-memory row)"
[[ $IDLE_SETTLE =~ ^[0-9]+([.][0-9]+)?$ ]] || die "BENCH_IDLE_SETTLE must be a number of seconds"
# Worker counts, ascending, without repeats; "none" measures only the idle-memory row.
declare -a COUNTS=()
if [[ $WORKER_COUNTS != none ]]; then
  for n in $WORKER_COUNTS; do
    [[ $n =~ ^[0-9]+$ && $n -ge 1 ]] || die "BENCH_WORKERS: '$n' is not a positive integer (or set BENCH_WORKERS=none)"
  done
  mapfile -t COUNTS < <(printf '%s\n' $WORKER_COUNTS | sort -n -u)
fi
(( ${#COUNTS[@]} > 0 || IDLE_CONNS > 0 )) || die "nothing to measure: BENCH_WORKERS=none and BENCH_IDLE_CONNECTIONS=0"
for k in $WORKERS_PATHS; do
  [[ $k = static || $k = dynamic ]] || die "BENCH_WORKERS_PATHS: '$k' is not static or dynamic"
done

# nginx is always the reference; other peers only when asked for.
declare -a SERVERS=()
[[ $SKIP_AWS = 1 ]] || SERVERS+=(aws)
SERVERS+=(nginx)
for p in $PEERS; do
  case $p in
    nginx) ;;
    lighttpd|h2o) [[ " ${SERVERS[*]} " == *" $p "* ]] || SERVERS+=("$p") ;;
    *) die "unknown peer '$p' in BENCH_PEERS (known: nginx lighttpd h2o)" ;;
  esac
done

# ---------------------------------------------------------------- tools
SUDO=""
[[ $(id -u) = 0 ]] || SUDO=sudo
APT_UPDATED=0
apt_install() {   # apt_install PKG... — only called for what is missing
  command -v apt-get >/dev/null || die "missing $* and no apt-get here: install it by hand"
  log "installing with apt: $*"
  if [[ $APT_UPDATED = 0 ]]; then $SUDO apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}
need() {          # need COMMAND PACKAGE [FALLBACK-PACKAGE]
  local cmd=$1 pkg=$2 alt=${3:-}
  command -v "$cmd" >/dev/null 2>&1 && return 0
  [[ -x /usr/sbin/$cmd ]] && return 0
  if ! apt_install "$pkg" && [[ -n $alt ]]; then apt_install "$alt"; fi
  command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]] || die "could not install $cmd"
}
export PATH="$PATH:/usr/sbin:/sbin"
need wrk wrk
need curl curl
need taskset util-linux
need nginx nginx-light nginx
if [[ " ${SERVERS[*]} " == *" lighttpd "* ]]; then need lighttpd lighttpd; fi
if [[ " ${SERVERS[*]} " == *" h2o "* ]]; then need h2o h2o; fi
if (( IDLE_CONNS > 0 )); then need python3 python3; need prlimit util-linux; fi
if ! command -v openssl >/dev/null; then warn "openssl not found: files will be random, not deterministic"; fi

# CPU pinning, per worker count N (set_pinning N sets SRV_PIN, CLI_PIN, WRK_THREADS, PIN_NOTE):
# - N = 1: the server on SERVER_CPU, wrk/curl on CLIENT_CPU, wrk -t1, when the machine has both;
# - N > 1: with at least 2N CPUs, the server on CPUs N..2N-1 and wrk -tN on CPUs 0..N-1;
#   with fewer, nothing is pinned (server and wrk share every CPU) and wrk runs -tN, or one
#   thread per CPU if that is fewer.
# Every server gets the same treatment at a given N.
NCPU=$(nproc)
if (( NCPU < 2 )); then warn "$NCPU CPU: nothing is pinned"; fi
set_pinning() {
  local n=$1
  if (( n == 1 )); then
    WRK_THREADS=1
    if (( NCPU >= 2 && SERVER_CPU < NCPU && CLIENT_CPU < NCPU && SERVER_CPU != CLIENT_CPU )); then
      SRV_PIN=(taskset -c "$SERVER_CPU"); CLI_PIN=(taskset -c "$CLIENT_CPU")
      PIN_NOTE="server on CPU $SERVER_CPU, client on CPU $CLIENT_CPU"
    else
      SRV_PIN=(); CLI_PIN=(); PIN_NOTE="not pinned ($NCPU CPUs; BENCH_SERVER_CPU/BENCH_CLIENT_CPU unusable)"
    fi
  elif (( NCPU >= 2 * n )); then
    WRK_THREADS=$n
    SRV_PIN=(taskset -c "$n-$(( 2 * n - 1 ))"); CLI_PIN=(taskset -c "0-$(( n - 1 ))")
    PIN_NOTE="server on CPUs $n-$(( 2 * n - 1 )), client on CPUs 0-$(( n - 1 ))"
  else
    WRK_THREADS=$(( n < NCPU ? n : NCPU ))
    SRV_PIN=(); CLI_PIN=(); PIN_NOTE="not pinned ($NCPU CPUs, fewer than 2 x $n): server and client share them"
  fi
}
SRV_PIN=(); CLI_PIN=(); WRK_THREADS=1; PIN_NOTE=""

# ---------------------------------------------------------------- aws binary
if [[ $SKIP_AWS != 1 ]]; then
  if [[ -z ${AWS_BIN:-} ]]; then
    command -v swift >/dev/null || die "swift not found: set AWS_BIN=/path/to/aws or BENCH_SKIP_AWS=1"
    log "building aws (release)"
    (cd "$REPO" && swift build -c release --product aws) >&2
    AWS_BIN="$REPO/.build/release/aws"
  fi
  # Always by path: a bare 'aws' would be the Amazon CLI.
  [[ $AWS_BIN == */* ]] || AWS_BIN="./$AWS_BIN"
  [[ -f $AWS_BIN && -x $AWS_BIN ]] || die "aws binary not found or not executable: $AWS_BIN"
  AWS_BIN=$(cd "$(dirname "$AWS_BIN")" && pwd)/$(basename "$AWS_BIN")
fi
# --workers is passed only to a binary whose --help mentions it; an older binary runs one
# thread whatever the worker count, and its figures at N > 1 are marked '*'.
AWS_HAS_WORKERS=0
if [[ $SKIP_AWS != 1 ]]; then
  aws_help=$("$AWS_BIN" --help 2>&1 || true)
  if [[ $aws_help == *--workers* ]]; then AWS_HAS_WORKERS=1
  elif (( ${#COUNTS[@]} > 1 || ${COUNTS[0]:-1} > 1 )); then
    warn "$AWS_BIN --help does not mention --workers: aws runs a single thread at every worker count (marked '*')"
  fi
fi

# ---------------------------------------------------------------- temp folder + cleanup
BASE=${BENCH_DIR:-${TMPDIR:-/tmp}}
mkdir -p "$BASE"
T=$(mktemp -d "$BASE/aws-bench.XXXXXX")
chmod 755 "$T"   # servers that drop privileges must still read the doc root
DOC="$T/root"
declare -A PID=() PORT=()

stop_server() {
  local name=$1 pid=${PID[$1]:-}
  [[ -n $pid ]] || return 0
  unset "PID[$name]"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  local s
  trap - EXIT INT TERM
  for s in "${!PID[@]}"; do stop_server "$s"; done
  if [[ $KEEP = 1 ]]; then log "kept $T"; else rm -rf "$T"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'warn "failed at line $LINENO: $BASH_COMMAND"' ERR
trap 'echo >&2; warn "interrupted"; exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- document root
need_mib=$(( 2 * 101 + 8 ))
avail_kib=$(df -Pk "$T" | awk 'NR==2 {print $4}')
(( avail_kib / 1024 > need_mib )) || die "need ~${need_mib} MiB free in $BASE (have $((avail_kib / 1024)) MiB); set BENCH_DIR"

gen() {   # gen FILE BYTES SEED — deterministic pseudo-random bytes
  local f=$1 n=$2 seed=$3
  if command -v openssl >/dev/null; then
    { openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:$seed" -in /dev/zero 2>/dev/null || true; } | head -c "$n" >"$f"
  else
    head -c "$n" /dev/urandom >"$f"
  fi
  [[ $(stat -c %s "$f") = "$n" ]] || die "could not write $f"
}
declare -A SIZE=([1k]=1024 [1m]=1048576 [100m]=104857600)
log "generating document root in $DOC"
for kind in static dynamic; do
  mkdir -p "$DOC/$kind"
  for s in 1k 1m 100m; do gen "$DOC/$kind/$s.bin" "${SIZE[$s]}" "aws-bench-$kind-$s"; done
done
# nginx's stand-in for the 1 GiB plugin stream: a sparse 1 GiB file (no disk, all page cache).
mkdir -p "$DOC/gen"
truncate -s 1073741824 "$DOC/gen/1g.bin"
printf '<!doctype html><title>aws bench</title>\n' >"$DOC/index.html"

# ---------------------------------------------------------------- ports
port_in_use() {
  if command -v ss >/dev/null; then
    [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]]
  else
    (exec 3<>"/dev/tcp/$ADDR/$1") 2>/dev/null
  fi
}
USED_PORTS=" "
FREE_PORT=""
free_port() {     # sets FREE_PORT to a port nothing listens on (20000-29999, below the ephemeral range)
  local p
  for _ in $(seq 200); do
    p=$(( 20000 + RANDOM % 10000 ))
    [[ $USED_PORTS == *" $p "* ]] && continue
    port_in_use "$p" && continue
    USED_PORTS+="$p "; FREE_PORT=$p; return 0
  done
  die "no free port found"
}

# ---------------------------------------------------------------- server configs
# The write_* functions read CFG_WORKERS (worker count) and CFG_IDLE (1: the idle-memory
# setup, with room for IDLE_MAXCONN connections and keep-alive timeouts of 60 s or more).
CFG_WORKERS=1
CFG_IDLE=0

# Descriptor limit for the idle-memory servers: 4 per idle connection and some, or as much as
# this process may set (raising the hard limit needs CAP_SYS_RESOURCE).
IDLE_LIMIT=(); NOFILE_IDLE=0; IDLE_MAXCONN=0
if (( IDLE_CONNS > 0 )); then
  want=$(( 4 * IDLE_CONNS + 4096 ))
  hard=$(ulimit -Hn)
  if prlimit --nofile="$want:$want" true 2>/dev/null; then NOFILE_IDLE=$want
  elif [[ $hard != unlimited ]]; then NOFILE_IDLE=$hard
  else NOFILE_IDLE=$want; fi
  IDLE_LIMIT=(prlimit --nofile="$NOFILE_IDLE:$NOFILE_IDLE")
  # Connection limit: twice the idle connections, leaving 2048 descriptors for files and listeners.
  IDLE_MAXCONN=$(( 2 * IDLE_CONNS < NOFILE_IDLE - 2048 ? 2 * IDLE_CONNS : NOFILE_IDLE - 2048 ))
  (( IDLE_MAXCONN >= IDLE_CONNS + 16 )) \
    || die "descriptor limit $NOFILE_IDLE is too low for $IDLE_CONNS idle connections (raise ulimit -Hn or lower BENCH_IDLE_CONNECTIONS)"
fi

write_nginx() {
  local d="$T/nginx" p=$1 master=off conns=4096
  if (( CFG_WORKERS > 1 )); then master=on; fi   # worker_processes needs the master process
  if (( CFG_IDLE )); then conns=$IDLE_MAXCONN; fi
  mkdir -p "$d"/{client_body,proxy,fastcgi,uwsgi,scgi}
  {
    if [[ $(id -u) = 0 ]]; then echo "user root;"; fi
    if (( CFG_IDLE )); then echo "worker_rlimit_nofile $NOFILE_IDLE;"; fi
    cat <<EOF2
worker_processes $CFG_WORKERS;
daemon off;
master_process $master;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections $conns; }
http {
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 100000;
    keepalive_timeout 65;
    open_file_cache max=1000 inactive=20s;
    open_file_cache_valid 30s;
    client_body_temp_path $d/client_body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    server {
        listen $ADDR:$p;
        server_name localhost;
        root $DOC;
        # The plugin workload's peer: a constant response from the server itself.
        location = /hello { default_type text/plain; return 200 "Hello, bench!\n"; }
    }
}
EOF2
  } >"$d/nginx.conf"
  nginx -t -q -p "$d/" -c "$d/nginx.conf" -e "$d/error.log" 2>"$d/test.log" \
    || { cat "$d/test.log" >&2; die "generated nginx config is invalid ($d/nginx.conf)"; }
  CMD=(nginx -p "$d/" -c "$d/nginx.conf" -e "$d/error.log")
}

write_lighttpd() {
  # server.max-worker = 0: one process. lighttpd turns 1 into 0 itself; with N > 1 a watcher
  # process forks N workers that share the listening socket.
  local d="$T/lighttpd" p=$1 workers=0 fds=4096 extra=""
  if (( CFG_WORKERS > 1 )); then workers=$CFG_WORKERS; fi
  if (( CFG_IDLE )); then
    # Both are 16-bit in lighttpd, and it caps connections at max-fds / 2.
    fds=$(( NOFILE_IDLE < 65535 ? NOFILE_IDLE : 65535 ))
    extra="server.max-connections = $(( IDLE_MAXCONN < fds / 2 ? IDLE_MAXCONN : fds / 2 ))"
  fi
  mkdir -p "$d"
  cat >"$d/lighttpd.conf" <<EOF2
server.document-root = "$DOC"
server.bind = "$ADDR"
server.port = $p
server.errorlog = "$d/error.log"
server.max-worker = $workers
server.max-keep-alive-requests = 100000
server.max-keep-alive-idle = 65
server.stat-cache-engine = "simple"
server.max-fds = $fds
$extra
index-file.names = ( "index.html" )
mimetype.assign = ( "" => "application/octet-stream" )
EOF2
  lighttpd -tt -f "$d/lighttpd.conf" >"$d/test.log" 2>&1 \
    || { cat "$d/test.log" >&2; die "generated lighttpd config is invalid"; }
  CMD=(lighttpd -D -f "$d/lighttpd.conf")
}

write_h2o() {
  local d="$T/h2o" p=$1
  mkdir -p "$d"
  {
    if [[ $(id -u) = 0 ]]; then echo "user: root"; fi
    # h2o closes an idle keep-alive connection after http1-request-timeout (10 s by default).
    if (( CFG_IDLE )); then printf 'max-connections: %d\nhttp1-request-timeout: 60\n' "$IDLE_MAXCONN"; fi
    cat <<EOF2
num-threads: $CFG_WORKERS
pid-file: $d/h2o.pid
error-log: $d/error.log
listen:
  host: $ADDR
  port: $p
hosts:
  "$ADDR:$p":
    paths:
      /:
        file.dir: $DOC
EOF2
  } >"$d/h2o.conf"
  h2o -t -c "$d/h2o.conf" >"$d/test.log" 2>&1 \
    || { cat "$d/test.log" >&2; die "generated h2o config is invalid"; }
  CMD=(h2o -c "$d/h2o.conf")
}

write_aws() {
  local d="$T/aws" p=$1
  mkdir -p "$d"
  # --log-level warning: no access-log lines (the equivalent of nginx's access_log off).
  CMD=("$AWS_BIN" --root "$DOC" --port "$p" --address "$ADDR" --log-level warning)
  if (( AWS_HAS_WORKERS )); then CMD+=(--workers "$CFG_WORKERS"); fi
  if (( CFG_IDLE )); then
    CMD+=(--max-connections "$IDLE_MAXCONN" --keepalive-timeout 60)
  elif [[ -f $REPO/Plugins/hello.so && -f $REPO/Plugins/stream.so ]]; then
    # The example plugins (make plugins) give the plugin workloads.
    CMD+=(--plugins "$REPO/Plugins")
  fi
  # shellcheck disable=SC2206
  CMD+=($AWS_EXTRA_ARGS)
}

PHASE=""   # names the server logs of this start: w1, w2, ..., idle
start_server() {
  local name=$1 p
  local -a limit=()
  free_port; p=$FREE_PORT
  PORT[$name]=$p
  "write_$name" "$p"
  mkdir -p "$T/$name"
  if (( CFG_IDLE )); then limit=("${IDLE_LIMIT[@]}"); fi
  local out="$T/$name/stdout-$PHASE.log" err="$T/$name/stderr-$PHASE.log"
  log "starting $name ($PHASE) on $ADDR:$p: ${limit[*]:+${limit[*]} }${CMD[*]}"
  # setsid: own process group (killed as a whole on exit) and no terminal signals.
  # taskset and prlimit exec the server, so PID is the server's main process.
  if command -v setsid >/dev/null; then
    setsid "${SRV_PIN[@]}" "${limit[@]}" "${CMD[@]}" </dev/null >"$out" 2>"$err" &
  else
    "${SRV_PIN[@]}" "${limit[@]}" "${CMD[@]}" </dev/null >"$out" 2>"$err" &
  fi
  PID[$name]=$!
  for _ in $(seq 100); do
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then
      tail -n 20 "$err" "$out" "$T/$name/error.log" 2>/dev/null >&2 || true
      unset "PID[$name]"
      return 1
    fi
    curl -s -o /dev/null --max-time 1 "http://$ADDR:$p/" && return 0
    sleep 0.1
  done
  tail -n 20 "$err" "$T/$name/error.log" 2>/dev/null >&2 || true
  stop_server "$name"
  return 1
}

check_server() {   # status and length of every benchmark file, once
  local name=$1 p=${PORT[$1]} ok=0 out kind s
  for kind in static dynamic; do
    for s in 1k 1m 100m; do
      out=$(curl -s -o /dev/null --max-time 60 -w '%{http_code} %{size_download}' \
            "http://$ADDR:$p/$kind/$s.bin" || echo "000 0")
      if [[ $out != "200 ${SIZE[$s]}" ]]; then
        warn "$name: GET /$kind/$s.bin -> status/bytes '$out', expected '200 ${SIZE[$s]}'"
        ok=1
      fi
    done
  done
  return $ok
}

# ---------------------------------------------------------------- measurements
# A row is KEY = WORKLOAD@N (N workers). VALS[SERVER|KEY] collects one figure per round;
# RESULT[SERVER|KEY] is their median. A figure ends in "!" when wrk/curl reported errors.
declare -A VALS=() RESULT=()
declare -a NOTES=() DETAILS=()
ROUND=1

note() {   # note SERVER KEY TEXT
  local where="$1, ${2%@*}"
  if [[ $2 == *@* ]]; then where+=", ${2##*@} worker(s)"; fi
  if (( ROUNDS > 1 )); then where+=", round $ROUND"; fi
  NOTES+=("$where: $3")
}
record() { # record SERVER KEY VALUE
  VALS[$1|$2]="${VALS[$1|$2]:-} $3"
  local r=""; if (( ROUNDS > 1 )); then r="r$ROUND"; fi
  printf '   %-9s %-22s %-4s %s\n' "$1" "$2" "$r" "$3" >&2
}

# A wrk script whose done() prints exact totals (wrk's own summary rounds to 2 decimals).
write_wrk_lua() {
  cat >"$T/summary.lua" <<'EOF2'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d bytes=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
end
EOF2
}

run_wrk() {   # run_wrk SERVER KEY URL CONNS METRIC(rps|mib) [HEADER]
  local name=$1 key=$2 url=$3 conns=$4 metric=$5 hdr=${6:-} out line errs v
  local threads=$(( WRK_THREADS < conns ? WRK_THREADS : conns ))
  local -a extra=(--timeout 10s -s "$T/summary.lua")
  if [[ -n $hdr ]]; then extra+=(-H "$hdr"); fi
  # warm-up
  timeout --foreground $(( WARMUP_SECONDS + 30 )) \
    "${CLI_PIN[@]}" wrk -t"$threads" -c"$conns" -d"${WARMUP_SECONDS}s" "${extra[@]}" "$url" >/dev/null 2>&1 || true
  out=$(timeout --foreground $(( SECONDS_PER_RUN + 30 )) \
    "${CLI_PIN[@]}" wrk -t"$threads" -c"$conns" -d"${SECONDS_PER_RUN}s" "${extra[@]}" "$url" 2>&1) || true
  printf '%s\n' "--- $name $key round $ROUND: ${CLI_PIN[*]:+${CLI_PIN[*]} }wrk -t$threads -c$conns -d${SECONDS_PER_RUN}s ${hdr:+-H '$hdr' }$url" "$out" >>"$T/wrk.log"
  line=$(grep '^BENCH ' <<<"$out" || true)
  if [[ -z $line ]]; then
    note "$name" "$key" "wrk failed: $(tail -n 2 <<<"$out" | paste -sd' ' -)"
    v="-"
  else
    # "non-2xx" counts responses with status >= 400 (wrk's summary.errors.status).
    errs=$(awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                  s = ""
                  if (v["status"] > 0) s = s sprintf("%d non-2xx/3xx responses; ", v["status"])
                  if (v["connect"] + v["read"] + v["write"] + v["timeout"] > 0)
                    s = s sprintf("socket errors: connect %d, read %d, write %d, timeout %d", v["connect"], v["read"], v["write"], v["timeout"])
                  sub(/; $/, "", s); print s }' <<<"$line")
    v=$(awk -v m="$metric" '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        t = v["duration_us"] / 1e6; if (t <= 0) { print "-"; exit }
        if (m == "mib") printf "%.1f", v["bytes"] / t / 1048576; else printf "%d", v["requests"] / t + 0.5 }' <<<"$line")
    if [[ -n $errs ]]; then note "$name" "$key" "$errs"; v+="!"; fi
  fi
  record "$name" "$key" "$v"
}

run_curl() {  # run_curl SERVER KEY URL [BYTES] — best of CURL_RUNS single downloads, MiB/s
  local name=$1 key=$2 url=$3 want=${4:-${SIZE[100m]}} best=0 v code size speed bad=0
  "${CLI_PIN[@]}" curl -s -o /dev/null --max-time 120 "$url" || true   # warm-up
  for _ in $(seq "$CURL_RUNS"); do
    v=$("${CLI_PIN[@]}" curl -s -o /dev/null --max-time 120 -w '%{http_code} %{size_download} %{speed_download}' "$url" || true)
    read -r code size speed <<<"$v"
    if [[ $code != 200 || $size != "$want" ]]; then
      bad=$((bad + 1)); continue
    fi
    best=$(awk -v a="$best" -v b="$speed" 'BEGIN {print (b > a) ? b : a}')
  done
  if [[ $best = 0 ]]; then v="-"
  else v=$(awk -v b="$best" 'BEGIN {printf "%.1f", b / 1048576}'); fi
  if (( bad )); then
    note "$name" "$key" "$bad of $CURL_RUNS downloads failed (last: status ${code:-?}, ${size:-0} bytes)"
    [[ $v = - ]] || v+="!"
  fi
  record "$name" "$key" "$v"
}

run_idle() {  # run_idle SERVER — bytes of RSS per idle keep-alive connection (bench/idle_memory.py)
  local name=$1 key=idle@1 out line rc=0 v
  out=$("${CLI_PIN[@]}" python3 "$HERE/idle_memory.py" --port "${PORT[$name]}" --pid "${PID[$name]}" \
          --connections "$IDLE_CONNS" --path /static/1k.bin --settle "$IDLE_SETTLE" 2>"$T/$name/idle.log") || rc=$?
  sed 's/^/   /' "$T/$name/idle.log" >&2
  line=$(grep '^IDLE ' <<<"$out" || true)
  if [[ -z $line ]]; then
    note "$name" "$key" "idle-memory measurement failed: $(tail -n 1 "$T/$name/idle.log")"
    v="-"
  else
    v=$(awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } print v["per_connection"] }' <<<"$line")
    DETAILS+=("$(awk -v n="$name" '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      printf "%s: RSS %.1f MiB before, %.1f MiB with %d idle connections (%d still open after the idle wait; %d process(es))",
        n, v["before"] / 1048576, v["after"] / 1048576, v["connections"], v["open"], v["processes"] }' <<<"$line")")
    if (( rc != 0 )); then
      note "$name" "$key" "$(grep -v '^idle_memory: [0-9]* connections answered' "$T/$name/idle.log" | sed 's/^idle_memory: //' | paste -sd';' -)"
      v+="!"
    fi
  fi
  record "$name" "$key" "$v"
}

# ---------------------------------------------------------------- workloads and rows
declare -a WL_ID=() WL_LABEL=() WL_METRIC=() WL_MULTI=()
add_workload() { WL_ID+=("$1"); WL_LABEL+=("$2"); WL_METRIC+=("$3"); WL_MULTI+=("$4"); }
for kind in static dynamic; do
  multi=0; if [[ " $WORKERS_PATHS " == *" $kind "* ]]; then multi=1; fi
  add_workload "$kind-1k-ka"    "/$kind/ 1 KiB, keep-alive (req/s)"        rps "$multi"
  add_workload "$kind-1k-close" "/$kind/ 1 KiB, Connection: close (req/s)" rps "$multi"
  add_workload "$kind-1m-ka"    "/$kind/ 1 MiB, keep-alive (req/s)"        rps "$multi"
  add_workload "$kind-100m-curl" "/$kind/ 100 MiB, 1 curl stream (MiB/s)"  mib 0
  if [[ $BIG_WRK = 1 ]]; then add_workload "$kind-100m-wrk4" "/$kind/ 100 MiB, wrk -c4 (MiB/s)" mib 0; fi
done
# Plugin workloads: aws's hello plugin vs nginx's `return 200`; aws's stream plugin generating
# 1 GiB vs nginx sending a 1 GiB (sparse, cached) file. Only aws and nginx run these.
if [[ -f $REPO/Plugins/hello.so && -f $REPO/Plugins/stream.so ]]; then
  add_workload plugin-hello-ka  "plugin hello vs nginx return 200, keep-alive (req/s)"    rps 0
  add_workload plugin-stream-1g "plugin 1 GiB stream vs nginx 1 GiB file, 1 curl (MiB/s)" mib 0
elif [[ $SKIP_AWS != 1 && " ${COUNTS[*]} " == *" 1 "* ]]; then
  warn "Plugins/hello.so or Plugins/stream.so missing (run make plugins): plugin workloads left out"
fi

# Table rows, in order: each workload at each worker count it runs at (workloads that are not
# multi-worker run with 1 worker only, when 1 is in BENCH_WORKERS), then the idle-memory row.
declare -a ROW_KEYS=()
declare -A ROW_LABEL=() ROW_METRIC=()
for i in "${!WL_ID[@]}"; do
  for n in "${COUNTS[@]}"; do
    if (( n > 1 && WL_MULTI[i] == 0 )); then continue; fi
    ROW_KEYS+=("${WL_ID[$i]}@$n"); ROW_LABEL[${WL_ID[$i]}@$n]=${WL_LABEL[$i]}; ROW_METRIC[${WL_ID[$i]}@$n]=${WL_METRIC[$i]}
  done
done
if (( IDLE_CONNS > 0 )); then
  ROW_KEYS+=(idle@1); ROW_LABEL[idle@1]="idle connection memory (bytes/connection)"; ROW_METRIC[idle@1]=bytes
fi

# ---------------------------------------------------------------- run
write_wrk_lua
declare -A SEEN=()      # servers that produced figures, for the table's columns
declare -a PIN_NOTES=()

# 1. Memory per idle connection: each server alone, 1 worker, pinned like the 1-worker rows.
if (( IDLE_CONNS > 0 )); then
  set_pinning 1; CFG_WORKERS=1; CFG_IDLE=1; PHASE=idle; ROUND=1
  log "idle memory: $IDLE_CONNS keep-alive connections per server, 1 worker, descriptor limit $NOFILE_IDLE, $PIN_NOTE"
  for s in "${SERVERS[@]}"; do
    if ! start_server "$s"; then
      note "$s" idle@1 "did not start with the idle-memory settings (logs in $T/$s with BENCH_KEEP=1)"
      warn "$s did not start for the idle-memory row: left out"; continue
    fi
    SEEN[$s]=1
    run_idle "$s"
    stop_server "$s"
  done
  CFG_IDLE=0
fi

# 2. Throughput, at each worker count: every server restarted with N workers, checked, then
#    each workload on every server in turn (so a slow drift of the machine hits all alike),
#    ROUNDS times, the server order reversed on every other round.
for n in "${COUNTS[@]}"; do
  set_pinning "$n"; CFG_WORKERS=$n; PHASE=w$n
  if (( n > 1 )); then PIN_NOTES+=("$n workers: wrk -t$WRK_THREADS, $PIN_NOTE")
  else PIN_NOTES+=("1 worker: wrk -t$WRK_THREADS, $PIN_NOTE"); fi
  for s in "${SERVERS[@]}"; do
    if ! start_server "$s"; then
      [[ $s = aws || $s = nginx ]] && die "$s did not start with $n worker(s) (logs above)"
      warn "$s did not start with $n worker(s): left out of those rows"
      NOTES+=("$s did not start with $n worker(s): left out of those rows"); continue
    fi
  done
  for s in "${SERVERS[@]}"; do
    if [[ -z ${PID[$s]:-} ]]; then continue; fi
    if ! check_server "$s"; then
      [[ $s = aws || $s = nginx ]] && die "$s serves wrong responses with $n worker(s) (see above)"
      warn "$s serves wrong responses with $n worker(s): left out of those rows"; stop_server "$s"
      NOTES+=("$s served wrong responses with $n worker(s): left out of those rows")
    fi
  done
  ACTIVE=()
  for s in "${SERVERS[@]}"; do if [[ -n ${PID[$s]:-} ]]; then ACTIVE+=("$s"); SEEN[$s]=1; fi; done
  log "$n worker(s): all responses checked (200, right lengths); measuring ${ACTIVE[*]}, ${SECONDS_PER_RUN}s per run, ${PIN_NOTES[-1]}"

  for (( ROUND = 1; ROUND <= ROUNDS; ROUND++ )); do
    order=("${ACTIVE[@]}")
    if (( ROUND % 2 == 0 )); then
      order=(); for (( j = ${#ACTIVE[@]} - 1; j >= 0; j-- )); do order+=("${ACTIVE[$j]}"); done
    fi
    if (( ROUNDS > 1 )); then log "$n worker(s), round $ROUND of $ROUNDS: ${order[*]}"; fi
    for i in "${!WL_ID[@]}"; do
      id=${WL_ID[$i]}; key="$id@$n"
      if (( n > 1 && WL_MULTI[i] == 0 )); then continue; fi
      kind=${id%%-*}; rest=${id#*-}; size=${rest%%-*}; mode=${rest#*-}
      for s in "${order[@]}"; do
        base="http://$ADDR:${PORT[$s]}"
        if [[ $kind = plugin ]]; then
          case $s/$id in
            aws/plugin-hello-ka)     run_wrk "$s" "$key" "$base/hello?name=bench" "$CONNECTIONS" rps ;;
            nginx/plugin-hello-ka)   run_wrk "$s" "$key" "$base/hello" "$CONNECTIONS" rps ;;
            aws/plugin-stream-1g)    run_curl "$s" "$key" "$base/stream/bytes?size=1073741824" 1073741824 ;;
            nginx/plugin-stream-1g)  run_curl "$s" "$key" "$base/gen/1g.bin" 1073741824 ;;
            *) continue ;;
          esac
        else
          url="$base/$kind/$size.bin"
          case $mode in
            ka)    run_wrk "$s" "$key" "$url" "$CONNECTIONS" rps ;;
            close) run_wrk "$s" "$key" "$url" "$CONNECTIONS" rps "Connection: close" ;;
            curl)  run_curl "$s" "$key" "$url" ;;
            wrk4)  run_wrk "$s" "$key" "$url" 4 mib ;;
          esac
        fi
        kill -0 "${PID[$s]}" 2>/dev/null || die "$s died during $key (logs in $T/$s; rerun with BENCH_KEEP=1)"
      done
    done
  done
  for s in "${ACTIVE[@]}"; do stop_server "$s"; done
done
ROUND=1

# ---------------------------------------------------------------- report
median() {  # median "V1 V2 ..." METRIC — "!" if any figure had errors; "-" if none is a number
  awk -v m="$2" '{ n = 0; bad = 0
      for (i = 1; i <= NF; i++) { v = $i; if (v ~ /!/) bad = 1; sub(/!$/, "", v)
        if (v ~ /^[0-9.]+$/) { x = v + 0; for (j = n; j > 0 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x; n++ } }
      if (n == 0) { print "-"; exit }
      med = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
      printf (m == "mib" ? "%.1f" : "%.0f") "%s\n", med, bad ? "!" : "" }
    END { if (NR == 0) print "-" }' <<<"$1"
}
ratio() {   # ratio A B — "!" / "*" on either figure carry over to the ratio
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0 || a == "") { print "-"; exit }
    printf "%.2f%s%s", (a + 0) / (b + 0), (a ~ /!/ || b ~ /!/) ? "!" : "", (a ~ /\*/ || b ~ /\*/) ? "*" : "" }'
}

COLS=()
for s in "${SERVERS[@]}"; do if [[ -n ${SEEN[$s]:-} ]]; then COLS+=("$s"); fi; done
has_aws=0; if [[ -n ${SEEN[aws]:-} ]]; then has_aws=1; fi
PEERS_SEEN=(); for s in "${COLS[@]}"; do if [[ $s != aws ]]; then PEERS_SEEN+=("$s"); fi; done
show_best=0; if (( has_aws && ${#PEERS_SEEN[@]} > 1 )); then show_best=1; fi
single_thread_aws=0

header=("workload" "workers" "${COLS[@]}")
if (( has_aws )); then header+=("aws/nginx"); fi
if (( show_best )); then header+=("aws/best peer"); fi
rows=()
for key in "${ROW_KEYS[@]}"; do
  n=${key##*@}; metric=${ROW_METRIC[$key]}
  for s in "${COLS[@]}"; do
    RESULT[$s|$key]=$(median "${VALS[$s|$key]:-}" "$metric")
    if [[ $s = aws && $n -gt 1 && $AWS_HAS_WORKERS = 0 && ${RESULT[$s|$key]} != - ]]; then
      RESULT[$s|$key]+="*"; single_thread_aws=1
    fi
  done
  row=("${ROW_LABEL[$key]}" "$n")
  for s in "${COLS[@]}"; do row+=("${RESULT[$s|$key]}"); done
  if (( has_aws )); then row+=("$(ratio "${RESULT[aws|$key]}" "${RESULT[nginx|$key]:--}")"); fi
  if (( show_best )); then
    # Best peer: the highest figure, or the lowest for memory.
    best=""; bestv=""
    for s in "${PEERS_SEEN[@]}"; do
      v=${RESULT[$s|$key]:--}; [[ $v = - ]] && continue
      if [[ -z $best ]] || awk -v a="$v" -v b="$bestv" -v m="$metric" \
           'BEGIN { exit !((m == "bytes") ? (a + 0 < b + 0) : (a + 0 > b + 0)) }'; then best=$s; bestv=$v; fi
    done
    if [[ -n $best ]]; then r=$(ratio "${RESULT[aws|$key]}" "$bestv"); [[ $r = - ]] || r+=" ($best)"; row+=("$r")
    else row+=("-"); fi
  fi
  rows+=("$(IFS=$'\t'; echo "${row[*]}")")
done

cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || echo "?")
os=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME" || uname -s)
versions="nginx $({ nginx -v 2>&1 || true; } | sed 's/.*nginx\///')"
if [[ -n ${SEEN[lighttpd]:-} ]]; then versions+=", lighttpd $({ lighttpd -v 2>&1 || true; } | sed -n 's/^lighttpd\/\([^ ]*\).*/\1/p')"; fi
if [[ -n ${SEEN[h2o]:-} ]]; then versions+=", h2o $({ h2o --version 2>&1 || true; } | sed -n 's/^h2o version //p')"; fi
versions+=", $({ wrk --version 2>&1 || true; } | awk 'NR == 1 {print "wrk " $2}')"
if (( has_aws )); then
  versions+=", aws $({ "$AWS_BIN" --version 2>&1 || true; } | head -n 1)"
  if (( AWS_HAS_WORKERS )); then versions+=" (--workers N)"; else versions+=" (no --workers: one thread)"; fi
fi
meta="$(date -u '+%Y-%m-%d %H:%M UTC'), $os, $cpu_model, $NCPU CPUs; $versions"
runs=""
if (( ${#COUNTS[@]} )); then
  runs="${SECONDS_PER_RUN}s per wrk run after a ${WARMUP_SECONDS}s warm-up, -c$CONNECTIONS"
  if (( ROUNDS > 1 )); then runs+=", median of $ROUNDS rounds"; else runs+=", 1 round"; fi
  for p in "${PIN_NOTES[@]}"; do runs+="; $p"; done
  runs+="; "
fi
if (( IDLE_CONNS > 0 )); then runs+="idle memory: $IDLE_CONNS connections, 1 worker, RSS after - before, ${IDLE_SETTLE}s idle"; fi
runs=${runs%; }

legend=()
if (( single_thread_aws )); then
  legend+=("* aws ran with a single thread: its --help does not mention --workers, so it got no --workers flag.")
fi
if (( IDLE_CONNS > 0 )); then
  legend+=("idle connection memory: lower is better; aws/nginx < 1 means aws uses less memory per idle connection.")
fi
if (( ${#COUNTS[@]} )); then legend+=("req/s, MiB/s: higher is better; aws/nginx > 1 means aws is faster."); fi

echo
echo "aws benchmark — $meta"
echo "$runs"
echo
{ (IFS=$'\t'; echo "${header[*]}"); printf '%s\n' "${rows[@]}"; } | awk -F'\t' '
  { for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) }; if (NF > nf) nf = NF }
  END { for (r = 1; r <= NR; r++) { line = ""
          for (i = 1; i <= nf; i++) line = line (i == 1 ? sprintf("%-" w[i] "s", cell[r, i]) : sprintf("  %" w[i] "s", cell[r, i]))
          print line } }'
echo; printf '%s\n' "${legend[@]}"
if (( ${#DETAILS[@]} )); then echo; echo "idle memory:"; printf '  %s\n' "${DETAILS[@]}"; fi
if (( ${#NOTES[@]} )); then echo; echo "errors reported (figures marked '!'):"; printf '  %s\n' "${NOTES[@]}"; fi
echo

mkdir -p "$RESULTS_DIR"
{
  echo "# aws benchmark"
  echo
  echo "$meta"
  echo
  echo "$runs"
  echo
  echo "| $(IFS='|'; echo "${header[*]}" | sed 's/|/ | /g') |"
  echo "|$(for _ in "${header[@]}"; do printf -- '---|'; done)"
  for r in "${rows[@]}"; do echo "| ${r//$'\t'/ | } |"; done
  echo
  printf '%s\n' "${legend[@]}" | sed 's/^/- /'
  if (( ${#DETAILS[@]} )); then echo; echo "Idle memory:"; echo; printf -- '- %s\n' "${DETAILS[@]}"; fi
  if (( ${#NOTES[@]} )); then echo; echo "Errors reported (figures marked '!'):"; echo; printf -- '- %s\n' "${NOTES[@]}"; fi
} >"$RESULTS_DIR/latest.md"
cp "$T/wrk.log" "$RESULTS_DIR/latest-wrk.log" 2>/dev/null || true
log "written $RESULTS_DIR/latest.md (raw wrk output: $RESULTS_DIR/latest-wrk.log); the run took $(( SECONDS / 60 ))m$(( SECONDS % 60 ))s"
