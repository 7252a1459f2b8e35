# bench/lib.sh — what bench/run.sh (plain HTTP) and bench/tls.sh (HTTPS) share: the common
# BENCH_* settings, messages, tool installation, CPU pinning, the aws binary, the temporary
# folder and its cleanup, ports, nginx's common config, starting and stopping servers, wrk's
# summary hook, the workload rows and rounds, medians, ratios and the tables.
#
# Sourced by both scripts, after `set -euo pipefail`; not meant to be run. When sourced it
# reads the common settings, checks them and sets a few constants; everything else is a
# function that the scripts call in their own order. Globals the functions read or set are
# named in their comments.

# ---------------------------------------------------------------- messages
log()  { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
warn() { printf '\033[33mwarning:\033[0m %s\n' "$*" >&2; }
die()  { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

[[ ${BASH_VERSINFO[0]} -ge 4 ]] || die "bash 4 or newer is needed"

# ---------------------------------------------------------------- common settings
SECONDS_PER_RUN=${BENCH_SECONDS:-5}
WARMUP_SECONDS=${BENCH_WARMUP_SECONDS:-1}
CONNECTIONS=${BENCH_CONNECTIONS:-50}
SKIP_AWS=${BENCH_SKIP_AWS:-0}
SERVER_CPU=${BENCH_SERVER_CPU:-1}
CLIENT_CPU=${BENCH_CLIENT_CPU:-0}
KEEP=${BENCH_KEEP:-0}
AWS_EXTRA_ARGS=${AWS_ARGS:-}
WORKER_COUNTS=${BENCH_WORKERS:-1 2}
ROUNDS=${BENCH_ROUNDS:-1}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
RESULTS_DIR="$HERE/results"
ADDR=127.0.0.1   # never anything else

[[ $SECONDS_PER_RUN =~ ^[0-9]+$ && $SECONDS_PER_RUN -ge 1 ]] || die "BENCH_SECONDS must be a positive integer"
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -ge 1 ]] || die "BENCH_ROUNDS must be a positive integer"

declare -a COUNTS=()
parse_worker_counts() {   # parse_worker_counts [HINT] — COUNTS: WORKER_COUNTS ascending, without repeats
  local n
  for n in $WORKER_COUNTS; do
    [[ $n =~ ^[0-9]+$ && $n -ge 1 ]] || die "BENCH_WORKERS: '$n' is not a positive integer${1:-}"
  done
  mapfile -t COUNTS < <(printf '%s\n' $WORKER_COUNTS | sort -n -u)
}

# The servers: nginx is always the reference, aws unless BENCH_SKIP_AWS=1.
declare -a SERVERS=()
[[ $SKIP_AWS = 1 ]] || SERVERS+=(aws)
SERVERS+=(nginx)

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

# ---------------------------------------------------------------- CPU pinning
# Per worker count N, the same for every server:
# - N = 1: the server on SERVER_CPU, the client(s) on CLIENT_CPU, wrk -t1, when the machine
#   has both;
# - N > 1: with at least 2N CPUs, the server on CPUs N..2N-1 and the client(s) (wrk -tN) on
#   CPUs 0..N-1; with fewer, nothing is pinned (server and client share every CPU) and wrk
#   runs -tN, or one thread per CPU if that is fewer.
# How PIN_NOTE names the two sides: run.sh has one load generator, tls.sh several clients.
PIN_CLIENT="client"
PIN_BOTH="server and client"
SRV_PIN=(); CLI_PIN=(); WRK_THREADS=1; PIN_NOTE=""; SRV_CPUS=0; CLI_CPUS=1
init_pinning() {   # NCPU, and a warning when there is nothing to pin to
  NCPU=$(nproc)
  if (( NCPU < 2 )); then warn "$NCPU CPU: nothing is pinned"; fi
}
set_pinning() {    # set_pinning N — sets SRV_PIN, CLI_PIN, WRK_THREADS, PIN_NOTE and SRV_CPUS
  # (CPUs the server has to itself, 0 when not pinned), CLI_CPUS (CPUs the clients may use)
  local n=$1
  if (( n == 1 )); then
    WRK_THREADS=1
    if (( NCPU >= 2 && SERVER_CPU < NCPU && CLIENT_CPU < NCPU && SERVER_CPU != CLIENT_CPU )); then
      SRV_PIN=(taskset -c "$SERVER_CPU"); CLI_PIN=(taskset -c "$CLIENT_CPU"); SRV_CPUS=1; CLI_CPUS=1
      PIN_NOTE="server on CPU $SERVER_CPU, $PIN_CLIENT on CPU $CLIENT_CPU"
    else
      SRV_PIN=(); CLI_PIN=(); SRV_CPUS=0; CLI_CPUS=$NCPU
      PIN_NOTE="not pinned ($NCPU CPUs; BENCH_SERVER_CPU/BENCH_CLIENT_CPU unusable)"
    fi
  elif (( NCPU >= 2 * n )); then
    WRK_THREADS=$n; SRV_CPUS=$n; CLI_CPUS=$n
    SRV_PIN=(taskset -c "$n-$(( 2 * n - 1 ))"); CLI_PIN=(taskset -c "0-$(( n - 1 ))")
    PIN_NOTE="server on CPUs $n-$(( 2 * n - 1 )), $PIN_CLIENT on CPUs 0-$(( n - 1 ))"
  else
    WRK_THREADS=$(( n < NCPU ? n : NCPU )); SRV_CPUS=0; CLI_CPUS=$NCPU
    SRV_PIN=(); CLI_PIN=(); PIN_NOTE="not pinned ($NCPU CPUs, fewer than 2 x $n): $PIN_BOTH share them"
  fi
}

# ---------------------------------------------------------------- aws binary
find_aws_bin() {   # AWS_BIN: the given binary, or a fresh release build; always an absolute path
  if [[ -z ${AWS_BIN:-} ]]; then
    command -v swift >/dev/null || die "swift not found: set AWS_BIN=/path/to/aws or BENCH_SKIP_AWS=1"
    log "building aws (release)"
    # The Makefile's SWIFT_BUILD_FLAGS (DWARF 4 for valgrind): the same flags, so the build is
    # make build's, not a rebuild of everything.
    local flags
    flags=$(make -s -C "$REPO" --no-print-directory print-swift-build-flags)
    # shellcheck disable=SC2086
    (cd "$REPO" && swift build -c release --product aws $flags) >&2
    AWS_BIN="$REPO/.build/release/aws"
  fi
  # Always by path: a bare 'aws' would be the Amazon CLI.
  [[ $AWS_BIN == */* ]] || AWS_BIN="./$AWS_BIN"
  [[ -f $AWS_BIN && -x $AWS_BIN ]] || die "aws binary not found or not executable: $AWS_BIN"
  AWS_BIN=$(cd "$(dirname "$AWS_BIN")" && pwd)/$(basename "$AWS_BIN")
}

# ---------------------------------------------------------------- temp folder + cleanup
declare -A PID=() PORT=()
declare -a CLIENT_PIDS=()   # client processes running in the background (tls.sh's handshake clients)

make_temp_dir() {  # make_temp_dir NAME — T: a new folder $BASE/NAME.XXXXXX; DOC: its doc root
  BASE=${BENCH_DIR:-${TMPDIR:-/tmp}}
  mkdir -p "$BASE"
  T=$(mktemp -d "$BASE/$1.XXXXXX")
  chmod 755 "$T"   # servers that drop privileges must still read the doc root
  DOC="$T/root"
}
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
  local s p
  trap - EXIT INT TERM
  for p in "${CLIENT_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for s in "${!PID[@]}"; do stop_server "$s"; done
  if [[ $KEEP = 1 ]]; then log "kept $T"; else rm -rf "$T"; fi
  exit "$rc"
}
set_traps() {      # every server (and client) stopped on exit, including on Ctrl-C
  set -E           # the ERR trap also in functions: a failing command says where it failed
  trap cleanup EXIT
  trap 'warn "failed at line $LINENO: $BASH_COMMAND"' ERR
  trap 'echo >&2; warn "interrupted"; exit 130' INT
  trap 'exit 143' TERM
}

# ---------------------------------------------------------------- document root
check_free_space() {   # check_free_space MIB — stops unless T's file system has more than MIB MiB free
  local avail_kib
  avail_kib=$(df -Pk "$T" | awk 'NR==2 {print $4}')
  (( avail_kib / 1024 > $1 )) || die "need ~$1 MiB free in $BASE (have $((avail_kib / 1024)) MiB); set BENCH_DIR"
}
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
make_doc_root() {  # make_doc_root KIND... — DOC/KIND/{1k,1m,100m}.bin for each KIND, DOC/index.html
  local kind s
  log "generating document root in $DOC"
  for kind in "$@"; do
    mkdir -p "$DOC/$kind"
    for s in 1k 1m 100m; do gen "$DOC/$kind/$s.bin" "${SIZE[$s]}" "aws-bench-$kind-$s"; done
  done
  printf '<!doctype html><title>aws bench</title>\n' >"$DOC/index.html"
}

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

# ---------------------------------------------------------------- servers
# Each script's write_SERVER PORT functions write a config in T/SERVER and set CMD; they read
# CFG_WORKERS, the worker count.
CFG_WORKERS=1
PHASE=""   # names the server logs of a start: w1, w2, ... (run.sh: idle; tls.sh: probe)

NGINX_NAME=nginx   # the folder (T/NAME) of the next write_nginx_conf: run.sh also runs nginx-aio
write_nginx_conf() {   # write_nginx_conf ERROR-LOG-LEVEL WORKER-CONNECTIONS [MAIN-LINE] <SERVER-BLOCK
  # T/NGINX_NAME/nginx.conf with CFG_WORKERS workers, MAIN-LINE (if any) in the main context
  # and the server block read from stdin inside the http block both scripts share; checked with
  # nginx -t. Sets CMD.
  local d="$T/$NGINX_NAME" level=$1 conns=$2 main=${3:-} master=off
  if (( CFG_WORKERS > 1 )); then master=on; fi   # worker_processes needs the master process
  mkdir -p "$d"/{client_body,proxy,fastcgi,uwsgi,scgi}
  {
    if [[ $(id -u) = 0 ]]; then echo "user root;"; fi
    if [[ -n $main ]]; then echo "$main"; fi
    cat <<EOF2
worker_processes $CFG_WORKERS;
daemon off;
master_process $master;
pid $d/nginx.pid;
error_log $d/error.log $level;
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
EOF2
    cat
    echo "}"
  } >"$d/nginx.conf"
  nginx -t -q -p "$d/" -c "$d/nginx.conf" -e "$d/error.log" 2>"$d/test.log" \
    || { cat "$d/test.log" >&2; die "generated nginx config is invalid ($d/nginx.conf)"; }
  CMD=(nginx -p "$d/" -c "$d/nginx.conf" -e "$d/error.log")
}

launch_server() {   # launch_server NAME URL [CURL-ARGS...] — runs CMD, waits until URL answers
  # CMD runs pinned by SRV_PIN, its output in T/NAME/{stdout,stderr}-PHASE.log; PID[NAME] is
  # its process. Returns 1, with the end of its logs shown, when it exits or does not answer.
  local name=$1 url=$2
  shift 2
  local out="$T/$name/stdout-$PHASE.log" err="$T/$name/stderr-$PHASE.log"
  # setsid: own session and process group (stopped as a whole; tls.sh finds its processes for
  # the CPU figures with ps -s), no terminal signals. taskset (and prlimit) exec the server,
  # so PID is the server's main process.
  if command -v setsid >/dev/null; then
    setsid "${SRV_PIN[@]}" "${CMD[@]}" </dev/null >"$out" 2>"$err" &
  else
    "${SRV_PIN[@]}" "${CMD[@]}" </dev/null >"$out" 2>"$err" &
  fi
  PID[$name]=$!
  for _ in $(seq 100); do
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then
      tail -n 20 "$err" "$out" "$T/$name/error.log" 2>/dev/null >&2 || true
      unset "PID[$name]"
      return 1
    fi
    curl -s -o /dev/null --max-time 1 "$@" "$url" && return 0
    sleep 0.1
  done
  tail -n 20 "$err" "$T/$name/error.log" 2>/dev/null >&2 || true
  stop_server "$name"
  return 1
}

# ---------------------------------------------------------------- measurements
# A row is KEY = WORKLOAD@N (N workers). Each script's record() collects one figure per round
# and server; NOTES collects what went wrong, for the report.
declare -a NOTES=()
ROUND=1

note() {   # note SERVER KEY TEXT
  local where="$1, ${2%@*}"
  if [[ $2 == *@* ]]; then where+=", ${2##*@} worker(s)"; fi
  if (( ROUNDS > 1 )); then where+=", round $ROUND"; fi
  NOTES+=("$where: $3")
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
# wrk_measure SERVER KEY URL — one keep-alive wrk run (after a warm-up) with write_wrk_lua's
# summary: sets WRK_VALUE (req/s; "-" when wrk failed; "!" appended when it saw errors, which go
# to `note`) and WRK_REQUESTS. The calling script defines sample_before/sample_after SERVER,
# run just around the measured run (server CPU ticks, wall time: whatever it reports).
wrk_measure() {
  local name=$1 key=$2 url=$3 out line errs
  local threads=$(( WRK_THREADS < CONNECTIONS ? WRK_THREADS : CONNECTIONS ))
  local -a args=(-t"$threads" -c"$CONNECTIONS" --timeout 10s -s "$T/summary.lua")
  if (( WARMUP_SECONDS > 0 )); then
    timeout --foreground $(( WARMUP_SECONDS + 30 )) \
      "${CLI_PIN[@]}" wrk "${args[@]}" -d"${WARMUP_SECONDS}s" "$url" >/dev/null 2>&1 || true
  fi
  sample_before "$name"
  out=$(timeout --foreground $(( SECONDS_PER_RUN + 30 )) \
    "${CLI_PIN[@]}" wrk "${args[@]}" -d"${SECONDS_PER_RUN}s" "$url" 2>&1) || true
  sample_after "$name"
  printf '%s\n' "--- $name $key round $ROUND: ${CLI_PIN[*]:+${CLI_PIN[*]} }wrk ${args[*]} -d${SECONDS_PER_RUN}s $url" "$out" >>"$T/raw.log"
  line=$(grep '^BENCH ' <<<"$out" || true)
  if [[ -z $line ]]; then
    note "$name" "$key" "wrk failed: $(tail -n 2 <<<"$out" | paste -sd' ' -)"
    WRK_VALUE="-"; WRK_REQUESTS="-"
    return
  fi
  errs=$(wrk_errors "$line")
  read -r WRK_VALUE WRK_REQUESTS < <(awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      t = v["duration_us"] / 1e6; if (t <= 0) { print "- -"; exit }
      printf "%d %d\n", v["requests"] / t + 0.5, v["requests"] }' <<<"$line")
  if [[ -n $errs ]]; then note "$name" "$key" "$errs"; WRK_VALUE+="!"; fi
}

wrk_errors() {   # wrk_errors "BENCH ..." — the errors of summary.lua's line in words, or nothing
  # "non-2xx" counts responses with status >= 400 (wrk's summary.errors.status).
  awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
         s = ""
         if (v["status"] > 0) s = s sprintf("%d non-2xx/3xx responses; ", v["status"])
         if (v["connect"] + v["read"] + v["write"] + v["timeout"] > 0)
           s = s sprintf("socket errors: connect %d, read %d, write %d, timeout %d", v["connect"], v["read"], v["write"], v["timeout"])
         sub(/; $/, "", s); print s }' <<<"$1"
}

# ---------------------------------------------------------------- workloads, rows, rounds
declare -a WL_ID=() WL_LABEL=() WL_METRIC=() WL_MULTI=()
add_workload() { WL_ID+=("$1"); WL_LABEL+=("$2"); WL_METRIC+=("$3"); WL_MULTI+=("$4"); }

# Table rows, in order: each workload at each worker count it runs at (workloads that are not
# multi-worker run with 1 worker only, when 1 is in BENCH_WORKERS).
declare -a ROW_KEYS=()
declare -A ROW_LABEL=() ROW_METRIC=()
add_rows() {
  local i n
  for i in "${!WL_ID[@]}"; do
    for n in "${COUNTS[@]}"; do
      if (( n > 1 && WL_MULTI[i] == 0 )); then continue; fi
      ROW_KEYS+=("${WL_ID[$i]}@$n"); ROW_LABEL[${WL_ID[$i]}@$n]=${WL_LABEL[$i]}; ROW_METRIC[${WL_ID[$i]}@$n]=${WL_METRIC[$i]}
    done
  done
}

run_rounds() {   # run_rounds N MEASURE SERVER... — ROUNDS rounds with N workers
  # Each workload that runs at N, on every server in turn (so a slow drift of the machine hits
  # all alike), the server order reversed on every other round: MEASURE SERVER WORKLOAD KEY,
  # then a check that the server is still there (if not: the script's server_died, or stop).
  # Sets ROUND.
  local n=$1 measure=$2 i j id key s
  shift 2
  local -a servers=("$@") order=()
  for (( ROUND = 1; ROUND <= ROUNDS; ROUND++ )); do
    order=("${servers[@]}")
    if (( ROUND % 2 == 0 )); then
      order=(); for (( j = ${#servers[@]} - 1; j >= 0; j-- )); do order+=("${servers[$j]}"); done
    fi
    if (( ROUNDS > 1 )); then log "$n worker(s), round $ROUND of $ROUNDS: ${order[*]}"; fi
    for i in "${!WL_ID[@]}"; do
      id=${WL_ID[$i]}; key="$id@$n"
      if (( n > 1 && WL_MULTI[i] == 0 )); then continue; fi
      for s in "${order[@]}"; do
        [[ -n ${PID[$s]:-} ]] || continue   # left out after it died (server_died)
        "$measure" "$s" "$id" "$key"
        if ! kill -0 "${PID[$s]}" 2>/dev/null; then
          # A script may define server_died SERVER KEY to go on without that server.
          if declare -F server_died >/dev/null; then server_died "$s" "$key"
          else die "$s died during $key (logs in $T/$s; rerun with BENCH_KEEP=1)"; fi
        fi
      done
    done
  done
}

# ---------------------------------------------------------------- report
median() {  # median "V1 V2 ..." METRIC — marks "!" / "~" carried over; "-" if none is a number
  # (one decimal for mib, two for alloc and us, none for the others)
  awk -v m="$2" '{ n = 0; bad = ""; low = ""
      for (i = 1; i <= NF; i++) { v = $i; if (v ~ /!/) bad = "!"; if (v ~ /~/) low = "~"; gsub(/[!~%]/, "", v)
        if (v ~ /^[0-9.]+$/) { x = v + 0; for (j = n; j > 0 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x; n++ } }
      if (n == 0) { print "-"; exit }
      med = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
      printf (m == "mib" ? "%.1f" : (m == "alloc" || m == "us") ? "%.2f" : "%.0f") "%s%s\n", med, bad, low }
    END { if (NR == 0) print "-" }' <<<"$1"
}
ratio() {   # ratio A B — the marks "!", "~" and "*" on either figure carry over to the ratio
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a == "" || b == "" || b + 0 == 0) { print "-"; exit }
    printf "%.2f%s%s%s", (a + 0) / (b + 0), (a ~ /!/ || b ~ /!/) ? "!" : "", (a ~ /~/ || b ~ /~/) ? "~" : "",
      (a ~ /\*/ || b ~ /\*/) ? "*" : "" }'
}

version_of() {   # version_of nginx|wrk|aws — "NAME VERSION", as the program reports it
  case $1 in
    nginx) echo "nginx $({ nginx -v 2>&1 || true; } | sed 's/.*nginx\///')" ;;
    wrk)   { wrk --version 2>&1 || true; } | awk 'NR == 1 {print "wrk " $2}' ;;
    aws)   echo "aws $({ "$AWS_BIN" --version 2>&1 || true; } | head -n 1)" ;;
  esac
}
machine_line() {   # machine_line VERSIONS — date, OS, CPU model and count, then VERSIONS
  local cpu_model os
  cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || echo "?")
  os=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME" || uname -s)
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $os, $cpu_model, $NCPU CPUs; $1"
}
rounds_line() {   # rounds_line — ", median of N rounds" or ", 1 round", then "; PIN_NOTE" for each worker count
  local p
  if (( ROUNDS > 1 )); then printf ', median of %s rounds' "$ROUNDS"; else printf ', 1 round'; fi
  for p in "${PIN_NOTES[@]}"; do printf '; %s' "$p"; done
}

# The table, from the globals header (its cells) and rows (one tab-separated line a row).
print_table() {   # columns aligned: the first to the left, the others to the right
  { (IFS=$'\t'; echo "${header[*]}"); printf '%s\n' "${rows[@]}"; } | awk -F'\t' '
    { for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) }; if (NF > nf) nf = NF }
    END { for (r = 1; r <= NR; r++) { line = ""
            for (i = 1; i <= nf; i++) line = line (i == 1 ? sprintf("%-" w[i] "s", cell[r, i]) : sprintf("  %" w[i] "s", cell[r, i]))
            print line } }'
}
print_markdown_table() {
  local r
  echo "| $(IFS='|'; echo "${header[*]}" | sed 's/|/ | /g') |"
  echo "|$(for _ in "${header[@]}"; do printf -- '---|'; done)"
  for r in "${rows[@]}"; do echo "| ${r//$'\t'/ | } |"; done
}

# write_report FILE TITLE RAW_FROM RAW_TO RAW_WHAT [PARAGRAPH...] — the Markdown report in
# $RESULTS_DIR/FILE: the title, $meta, $runs, the paragraphs, the table with its $legend, then
# what the script's report_sections prints; the raw client output $T/RAW_FROM is copied to
# $RESULTS_DIR/RAW_TO.
write_report() {
  local file=$1 title=$2 raw_from=$3 raw_to=$4 raw_what=$5 p; shift 5
  mkdir -p "$RESULTS_DIR"
  {
    echo "# $title"
    echo
    echo "$meta"
    echo
    echo "$runs"
    echo
    for p in "$@"; do echo "$p"; echo; done
    print_markdown_table
    echo
    printf '%s\n' "${legend[@]}" | sed 's/^/- /'
    report_sections
  } >"$RESULTS_DIR/$file"
  cp "$T/$raw_from" "$RESULTS_DIR/$raw_to" 2>/dev/null || true
  log "written $RESULTS_DIR/$file (raw $raw_what output: $RESULTS_DIR/$raw_to); the run took $(( SECONDS / 60 ))m$(( SECONDS % 60 ))s"
}
