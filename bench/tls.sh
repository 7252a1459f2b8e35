#!/usr/bin/env bash
# bench/tls.sh — compare aws with nginx over HTTPS on this machine.
#
#   bash bench/tls.sh                      # builds aws (release) unless AWS_BIN is set
#   AWS_BIN=.build/release/aws bash bench/tls.sh
#   BENCH_SECONDS=3 BENCH_ROUNDS=3 bash bench/tls.sh
#   BENCH_SKIP_AWS=1 bash bench/tls.sh     # nginx only (to check the harness)
#
# Both servers get the same ECDSA P-256 certificate chain (a throw-away CA and a leaf for
# localhost / 127.0.0.1, made with the openssl CLI), TLS 1.2 + 1.3, the same cipher
# preference (the client's), session tickets and a session cache, the same worker count.
# Rows: 1 KiB keep-alive (wrk), a new connection per request with full, ticket-resumed and
# session-ID-resumed handshakes (a small C client compiled at run time, several processes
# in parallel), and one 100 MiB download (curl, median of several). Besides each figure it
# reports the server's CPU use and the work done per server CPU-second, because on a small
# machine the TLS client is often the bottleneck. Servers are started from configs generated
# in a temporary folder, listen on 127.0.0.1 only, are pinned like bench/run.sh's, and are all
# stopped on exit, including on Ctrl-C. See bench/README.md ("HTTPS") for the details.
# What it shares with bench/run.sh (common settings, tools, pinning, starting and stopping
# servers, nginx's common config, rounds, report helpers) is in bench/lib.sh.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------- settings
# Besides lib.sh's (BENCH_SECONDS, BENCH_WARMUP_SECONDS, BENCH_CONNECTIONS, BENCH_SKIP_AWS,
# BENCH_SERVER_CPU, BENCH_CLIENT_CPU, BENCH_KEEP, AWS_ARGS, BENCH_WORKERS, BENCH_ROUNDS):
CURL_RUNS=${BENCH_CURL_RUNS:-5}
HANDSHAKES=${BENCH_TLS_HANDSHAKES:-full-1.3 ticket-1.3 full-1.2 ticket-1.2 id-1.2}
CLIENTS=${BENCH_TLS_CLIENTS:-auto}
SATURATION=${BENCH_TLS_SATURATION:-85}
ALLOW_MISMATCH=${BENCH_TLS_ALLOW_MISMATCH:-0}
NGINX_KTLS=${BENCH_NGINX_KTLS:-1}

SNI=localhost    # the certificate's name (it also carries IP:127.0.0.1)

[[ $WARMUP_SECONDS =~ ^[0-9]+$ ]] || die "BENCH_WARMUP_SECONDS must be a whole number of seconds"
[[ $CURL_RUNS =~ ^[0-9]+$ && $CURL_RUNS -ge 1 ]] || die "BENCH_CURL_RUNS must be a positive integer"
[[ $CONNECTIONS =~ ^[0-9]+$ && $CONNECTIONS -ge 1 ]] || die "BENCH_CONNECTIONS must be a positive integer"
[[ $CLIENTS = auto || ( $CLIENTS =~ ^[0-9]+$ && $CLIENTS -ge 1 ) ]] || die "BENCH_TLS_CLIENTS must be a positive integer or auto"
[[ $SATURATION =~ ^[0-9]+$ ]] || die "BENCH_TLS_SATURATION must be a percentage (0: never mark)"
parse_worker_counts
(( ${#COUNTS[@]} > 0 )) || die "BENCH_WORKERS is empty"
declare -a HS_LIST=()
for h in $HANDSHAKES; do
  [[ $h =~ ^(full|ticket)-1\.[23]$ || $h = id-1.2 ]] \
    || die "BENCH_TLS_HANDSHAKES: '$h' is not one of full-1.3 ticket-1.3 full-1.2 ticket-1.2 id-1.2"
  HS_LIST+=("$h")
done

# SERVERS (lib.sh): aws (unless BENCH_SKIP_AWS=1) and nginx.

# ---------------------------------------------------------------- tools
need wrk wrk
need curl curl
need openssl openssl
need taskset util-linux
need ps procps
need nginx nginx-light nginx
need cc gcc
# The handshake client is compiled against libssl (its headers come with libssl-dev).
echo '#include <openssl/ssl.h>' | cc -E -x c - >/dev/null 2>&1 || apt_install libssl-dev
CLK_TCK=$(getconf CLK_TCK)

# CPU pinning per worker count, as in bench/run.sh (set_pinning N, in lib.sh), with several
# clients on the client CPU(s).
init_pinning
PIN_CLIENT="clients"
PIN_BOTH="servers and clients"
HS_PROCS=2
set_tls_pinning() {   # set_tls_pinning N — set_pinning N, then HS_PROCS
  set_pinning "$1"
  # Parallel handshake clients: each is a blocking, sequential loop, so two per client CPU
  # keep those CPUs busy while the others wait for the server.
  if [[ $CLIENTS = auto ]]; then HS_PROCS=$(( 2 * CLI_CPUS )); else HS_PROCS=$CLIENTS; fi
}

# ---------------------------------------------------------------- aws binary
if [[ $SKIP_AWS != 1 ]]; then
  find_aws_bin
  aws_help=$("$AWS_BIN" --help 2>&1 || true)
  [[ $aws_help == *--tls-port* ]] \
    || die "$AWS_BIN --help does not mention --tls-port: this aws has no HTTPS (BENCH_SKIP_AWS=1 runs nginx alone)"
  [[ $aws_help == *--workers* ]] || die "$AWS_BIN --help does not mention --workers"
fi

# ---------------------------------------------------------------- temp folder + cleanup
make_temp_dir aws-bench-tls
TLS="$T/tls"
declare -A TLSPORT=()
set_traps

# ---------------------------------------------------------------- document root, certificates
check_free_space 110
make_doc_root static

# A throw-away CA and a leaf for localhost / 127.0.0.1, both ECDSA P-256. Both servers get
# CHAIN (leaf then CA) and KEY, so they send the same two certificates and sign with the same key.
log "generating an ECDSA P-256 CA and leaf certificate in $TLS"
mkdir -p "$TLS"
CA="$TLS/ca.pem"; CHAIN="$TLS/chain.pem"; KEY="$TLS/leaf.key"
{
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$TLS/ca.key" -out "$CA" -days 2 -subj "/CN=aws bench CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$KEY" -out "$TLS/leaf.csr" -subj "/CN=$SNI"
  printf '%s\n' "subjectAltName=DNS:$SNI,IP:$ADDR" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$TLS/leaf.ext"
  openssl x509 -req -in "$TLS/leaf.csr" -CA "$CA" -CAkey "$TLS/ca.key" -set_serial 2 -days 2 \
    -extfile "$TLS/leaf.ext" -out "$TLS/leaf.pem"
} >"$TLS/openssl.log" 2>&1 || { cat "$TLS/openssl.log" >&2; die "could not make the certificates"; }
cat "$TLS/leaf.pem" "$CA" >"$CHAIN"
openssl verify -CAfile "$CA" "$TLS/leaf.pem" >/dev/null || die "the generated leaf does not verify"
chmod 644 "$TLS"/*

# ---------------------------------------------------------------- the handshake client
# One TLS connection per request, blocking and sequential; several run in parallel. It counts
# full and resumed handshakes itself (SSL_session_reused), so a resumption that silently does
# not happen cannot go unnoticed. It skips certificate verification (the chain is checked once
# with curl and s_client) to spend as little client CPU as possible on each handshake.
cat >"$T/tls_hs.c" <<'EOF2'
/* tls_hs HOST PORT SNI PATH SECONDS full|ticket|id 1.2|1.3
 *   full:   a full handshake on every connection (no session offered)
 *   ticket: resume with the newest session (ticket) the server sent
 *   id:     resume by session ID: the client sends no session-ticket extension (TLS 1.2)
 * Each connection: connect, handshake (SNI, ALPN http/1.1, only VERSION offered), one
 * "GET PATH" with Connection: close, read the response by its Content-Length, then read on
 * until the server closes. With resumption a first, uncounted connection gets a session.
 * Prints: HS conns= full= reused= errors= close_notify= bytes= elapsed_us= first_error=
 * (conns: connections answered 200 with the whole body; errors: the others). */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

static long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}
static int skip_verify(X509_STORE_CTX *ctx, void *arg) { (void)ctx; (void)arg; return 1; }

static char first_error[256] = "";
static void set_error(const char *what) {
    if (first_error[0]) return;
    unsigned long e = ERR_peek_error();
    if (e) {
        char buf[160];
        ERR_error_string_n(e, buf, sizeof buf);
        snprintf(first_error, sizeof first_error, "%s: %s", what, buf);
    } else if (errno) {
        snprintf(first_error, sizeof first_error, "%s: %s", what, strerror(errno));
    } else {
        snprintf(first_error, sizeof first_error, "%s", what);
    }
    for (char *p = first_error; *p; p++) if (*p == ' ') *p = '_';
}

/* One response: head and body bytes, or -1 (error, status other than 200, short body). */
static long read_response(SSL *ssl) {
    char buf[16384];
    size_t have = 0;
    long total = 0, need = -1;
    for (;;) {
        int n = SSL_read(ssl, buf + have, (int)(sizeof buf - have));
        if (n <= 0) { set_error("read"); return -1; }
        total += n;
        if (need < 0) {
            have += (size_t)n;
            char *end = memmem(buf, have, "\r\n\r\n", 4);
            if (!end) {
                if (have == sizeof buf) { set_error("response head too long"); return -1; }
                continue;
            }
            if (have < 12 || (memcmp(buf, "HTTP/1.1 200", 12) != 0 && memcmp(buf, "HTTP/1.0 200", 12) != 0)) {
                set_error("status not 200"); return -1;
            }
            long len = -1;
            for (char *p = buf; p < end; ) {
                char *eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
                if (!eol) break;
                if (eol - p > 15 && strncasecmp(p, "Content-Length:", 15) == 0) len = strtol(p + 15, NULL, 10);
                p = eol + 2;
            }
            if (len < 0) { set_error("no Content-Length"); return -1; }
            need = (long)(end + 4 - buf) + len;
            have = 0;
        }
        if (total >= need) return total;
    }
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s HOST PORT SNI PATH SECONDS full|ticket|id 1.2|1.3\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *port = argv[2], *sni = argv[3], *path = argv[4], *mode = argv[6];
    double seconds = atof(argv[5]);
    int version = strcmp(argv[7], "1.2") == 0 ? TLS1_2_VERSION : TLS1_3_VERSION;
    int resume = strcmp(mode, "full") != 0;

    struct addrinfo hints, *ai;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &ai) != 0) { fprintf(stderr, "tls_hs: cannot resolve %s\n", host); return 2; }

    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, version);
    SSL_CTX_set_max_proto_version(ctx, version);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_cert_verify_callback(ctx, skip_verify, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (strcmp(mode, "id") == 0) SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);

    char req[1024];
    int reqlen = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, sni);

    SSL_SESSION *sess = NULL;
    long conns = 0, full = 0, reused = 0, errors = 0, notify = 0, consecutive = 0;
    long long bytes = 0;
    struct timeval tmo = {10, 0};
    long long start = now_us(), end = start + (long long)(seconds * 1e6), t = start;
    int priming = resume;
    while (priming || t < end) {
        errno = 0;
        ERR_clear_error();
        int fd = socket(ai->ai_family, SOCK_STREAM, 0), one = 1, was_reused = 0, closed_by_notify = 0;
        SSL *ssl = NULL;
        long got = -1;
        if (fd < 0) { set_error("socket"); goto done; }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof tmo);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tmo, sizeof tmo);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) { set_error("connect"); goto done; }
        ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        SSL_set_tlsext_host_name(ssl, sni);
        if (resume && sess) SSL_set_session(ssl, sess);
        if (SSL_connect(ssl) != 1) { set_error("handshake"); goto done; }
        was_reused = SSL_session_reused(ssl);
        if (SSL_write(ssl, req, reqlen) != reqlen) { set_error("write"); goto done; }
        got = read_response(ssl);
        if (got < 0) goto done;
        if (resume) {
            /* Keep a copy: an error later on this connection must not make it unresumable. */
            SSL_SESSION *s = SSL_get_session(ssl);
            if (s && SSL_SESSION_is_resumable(s)) {
                SSL_SESSION *copy = SSL_SESSION_dup(s);
                if (copy) { if (sess) SSL_SESSION_free(sess); sess = copy; }
            }
        }
        {   /* Connection: close — the server closes, with or without close_notify. */
            char tmp[512];
            int n;
            while ((n = SSL_read(ssl, tmp, sizeof tmp)) > 0) {}
            closed_by_notify = SSL_get_error(ssl, n) == SSL_ERROR_ZERO_RETURN;
        }
    done:
        if (ssl) { SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN); SSL_free(ssl); }
        if (fd >= 0) close(fd);
        t = now_us();
        if (priming) {
            priming = 0;
            if (got < 0 || !sess) { set_error("priming connection gave no resumable session"); errors++; break; }
            start = t;
            end = start + (long long)(seconds * 1e6);
            continue;
        }
        if (got < 0) {
            errors++;
            if (++consecutive >= 100) break;   /* the server is gone */
            continue;
        }
        consecutive = 0;
        conns++;
        bytes += got;
        notify += closed_by_notify;
        if (was_reused) reused++; else full++;
    }
    printf("HS conns=%ld full=%ld reused=%ld errors=%ld close_notify=%ld bytes=%lld elapsed_us=%lld first_error=%s\n",
           conns, full, reused, errors, notify, bytes, t - start, first_error[0] ? first_error : "-");
    return 0;
}
EOF2
cc -O2 -Wall -o "$T/tls_hs" "$T/tls_hs.c" -lssl -lcrypto 2>"$T/tls_hs.log" \
  || { cat "$T/tls_hs.log" >&2; die "could not compile the handshake client (needs cc and libssl-dev)"; }

# ---------------------------------------------------------------- server configs
# The write_* functions read CFG_WORKERS and CFG_PROBE (1: the kTLS probe start: nginx logs
# at debug level, aws at info level, so that each says whether it uses kTLS).
CFG_PROBE=0
# Mozilla "intermediate" TLS 1.2 suites, as aws uses (ECDHE + AES-GCM / CHACHA20-POLY1305);
# TLS 1.3 keeps OpenSSL's default suites on both. The client's preference decides on both.
TLS12_CIPHERS="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
NGINX_KTLS_LINE=""
NGINX_DEBUG=0
if nginx -V 2>&1 | grep -q -- '--with-debug'; then NGINX_DEBUG=1; fi

write_nginx() {
  local p=$1 level=warn
  if (( CFG_PROBE )); then level=debug; fi
  write_nginx_conf "$level" 4096 <<EOF2
    server {
        listen $ADDR:$p ssl;
        server_name $SNI;
        root $DOC;
        ssl_certificate $CHAIN;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers $TLS12_CIPHERS;
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:SSL:10m;
        ssl_session_timeout 1h;
        ssl_session_tickets on;
        # aws sends one TLS 1.3 ticket per full handshake; OpenSSL's default is two.
        ssl_conf_command NumTickets 1;
        $NGINX_KTLS_LINE
    }
EOF2
}
# kTLS for nginx: `ssl_conf_command Options KTLS` (nginx >= 1.21.4 with OpenSSL 3) lets it use
# SSL_sendfile when the kernel offers kTLS; kept when this nginx accepts it.
if [[ $NGINX_KTLS = 1 ]]; then
  NGINX_KTLS_LINE="ssl_conf_command Options KTLS;"
  mkdir -p "$T/nginx"
  if ! (write_nginx 20000) >/dev/null 2>&1; then
    warn "this nginx rejects 'ssl_conf_command Options KTLS': left out"
    NGINX_KTLS_LINE=""
  fi
fi

write_aws() {
  local d="$T/aws" p=$1
  mkdir -p "$d"
  free_port; TLSPORT[aws]=$FREE_PORT
  # --log-level warning: no access-log lines (nginx: access_log off). The plain --port is
  # there but idle. The kTLS probe runs at info level, where aws logs its kTLS line.
  local level=warning
  if (( CFG_PROBE )); then level=info; fi
  CMD=("$AWS_BIN" --root "$DOC" --address "$ADDR" --port "$p" --tls-port "${TLSPORT[aws]}"
       --tls-cert "$CHAIN" --tls-key "$KEY" --workers "$CFG_WORKERS" --log-level "$level")
  # shellcheck disable=SC2206
  CMD+=($AWS_EXTRA_ARGS)
}

start_server() {   # start_server NAME — PHASE names its logs: probe, w1, w2, ...
  local name=$1 p
  free_port; p=$FREE_PORT
  PORT[$name]=$p; TLSPORT[$name]=$p
  "write_$name" "$p"
  mkdir -p "$T/$name"
  log "starting $name ($PHASE) on $ADDR:${TLSPORT[$name]} (TLS): ${CMD[*]}"
  launch_server "$name" "https://$ADDR:${TLSPORT[$name]}/" --cacert "$CA"
}

# ---------------------------------------------------------------- checks
REQ=$'GET /static/1k.bin HTTP/1.1\r\nHost: '"$SNI"$'\r\nConnection: close\r\n\r\n'
s_client() {   # s_client NAME ARGS... — one request over a fresh connection, s_client's report
  printf '%s' "$REQ" | timeout 20 openssl s_client -connect "$ADDR:${TLSPORT[$1]}" -servername "$SNI" \
    -CAfile "$CA" -alpn http/1.1 -ign_eof "${@:2}" 2>&1 | tr -d '\000' || true
}
declare -A NEGO=()
check_server() {   # files, chain, negotiated parameters and resumption, once per start
  local name=$1 ok=0 out v s args h mode want
  for s in 1k 1m 100m; do
    out=$(curl -s -o /dev/null --max-time 60 --http1.1 --cacert "$CA" --resolve "$SNI:${TLSPORT[$name]}:$ADDR" \
          -w '%{http_code} %{size_download}' "https://$SNI:${TLSPORT[$name]}/static/$s.bin" || echo "000 0")
    if [[ $out != "200 ${SIZE[$s]}" ]]; then
      warn "$name: GET https://$SNI/static/$s.bin (verified against the CA) -> status/bytes '$out', expected '200 ${SIZE[$s]}'"
      ok=1
    fi
  done
  # What each protocol version negotiates with a default OpenSSL client (as wrk, curl and the
  # handshake client are): version, cipher, key exchange, signature, ALPN, certificates sent.
  for v in 1.3 1.2; do
    out=$(s_client "$name" "-tls${v/./_}" -verify_return_error)
    NEGO[$name|$v]=$(awk -F': ' '
        /^New, / { sub(/^New, /, ""); sub(/, Cipher is /, " "); proto = $0 }
        /^Server Temp Key: / { kx = $2 }
        /^Peer signature type: / { st = $2 }
        /^Peer signing digest: / { sd = $2 }
        /^ALPN protocol: / { alpn = $2 }
        /^ [0-9]+ s:/ { certs++ }
        /^Verification: OK/ { ok = 1 }
        /^HTTP\/1\.[01] 200/ { st200 = 1 }
        END { printf "%s, %s, %s+%s, ALPN %s, %d certificates%s%s", proto, kx, st, sd, (alpn ? alpn : "none"), certs,
              ok ? "" : ", NOT VERIFIED", st200 ? "" : ", NO 200 RESPONSE" }' <<<"$out")
    if [[ ${NEGO[$name|$v]} != "TLSv$v "* || ${NEGO[$name|$v]} == *NOT\ VERIFIED* || ${NEGO[$name|$v]} == *NO\ 200* ]]; then
      warn "$name: TLS $v handshake check failed: ${NEGO[$name|$v]}"; sed 's/^/   /' <<<"$out" | tail -n 15 >&2; ok=1
    fi
  done
  # Resumption, with s_client: save the session of one connection, offer it on the next.
  for h in "${HS_LIST[@]}"; do
    mode=${h%-*}; v=${h#*-}
    [[ $mode = full ]] && continue
    args=("-tls${v/./_}"); if [[ $mode = id ]]; then args+=(-no_ticket); fi
    rm -f "$T/sess.pem"
    s_client "$name" "${args[@]}" -sess_out "$T/sess.pem" >/dev/null
    if [[ ! -s $T/sess.pem ]]; then
      warn "$name: TLS $v resumption by ${mode/id/session ID} impossible: s_client got no session to save (-sess_out)"
      ok=1; continue
    fi
    out=$(s_client "$name" "${args[@]}" -sess_in "$T/sess.pem")
    if ! grep -q "^Reused, TLSv$v" <<<"$out"; then
      warn "$name: TLS $v resumption by ${mode/id/session ID} did not happen (s_client -sess_out, then -sess_in: $(grep -E '^(New|Reused), ' <<<"$out" || echo 'no handshake'))"
      ok=1
    fi
  done
  return $ok
}

# ---------------------------------------------------------------- measurements
# A row is KEY = WORKLOAD@N. Per server and round: VALS (the figure), CPUP (server CPU, % of
# one CPU) and PERCPU (work per server CPU-second). "!" marks errors, "~" a server that used
# less than SATURATION % of the CPUs it was pinned to (the client was the bottleneck).
declare -A VALS=() CPUP=() PERCPU=() RESULT=() RESULT_CPU=() RESULT_PER=()
server_ticks() {   # CPU ticks (user + system) of every process in the server's session
  local pids
  pids=$(ps -o pid= -s "${PID[$1]}" 2>/dev/null | tr -d ' ' | sed 's|.*|/proc/&/stat|' || true)
  [[ -n $pids ]] || { echo 0; return; }
  # shellcheck disable=SC2086
  cat $pids 2>/dev/null | awk '{ sub(/^.*\) /, ""); s += $12 + $13 } END { print s + 0 }'
}
now_ns() { date +%s%N; }
record() { # record SERVER KEY VALUE UNITS TICKS WALL_NS — UNITS: requests, connections or MiB done
  local name=$1 key=$2 v=$3 units=$4 ticks=$5 wall=$6 cpu per
  cpu=$(awk -v t="$ticks" -v hz="$CLK_TCK" -v w="$wall" 'BEGIN { if (w <= 0) print "-"; else printf "%.0f", t / hz / (w / 1e9) * 100 }')
  per=$(awk -v u="$units" -v t="$ticks" -v hz="$CLK_TCK" -v m="${ROW_METRIC[$key]}" \
        'BEGIN { if (t <= 0 || u == "-") print "-"; else printf (m == "mib" ? "%.1f" : "%.0f"), u / (t / hz) }')
  if [[ $v != - && $cpu != - ]] && (( SRV_CPUS > 0 && cpu < SATURATION * SRV_CPUS )); then v+="~"; fi
  VALS[$name|$key]="${VALS[$name|$key]:-} $v"
  CPUP[$name|$key]="${CPUP[$name|$key]:-} $cpu"
  PERCPU[$name|$key]="${PERCPU[$name|$key]:-} $per"
  local r=""; if (( ROUNDS > 1 )); then r="r$ROUND"; fi
  printf '   %-6s %-16s %-4s %10s   server CPU %4s%%   %s per CPU-s\n' "$name" "$key" "$r" "$v" "$cpu" "$per" >&2
}

write_wrk_lua

sample_before() { S0=$(server_ticks "$1"); W0=$(now_ns); }
sample_after()  { W1=$(now_ns); S1=$(server_ticks "$1"); }

run_wrk() {   # run_wrk SERVER KEY URL — keep-alive req/s over TLS
  wrk_measure "$@"
  record "$1" "$2" "$WRK_VALUE" "$WRK_REQUESTS" $(( S1 - S0 )) $(( W1 - W0 ))
}

run_hs_clients() {   # run_hs_clients SERVER MODE VERSION SECONDS OUTPREFIX — HS_PROCS clients in parallel
  local name=$1 mode=$2 ver=$3 secs=$4 prefix=$5 i
  CLIENT_PIDS=()
  for (( i = 1; i <= HS_PROCS; i++ )); do
    timeout $(( secs + 60 )) "${CLI_PIN[@]}" "$T/tls_hs" "$ADDR" "${TLSPORT[$name]}" "$SNI" /static/1k.bin \
      "$secs" "$mode" "$ver" >"$prefix.$i" 2>&1 &
    CLIENT_PIDS+=($!)
  done
  for i in "${CLIENT_PIDS[@]}"; do wait "$i" || true; done
  CLIENT_PIDS=()
}

run_hs() {   # run_hs SERVER KEY MODE VERSION — connections per second, one request each
  local name=$1 key=$2 mode=$3 ver=$4 out line v units t0 t1 c0 c1 i
  if (( WARMUP_SECONDS > 0 )); then run_hs_clients "$name" "$mode" "$ver" "$WARMUP_SECONDS" "$T/hs-warm"; fi
  c0=$(server_ticks "$name"); t0=$(now_ns)
  run_hs_clients "$name" "$mode" "$ver" "$SECONDS_PER_RUN" "$T/hs"
  t1=$(now_ns); c1=$(server_ticks "$name")
  out=$(for (( i = 1; i <= HS_PROCS; i++ )); do cat "$T/hs.$i"; done)
  printf '%s\n' "--- $name $key round $ROUND: $HS_PROCS x ${CLI_PIN[*]:+${CLI_PIN[*]} }tls_hs $ADDR ${TLSPORT[$name]} $SNI /static/1k.bin $SECONDS_PER_RUN $mode $ver" "$out" >>"$T/raw.log"
  # Sum of each client's connections / its own elapsed time; they run side by side.
  line=$(awk 'BEGIN { n = 0 }
      /^HS / { n++; for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "first_error") { if (err == "" && kv[2] != "-") err = kv[2] } else v[kv[1]] = kv[2] }
               c += v["conns"]; f += v["full"]; r += v["reused"]; e += v["errors"]; cn += v["close_notify"]
               if (v["elapsed_us"] > 0) rate += v["conns"] / (v["elapsed_us"] / 1e6) }
      END { printf "clients=%d conns=%d full=%d reused=%d errors=%d close_notify=%d rate=%.0f first_error=%s\n", n, c, f, r, e, cn, rate, (err == "" ? "-" : err) }' <<<"$out")
  declare -A x=()
  for kv in ${line}; do x[${kv%%=*}]=${kv#*=}; done
  if (( x[clients] != HS_PROCS || x[conns] == 0 )); then
    note "$name" "$key" "handshake client failed: $(grep -v '^HS ' <<<"$out" | head -n 2 | paste -sd' ' -) ${x[first_error]}"
    v="-"; units="-"
  else
    v=${x[rate]}; units=${x[conns]}
    if [[ $mode = full ]] && (( x[reused] > 0 )); then
      die "$name: ${x[reused]} of ${x[conns]} connections in '$key' were resumed although the client offered no session"
    fi
    if [[ $mode != full ]] && (( x[full] > 0 )); then
      die "$name: resumption failed on ${x[full]} of ${x[conns]} connections in '$key' (TLS $ver, ${mode/id/session ID}): the figure would mix full and resumed handshakes (raw output: rerun with BENCH_KEEP=1, see $T/raw.log)"
    fi
    if (( x[errors] > 0 )); then note "$name" "$key" "${x[errors]} failed connections (first: ${x[first_error]})"; v+="!"; fi
    if (( x[close_notify] < x[conns] )); then
      CLOSE_NOTIFY[$name]="$(( x[conns] - x[close_notify] )) of ${x[conns]} connections in $key closed without close_notify"
    fi
  fi
  record "$name" "$key" "$v" "$units" $(( c1 - c0 )) $(( t1 - t0 ))
}
declare -A CLOSE_NOTIFY=()

run_curl() {  # run_curl SERVER KEY — median of CURL_RUNS 100 MiB downloads over TLS, MiB/s
  local name=$1 key=$2 url="https://$SNI:${TLSPORT[$1]}/static/100m.bin" speeds="" v code size speed bad=0 good=0
  local -a args=(-s -o /dev/null --http1.1 --max-time 120 --cacert "$CA" --resolve "$SNI:${TLSPORT[$1]}:$ADDR")
  local t0 t1 c0 c1
  "${CLI_PIN[@]}" curl "${args[@]}" "$url" || true   # warm-up
  c0=$(server_ticks "$name"); t0=$(now_ns)
  for _ in $(seq "$CURL_RUNS"); do
    v=$("${CLI_PIN[@]}" curl "${args[@]}" -w '%{http_code} %{size_download} %{speed_download}' "$url" || true)
    echo "--- $name $key round $ROUND: curl $url -> $v" >>"$T/raw.log"
    read -r code size speed <<<"$v"
    if [[ $code != 200 || $size != "${SIZE[100m]}" ]]; then bad=$((bad + 1)); continue; fi
    good=$((good + 1)); speeds+=" $(awk -v s="$speed" 'BEGIN { printf "%.1f", s / 1048576 }')"
  done
  t1=$(now_ns); c1=$(server_ticks "$name")
  v=$(median "$speeds" mib)
  if (( bad )); then
    note "$name" "$key" "$bad of $CURL_RUNS downloads failed (last: status ${code:-?}, ${size:-0} bytes)"
    [[ $v = - ]] || v+="!"
  fi
  record "$name" "$key" "$v" "$(( good * 100 ))" $(( c1 - c0 )) $(( t1 - t0 ))
}

# ---------------------------------------------------------------- workloads and rows
add_workload ka "1 KiB keep-alive, wrk -c$CONNECTIONS (req/s)" rps 1
for h in "${HS_LIST[@]}"; do
  mode=${h%-*}; v=${h#*-}
  case $mode in
    full)   what="full handshake" ;;
    ticket) what="resumed (ticket)" ;;
    id)     what="resumed (session ID)" ;;
  esac
  add_workload "hs-$h" "TLS $v $what, a 1 KiB GET per connection (conn/s)" rps 1
done
add_workload big "100 MiB, 1 curl stream, median of $CURL_RUNS (MiB/s)" mib 0

add_rows

# ---------------------------------------------------------------- kTLS probe
# Each server alone, 1 worker: aws at info level logs "kTLS in use" or "kTLS unavailable";
# nginx (a --with-debug build) logs "BIO_get_ktls_send(): 1" and "SSL_sendfile" when it sends
# over kTLS, "SSL_write" when it does not. One 1 MiB download each.
ULP=$(cat /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null || echo "?")
declare -A KTLS=()
set_tls_pinning 1; CFG_WORKERS=1; CFG_PROBE=1; PHASE=probe
log "kTLS probe (kernel tcp_available_ulp: ${ULP:-none})"
for s in "${SERVERS[@]}"; do
  start_server "$s" || die "$s did not start with TLS (logs above; rerun with BENCH_KEEP=1 to keep $T)"
  curl -s -o /dev/null --max-time 60 --cacert "$CA" "https://$ADDR:${TLSPORT[$s]}/static/1m.bin" || true
  sleep 0.3
  case $s in
    aws)
      line=$(grep -o 'kTLS [^;]*' "$T/aws/stderr-probe.log" | head -n 1 || true)
      KTLS[aws]=${line:-"no kTLS line in its start-up log"} ;;
    nginx)
      if (( ! NGINX_DEBUG )); then KTLS[nginx]="unknown (nginx built without --with-debug)"
      elif grep -q -e 'BIO_get_ktls_send(): 1' -e 'SSL_sendfile:' "$T/nginx/error.log"; then KTLS[nginx]="kTLS in use (SSL_sendfile)"
      elif grep -q 'SSL_write:' "$T/nginx/error.log"; then KTLS[nginx]="kTLS not in use (files go through SSL_write)"
      else KTLS[nginx]="unknown (no SSL_write or SSL_sendfile in its debug log)"; fi
      if [[ -n $NGINX_KTLS_LINE ]]; then KTLS[nginx]+=", with ssl_conf_command Options KTLS"
      else KTLS[nginx]+=", without ssl_conf_command Options KTLS"; fi ;;
  esac
  log "$s: ${KTLS[$s]}"
  stop_server "$s"
  rm -f "$T/nginx/error.log"
done
CFG_PROBE=0

# ---------------------------------------------------------------- run
measure() {   # measure SERVER WORKLOAD KEY — one figure (run_rounds, in lib.sh, calls it)
  local s=$1 id=$2 key=$3 h
  case $id in
    ka)    run_wrk "$s" "$key" "https://$ADDR:${TLSPORT[$s]}/static/1k.bin" ;;
    hs-*)  h=${id#hs-}; run_hs "$s" "$key" "${h%-*}" "${h#*-}" ;;
    big)   run_curl "$s" "$key" ;;
  esac
}
declare -a PIN_NOTES=()
NEGO_NOTE=""
for n in "${COUNTS[@]}"; do
  set_tls_pinning "$n"; CFG_WORKERS=$n; PHASE=w$n
  PIN_NOTES+=("$n worker(s): wrk -t$WRK_THREADS, $HS_PROCS handshake clients, $PIN_NOTE")
  for s in "${SERVERS[@]}"; do
    start_server "$s" || die "$s did not start with $n worker(s) (logs above)"
  done
  for s in "${SERVERS[@]}"; do
    check_server "$s" || die "$s fails the HTTPS checks with $n worker(s) (see above)"
  done
  # Same protocol, cipher, key exchange, signature, ALPN and chain on both, or no comparison.
  if [[ $SKIP_AWS != 1 ]]; then
    for v in 1.3 1.2; do
      if [[ ${NEGO[aws|$v]} != "${NEGO[nginx|$v]}" ]]; then
        msg="TLS $v negotiates differently: aws '${NEGO[aws|$v]}', nginx '${NEGO[nginx|$v]}'"
        [[ $ALLOW_MISMATCH = 1 ]] || die "$msg (BENCH_TLS_ALLOW_MISMATCH=1 measures anyway)"
        warn "$msg"; NOTES+=("$n worker(s): $msg")
      fi
    done
  fi
  NEGO_NOTE="TLS 1.3: ${NEGO[nginx|1.3]}; TLS 1.2: ${NEGO[nginx|1.2]}"
  log "$n worker(s): files, chain, negotiation and resumption checked; ${SECONDS_PER_RUN}s per run, ${PIN_NOTES[-1]}"

  run_rounds "$n" measure "${SERVERS[@]}"
  for s in "${SERVERS[@]}"; do stop_server "$s"; done
done
ROUND=1

# ---------------------------------------------------------------- report
has_aws=0; [[ $SKIP_AWS = 1 ]] || has_aws=1
header=("workload" "workers")
for s in "${SERVERS[@]}"; do header+=("$s"); done
if (( has_aws )); then header+=("aws/nginx"); fi
for s in "${SERVERS[@]}"; do header+=("$s CPU"); done
for s in "${SERVERS[@]}"; do header+=("$s per CPU-s"); done
if (( has_aws )); then header+=("aws/nginx per CPU-s"); fi
rows=()
for key in "${ROW_KEYS[@]}"; do
  n=${key##*@}; metric=${ROW_METRIC[$key]}
  for s in "${SERVERS[@]}"; do
    RESULT[$s|$key]=$(median "${VALS[$s|$key]:-}" "$metric")
    RESULT_CPU[$s|$key]=$(median "${CPUP[$s|$key]:-}" rps)
    RESULT_PER[$s|$key]=$(median "${PERCPU[$s|$key]:-}" "$metric")
  done
  row=("${ROW_LABEL[$key]}" "$n")
  for s in "${SERVERS[@]}"; do row+=("${RESULT[$s|$key]}"); done
  if (( has_aws )); then row+=("$(ratio "${RESULT[aws|$key]}" "${RESULT[nginx|$key]}")"); fi
  for s in "${SERVERS[@]}"; do c=${RESULT_CPU[$s|$key]}; [[ $c = - ]] || c+="%"; row+=("$c"); done
  for s in "${SERVERS[@]}"; do row+=("${RESULT_PER[$s|$key]}"); done
  if (( has_aws )); then row+=("$(ratio "${RESULT_PER[aws|$key]}" "${RESULT_PER[nginx|$key]}")"); fi
  rows+=("$(IFS=$'\t'; echo "${row[*]}")")
done

versions="$(version_of nginx), $(openssl version | awk '{print $1, $2}')"
versions+=", $(version_of wrk), $(curl --version | awk 'NR == 1 {print "curl " $2}')"
if (( has_aws )); then versions+=", $(version_of aws)"; fi
meta=$(machine_line "$versions")
runs="${SECONDS_PER_RUN}s per run after a ${WARMUP_SECONDS}s warm-up$(rounds_line)"
certs="ECDSA P-256 leaf + CA (the same files for both). Negotiated with a default OpenSSL client: $NEGO_NOTE. wrk and curl (keep-alive and 100 MiB rows) use TLS 1.3."
ktls="kTLS: kernel tcp_available_ulp: ${ULP:-none}"
for s in "${SERVERS[@]}"; do ktls+="; $s: ${KTLS[$s]}"; done

legend=(
  "req/s, conn/s, MiB/s: higher is better; aws/nginx > 1 means aws is faster."
  "CPU: the server's CPU time (user + system, all its processes and threads) during the run, in % of one CPU."
  "per CPU-s: requests, connections or MiB per second of server CPU time: the server's cost, whoever the bottleneck was; aws/nginx > 1 means aws needs less CPU for the same work."
)
if (( SATURATION > 0 )); then
  legend+=("~: the server, pinned to its own CPU(s), used less than ${SATURATION}% of them: the client was the bottleneck (or other processes took that CPU), so the figure and its ratio say little about the server; compare the per CPU-s columns.")
fi
legend+=("!: errors (listed below).")
close_notes=()
for s in "${SERVERS[@]}"; do
  if [[ -n ${CLOSE_NOTIFY[$s]:-} ]]; then close_notes+=("$s: ${CLOSE_NOTIFY[$s]} (last seen)"); fi
done

echo
echo "aws HTTPS benchmark — $meta"
echo "$runs"
echo "$certs"
echo "$ktls"
echo
print_table
echo; printf '%s\n' "${legend[@]}"
if (( ${#close_notes[@]} )); then echo; echo "close_notify:"; printf '  %s\n' "${close_notes[@]}"; fi
if (( ${#NOTES[@]} )); then echo; echo "errors and warnings:"; printf '  %s\n' "${NOTES[@]}"; fi
echo

report_sections() {
  if (( ${#close_notes[@]} )); then echo; echo "close_notify:"; echo; printf -- '- %s\n' "${close_notes[@]}"; fi
  if (( ${#NOTES[@]} )); then echo; echo "Errors and warnings:"; echo; printf -- '- %s\n' "${NOTES[@]}"; fi
}
write_report tls-latest.md "aws HTTPS benchmark" raw.log tls-latest-raw.log client "$certs" "$ktls"
