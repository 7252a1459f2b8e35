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
# pinned. The /dynamic/ rows also run two variants: nginx-aio (nginx with `aio threads;
# directio 512;` for /dynamic/) and aws-direct (aws --dynamic-io direct, when the binary has
# it). Memory per idle connection is measured with bench/idle_memory.py, allocations per
# request with bench/allocations.py and Tests/alloc/malloc_count.c (an LD_PRELOAD counter).
# All servers are stopped on exit, including on Ctrl-C. See bench/README.md for what is
# measured, the knobs and how long a run takes.
# What it shares with bench/tls.sh (common settings, tools, pinning, starting and stopping
# servers, nginx's common config, rounds, report helpers) is in bench/lib.sh.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------- settings
# Besides lib.sh's (BENCH_SECONDS, BENCH_WARMUP_SECONDS, BENCH_CONNECTIONS, BENCH_SKIP_AWS,
# BENCH_SERVER_CPU, BENCH_CLIENT_CPU, BENCH_KEEP, AWS_ARGS, BENCH_WORKERS, BENCH_ROUNDS):
PEERS=${BENCH_PEERS:-nginx}
CURL_RUNS=${BENCH_CURL_RUNS:-3}
BIG_WRK=${BENCH_BIG_WRK:-1}
WORKERS_PATHS=${BENCH_WORKERS_PATHS:-static dynamic plugin}
MANY=${BENCH_MANY_CONNECTIONS:-1000}
VARIANTS_WANTED=${BENCH_VARIANTS-aws-direct nginx-aio}
IDLE_CONNS=${BENCH_IDLE_CONNECTIONS:-10000}
IDLE_SETTLE=${BENCH_IDLE_SETTLE:-2}
ALLOC=${BENCH_ALLOC:-1}
ALLOC_REQUESTS=${BENCH_ALLOC_REQUESTS:-20000}
# TCP_DEFER_ACCEPT on every listener (1, the default), or only where the server sets it itself (0).
# h2o always sets it (it has no setting for it); so that every server accepts connections the
# same way, nginx (`listen ... deferred`), lighttpd (`server.defer-accept`) and aws
# (`--defer-accept`) get it too.
DEFER=${BENCH_DEFER_ACCEPT:-1}
ALLOC_SHIM_SRC="$REPO/Tests/alloc/malloc_count.c"
ALLOC_CLIENT="$HERE/allocations.py"

[[ $IDLE_CONNS =~ ^[0-9]+$ && $IDLE_CONNS -le 25000 ]] || die "BENCH_IDLE_CONNECTIONS must be 0 to 25000 (0: no idle-memory row)"
[[ $IDLE_SETTLE =~ ^[0-9]+([.][0-9]+)?$ ]] || die "BENCH_IDLE_SETTLE must be a number of seconds"
[[ $MANY =~ ^[0-9]+$ && $MANY -le 30000 ]] || die "BENCH_MANY_CONNECTIONS must be 0 to 30000 (0: no many-connections rows)"
[[ $ALLOC = 0 || $ALLOC = 1 ]] || die "BENCH_ALLOC must be 0 or 1"
[[ $DEFER = 0 || $DEFER = 1 ]] || die "BENCH_DEFER_ACCEPT must be 0 or 1"
[[ $ALLOC_REQUESTS =~ ^[0-9]+$ && $ALLOC_REQUESTS -ge 100 ]] || die "BENCH_ALLOC_REQUESTS must be at least 100"
# Worker counts, ascending, without repeats; "none" measures only the idle-memory row.
if [[ $WORKER_COUNTS != none ]]; then parse_worker_counts " (or set BENCH_WORKERS=none)"; fi
(( ${#COUNTS[@]} > 0 || IDLE_CONNS > 0 || ALLOC > 0 )) \
  || die "nothing to measure: BENCH_WORKERS=none, BENCH_IDLE_CONNECTIONS=0 and BENCH_ALLOC=0"
for k in $WORKERS_PATHS; do
  [[ $k = static || $k = dynamic || $k = plugin ]] || die "BENCH_WORKERS_PATHS: '$k' is not static, dynamic or plugin"
done
for v in $VARIANTS_WANTED; do
  [[ $v = aws-direct || $v = nginx-aio || $v = none ]] || die "BENCH_VARIANTS: '$v' is not aws-direct, nginx-aio or none"
done
# The allocation phase needs the LD_PRELOAD counter and its client (Tests/alloc, bench/allocations.py).
if (( ALLOC )) && [[ ! -f $ALLOC_SHIM_SRC || ! -f $ALLOC_CLIENT ]]; then
  warn "${ALLOC_SHIM_SRC#"$REPO"/} or ${ALLOC_CLIENT#"$REPO"/} missing: allocations-per-request rows skipped"
  ALLOC=0; ALLOC_MISSING=1
else ALLOC_MISSING=0; fi

# nginx is always the reference (SERVERS: aws and nginx, from lib.sh); other peers only when asked for.
for p in $PEERS; do
  case $p in
    nginx) ;;
    lighttpd|h2o) [[ " ${SERVERS[*]} " == *" $p "* ]] || SERVERS+=("$p") ;;
    *) die "unknown peer '$p' in BENCH_PEERS (known: nginx lighttpd h2o)" ;;
  esac
done

# ---------------------------------------------------------------- tools
need wrk wrk
need curl curl
need taskset util-linux
need nginx nginx-light nginx
if [[ " ${SERVERS[*]} " == *" lighttpd "* ]]; then need lighttpd lighttpd; fi
if [[ " ${SERVERS[*]} " == *" h2o "* ]]; then need h2o h2o; fi
if (( IDLE_CONNS > 0 )); then need python3 python3; need prlimit util-linux; fi
if (( ALLOC )); then need python3 python3; need cc gcc; fi
if ! command -v openssl >/dev/null; then warn "openssl not found: files will be random, not deterministic"; fi

# CPU pinning per worker count (set_pinning N, in lib.sh): the server on CPUs of its own, wrk
# and curl on others, when the machine has enough. Every server gets the same treatment at a
# given N.
init_pinning

# ---------------------------------------------------------------- aws binary
if [[ $SKIP_AWS != 1 ]]; then find_aws_bin; fi
# --workers is passed only to a binary whose --help mentions it; an older binary runs one
# thread whatever the worker count, and its figures at N > 1 are marked '*'.
AWS_HAS_WORKERS=0; AWS_MAXCONN=""; AWS_HAS_DEFER=0
if [[ $SKIP_AWS != 1 ]]; then
  aws_help=$("$AWS_BIN" --help 2>&1 || true)
  if [[ $aws_help == *--defer-accept* ]]; then AWS_HAS_DEFER=1
  elif (( DEFER )); then warn "$AWS_BIN --help does not mention --defer-accept: aws accepts without TCP_DEFER_ACCEPT"; fi
  if [[ $aws_help == *--workers* ]]; then AWS_HAS_WORKERS=1
  elif (( ${#COUNTS[@]} > 1 || ${COUNTS[0]:-1} > 1 )); then
    warn "$AWS_BIN --help does not mention --workers: aws runs a single thread at every worker count (marked '*')"
  fi
  # aws's own connection limit (its --help default), raised only when the many-connections
  # rows need more.
  AWS_MAXCONN=$(grep -A3 -e '--max-connections' <<<"$aws_help" | grep -o 'default: [0-9]*' | head -n 1 | grep -o '[0-9]*' || true)
fi

# ---------------------------------------------------------------- variants (/dynamic/ rows only)
# aws-direct: aws --dynamic-io direct (the pure O_DIRECT libaio path), only when the binary has
# the flag. nginx-aio: nginx with `aio threads; directio 512;` for /dynamic/, which needs an
# nginx built --with-threads (Debian's nginx, which nginx-light installs in Debian 12, is).
declare -A VARIANT_OF=([aws-direct]=aws [nginx-aio]=nginx)
declare -a VARIANTS=() VARIANT_NOTES=()
if [[ " $VARIANTS_WANTED " == *" aws-direct "* && $SKIP_AWS != 1 ]]; then
  if [[ $aws_help == *--dynamic-io* ]]; then VARIANTS+=(aws-direct)
  else
    warn "$AWS_BIN --help does not mention --dynamic-io: aws-direct left out"
    VARIANT_NOTES+=("aws-direct (aws --dynamic-io direct) left out: $AWS_BIN --help does not mention --dynamic-io.")
  fi
fi
if [[ " $VARIANTS_WANTED " == *" nginx-aio "* ]]; then
  if { nginx -V 2>&1 || true; } | grep -q -e '--with-threads'; then VARIANTS+=(nginx-aio)
  else
    warn "nginx -V does not show --with-threads: nginx-aio left out (install Debian's nginx package)"
    VARIANT_NOTES+=("nginx-aio left out: this nginx is built without --with-threads (no aio threads).")
  fi
fi
# Every server of the throughput rows, each variant after the server it varies.
declare -a ALL_SERVERS=()
for s in "${SERVERS[@]}"; do
  ALL_SERVERS+=("$s")
  for v in "${VARIANTS[@]}"; do if [[ ${VARIANT_OF[$v]} = "$s" ]]; then ALL_SERVERS+=("$v"); fi; done
done

# ---------------------------------------------------------------- descriptors
# Connection limits of the throughput servers: enough for the many-connections rows. wrk holds
# MANY sockets and each server as many (and its files); wrk and the servers inherit this
# shell's descriptor limit, raised to twice the connection limit and some when it is lower.
THRU_CONNS=$(( MANY + 1024 > 4096 ? MANY + 1024 : 4096 ))
if (( ${#COUNTS[@]} > 0 )); then
  want=$(( 2 * THRU_CONNS + 1024 )); soft=$(ulimit -Sn); hard=$(ulimit -Hn)
  if [[ $soft != unlimited ]] && (( soft < want )); then
    ulimit -n "$want" 2>/dev/null || ulimit -Sn "$hard"
  fi
  soft=$(ulimit -Sn)
  [[ $soft = unlimited ]] || (( soft >= MANY + 512 )) \
    || die "descriptor limit $soft is too low for $MANY connections (raise ulimit -Hn or lower BENCH_MANY_CONNECTIONS)"
fi

# ---------------------------------------------------------------- temp folder + cleanup
make_temp_dir aws-bench
set_traps

# ---------------------------------------------------------------- document root
check_free_space $(( 2 * 101 + 8 ))
make_doc_root static dynamic
# nginx's stand-in for the 1 GiB plugin stream: a sparse 1 GiB file (no disk, all page cache).
mkdir -p "$DOC/gen"
truncate -s 1073741824 "$DOC/gen/1g.bin"

# ---------------------------------------------------------------- server configs
# The write_* functions read CFG_WORKERS (worker count) and CFG_IDLE (1: the idle-memory
# setup, with room for IDLE_MAXCONN connections and keep-alive timeouts of 60 s or more);
# otherwise they allow THRU_CONNS connections (the many-connections rows). CFG_PRELOAD (1: the
# allocation phase) starts the server under the LD_PRELOAD allocation counter.
CFG_IDLE=0; CFG_PRELOAD=0

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

write_nginx() {   # write_nginx PORT [aio] — aio: nginx-aio, /dynamic/ read with aio threads + O_DIRECT
  local p=$1 aio=${2:-} conns=$THRU_CONNS main="" dyn=""
  if (( CFG_IDLE )); then conns=$IDLE_MAXCONN; main="worker_rlimit_nofile $NOFILE_IDLE;"; fi
  if [[ $aio = aio ]]; then
    # The same config, plus reads from a thread pool (nginx's default pool, 32 threads) with
    # O_DIRECT for files of 512 bytes or more: no page cache, as aws-direct.
    dyn="location /dynamic/ { aio threads; directio 512; }"; NGINX_NAME=nginx-aio
  else NGINX_NAME=nginx; fi
  write_nginx_conf warn "$conns" "$main" <<EOF2
    server {
        listen $ADDR:$p$( (( DEFER )) && echo " deferred" || true);
        server_name localhost;
        root $DOC;
        # The plugin workload's peer: a constant response from the server itself.
        location = /hello { default_type text/plain; return 200 "Hello, bench!\n"; }
        $dyn
    }
EOF2
  NGINX_NAME=nginx
}

write_lighttpd() {
  # server.max-worker = 0: one process. lighttpd turns 1 into 0 itself; with N > 1 a watcher
  # process forks N workers that share the listening socket.
  local d="$T/lighttpd" p=$1 workers=0 fds conns
  if (( CFG_WORKERS > 1 )); then workers=$CFG_WORKERS; fi
  # Both are 16-bit in lighttpd, and it caps connections at max-fds / 2.
  if (( CFG_IDLE )); then
    fds=$(( NOFILE_IDLE < 65535 ? NOFILE_IDLE : 65535 ))
    conns=$(( IDLE_MAXCONN < fds / 2 ? IDLE_MAXCONN : fds / 2 ))
  else
    fds=$(( 2 * THRU_CONNS < 65535 ? 2 * THRU_CONNS : 65535 )); conns=$(( fds / 2 ))
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
server.max-connections = $conns
index-file.names = ( "index.html" )
mimetype.assign = ( "" => "application/octet-stream" )
server.defer-accept = $DEFER
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
    # Its max-connections is 1024 by default.
    if (( CFG_IDLE )); then printf 'max-connections: %d\nhttp1-request-timeout: 60\n' "$IDLE_MAXCONN"
    else printf 'max-connections: %d\n' "$THRU_CONNS"; fi
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

write_aws() {   # write_aws PORT [direct] — direct: aws-direct, --dynamic-io direct
  local p=$1 direct=${2:-}
  # --log-level warning: no access-log lines (the equivalent of nginx's access_log off).
  CMD=("$AWS_BIN" --root "$DOC" --port "$p" --address "$ADDR" --log-level warning)
  if (( AWS_HAS_WORKERS )); then CMD+=(--workers "$CFG_WORKERS"); fi
  if [[ $direct = direct ]]; then CMD+=(--dynamic-io direct); fi
  if (( DEFER && AWS_HAS_DEFER )); then CMD+=(--defer-accept); fi
  if (( CFG_IDLE )); then
    CMD+=(--max-connections "$IDLE_MAXCONN" --keepalive-timeout 60)
  else
    # aws's default limit (10000) allows the many-connections rows; raised only when it does not.
    if [[ -z $AWS_MAXCONN ]] || (( AWS_MAXCONN < MANY + 64 )); then CMD+=(--max-connections "$THRU_CONNS"); fi
  fi
  if (( ! CFG_IDLE )) && [[ -f $REPO/Plugins/hello.so && -f $REPO/Plugins/stream.so ]]; then
    # The example plugins (make plugins) give the plugin workloads.
    CMD+=(--plugins "$REPO/Plugins")
  fi
  # shellcheck disable=SC2206
  CMD+=($AWS_EXTRA_ARGS)
}

start_server() {   # start_server NAME — PHASE names its logs: w1, w2, ..., idle, alloc
  local name=$1 p
  free_port; p=$FREE_PORT
  PORT[$name]=$p
  mkdir -p "$T/$name"
  case $name in
    aws-direct) write_aws "$p" direct ;;
    nginx-aio)  write_nginx "$p" aio ;;
    *)          "write_$name" "$p" ;;
  esac
  # The idle-memory servers run under prlimit, which execs them (after taskset).
  if (( CFG_IDLE )); then CMD=("${IDLE_LIMIT[@]}" "${CMD[@]}"); fi
  # The allocation phase: the counter preloaded into the server (env execs it), counting into
  # a file of its own (summed over all its processes).
  if (( CFG_PRELOAD )); then
    CMD=(env "LD_PRELOAD=$ALLOC_SHIM" "MALLOC_COUNT_FILE=$T/$name/malloc-count" "${CMD[@]}")
  fi
  log "starting $name ($PHASE) on $ADDR:$p: ${CMD[*]}"
  launch_server "$name" "http://$ADDR:$p/"
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
declare -a DETAILS=() ALLOC_DETAILS=()

CLK_TCK=$(getconf CLK_TCK)
server_ticks() {   # CPU ticks (user + system) of every process in the server's session
  local pids
  pids=$(ps -o pid= -s "${PID[$1]}" 2>/dev/null | tr -d ' ' | sed 's|.*|/proc/&/stat|' || true)
  [[ -n $pids ]] || { echo 0; return; }
  # shellcheck disable=SC2086
  cat $pids 2>/dev/null | awk '{ sub(/^.*\) /, ""); s += $12 + $13 } END { print s + 0 }'
}
# Server CPU per request (microseconds) of the req/s runs, beside their figures: what each
# request cost the server, which the req/s figure hides when the load generator is the
# bottleneck (with 1 worker, wrk's one thread on its own CPU serves ~as many requests a second
# as the fastest servers).
declare -A CPUV=()

record() { # record SERVER KEY VALUE
  VALS[$1|$2]="${VALS[$1|$2]:-} $3"
  local r=""; if (( ROUNDS > 1 )); then r="r$ROUND"; fi
  printf '   %-10s %-24s %-4s %s\n' "$1" "$2" "$r" "$3" >&2
}

run_wrk() {   # run_wrk SERVER KEY URL CONNS METRIC(rps|mib) [HEADER]
  local name=$1 key=$2 url=$3 conns=$4 metric=$5 hdr=${6:-} out line errs v
  local threads=$(( WRK_THREADS < conns ? WRK_THREADS : conns ))
  local -a extra=(--timeout 10s -s "$T/summary.lua")
  if [[ -n $hdr ]]; then extra+=(-H "$hdr"); fi
  if (( WARMUP_SECONDS > 0 )); then   # warm-up
    timeout --foreground $(( WARMUP_SECONDS + 30 )) \
      "${CLI_PIN[@]}" wrk -t"$threads" -c"$conns" -d"${WARMUP_SECONDS}s" "${extra[@]}" "$url" >/dev/null 2>&1 || true
  fi
  local c0 c1
  c0=$(server_ticks "$name")
  out=$(timeout --foreground $(( SECONDS_PER_RUN + 30 )) \
    "${CLI_PIN[@]}" wrk -t"$threads" -c"$conns" -d"${SECONDS_PER_RUN}s" "${extra[@]}" "$url" 2>&1) || true
  c1=$(server_ticks "$name")
  printf '%s\n' "--- $name $key round $ROUND: ${CLI_PIN[*]:+${CLI_PIN[*]} }wrk -t$threads -c$conns -d${SECONDS_PER_RUN}s ${hdr:+-H '$hdr' }$url" "$out" >>"$T/wrk.log"
  line=$(grep '^BENCH ' <<<"$out" || true)
  if [[ -z $line ]]; then
    note "$name" "$key" "wrk failed: $(tail -n 2 <<<"$out" | paste -sd' ' -)"
    v="-"
  else
    errs=$(wrk_errors "$line")
    v=$(awk -v m="$metric" '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        t = v["duration_us"] / 1e6; if (t <= 0) { print "-"; exit }
        if (m == "mib") printf "%.1f", v["bytes"] / t / 1048576; else printf "%d", v["requests"] / t + 0.5 }' <<<"$line")
    if [[ -n $errs ]]; then note "$name" "$key" "$errs"; v+="!"; fi
    if [[ $metric = rps ]]; then
      CPUV[$name|$key]="${CPUV[$name|$key]:-} $(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" -v l="$line" 'BEGIN {
          n = split(l, f, " "); for (i = 2; i <= n; i++) { split(f[i], kv, "="); v[kv[1]] = kv[2] }
          if (v["requests"] <= 0 || b <= a) print "-"; else printf "%.2f", (b - a) / hz * 1e6 / v["requests"] }')"
    fi
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

run_alloc() {  # run_alloc SERVER KEY PATH REQUESTS — allocations per keep-alive request (bench/allocations.py)
  # The server runs under the LD_PRELOAD counter (CFG_PRELOAD); bench/allocations.py makes a
  # tenth of REQUESTS as a warm-up, then REQUESTS keep-alive requests on 8 connections, and
  # prints the counter's growth over them as one JSON line.
  local name=$1 key=$2 path=$3 n=$4 out line rc=0 v="" detail="" log="$T/$1/${2%@*}.log"
  out=$("${CLI_PIN[@]}" python3 "$ALLOC_CLIENT" --port "${PORT[$name]}" --counter "$T/$name/malloc-count" \
          --path "$path" --requests "$n" --warmup $(( n / 10 )) --connections 8 2>"$log") || rc=$?
  line=$(grep '^{' <<<"$out" | tail -n 1 || true)
  if [[ -n $line ]]; then
    read -r v detail < <(python3 -c '
import json, sys
d = json.loads(sys.argv[2]); r = max(int(d["requests"]), 1)
re = d.get("reconnects", 0)
print("%.2f %s: %s, %d requests: %d allocations, %d frees, %d bytes (%.2f allocations, %.0f bytes per request)%s" % (
    float(d["per_request"]), sys.argv[1], d["path"], r, d["allocations"], d["frees"], d["bytes"],
    float(d["per_request"]), d["bytes"] / r, "; %d connections reopened" % re if re else ""))' "$name" "$line" 2>>"$log") || true
  fi
  if [[ -z $v ]]; then
    note "$name" "$key" "allocation count failed (exit $rc): $(tail -n 1 "$log" 2>/dev/null)"
    v="-"
  else
    ALLOC_DETAILS+=("$detail")
    if (( rc != 0 )); then note "$name" "$key" "bench/allocations.py exited with $rc: $(tail -n 1 "$log")"; v+="!"; fi
  fi
  record "$name" "$key" "$v"
}

# ---------------------------------------------------------------- workloads and rows
# Which servers run which workload: the variants (aws-direct, nginx-aio) only the /dynamic/
# ones, the plugin workloads only aws and nginx. Also for the allocation rows (alloc-...).
applies() {   # applies SERVER WORKLOAD
  local s=$1 id=${2#alloc-}
  case $id in
    plugin-*)  [[ $s = aws || $s = nginx ]] ;;
    dynamic-*) return 0 ;;
    *)         [[ -z ${VARIANT_OF[$s]:-} ]] ;;
  esac
}
for kind in static dynamic; do
  multi=0; if [[ " $WORKERS_PATHS " == *" $kind "* ]]; then multi=1; fi
  add_workload "$kind-1k-ka"    "/$kind/ 1 KiB, keep-alive (req/s)"        rps "$multi"
  if (( MANY > 0 )); then
    add_workload "$kind-1k-many" "/$kind/ 1 KiB, keep-alive, $MANY connections (req/s)" rps "$multi"
  fi
  add_workload "$kind-1k-close" "/$kind/ 1 KiB, Connection: close (req/s)" rps "$multi"
  add_workload "$kind-1m-ka"    "/$kind/ 1 MiB, keep-alive (req/s)"        rps "$multi"
  add_workload "$kind-100m-curl" "/$kind/ 100 MiB, 1 curl stream (MiB/s)"  mib "$multi"
  if [[ $BIG_WRK = 1 ]]; then add_workload "$kind-100m-wrk4" "/$kind/ 100 MiB, wrk -c4 (MiB/s)" mib "$multi"; fi
done
# Plugin workloads: aws's hello plugin vs nginx's `return 200`; aws's stream plugin generating
# 1 GiB vs nginx sending a 1 GiB (sparse, cached) file. Only aws and nginx run these.
HAS_PLUGINS=0
if [[ -f $REPO/Plugins/hello.so && -f $REPO/Plugins/stream.so ]]; then
  HAS_PLUGINS=1
  multi=0; if [[ " $WORKERS_PATHS " == *" plugin "* ]]; then multi=1; fi
  add_workload plugin-hello-ka  "plugin hello vs nginx return 200, keep-alive (req/s)"    rps "$multi"
  add_workload plugin-stream-1g "plugin 1 GiB stream vs nginx 1 GiB file, 1 curl (MiB/s)" mib "$multi"
elif [[ $SKIP_AWS != 1 ]]; then
  warn "Plugins/hello.so or Plugins/stream.so missing (run make plugins): plugin workloads left out"
fi

# Table rows, in order: each workload at each worker count it runs at (workloads left out of
# BENCH_WORKERS_PATHS run with 1 worker only, when 1 is in BENCH_WORKERS), then the
# idle-memory row, then the allocation rows (1 worker).
add_rows
if (( IDLE_CONNS > 0 )); then
  ROW_KEYS+=(idle@1); ROW_LABEL[idle@1]="idle connection memory (bytes/connection)"; ROW_METRIC[idle@1]=bytes
fi
declare -a ALLOC_IDS=()
declare -A ALLOC_PATH=() ALLOC_N=()
add_alloc() {   # add_alloc ID PATH REQUESTS LABEL
  ALLOC_IDS+=("$1"); ALLOC_PATH[$1]=$2; ALLOC_N[$1]=$3
  ROW_KEYS+=("$1@1"); ROW_LABEL[$1@1]=$4; ROW_METRIC[$1@1]=alloc
}
if (( ALLOC )); then
  add_alloc alloc-static-1k  /static/1k.bin  "$ALLOC_REQUESTS"         "/static/ 1 KiB, allocations per keep-alive request"
  add_alloc alloc-dynamic-1k /dynamic/1k.bin "$ALLOC_REQUESTS"         "/dynamic/ 1 KiB, allocations per keep-alive request"
  add_alloc alloc-static-1m  /static/1m.bin  $(( ALLOC_REQUESTS / 10 )) "/static/ 1 MiB, allocations per keep-alive request"
  if (( HAS_PLUGINS )); then
    # nginx answers /hello itself (return 200); aws's hello plugin needs a name.
    add_alloc alloc-plugin-hello "/hello?name=bench" "$ALLOC_REQUESTS" "plugin hello vs nginx return 200, allocations per keep-alive request"
  fi
fi

# ---------------------------------------------------------------- duration
# An estimate from what runs: each wrk run takes the warm-up, the run and ~0.1 s of starting
# and connecting; a 100 MiB download ~0.1 s and a 1 GiB one ~0.5 s over loopback (CURL_RUNS
# + 1 each); ~1 s per server start and check at each worker count, ~6 s per server for the
# idle-memory row, ~3 s per server and ~2 s per row for the allocations, ~10 s for the files.
WRK_RUNS=0; CURL_100M=0; CURL_1G=0
for n in "${COUNTS[@]}"; do
  for i in "${!WL_ID[@]}"; do
    if (( n > 1 && WL_MULTI[i] == 0 )); then continue; fi
    for s in "${ALL_SERVERS[@]}"; do
      applies "$s" "${WL_ID[$i]}" || continue
      case ${WL_ID[$i]} in
        *-curl) CURL_100M=$(( CURL_100M + 1 )) ;;
        *-1g)   CURL_1G=$(( CURL_1G + 1 )) ;;
        *)      WRK_RUNS=$(( WRK_RUNS + 1 )) ;;
      esac
    done
  done
done
ALLOC_RUNS=0; ALLOC_SERVERS=0
for s in "${ALL_SERVERS[@]}"; do
  k=0; for id in "${ALLOC_IDS[@]}"; do if applies "$s" "$id"; then k=$(( k + 1 )); fi; done
  if (( k )); then ALLOC_SERVERS=$(( ALLOC_SERVERS + 1 )); ALLOC_RUNS=$(( ALLOC_RUNS + k )); fi
done
ESTIMATE=$(awk -v r="$ROUNDS" -v w="$WRK_RUNS" -v s="$SECONDS_PER_RUN" -v u="$WARMUP_SECONDS" \
  -v c="$CURL_100M" -v g="$CURL_1G" -v k="$CURL_RUNS" -v nc="${#COUNTS[@]}" -v ns="${#ALL_SERVERS[@]}" \
  -v idle="$(( IDLE_CONNS > 0 ? ${#SERVERS[@]} : 0 ))" -v as="$ALLOC_SERVERS" -v ar="$ALLOC_RUNS" \
  'BEGIN { printf "%d", r * (w * (u + s + 0.1) + (c * 0.1 + g * 0.5) * (k + 1)) + nc * ns + idle * 6 + as * 3 + ar * 2 + 10 }')
log "$WRK_RUNS wrk runs of ${WARMUP_SECONDS}+${SECONDS_PER_RUN}s per round, $ROUNDS round(s), servers: ${ALL_SERVERS[*]}; estimated duration ~$(( (ESTIMATE + 30) / 60 )) min"

# ---------------------------------------------------------------- run
write_wrk_lua
declare -A SEEN=()      # servers that produced figures, for the table's columns
declare -a PIN_NOTES=() PHASE_TIMES=()
elapsed() { printf '%dm%02ds' $(( $1 / 60 )) $(( $1 % 60 )); }
PHASE_T0=$SECONDS; PHASE_TIMES+=("setup $(elapsed "$PHASE_T0")")

# 1. Memory per idle connection: each server alone, 1 worker, pinned like the 1-worker rows
#    (not the variants: the row reads /static/).
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
  PHASE_TIMES+=("idle memory $(elapsed $(( SECONDS - PHASE_T0 )))"); PHASE_T0=$SECONDS
fi

# 2. Allocations per request: each server alone, 1 worker (pinned as at N = 1), started under
#    the LD_PRELOAD counter with a counter file of its own; every allocation row it runs.
if (( ALLOC )); then
  ALLOC_SHIM="$T/malloc_count.so"
  if ! cc -O2 -shared -fPIC -pthread -o "$ALLOC_SHIM" "$ALLOC_SHIM_SRC" 2>"$T/malloc_count.log"; then
    cat "$T/malloc_count.log" >&2
    warn "could not build ${ALLOC_SHIM_SRC#"$REPO"/}: allocation rows left out"
    NOTES+=("allocations: ${ALLOC_SHIM_SRC#"$REPO"/} did not build: no figures")
  else
    set_pinning 1; CFG_WORKERS=1; CFG_PRELOAD=1; PHASE=alloc; ROUND=1
    log "allocations per request: each server alone under LD_PRELOAD=$ALLOC_SHIM, 1 worker, $PIN_NOTE"
    for s in "${ALL_SERVERS[@]}"; do
      ids=(); for id in "${ALLOC_IDS[@]}"; do if applies "$s" "$id"; then ids+=("$id"); fi; done
      (( ${#ids[@]} )) || continue
      mkdir -p "$T/$s"; rm -f "$T/$s/malloc-count"
      if ! start_server "$s"; then
        note "$s" alloc "did not start under the allocation counter (logs in $T/$s with BENCH_KEEP=1)"
        warn "$s did not start under the allocation counter: left out of the allocation rows"; continue
      fi
      SEEN[$s]=1
      for id in "${ids[@]}"; do
        path=${ALLOC_PATH[$id]}
        if [[ $s = nginx && $id = alloc-plugin-hello ]]; then path=/hello; fi
        run_alloc "$s" "$id@1" "$path" "${ALLOC_N[$id]}"
      done
      stop_server "$s"
    done
    CFG_PRELOAD=0
    PHASE_TIMES+=("allocations $(elapsed $(( SECONDS - PHASE_T0 )))"); PHASE_T0=$SECONDS
  fi
fi

# 3. Throughput, at each worker count: every server restarted with N workers, checked, then
#    each workload on every server in turn (so a slow drift of the machine hits all alike),
#    ROUNDS times, the server order reversed on every other round (run_rounds, in lib.sh).
measure() {   # measure SERVER WORKLOAD KEY — one figure
  local s=$1 id=$2 key=$3 kind rest size mode base url
  applies "$s" "$id" || return 0
  kind=${id%%-*}; rest=${id#*-}; size=${rest%%-*}; mode=${rest#*-}
  base="http://$ADDR:${PORT[$s]}"
  if [[ $kind = plugin ]]; then
    case $s/$id in
      aws/plugin-hello-ka)     run_wrk "$s" "$key" "$base/hello?name=bench" "$CONNECTIONS" rps ;;
      nginx/plugin-hello-ka)   run_wrk "$s" "$key" "$base/hello" "$CONNECTIONS" rps ;;
      aws/plugin-stream-1g)    run_curl "$s" "$key" "$base/stream/bytes?size=1073741824" 1073741824 ;;
      nginx/plugin-stream-1g)  run_curl "$s" "$key" "$base/gen/1g.bin" 1073741824 ;;
    esac
  else
    url="$base/$kind/$size.bin"
    case $mode in
      ka)    run_wrk "$s" "$key" "$url" "$CONNECTIONS" rps ;;
      many)  run_wrk "$s" "$key" "$url" "$MANY" rps ;;
      close) run_wrk "$s" "$key" "$url" "$CONNECTIONS" rps "Connection: close" ;;
      curl)  run_curl "$s" "$key" "$url" ;;
      wrk4)  run_wrk "$s" "$key" "$url" 4 mib ;;
    esac
  fi
}
server_died() {   # server_died SERVER KEY — run_rounds found SERVER gone after KEY
  # aws and nginx stop the run; another server is left out of the rest of this worker count,
  # with its exit status and the end of its logs in a note.
  local s=$1 key=$2 rc=0 why last
  wait "${PID[$s]}" 2>/dev/null || rc=$?
  why="exit status $rc"; if (( rc > 128 )); then why="killed by signal $(( rc - 128 ))"; fi
  tail -n 5 "$T/$s/stderr-$PHASE.log" "$T/$s/error.log" 2>/dev/null >&2 || true
  [[ $s = aws || $s = nginx ]] && die "$s died during $key ($why; logs in $T/$s; rerun with BENCH_KEEP=1)"
  last=$(tail -q -n 1 "$T/$s/error.log" "$T/$s/stderr-$PHASE.log" 2>/dev/null | tail -n 1 || true)
  warn "$s died during $key ($why): left out of the rest of the rows with ${key##*@} worker(s)"
  note "$s" "$key" "the server died ($why${last:+; its last log line: $last}): left out of the rest of the rows at this worker count"
  stop_server "$s"   # its other processes, if any
}
for n in "${COUNTS[@]}"; do
  set_pinning "$n"; CFG_WORKERS=$n; PHASE=w$n
  if (( n > 1 )); then PIN_NOTES+=("$n workers: wrk -t$WRK_THREADS, $PIN_NOTE")
  else PIN_NOTES+=("1 worker: wrk -t$WRK_THREADS, $PIN_NOTE"); fi
  for s in "${ALL_SERVERS[@]}"; do
    if ! start_server "$s"; then
      [[ $s = aws || $s = nginx ]] && die "$s did not start with $n worker(s) (logs above)"
      warn "$s did not start with $n worker(s): left out of those rows"
      NOTES+=("$s did not start with $n worker(s): left out of those rows"); continue
    fi
  done
  for s in "${ALL_SERVERS[@]}"; do
    if [[ -z ${PID[$s]:-} ]]; then continue; fi
    if ! check_server "$s"; then
      [[ $s = aws || $s = nginx ]] && die "$s serves wrong responses with $n worker(s) (see above)"
      warn "$s serves wrong responses with $n worker(s): left out of those rows"; stop_server "$s"
      NOTES+=("$s served wrong responses with $n worker(s): left out of those rows")
    fi
  done
  ACTIVE=()
  for s in "${ALL_SERVERS[@]}"; do if [[ -n ${PID[$s]:-} ]]; then ACTIVE+=("$s"); SEEN[$s]=1; fi; done
  log "$n worker(s): all responses checked (200, right lengths); measuring ${ACTIVE[*]}, ${SECONDS_PER_RUN}s per run, ${PIN_NOTES[-1]}"

  run_rounds "$n" measure "${ACTIVE[@]}"
  for s in "${ACTIVE[@]}"; do stop_server "$s"; done
  PHASE_TIMES+=("$n worker(s) $(elapsed $(( SECONDS - PHASE_T0 )))"); PHASE_T0=$SECONDS
done
ROUND=1

# ---------------------------------------------------------------- report
COLS=()
for s in "${ALL_SERVERS[@]}"; do if [[ -n ${SEEN[$s]:-} ]]; then COLS+=("$s"); fi; done
has_aws=0; if [[ -n ${SEEN[aws]:-} ]]; then has_aws=1; fi
has_direct=0; if [[ -n ${SEEN[aws-direct]:-} ]]; then has_direct=1; fi
# The peers: every column but aws and its own variant aws-direct (nginx-aio is a peer).
PEERS_SEEN=(); for s in "${COLS[@]}"; do if [[ $s != aws && $s != aws-direct ]]; then PEERS_SEEN+=("$s"); fi; done
show_best=0; if (( has_aws && ${#PEERS_SEEN[@]} > 1 )); then show_best=1; fi
single_thread_aws=0

best_peer() {   # best_peer KEY METRIC — BEST, BESTV: the best peer of the row (the highest figure; the lowest for memory and allocations)
  local key=$1 metric=$2 s v
  BEST=""; BESTV=""
  for s in "${PEERS_SEEN[@]}"; do
    v=${RESULT[$s|$key]:--}; [[ $v = - ]] && continue
    if [[ -z $BEST ]] || awk -v a="$v" -v b="$BESTV" -v m="$metric" \
         'BEGIN { exit !((m == "bytes" || m == "alloc" || m == "us") ? (a + 0 < b + 0) : (a + 0 > b + 0)) }'; then BEST=$s; BESTV=$v; fi
  done
}
rat() {         # rat METRIC A B — ratio A/B; for allocations a B of 0 gives "inf" (1.00 when A is 0 too)
  if [[ $1 = alloc && $2 != - && $3 != - ]] && awk -v b="$3" 'BEGIN { exit !(b + 0 == 0) }'; then
    awk -v a="$2" -v b="$3" 'BEGIN { printf "%s%s", (a + 0 == 0) ? "1.00" : "inf", (a ~ /!/ || b ~ /!/) ? "!" : "" }'
  else ratio "$2" "$3"; fi
}
vs_best() {     # vs_best METRIC FIGURE — "RATIO (BEST)" against best_peer's, or "-"
  local r
  [[ -n $BEST ]] || { echo "-"; return; }
  r=$(rat "$1" "$2" "$BESTV"); [[ $r = - ]] || r+=" ($BEST)"; echo "$r"
}

header=("workload" "workers" "${COLS[@]}")
if (( has_aws )); then for p in "${PEERS_SEEN[@]}"; do header+=("aws/$p"); done; fi
if (( show_best )); then header+=("aws/best peer"); fi
if (( has_direct && ${#PEERS_SEEN[@]} )); then header+=("aws-direct/best peer"); fi
rows=()
for key in "${ROW_KEYS[@]}"; do
  n=${key##*@}; metric=${ROW_METRIC[$key]}
  for s in "${COLS[@]}"; do
    RESULT[$s|$key]=$(median "${VALS[$s|$key]:-}" "$metric")
    if [[ ($s = aws || $s = aws-direct) && $n -gt 1 && $AWS_HAS_WORKERS = 0 && ${RESULT[$s|$key]} != - ]]; then
      RESULT[$s|$key]+="*"; single_thread_aws=1
    fi
  done
  row=("${ROW_LABEL[$key]}" "$n")
  for s in "${COLS[@]}"; do row+=("${RESULT[$s|$key]}"); done
  if (( has_aws )); then for p in "${PEERS_SEEN[@]}"; do row+=("$(rat "$metric" "${RESULT[aws|$key]}" "${RESULT[$p|$key]}")"); done; fi
  best_peer "$key" "$metric"
  if (( show_best )); then row+=("$(vs_best "$metric" "${RESULT[aws|$key]}")"); fi
  if (( has_direct && ${#PEERS_SEEN[@]} )); then row+=("$(vs_best "$metric" "${RESULT[aws-direct|$key]}")"); fi
  rows+=("$(IFS=$'\t'; echo "${row[*]}")")
done
MAIN_HEADER=("${header[@]}"); MAIN_ROWS=("${rows[@]}")

# Server CPU per request of the req/s rows (medians of the rounds, like the figures).
CPU_HEADER=(); CPU_ROWS=()
if (( has_aws )); then
  CPU_HEADER=("workload" "workers" "${COLS[@]}")
  for p in "${PEERS_SEEN[@]}"; do CPU_HEADER+=("aws/$p"); done
  if (( show_best )); then CPU_HEADER+=("aws/best peer"); fi
  for key in "${ROW_KEYS[@]}"; do
    [[ ${ROW_METRIC[$key]} = rps ]] || continue
    row=("${ROW_LABEL[$key]% (req/s)}" "${key##*@}"); any=0
    for s in "${COLS[@]}"; do
      RESULT[$s|cpu-$key]=$(median "${CPUV[$s|$key]:-}" us)
      [[ ${RESULT[$s|cpu-$key]} = - ]] || any=1
      row+=("${RESULT[$s|cpu-$key]}")
    done
    (( any )) || continue
    for p in "${PEERS_SEEN[@]}"; do row+=("$(ratio "${RESULT[aws|cpu-$key]}" "${RESULT[$p|cpu-$key]}")"); done
    best_peer "cpu-$key" us
    if (( show_best )); then row+=("$(vs_best us "${RESULT[aws|cpu-$key]}")"); fi
    CPU_ROWS+=("$(IFS=$'\t'; echo "${row[*]}")")
  done
  CPU_TITLE="server CPU per request, microseconds (user + system time of the server's processes during the req/s runs above, over their requests; lower is better, aws/peer < 1 means aws spends less):"
fi

# aws's /dynamic/ figure over its own /static/ one, per workload and worker count (issue 11's
# goal: 0.9 or more), and the same for aws-direct.
DS_HEADER=(); DS_ROWS=()
if (( has_aws )); then
  DS_HEADER=("workload" "workers" "aws static" "aws dynamic" "aws dynamic/static")
  if (( has_direct )); then DS_HEADER+=("aws-direct dynamic" "aws-direct dynamic/static"); fi
  for key in "${ROW_KEYS[@]}"; do
    [[ $key == static-* ]] || continue
    dkey=dynamic-${key#static-}
    [[ -n ${ROW_LABEL[$dkey]:-} ]] || continue
    row=("${ROW_LABEL[$key]#/static/ }" "${key##*@}" "${RESULT[aws|$key]}" "${RESULT[aws|$dkey]}"
         "$(ratio "${RESULT[aws|$dkey]}" "${RESULT[aws|$key]}")")
    if (( has_direct )); then
      row+=("${RESULT[aws-direct|$dkey]}" "$(ratio "${RESULT[aws-direct|$dkey]}" "${RESULT[aws|$key]}")")
    fi
    DS_ROWS+=("$(IFS=$'\t'; echo "${row[*]}")")
  done
fi

versions=$(version_of nginx)
if [[ -n ${SEEN[lighttpd]:-} ]]; then versions+=", lighttpd $({ lighttpd -v 2>&1 || true; } | sed -n 's/^lighttpd\/\([^ ]*\).*/\1/p')"; fi
if [[ -n ${SEEN[h2o]:-} ]]; then versions+=", h2o $({ h2o --version 2>&1 || true; } | sed -n 's/^h2o version //p')"; fi
versions+=", $(version_of wrk)"
if (( has_aws )); then
  versions+=", $(version_of aws)"
  if (( AWS_HAS_WORKERS )); then versions+=" (--workers N)"; else versions+=" (no --workers: one thread)"; fi
fi
meta=$(machine_line "$versions")
runs=""
if (( ${#COUNTS[@]} )); then
  runs="${SECONDS_PER_RUN}s per wrk run after a ${WARMUP_SECONDS}s warm-up, -c$CONNECTIONS"
  if (( MANY > 0 )); then runs+=" (-c$MANY for the $MANY-connection rows)"; fi
  if (( DEFER )); then runs+="; TCP_DEFER_ACCEPT on every server's listener"
  else runs+="; TCP_DEFER_ACCEPT only on h2o's (its default, it has no setting)"; fi
  runs+="$(rounds_line); "
fi
if (( IDLE_CONNS > 0 )); then runs+="idle memory: $IDLE_CONNS connections, 1 worker, RSS after - before, ${IDLE_SETTLE}s idle; "; fi
if (( ${#ALLOC_DETAILS[@]} )); then
  runs+="allocations: LD_PRELOAD counter, 1 worker, $ALLOC_REQUESTS keep-alive requests per row ($(( ALLOC_REQUESTS / 10 )) for 1 MiB) on 8 connections after a tenth as many"
fi
runs=${runs%; }

legend=()
if (( single_thread_aws )); then
  legend+=("* aws ran with a single thread: its --help does not mention --workers, so it got no --workers flag.")
fi
if (( has_direct )) || [[ -n ${SEEN[nginx-aio]:-} ]]; then
  legend+=("Variants, /dynamic/ rows only: aws-direct is aws --dynamic-io direct (O_DIRECT libaio reads, no page cache); nginx-aio is nginx with \`aio threads; directio 512;\` for /dynamic/ (reads in a thread pool, O_DIRECT: no page cache). aws and nginx read /dynamic/ with their defaults.")
fi
if (( show_best )); then
  legend+=("best peer: the best of ${PEERS_SEEN[*]} in each row; aws-direct is aws's own variant, not a peer.")
fi
legend+=("${VARIANT_NOTES[@]}")
if (( ALLOC_MISSING )); then
  legend+=("No allocation rows: ${ALLOC_SHIM_SRC#"$REPO"/} or ${ALLOC_CLIENT#"$REPO"/} is missing.")
fi
lower=()
if [[ -n ${ROW_LABEL[idle@1]:-} ]]; then lower+=("idle connection memory"); fi
if (( ${#ALLOC_DETAILS[@]} )); then lower+=("allocations per request"); fi
if (( ${#lower[@]} )); then
  legend+=("$(IFS=,; echo "${lower[*]}" | sed 's/,/, /'): lower is better; aws/peer < 1 means aws uses less$( (( ${#ALLOC_DETAILS[@]} )) && echo " (inf: the peer makes none, aws some)").")
fi
if (( ${#COUNTS[@]} )); then legend+=("req/s, MiB/s: higher is better; aws/peer > 1 means aws is faster."); fi
if (( ${#DS_ROWS[@]} )); then
  DS_TITLE="aws /dynamic/ over aws /static/ (same workload and worker count; goal: 0.9 or more):"
fi

echo
echo "aws benchmark — $meta"
echo "$runs"
echo
print_table
echo; printf '%s\n' "${legend[@]}"
if (( ${#DS_ROWS[@]} )); then
  echo; echo "$DS_TITLE"; echo
  header=("${DS_HEADER[@]}"); rows=("${DS_ROWS[@]}"); print_table
  header=("${MAIN_HEADER[@]}"); rows=("${MAIN_ROWS[@]}")
fi
if (( ${#CPU_ROWS[@]} )); then
  echo; echo "$CPU_TITLE"; echo
  header=("${CPU_HEADER[@]}"); rows=("${CPU_ROWS[@]}"); print_table
  header=("${MAIN_HEADER[@]}"); rows=("${MAIN_ROWS[@]}")
fi
if (( ${#DETAILS[@]} )); then echo; echo "idle memory:"; printf '  %s\n' "${DETAILS[@]}"; fi
if (( ${#ALLOC_DETAILS[@]} )); then echo; echo "allocations:"; printf '  %s\n' "${ALLOC_DETAILS[@]}"; fi
if (( ${#NOTES[@]} )); then echo; echo "errors reported (figures marked '!'):"; printf '  %s\n' "${NOTES[@]}"; fi
TOOK="$(elapsed "$SECONDS") ($(IFS=,; echo "${PHASE_TIMES[*]}" | sed 's/,/, /g'))"
echo; echo "the run took $TOOK; estimated: ~$(( (ESTIMATE + 30) / 60 )) min"
echo

report_sections() {
  if (( ${#DS_ROWS[@]} )); then
    echo; echo "$DS_TITLE"; echo
    header=("${DS_HEADER[@]}"); rows=("${DS_ROWS[@]}"); print_markdown_table
    header=("${MAIN_HEADER[@]}"); rows=("${MAIN_ROWS[@]}")
  fi
  if (( ${#CPU_ROWS[@]} )); then
    echo; echo "${CPU_TITLE^}"; echo
    header=("${CPU_HEADER[@]}"); rows=("${CPU_ROWS[@]}"); print_markdown_table
    header=("${MAIN_HEADER[@]}"); rows=("${MAIN_ROWS[@]}")
  fi
  if (( ${#DETAILS[@]} )); then echo; echo "Idle memory:"; echo; printf -- '- %s\n' "${DETAILS[@]}"; fi
  if (( ${#ALLOC_DETAILS[@]} )); then echo; echo "Allocations:"; echo; printf -- '- %s\n' "${ALLOC_DETAILS[@]}"; fi
  if (( ${#NOTES[@]} )); then echo; echo "Errors reported (figures marked '!'):"; echo; printf -- '- %s\n' "${NOTES[@]}"; fi
}
write_report latest.md "aws benchmark" wrk.log latest-wrk.log wrk "The run took $TOOK."
