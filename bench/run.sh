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
WORKERS_PATHS=${BENCH_WORKERS_PATHS:-static}
IDLE_CONNS=${BENCH_IDLE_CONNECTIONS:-10000}
IDLE_SETTLE=${BENCH_IDLE_SETTLE:-2}

[[ $IDLE_CONNS =~ ^[0-9]+$ && $IDLE_CONNS -le 25000 ]] || die "BENCH_IDLE_CONNECTIONS must be 0 to 25000 (0: no idle-memory row)"
[[ $IDLE_SETTLE =~ ^[0-9]+([.][0-9]+)?$ ]] || die "BENCH_IDLE_SETTLE must be a number of seconds"
# Worker counts, ascending, without repeats; "none" measures only the idle-memory row.
if [[ $WORKER_COUNTS != none ]]; then parse_worker_counts " (or set BENCH_WORKERS=none)"; fi
(( ${#COUNTS[@]} > 0 || IDLE_CONNS > 0 )) || die "nothing to measure: BENCH_WORKERS=none and BENCH_IDLE_CONNECTIONS=0"
for k in $WORKERS_PATHS; do
  [[ $k = static || $k = dynamic ]] || die "BENCH_WORKERS_PATHS: '$k' is not static or dynamic"
done

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
if ! command -v openssl >/dev/null; then warn "openssl not found: files will be random, not deterministic"; fi

# CPU pinning per worker count (set_pinning N, in lib.sh): the server on CPUs of its own, wrk
# and curl on others, when the machine has enough. Every server gets the same treatment at a
# given N.
init_pinning

# ---------------------------------------------------------------- aws binary
if [[ $SKIP_AWS != 1 ]]; then find_aws_bin; fi
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
# setup, with room for IDLE_MAXCONN connections and keep-alive timeouts of 60 s or more).
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
  local p=$1 conns=4096 main=""
  if (( CFG_IDLE )); then conns=$IDLE_MAXCONN; main="worker_rlimit_nofile $NOFILE_IDLE;"; fi
  write_nginx_conf warn "$conns" "$main" <<EOF2
    server {
        listen $ADDR:$p;
        server_name localhost;
        root $DOC;
        # The plugin workload's peer: a constant response from the server itself.
        location = /hello { default_type text/plain; return 200 "Hello, bench!\n"; }
    }
EOF2
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

start_server() {   # start_server NAME — PHASE names its logs: w1, w2, ..., idle
  local name=$1 p
  free_port; p=$FREE_PORT
  PORT[$name]=$p
  "write_$name" "$p"
  mkdir -p "$T/$name"
  # The idle-memory servers run under prlimit, which execs them (after taskset).
  if (( CFG_IDLE )); then CMD=("${IDLE_LIMIT[@]}" "${CMD[@]}"); fi
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
declare -a DETAILS=()

record() { # record SERVER KEY VALUE
  VALS[$1|$2]="${VALS[$1|$2]:-} $3"
  local r=""; if (( ROUNDS > 1 )); then r="r$ROUND"; fi
  printf '   %-9s %-22s %-4s %s\n' "$1" "$2" "$r" "$3" >&2
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
    errs=$(wrk_errors "$line")
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
add_rows
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
#    ROUNDS times, the server order reversed on every other round (run_rounds, in lib.sh).
measure() {   # measure SERVER WORKLOAD KEY — one figure
  local s=$1 id=$2 key=$3 kind rest size mode base url
  kind=${id%%-*}; rest=${id#*-}; size=${rest%%-*}; mode=${rest#*-}
  base="http://$ADDR:${PORT[$s]}"
  if [[ $kind = plugin ]]; then
    case $s/$id in
      aws/plugin-hello-ka)     run_wrk "$s" "$key" "$base/hello?name=bench" "$CONNECTIONS" rps ;;
      nginx/plugin-hello-ka)   run_wrk "$s" "$key" "$base/hello" "$CONNECTIONS" rps ;;
      aws/plugin-stream-1g)    run_curl "$s" "$key" "$base/stream/bytes?size=1073741824" 1073741824 ;;
      nginx/plugin-stream-1g)  run_curl "$s" "$key" "$base/gen/1g.bin" 1073741824 ;;
      *) return 0 ;;   # only aws and nginx run the plugin workloads
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
}
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

  run_rounds "$n" measure "${ACTIVE[@]}"
  for s in "${ACTIVE[@]}"; do stop_server "$s"; done
done
ROUND=1

# ---------------------------------------------------------------- report
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
  runs="${SECONDS_PER_RUN}s per wrk run after a ${WARMUP_SECONDS}s warm-up, -c$CONNECTIONS$(rounds_line); "
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
print_table
echo; printf '%s\n' "${legend[@]}"
if (( ${#DETAILS[@]} )); then echo; echo "idle memory:"; printf '  %s\n' "${DETAILS[@]}"; fi
if (( ${#NOTES[@]} )); then echo; echo "errors reported (figures marked '!'):"; printf '  %s\n' "${NOTES[@]}"; fi
echo

report_sections() {
  if (( ${#DETAILS[@]} )); then echo; echo "Idle memory:"; echo; printf -- '- %s\n' "${DETAILS[@]}"; fi
  if (( ${#NOTES[@]} )); then echo; echo "Errors reported (figures marked '!'):"; echo; printf -- '- %s\n' "${NOTES[@]}"; fi
}
write_report latest.md "aws benchmark" wrk.log latest-wrk.log wrk
