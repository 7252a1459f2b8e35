#!/usr/bin/env bash
# bench/run.sh — compare aws with nginx (and optionally lighttpd, h2o) on this machine.
#
#   bash bench/run.sh                 # or: make bench
#   BENCH_SECONDS=3 bash bench/run.sh
#   BENCH_PEERS="nginx lighttpd h2o" bash bench/run.sh
#
# Every server is started from a config generated in a temporary folder, listens on
# 127.0.0.1 only, runs pinned to one CPU (BENCH_SERVER_CPU, default 1) while the load
# generator runs on another (BENCH_CLIENT_CPU, default 0). All servers are stopped on
# exit, including on Ctrl-C. See bench/README.md for what is measured and the knobs.
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

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
RESULTS_DIR="$HERE/results"
ADDR=127.0.0.1   # never anything else

log()  { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
warn() { printf '\033[33mwarning:\033[0m %s\n' "$*" >&2; }
die()  { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

[[ $SECONDS_PER_RUN =~ ^[0-9]+$ && $SECONDS_PER_RUN -ge 1 ]] || die "BENCH_SECONDS must be a positive integer"
[[ ${BASH_VERSINFO[0]} -ge 4 ]] || die "bash 4 or newer is needed"

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
if ! command -v openssl >/dev/null; then warn "openssl not found: files will be random, not deterministic"; fi

# CPU pinning: server on SERVER_CPU, wrk/curl on CLIENT_CPU, when the machine has both.
NCPU=$(nproc)
if (( NCPU >= 2 )) && (( SERVER_CPU < NCPU && CLIENT_CPU < NCPU )) && (( SERVER_CPU != CLIENT_CPU )); then
  SRV_PIN=(taskset -c "$SERVER_CPU"); CLI_PIN=(taskset -c "$CLIENT_CPU")
  PIN_NOTE="server on CPU $SERVER_CPU, client on CPU $CLIENT_CPU"
else
  warn "$NCPU CPU(s): not pinning (needs two distinct CPUs)"
  SRV_PIN=(); CLI_PIN=(); PIN_NOTE="not pinned ($NCPU CPU)"
fi

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
write_nginx() {
  local d="$T/nginx" p=$1
  mkdir -p "$d"/{client_body,proxy,fastcgi,uwsgi,scgi}
  {
    if [[ $(id -u) = 0 ]]; then echo "user root;"; fi
    cat <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
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
EOF
  } >"$d/nginx.conf"
  nginx -t -q -p "$d/" -c "$d/nginx.conf" -e "$d/error.log" 2>"$d/test.log" \
    || { cat "$d/test.log" >&2; die "generated nginx config is invalid ($d/nginx.conf)"; }
  CMD=(nginx -p "$d/" -c "$d/nginx.conf" -e "$d/error.log")
}

write_lighttpd() {
  local d="$T/lighttpd" p=$1
  mkdir -p "$d"
  cat >"$d/lighttpd.conf" <<EOF
server.document-root = "$DOC"
server.bind = "$ADDR"
server.port = $p
server.errorlog = "$d/error.log"
server.max-worker = 0
server.max-keep-alive-requests = 100000
server.max-keep-alive-idle = 65
server.stat-cache-engine = "simple"
server.max-fds = 4096
index-file.names = ( "index.html" )
mimetype.assign = ( "" => "application/octet-stream" )
EOF
  lighttpd -tt -f "$d/lighttpd.conf" >"$d/test.log" 2>&1 \
    || { cat "$d/test.log" >&2; die "generated lighttpd config is invalid"; }
  CMD=(lighttpd -D -f "$d/lighttpd.conf")
}

write_h2o() {
  local d="$T/h2o" p=$1
  mkdir -p "$d"
  {
    if [[ $(id -u) = 0 ]]; then echo "user: root"; fi
    cat <<EOF
num-threads: 1
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
EOF
  } >"$d/h2o.conf"
  h2o -t -c "$d/h2o.conf" >"$d/test.log" 2>&1 \
    || { cat "$d/test.log" >&2; die "generated h2o config is invalid"; }
  CMD=(h2o -c "$d/h2o.conf")
}

write_aws() {
  local d="$T/aws" p=$1
  mkdir -p "$d"
  # --log-level warning: no access-log lines (the equivalent of nginx's access_log off).
  # shellcheck disable=SC2206
  CMD=("$AWS_BIN" --root "$DOC" --port "$p" --address "$ADDR" --log-level warning $AWS_EXTRA_ARGS)
  # The example plugins (make plugins) give the plugin workloads.
  if [[ -f $REPO/Plugins/hello.so && -f $REPO/Plugins/stream.so ]]; then CMD+=(--plugins "$REPO/Plugins"); fi
}

start_server() {
  local name=$1 p
  free_port; p=$FREE_PORT
  PORT[$name]=$p
  "write_$name" "$p"
  mkdir -p "$T/$name"
  log "starting $name on $ADDR:$p: ${CMD[*]}"
  # setsid: own process group (killed as a whole on exit) and no terminal signals.
  if command -v setsid >/dev/null; then
    setsid "${SRV_PIN[@]}" "${CMD[@]}" </dev/null >"$T/$name/stdout.log" 2>"$T/$name/stderr.log" &
  else
    "${SRV_PIN[@]}" "${CMD[@]}" </dev/null >"$T/$name/stdout.log" 2>"$T/$name/stderr.log" &
  fi
  PID[$name]=$!
  for _ in $(seq 100); do
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then
      tail -n 20 "$T/$name/stderr.log" "$T/$name/stdout.log" "$T/$name/error.log" 2>/dev/null >&2 || true
      unset "PID[$name]"
      return 1
    fi
    curl -s -o /dev/null --max-time 1 "http://$ADDR:$p/" && return 0
    sleep 0.1
  done
  tail -n 20 "$T/$name/stderr.log" "$T/$name/error.log" 2>/dev/null >&2 || true
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
declare -A RESULT=()
declare -a NOTES=()

# A wrk script whose done() prints exact totals (wrk's own summary rounds to 2 decimals).
write_wrk_lua() {
  cat >"$T/summary.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d bytes=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
end
EOF
}

run_wrk() {   # run_wrk SERVER ID URL CONNS METRIC(rps|mib) [HEADER]
  local name=$1 id=$2 url=$3 conns=$4 metric=$5 hdr=${6:-} out line errs
  local -a extra=(--timeout 10s -s "$T/summary.lua")
  if [[ -n $hdr ]]; then extra+=(-H "$hdr"); fi
  # warm-up
  timeout --foreground $(( WARMUP_SECONDS + 30 )) \
    "${CLI_PIN[@]}" wrk -t1 -c"$conns" -d"${WARMUP_SECONDS}s" "${extra[@]}" "$url" >/dev/null 2>&1 || true
  out=$(timeout --foreground $(( SECONDS_PER_RUN + 30 )) \
    "${CLI_PIN[@]}" wrk -t1 -c"$conns" -d"${SECONDS_PER_RUN}s" "${extra[@]}" "$url" 2>&1) || true
  printf '%s\n' "--- $name $id: wrk -t1 -c$conns -d${SECONDS_PER_RUN}s ${hdr:+-H '$hdr' }$url" "$out" >>"$T/wrk.log"
  line=$(grep '^BENCH ' <<<"$out" || true)
  if [[ -z $line ]]; then
    NOTES+=("$name, $id: wrk failed: $(tail -n 2 <<<"$out" | paste -sd' ' -)")
    RESULT[$name|$id]="-"
  else
    # "non-2xx" counts responses with status >= 400 (wrk's summary.errors.status).
    errs=$(awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                  s = ""
                  if (v["status"] > 0) s = s sprintf("%d non-2xx/3xx responses; ", v["status"])
                  if (v["connect"] + v["read"] + v["write"] + v["timeout"] > 0)
                    s = s sprintf("socket errors: connect %d, read %d, write %d, timeout %d", v["connect"], v["read"], v["write"], v["timeout"])
                  sub(/; $/, "", s); print s }' <<<"$line")
    RESULT[$name|$id]=$(awk -v m="$metric" '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        t = v["duration_us"] / 1e6; if (t <= 0) { print "-"; exit }
        if (m == "mib") printf "%.1f", v["bytes"] / t / 1048576; else printf "%d", v["requests"] / t + 0.5 }' <<<"$line")
    if [[ -n $errs ]]; then NOTES+=("$name, $id: $errs"); RESULT[$name|$id]+="!"; fi
  fi
  printf '   %-9s %-30s %s\n' "$name" "$id" "${RESULT[$name|$id]}" >&2
}

run_curl() {  # run_curl SERVER ID URL [BYTES] — best of CURL_RUNS single downloads, MiB/s
  local name=$1 id=$2 url=$3 want=${4:-${SIZE[100m]}} best=0 v code size speed bad=0
  "${CLI_PIN[@]}" curl -s -o /dev/null --max-time 120 "$url" || true   # warm-up
  for _ in $(seq "$CURL_RUNS"); do
    v=$("${CLI_PIN[@]}" curl -s -o /dev/null --max-time 120 -w '%{http_code} %{size_download} %{speed_download}' "$url" || true)
    read -r code size speed <<<"$v"
    if [[ $code != 200 || $size != "$want" ]]; then
      bad=$((bad + 1)); continue
    fi
    best=$(awk -v a="$best" -v b="$speed" 'BEGIN {print (b > a) ? b : a}')
  done
  if [[ $best = 0 ]]; then RESULT[$name|$id]="-"
  else RESULT[$name|$id]=$(awk -v b="$best" 'BEGIN {printf "%.1f", b / 1048576}'); fi
  if (( bad )); then
    NOTES+=("$name, $id: $bad of $CURL_RUNS downloads failed (last: status ${code:-?}, ${size:-0} bytes)")
    [[ ${RESULT[$name|$id]} = - ]] || RESULT[$name|$id]+="!"
  fi
  printf '   %-9s %-30s %s\n' "$name" "$id" "${RESULT[$name|$id]}" >&2
}

# ---------------------------------------------------------------- run
for s in "${SERVERS[@]}"; do
  if ! start_server "$s"; then
    [[ $s = aws || $s = nginx ]] && die "$s did not start (logs above)"
    warn "$s did not start: left out"; continue
  fi
done
for s in "${SERVERS[@]}"; do
  if [[ -z ${PID[$s]:-} ]]; then continue; fi
  if ! check_server "$s"; then
    [[ $s = aws || $s = nginx ]] && die "$s serves wrong responses (see above)"
    warn "$s serves wrong responses: left out"; stop_server "$s"
  fi
done
ACTIVE=()
for s in "${SERVERS[@]}"; do if [[ -n ${PID[$s]:-} ]]; then ACTIVE+=("$s"); fi; done
write_wrk_lua
log "all responses checked (200, right lengths); measuring ${ACTIVE[*]}, ${SECONDS_PER_RUN}s per run, $PIN_NOTE"

declare -a WORKLOADS=() LABELS=()
for kind in static dynamic; do
  WORKLOADS+=("$kind-1k-ka")    LABELS+=("/$kind/ 1 KiB, keep-alive (req/s)")
  WORKLOADS+=("$kind-1k-close") LABELS+=("/$kind/ 1 KiB, Connection: close (req/s)")
  WORKLOADS+=("$kind-1m-ka")    LABELS+=("/$kind/ 1 MiB, keep-alive (req/s)")
  WORKLOADS+=("$kind-100m-curl") LABELS+=("/$kind/ 100 MiB, 1 curl stream (MiB/s)")
  if [[ $BIG_WRK = 1 ]]; then WORKLOADS+=("$kind-100m-wrk4"); LABELS+=("/$kind/ 100 MiB, wrk -c4 (MiB/s)"); fi
done
# Plugin workloads: aws's hello plugin vs nginx's `return 200`; aws's stream plugin generating
# 1 GiB vs nginx sending a 1 GiB (sparse, cached) file. Only aws and nginx run these.
if [[ -f $REPO/Plugins/hello.so && -f $REPO/Plugins/stream.so ]]; then
  WORKLOADS+=("plugin-hello-ka")  LABELS+=("plugin hello vs nginx return 200, keep-alive (req/s)")
  WORKLOADS+=("plugin-stream-1g") LABELS+=("plugin 1 GiB stream vs nginx 1 GiB file, 1 curl (MiB/s)")
else
  warn "Plugins/hello.so or Plugins/stream.so missing (run make plugins): plugin workloads left out"
fi

# Each workload is run on every server in turn, so slow drifts of the machine hit all alike.
for id in "${WORKLOADS[@]}"; do
  kind=${id%%-*}; rest=${id#*-}; size=${rest%%-*}; mode=${rest#*-}
  if [[ $kind = plugin ]]; then
    for s in aws nginx; do
      [[ " ${ACTIVE[*]} " == *" $s "* ]] || continue
      base="http://$ADDR:${PORT[$s]}"
      case $id in
        plugin-hello-ka)
          if [[ $s = aws ]]; then run_wrk "$s" "$id" "$base/hello?name=bench" "$CONNECTIONS" rps
          else run_wrk "$s" "$id" "$base/hello" "$CONNECTIONS" rps; fi ;;
        plugin-stream-1g)
          if [[ $s = aws ]]; then run_curl "$s" "$id" "$base/stream/bytes?size=1073741824" 1073741824
          else run_curl "$s" "$id" "$base/gen/1g.bin" 1073741824; fi ;;
      esac
    done
    continue
  fi
  for s in "${ACTIVE[@]}"; do
    url="http://$ADDR:${PORT[$s]}/$kind/$size.bin"
    case $mode in
      ka)    run_wrk "$s" "$id" "$url" "$CONNECTIONS" rps ;;
      close) run_wrk "$s" "$id" "$url" "$CONNECTIONS" rps "Connection: close" ;;
      curl)  run_curl "$s" "$id" "$url" ;;
      wrk4)  run_wrk "$s" "$id" "$url" 4 mib ;;
    esac
    kill -0 "${PID[$s]}" 2>/dev/null || die "$s died during $id (logs in $T/$s; rerun with BENCH_KEEP=1)"
  done
done

# ---------------------------------------------------------------- report
ratio() {   # "!" marks a figure with errors; the ratio is then marked too
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0 || a == "") { print "-"; exit }
    printf "%.2f%s", (a + 0) / (b + 0), (a ~ /!/ || b ~ /!/) ? "!" : "" }'
}
has_aws=0; if [[ " ${ACTIVE[*]} " == *" aws "* ]]; then has_aws=1; fi

header=("workload" "${ACTIVE[@]}"); (( has_aws )) && header+=("aws/nginx")
rows=()
for i in "${!WORKLOADS[@]}"; do
  id=${WORKLOADS[$i]}; row=("${LABELS[$i]}")
  for s in "${ACTIVE[@]}"; do row+=("${RESULT[$s|$id]:--}"); done
  if (( has_aws )); then row+=("$(ratio "${RESULT[aws|$id]:--}" "${RESULT[nginx|$id]:--}")"); fi
  rows+=("$(IFS=$'\t'; echo "${row[*]}")")
done

cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || echo "?")
os=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME" || uname -s)
versions="nginx $({ nginx -v 2>&1 || true; } | sed 's/.*nginx\///')"
if [[ " ${ACTIVE[*]} " == *" lighttpd "* ]]; then versions+=", lighttpd $({ lighttpd -v 2>&1 || true; } | sed -n 's/^lighttpd\/\([^ ]*\).*/\1/p')"; fi
if [[ " ${ACTIVE[*]} " == *" h2o "* ]]; then versions+=", h2o $({ h2o --version 2>&1 || true; } | sed -n 's/^h2o version //p')"; fi
versions+=", $({ wrk --version 2>&1 || true; } | awk 'NR == 1 {print "wrk " $2}')"
meta="$(date -u '+%Y-%m-%d %H:%M UTC'), $os, $cpu_model, $NCPU CPUs; $versions; ${SECONDS_PER_RUN}s per wrk run, -t1 -c$CONNECTIONS; $PIN_NOTE"

echo
echo "aws benchmark — $meta"
echo
{ (IFS=$'\t'; echo "${header[*]}"); printf '%s\n' "${rows[@]}"; } | awk -F'\t' '
  { for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) }; if (NF > nf) nf = NF }
  END { for (r = 1; r <= NR; r++) { line = ""
          for (i = 1; i <= nf; i++) line = line (i == 1 ? sprintf("%-" w[i] "s", cell[r, i]) : sprintf("  %" w[i] "s", cell[r, i]))
          print line } }'
if (( ${#NOTES[@]} )); then echo; echo "errors reported (figures marked '!'):"; printf '  %s\n' "${NOTES[@]}"; fi
echo

mkdir -p "$RESULTS_DIR"
{
  echo "# aws benchmark"
  echo
  echo "$meta"
  echo
  echo "| $(IFS='|'; echo "${header[*]}" | sed 's/|/ | /g') |"
  echo "|$(for _ in "${header[@]}"; do printf -- '---|'; done)"
  for r in "${rows[@]}"; do echo "| ${r//$'\t'/ | } |"; done
  echo
  echo "req/s: higher is better; MiB/s: higher is better; aws/nginx > 1 means aws is faster."
  if (( ${#NOTES[@]} )); then echo; echo "Errors reported by wrk/curl (figures marked '!'):"; echo; printf -- '- %s\n' "${NOTES[@]}"; fi
} >"$RESULTS_DIR/latest.md"
cp "$T/wrk.log" "$RESULTS_DIR/latest-wrk.log" 2>/dev/null || true
log "written $RESULTS_DIR/latest.md (raw wrk output: $RESULTS_DIR/latest-wrk.log)"
