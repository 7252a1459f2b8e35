#!/usr/bin/env bash
# bench/cgi.sh — compare aws's CGI with lighttpd's mod_cgi and Apache httpd's mod_cgid.
#
#   bash bench/cgi.sh                      # builds aws (release) unless AWS_BIN is set
#   AWS_BIN=.build/release/aws bash bench/cgi.sh
#   BENCH_SECONDS=5 BENCH_ROUNDS=3 bash bench/cgi.sh
#   BENCH_PEERS=lighttpd bash bench/cgi.sh # one peer only
#   BENCH_SKIP_AWS=1 bash bench/cgi.sh     # peers only (to check the harness)
#
# The same three CGI programs, in one folder (DOC/cgi), run under every server as /cgi/NAME:
# a tiny /bin/sh script and a tiny python3 script (req/s with wrk, keep-alive), and a
# /bin/sh script streaming 100 MiB (one curl download, median of several, MiB/s). Before any
# timing every server must answer each program with 200 and the exact expected bytes (and
# the exact 100 MiB of zeros). Besides each figure it reports the CPU time per request (or
# per MiB) of the server's own processes and of the server and its scripts together.
# Servers are started from configs generated in a temporary folder, listen on 127.0.0.1
# only, write no access log, get the same worker count and run.sh's pinning (a CGI program
# inherits its server's CPUs), and are all stopped on exit, including on Ctrl-C. Apache
# (Debian's apache2, mpm_event + mod_cgid) is installed with apt when missing and run as a
# foreground process from its own config, not as the system service. See bench/README.md
# ("CGI") for the details. What it shares with bench/run.sh and bench/tls.sh (common
# settings, tools, pinning, starting and stopping servers, rounds, report helpers) is in
# bench/lib.sh.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------- settings
# Besides lib.sh's (BENCH_SECONDS, BENCH_WARMUP_SECONDS, BENCH_SKIP_AWS, BENCH_SERVER_CPU,
# BENCH_CLIENT_CPU, BENCH_KEEP, AWS_ARGS, BENCH_WORKERS, BENCH_ROUNDS) and BENCH_CONNECTIONS,
# whose default is lower here: every request forks a process (see bench/README.md, "CGI").
CONNECTIONS=${BENCH_CONNECTIONS:-8}
PEERS=${BENCH_PEERS:-lighttpd apache}
CURL_RUNS=${BENCH_CURL_RUNS:-5}
PYTHON=${BENCH_PYTHON:-}
APACHE_THREADS=${BENCH_APACHE_THREADS:-64}

STREAM_BYTES=104857600   # 100 MiB: 1600 blocks of 64 KiB

[[ $WARMUP_SECONDS =~ ^[0-9]+$ ]] || die "BENCH_WARMUP_SECONDS must be a whole number of seconds"
[[ $CONNECTIONS =~ ^[0-9]+$ && $CONNECTIONS -ge 1 ]] || die "BENCH_CONNECTIONS must be a positive integer"
[[ $CURL_RUNS =~ ^[0-9]+$ && $CURL_RUNS -ge 1 ]] || die "BENCH_CURL_RUNS must be a positive integer"
[[ $APACHE_THREADS =~ ^[0-9]+$ && $APACHE_THREADS -ge 1 ]] || die "BENCH_APACHE_THREADS must be a positive integer"
parse_worker_counts
(( ${#COUNTS[@]} > 0 )) || die "BENCH_WORKERS is empty"

# The servers: aws (unless BENCH_SKIP_AWS=1) and the CGI peers. lib.sh puts nginx in SERVERS
# for run.sh and tls.sh; nginx has no CGI, so the list is made anew here.
SERVERS=()
[[ $SKIP_AWS = 1 ]] || SERVERS+=(aws)
for p in $PEERS; do
  case $p in
    lighttpd|apache) [[ " ${SERVERS[*]} " == *" $p "* ]] || SERVERS+=("$p") ;;
    *) die "unknown peer '$p' in BENCH_PEERS (known: lighttpd apache)" ;;
  esac
done
(( ${#SERVERS[@]} > 0 )) || die "no server to measure (BENCH_SKIP_AWS=1 and BENCH_PEERS empty)"
has_server() { [[ " ${SERVERS[*]} " == *" $1 "* ]]; }

# ---------------------------------------------------------------- tools
need wrk wrk
need curl curl
need taskset util-linux
need ps procps
need sha256sum coreutils
if has_server lighttpd; then need lighttpd lighttpd; fi
if has_server apache; then need apache2 apache2; fi
CLK_TCK=$(getconf CLK_TCK)

# The python3 of the python script's #! line: the system's, by absolute path (a python3 found
# on PATH may be a version manager's shim, a shell script that would be timed too).
if [[ -z $PYTHON ]]; then
  [[ -x /usr/bin/python3 ]] || apt_install python3
  PYTHON=/usr/bin/python3
fi
[[ $PYTHON == /* && -x $PYTHON ]] || die "BENCH_PYTHON must be the absolute path of a python3 ($PYTHON)"

# CPU pinning per worker count, as in bench/run.sh (set_pinning N, in lib.sh). The CGI
# programs inherit their server's CPUs: with 1 worker, the server and every script it runs
# share the server's CPU.
init_pinning

# ---------------------------------------------------------------- aws binary
if [[ $SKIP_AWS != 1 ]]; then
  find_aws_bin
  aws_help=$("$AWS_BIN" --help 2>&1 || true)
  [[ $aws_help == *--cgi-dir* ]] || die "$AWS_BIN --help does not mention --cgi-dir: this aws has no CGI (BENCH_SKIP_AWS=1 runs the peers alone)"
  [[ $aws_help == *--workers* ]] || die "$AWS_BIN --help does not mention --workers"
fi

# ---------------------------------------------------------------- temp folder + cleanup
make_temp_dir aws-bench-cgi
set_traps
set -E   # the ERR trap's "failed at line" also for a command failing inside a function
# mod_cgid's socket lives in the temporary folder: a Unix socket path has at most 107 bytes.
if has_server apache && (( ${#T} + 20 > 107 )); then
  die "the temporary folder's path is too long for Apache's CGI socket ($T): set BENCH_DIR to a shorter one"
fi

# ---------------------------------------------------------------- the CGI programs
# DOC/cgi holds the three programs; every server runs them as /cgi/NAME from that folder.
CGI="$DOC/cgi"
mkdir -p "$CGI"
printf '<!doctype html><title>aws bench</title>\n' >"$DOC/index.html"
cat >"$CGI/hello.sh" <<'EOF2'
#!/bin/sh
echo "Content-Type: text/plain"
echo
echo "hello from sh"
EOF2
cat >"$CGI/hello.py" <<EOF2
#!$PYTHON
import sys
sys.stdout.write("Content-Type: text/plain\n\nhello from python\n")
EOF2
# 100 MiB of zeros in 64 KiB writes (a pipe's capacity): dd is a cheap producer (~5 GB/s
# here through a pipe on one CPU, twice head -c's 8 KiB writes), so the server side is what
# is measured. exec: one process, no shell waiting beside it.
cat >"$CGI/stream.sh" <<EOF2
#!/bin/sh
echo "Content-Type: application/octet-stream"
echo
exec dd if=/dev/zero bs=65536 count=$(( STREAM_BYTES / 65536 )) status=none
EOF2
chmod 755 "$DOC" "$CGI" "$CGI"/*
declare -A EXPECT=([hello.sh]=$'hello from sh\n' [hello.py]=$'hello from python\n')
ZERO_SUM=$(head -c "$STREAM_BYTES" /dev/zero | sha256sum | cut -d' ' -f1)
# The programs' process names (comm), to tell them from the servers' own processes.
SCRIPT_COMMS="hello.sh|hello.py|stream.sh|dd"

# ---------------------------------------------------------------- server configs
# The write_* functions read CFG_WORKERS and set CMD.

write_aws() {
  local d="$T/aws" p=$1
  mkdir -p "$d"
  # --log-level warning: no access-log lines. --cgi-max 64 and --cgi-timeout 30 are the
  # defaults, written out: at most 64 programs at once in the whole server.
  CMD=("$AWS_BIN" --root "$DOC" --port "$p" --address "$ADDR" --log-level warning
       --workers "$CFG_WORKERS" --cgi-dir "$CGI" --cgi-max 64 --cgi-timeout 30)
  # shellcheck disable=SC2206
  CMD+=($AWS_EXTRA_ARGS)
}

write_lighttpd() {
  # server.max-worker = 0: one process (lighttpd turns 1 into 0 itself); with N > 1 a watcher
  # process forks N workers that share the listening socket, each running its own scripts.
  # No access log (mod_accesslog is not loaded). stream-response-body = 1: the script's output
  # is sent as it comes, read from the pipe as fast as the script writes (buffered in memory,
  # or temporary files, when the client is slower). Measured here for the 100 MiB row: 0 (the
  # default: the whole response collected first) ~1,350 MiB/s, 2 (stream, little buffering:
  # aws's kind of backpressure) ~1,000-1,500, 1 ~1,400-2,000: its best is used.
  # upload-dirs keeps any temporary file in T.
  local d="$T/lighttpd" p=$1 workers=0
  if (( CFG_WORKERS > 1 )); then workers=$CFG_WORKERS; fi
  mkdir -p "$d/tmp"
  cat >"$d/lighttpd.conf" <<EOF2
server.modules = ( "mod_cgi" )
server.document-root = "$DOC"
server.bind = "$ADDR"
server.port = $p
server.errorlog = "$d/error.log"
server.upload-dirs = ( "$d/tmp" )
server.max-worker = $workers
server.max-keep-alive-requests = 100000
server.max-keep-alive-idle = 65
server.stat-cache-engine = "simple"
server.max-fds = 4096
server.stream-response-body = 1
index-file.names = ( "index.html" )
mimetype.assign = ( "" => "application/octet-stream" )
\$HTTP["url"] =~ "^/cgi/" {
    cgi.assign = ( "" => "" )
}
EOF2
  lighttpd -tt -f "$d/lighttpd.conf" >"$d/test.log" 2>&1 \
    || { cat "$d/test.log" >&2; die "generated lighttpd config is invalid ($d/lighttpd.conf; does this lighttpd ship mod_cgi?)"; }
  CMD=(lighttpd -D -f "$d/lighttpd.conf")
}

APACHE_MODULES=/usr/lib/apache2/modules
write_apache() {
  # Debian's apache2 with a threaded MPM (event) runs CGI through mod_cgid: a daemon process,
  # forked at start, forks the scripts and hands their pipes to the worker threads over a
  # Unix socket (mod_cgi forking from a threaded process is what Debian's a2enmod cgi avoids).
  # N processes (StartServers = ServerLimit = N, no spare-thread churn), each with
  # APACHE_THREADS threads: a thread is busy for the whole of a CGI request, so this lets each
  # run as many scripts at once as aws's --cgi-max and lighttpd (no limit below the client's
  # connections). No CustomLog: no access log. As root, the workers and scripts run as
  # www-data (Apache refuses to serve as root).
  local d="$T/apache" p=$1 n=$CFG_WORKERS th=$APACHE_THREADS user=""
  mkdir -p "$d/run"
  if [[ $(id -u) = 0 ]]; then
    if getent passwd www-data >/dev/null; then user=$'User www-data\nGroup www-data'
    else user=$'User nobody\nGroup nogroup'; fi
  fi
  cat >"$d/apache2.conf" <<EOF2
ServerRoot "$d"
DefaultRuntimeDir "$d/run"
PidFile "$d/apache2.pid"
Mutex file:$d/run default
ErrorLog "$d/error.log"
LogLevel warn
$user
LoadModule mpm_event_module $APACHE_MODULES/mod_mpm_event.so
LoadModule authz_core_module $APACHE_MODULES/mod_authz_core.so
LoadModule alias_module $APACHE_MODULES/mod_alias.so
LoadModule cgid_module $APACHE_MODULES/mod_cgid.so
ScriptSock "$d/run/cgisock"
Listen $ADDR:$p
ServerName $ADDR
DocumentRoot "$DOC"
ScriptAlias /cgi/ "$CGI/"
<Directory "$DOC">
    Require all granted
</Directory>
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 65
StartServers $n
ServerLimit $n
ThreadsPerChild $th
ThreadLimit $th
MaxRequestWorkers $(( n * th ))
MinSpareThreads 1
MaxSpareThreads $(( n * th ))
MaxConnectionsPerChild 0
EOF2
  apache2 -t -f "$d/apache2.conf" >"$d/test.log" 2>&1 \
    || { cat "$d/test.log" >&2; die "generated Apache config is invalid ($d/apache2.conf)"; }
  CMD=(apache2 -f "$d/apache2.conf" -DFOREGROUND)
}

start_server() {   # start_server NAME — PHASE names its logs: w1, w2, ...
  local name=$1 p
  free_port; p=$FREE_PORT
  PORT[$name]=$p
  mkdir -p "$T/$name"
  "write_$name" "$p"
  log "starting $name ($PHASE) on $ADDR:$p: ${CMD[*]}"
  launch_server "$name" "http://$ADDR:$p/"
}

# ---------------------------------------------------------------- checks
check_server() {   # every program once: status, Content-Type, exact bytes; keep-alive
  local name=$1 base="http://$ADDR:${PORT[$1]}" ok=0 out prog sum
  for prog in hello.sh hello.py; do
    rm -f "$T/check.body" "$T/check.head"
    out=$(curl -s --max-time 30 -D "$T/check.head" -o "$T/check.body" -w '%{http_code}' "$base/cgi/$prog" || echo 000)
    if [[ $out != 200 ]]; then
      warn "$name: GET /cgi/$prog -> status $out, expected 200"; ok=1
    elif [[ "$(cat "$T/check.body"; echo .)" != "${EXPECT[$prog]}." ]]; then
      warn "$name: GET /cgi/$prog -> body $(od -c "$T/check.body" | head -n 3 | paste -sd' ' -), expected $(printf '%s' "${EXPECT[$prog]}" | od -c | head -n 1)"; ok=1
    elif ! grep -qi '^Content-Type: text/plain' "$T/check.head"; then
      warn "$name: GET /cgi/$prog -> no 'Content-Type: text/plain' in $(tr -d '\r' <"$T/check.head" | paste -sd'|' -)"; ok=1
    fi
  done
  # wrk measures keep-alive: two requests on one connection must need one connect.
  out=$(curl -s --max-time 30 -o /dev/null -o /dev/null -w '%{num_connects} ' "$base/cgi/hello.sh" "$base/cgi/hello.sh" || true)
  if [[ $out != "1 0 " ]]; then
    warn "$name: two GET /cgi/hello.sh on one connection needed '$out' connects, expected '1 0': no keep-alive after a CGI response"; ok=1
  fi
  sum=$({ curl -s --max-time 120 -w '%{stderr}%{http_code} %{size_download}' "$base/cgi/stream.sh" 2>"$T/check.w" || true; } \
        | sha256sum | cut -d' ' -f1)
  out=$(cat "$T/check.w")
  if [[ $out != "200 $STREAM_BYTES" ]]; then
    warn "$name: GET /cgi/stream.sh -> status/bytes '$out', expected '200 $STREAM_BYTES'"; ok=1
  elif [[ $sum != "$ZERO_SUM" ]]; then
    warn "$name: GET /cgi/stream.sh -> $STREAM_BYTES bytes, but not all zeros (sha256 $sum)"; ok=1
  fi
  return $ok
}

# ---------------------------------------------------------------- measurements
# A row is KEY = WORKLOAD@N. Per server and round: VALS (the figure), SRVU (CPU of the
# server's own processes per request or MiB, µs) and TOTU (the same with its scripts).
# "!" marks errors.
declare -A VALS=() SRVU=() TOTU=() RESULT=() RESULT_SRV=() RESULT_TOT=()
server_ticks() {   # "OWN TOTAL": CPU ticks of the server's processes (its session, less running
  # scripts), without and with the children they have reaped (cutime + cstime: the scripts)
  local pids
  pids=$(ps -o pid=,comm= -s "${PID[$1]}" 2>/dev/null | awk -v re="^($SCRIPT_COMMS)\$" '$2 !~ re { print "/proc/" $1 "/stat" }' || true)
  [[ -n $pids ]] || { echo "0 0"; return; }
  # A process may be gone by now (a child between fork and exec): cat then fails, harmlessly.
  # shellcheck disable=SC2086
  { cat $pids 2>/dev/null || true; } | awk '{ sub(/^.*\) /, ""); o += $12 + $13; c += $14 + $15 } END { print o + 0, o + c }'
}
# mod_cgid's daemon, which forks Apache's scripts, ignores SIGCHLD: the kernel reaps them, and
# their CPU time is added to no process. Apache's "total" cannot be measured this way.
declare -A NO_TOTAL=([apache]=1)
record() { # record SERVER KEY VALUE UNITS OWN-TICKS TOTAL-TICKS — UNITS: requests or MiB done
  local name=$1 key=$2 v=$3 units=$4 own=$5 tot=$6 srv all
  srv=$(awk -v u="$units" -v t="$own" -v hz="$CLK_TCK" 'BEGIN { if (u == "-" || u <= 0) print "-"; else printf "%.0f", t / hz * 1e6 / u }')
  all=$(awk -v u="$units" -v t="$tot" -v hz="$CLK_TCK" 'BEGIN { if (u == "-" || u <= 0) print "-"; else printf "%.0f", t / hz * 1e6 / u }')
  if [[ -n ${NO_TOTAL[$name]:-} ]]; then all="-"; fi
  VALS[$name|$key]="${VALS[$name|$key]:-} $v"
  SRVU[$name|$key]="${SRVU[$name|$key]:-} $srv"
  TOTU[$name|$key]="${TOTU[$name|$key]:-} $all"
  local r=""; if (( ROUNDS > 1 )); then r="r$ROUND"; fi
  printf '   %-8s %-10s %-4s %10s   CPU per %s: server %5s µs, with scripts %6s µs\n' \
    "$name" "$key" "$r" "$v" "$([[ ${ROW_METRIC[$key]} = mib ]] && echo MiB || echo req)" "$srv" "$all" >&2
}

write_wrk_lua

sample_before() { S0=$(server_ticks "$1"); }
sample_after()  { S1=$(server_ticks "$1"); }

run_wrk() {   # run_wrk SERVER KEY URL — keep-alive req/s
  wrk_measure "$@"
  record "$1" "$2" "$WRK_VALUE" "$WRK_REQUESTS" $(( ${S1% *} - ${S0% *} )) $(( ${S1#* } - ${S0#* } ))
}

run_curl() {  # run_curl SERVER KEY URL — median of CURL_RUNS 100 MiB downloads, MiB/s
  local name=$1 key=$2 url=$3 speeds="" v code size speed bad=0 good=0 c0 c1
  "${CLI_PIN[@]}" curl -s -o /dev/null --max-time 120 "$url" || true   # warm-up
  c0=$(server_ticks "$name")
  for _ in $(seq "$CURL_RUNS"); do
    v=$("${CLI_PIN[@]}" curl -s -o /dev/null --max-time 120 -w '%{http_code} %{size_download} %{speed_download}' "$url" || true)
    echo "--- $name $key round $ROUND: ${CLI_PIN[*]:+${CLI_PIN[*]} }curl $url -> $v" >>"$T/raw.log"
    read -r code size speed <<<"$v"
    if [[ $code != 200 || $size != "$STREAM_BYTES" ]]; then bad=$((bad + 1)); continue; fi
    good=$((good + 1)); speeds+=" $(awk -v s="$speed" 'BEGIN { printf "%.1f", s / 1048576 }')"
  done
  c1=$(server_ticks "$name")
  v=$(median "$speeds" mib)
  if (( bad )); then
    note "$name" "$key" "$bad of $CURL_RUNS downloads failed (last: status ${code:-?}, ${size:-0} bytes)"
    [[ $v = - ]] || v+="!"
  fi
  record "$name" "$key" "$v" "$(( good * STREAM_BYTES / 1048576 ))" $(( ${c1% *} - ${c0% *} )) $(( ${c1#* } - ${c0#* } ))
}

# ---------------------------------------------------------------- workloads and rows
add_workload sh     "tiny sh script, wrk -c$CONNECTIONS (req/s)"     rps 1
add_workload py     "tiny python3 script, wrk -c$CONNECTIONS (req/s)" rps 1
add_workload stream "sh script streaming 100 MiB, 1 curl, median of $CURL_RUNS (MiB/s)" mib 0
add_rows

# ---------------------------------------------------------------- run
measure() {   # measure SERVER WORKLOAD KEY — one figure (run_rounds, in lib.sh, calls it)
  local s=$1 id=$2 key=$3 base="http://$ADDR:${PORT[$1]}/cgi"
  case $id in
    sh)     run_wrk "$s" "$key" "$base/hello.sh" ;;
    py)     run_wrk "$s" "$key" "$base/hello.py" ;;
    stream) run_curl "$s" "$key" "$base/stream.sh" ;;
  esac
}
declare -a PIN_NOTES=()
for n in "${COUNTS[@]}"; do
  set_pinning "$n"; CFG_WORKERS=$n; PHASE=w$n
  PIN_NOTES+=("$n worker(s): wrk -t$WRK_THREADS, $PIN_NOTE")
  for s in "${SERVERS[@]}"; do
    start_server "$s" || die "$s did not start with $n worker(s) (logs above; rerun with BENCH_KEEP=1 to keep $T)"
  done
  for s in "${SERVERS[@]}"; do
    check_server "$s" || die "$s serves wrong CGI responses with $n worker(s) (see above)"
  done
  log "$n worker(s): every program checked on every server (200, exact bytes, keep-alive); ${SECONDS_PER_RUN}s per run, ${PIN_NOTES[-1]}"

  run_rounds "$n" measure "${SERVERS[@]}"
  for s in "${SERVERS[@]}"; do stop_server "$s"; done
done
ROUND=1

# ---------------------------------------------------------------- report
has_aws=0; [[ $SKIP_AWS = 1 ]] || has_aws=1
PEERS_RUN=(); for s in "${SERVERS[@]}"; do if [[ $s != aws ]]; then PEERS_RUN+=("$s"); fi; done
show_best=0; if (( has_aws && ${#PEERS_RUN[@]} > 1 )); then show_best=1; fi

header=("workload" "workers")
for s in "${SERVERS[@]}"; do header+=("$s"); done
if (( has_aws )); then for s in "${PEERS_RUN[@]}"; do header+=("aws/$s"); done; fi
if (( show_best )); then header+=("aws/best peer"); fi
for s in "${SERVERS[@]}"; do header+=("$s server µs"); done
for s in "${SERVERS[@]}"; do header+=("$s total µs"); done
rows=()
for key in "${ROW_KEYS[@]}"; do
  n=${key##*@}; metric=${ROW_METRIC[$key]}
  for s in "${SERVERS[@]}"; do
    RESULT[$s|$key]=$(median "${VALS[$s|$key]:-}" "$metric")
    RESULT_SRV[$s|$key]=$(median "${SRVU[$s|$key]:-}" rps)
    RESULT_TOT[$s|$key]=$(median "${TOTU[$s|$key]:-}" rps)
  done
  row=("${ROW_LABEL[$key]}" "$n")
  for s in "${SERVERS[@]}"; do row+=("${RESULT[$s|$key]}"); done
  if (( has_aws )); then for s in "${PEERS_RUN[@]}"; do row+=("$(ratio "${RESULT[aws|$key]}" "${RESULT[$s|$key]}")"); done; fi
  if (( show_best )); then
    best=""; bestv=""
    for s in "${PEERS_RUN[@]}"; do
      v=${RESULT[$s|$key]:--}; [[ $v = - ]] && continue
      if [[ -z $best ]] || awk -v a="$v" -v b="$bestv" 'BEGIN { exit !(a + 0 > b + 0) }'; then best=$s; bestv=$v; fi
    done
    if [[ -n $best ]]; then r=$(ratio "${RESULT[aws|$key]}" "$bestv"); [[ $r = - ]] || r+=" ($best)"; row+=("$r")
    else row+=("-"); fi
  fi
  for s in "${SERVERS[@]}"; do row+=("${RESULT_SRV[$s|$key]}"); done
  for s in "${SERVERS[@]}"; do row+=("${RESULT_TOT[$s|$key]}"); done
  rows+=("$(IFS=$'\t'; echo "${row[*]}")")
done

versions=""
if has_server lighttpd; then versions+="lighttpd $({ lighttpd -v 2>&1 || true; } | sed -n 's/^lighttpd\/\([^ ]*\).*/\1/p') (mod_cgi), "; fi
if has_server apache; then versions+="Apache $({ apache2 -v 2>&1 || true; } | sed -n 's/^Server version: Apache\/\([^ ]*\).*/\1/p') (mpm_event + mod_cgid, $APACHE_THREADS threads per process), "; fi
versions+="$("$PYTHON" --version 2>&1) ($PYTHON), $(version_of wrk), $(curl --version | awk 'NR == 1 {print "curl " $2}')"
if (( has_aws )); then versions+=", $(version_of aws) ($AWS_BIN)"; fi
meta=$(machine_line "$versions")
runs="${SECONDS_PER_RUN}s per wrk run after a ${WARMUP_SECONDS}s warm-up, -c$CONNECTIONS keep-alive$(rounds_line); CGI programs run on their server's CPUs"

legend=(
  "req/s, MiB/s: higher is better; aws/PEER > 1 means aws is faster."
  "server µs: CPU time (user + system) of the server's own processes per request (req/s rows) or per MiB (MiB/s row); total µs: the same with the CGI programs the server ran (the children it reaped)."
)
if (( ${#NOTES[@]} )); then legend+=("!: errors (listed below)."); fi
if has_server apache; then
  legend+=("apache total µs: '-', not measurable this way: mod_cgid's daemon ignores SIGCHLD, so the kernel reaps Apache's scripts and their CPU time is counted in no process.")
fi

echo
echo "aws CGI benchmark — $meta"
echo "$runs"
echo
print_table
echo; printf '%s\n' "${legend[@]}"
if (( ${#NOTES[@]} )); then echo; echo "errors and warnings:"; printf '  %s\n' "${NOTES[@]}"; fi
echo

report_sections() {
  if (( ${#NOTES[@]} )); then echo; echo "Errors and warnings:"; echo; printf -- '- %s\n' "${NOTES[@]}"; fi
}
write_report cgi-latest.md "aws CGI benchmark" raw.log cgi-latest-raw.log client
