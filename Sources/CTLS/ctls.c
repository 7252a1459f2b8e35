// OpenSSL plumbing for aws: context settings, SNI, ALPN, the shared session-ticket key ring.
// See include/ctls.h for what each function promises.
#include "ctls.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

// Mozilla's "intermediate" profile for TLS 1.2, without the DHE suites: ECDHE key exchange and
// AEAD ciphers only. TLS 1.3 keeps OpenSSL's default suites (all AEAD).
static const char *const cipher_list =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
static const char *const groups = "X25519:P-256:P-384";

// ALPN, in wire format. h2 goes in front of http/1.1 once aws speaks it.
static const unsigned char alpn_protocols[] = "\x08http/1.1";

// ---------------------------------------------------------------- session-ticket keys

// One ring for the whole process: every worker, and every context (the SNI ones, and the ones
// a certificate reload builds), encrypts tickets with the newest key, so a ticket issued by
// any worker, before or after a reload, resumes on any other. The newest key is replaced every
// `key_lifetime` seconds; the two before it still decrypt (the ticket is then renewed).
struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    time_t created;
};

enum { ring_size = 3 };
static struct ticket_key ring[ring_size];
static int ring_count;
static unsigned key_lifetime = 3600;
static unsigned long generation;
static pthread_rwlock_t ring_lock = PTHREAD_RWLOCK_INITIALIZER;

static time_t now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

// Under the write lock.
static int rotate_locked(time_t now) {
    struct ticket_key fresh;
    if (RAND_bytes(fresh.name, sizeof fresh.name) != 1 || RAND_bytes(fresh.aes, sizeof fresh.aes) != 1
        || RAND_bytes(fresh.hmac, sizeof fresh.hmac) != 1)
        return -1;
    fresh.created = now;
    memmove(&ring[1], &ring[0], sizeof(struct ticket_key) * (ring_size - 1));
    ring[0] = fresh;
    if (ring_count < ring_size) ring_count++;
    generation++;
    OPENSSL_cleanse(&fresh, sizeof fresh);
    return 0;
}

// Takes the read lock; rotates first (under the write lock) when the newest key is too old.
static int ring_read_lock(void) {
    time_t now = now_seconds();
    pthread_rwlock_rdlock(&ring_lock);
    if (ring_count > 0 && now - ring[0].created < (time_t)key_lifetime) return 0;
    pthread_rwlock_unlock(&ring_lock);
    pthread_rwlock_wrlock(&ring_lock);
    int rc = 0;
    if (ring_count == 0 || now - ring[0].created >= (time_t)key_lifetime) rc = rotate_locked(now);
    pthread_rwlock_unlock(&ring_lock);
    if (rc != 0) return -1;
    pthread_rwlock_rdlock(&ring_lock);
    return 0;
}

static int set_hmac_key(EVP_MAC_CTX *hctx, unsigned char *key) {
    OSSL_PARAM params[3];
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key, 32);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    return EVP_MAC_CTX_set_params(hctx, params);
}

// OpenSSL's ticket-key callback: 1 = use this key, 2 = key accepted but renew the ticket,
// 0 = unknown key (full handshake), -1 = failure.
static int ticket_key_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                         EVP_MAC_CTX *hctx, int encrypt) {
    (void)ssl;
    if (ring_read_lock() != 0) return -1;
    int rc = -1;
    if (encrypt) {
        struct ticket_key *k = &ring[0];
        if (RAND_bytes(iv, 16) == 1 && EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) == 1
            && set_hmac_key(hctx, k->hmac) == 1) {
            memcpy(key_name, k->name, 16);
            rc = 1;
        }
    } else {
        rc = 0;
        time_t now = now_seconds();
        for (int i = 0; i < ring_count; i++) {
            struct ticket_key *k = &ring[i];
            if (memcmp(key_name, k->name, 16) != 0) continue;
            if (now - k->created >= (time_t)key_lifetime * ring_size) break;  // expired
            if (set_hmac_key(hctx, k->hmac) != 1 || EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1) {
                rc = -1;
                break;
            }
            rc = i == 0 ? 1 : 2;
            break;
        }
    }
    pthread_rwlock_unlock(&ring_lock);
    return rc;
}

void aws_tls_set_ticket_key_lifetime(unsigned seconds) {
    pthread_rwlock_wrlock(&ring_lock);
    key_lifetime = seconds > 0 ? seconds : 1;
    pthread_rwlock_unlock(&ring_lock);
}

unsigned long aws_tls_ticket_key_generation(void) {
    pthread_rwlock_rdlock(&ring_lock);
    unsigned long g = generation;
    pthread_rwlock_unlock(&ring_lock);
    return g;
}

// ---------------------------------------------------------------- SNI

struct aws_tls_sni {
    SSL_CTX *default_ctx;
    size_t count, capacity;
    char **names;      // lower case; "*.example.test" for wildcards
    SSL_CTX **contexts;
};

aws_tls_sni *aws_tls_sni_new(SSL_CTX *default_ctx) {
    aws_tls_sni *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    SSL_CTX_up_ref(default_ctx);
    t->default_ctx = default_ctx;
    return t;
}

int aws_tls_sni_add(aws_tls_sni *t, const char *name, SSL_CTX *ctx) {
    if (t->count == t->capacity) {
        size_t cap = t->capacity ? t->capacity * 2 : 4;
        char **names = realloc(t->names, cap * sizeof *names);
        if (!names) return -1;
        t->names = names;
        SSL_CTX **contexts = realloc(t->contexts, cap * sizeof *contexts);
        if (!contexts) return -1;
        t->contexts = contexts;
        t->capacity = cap;
    }
    char *copy = strdup(name);
    if (!copy) return -1;
    for (char *p = copy; *p; p++) *p = (char)tolower((unsigned char)*p);
    SSL_CTX_up_ref(ctx);
    t->names[t->count] = copy;
    t->contexts[t->count] = ctx;
    t->count++;
    return 0;
}

SSL_CTX *aws_tls_sni_lookup(const aws_tls_sni *t, const char *server_name) {
    size_t len = strlen(server_name);
    if (len > 0 && server_name[len - 1] == '.') len--;  // "host.example." is "host.example"
    for (size_t i = 0; i < t->count; i++) {
        const char *n = t->names[i];
        if (n[0] != '*' && strlen(n) == len && strncasecmp(n, server_name, len) == 0) return t->contexts[i];
    }
    // "*.example.test" matches exactly one label in front of "example.test".
    const char *dot = memchr(server_name, '.', len);
    if (!dot || dot == server_name) return NULL;
    size_t rest = len - (size_t)(dot - server_name);
    for (size_t i = 0; i < t->count; i++) {
        const char *n = t->names[i];
        if (n[0] == '*' && strlen(n + 1) == rest && strncasecmp(n + 1, dot, rest) == 0) return t->contexts[i];
    }
    return NULL;
}

void aws_tls_sni_free(aws_tls_sni *t) {
    if (!t) return;
    for (size_t i = 0; i < t->count; i++) {
        free(t->names[i]);
        SSL_CTX_free(t->contexts[i]);
    }
    free(t->names);
    free(t->contexts);
    SSL_CTX_free(t->default_ctx);
    free(t);
}

// Runs during the handshake, on the worker thread that accepted the connection.
static int servername_cb(SSL *ssl, int *alert, void *arg) {
    (void)alert;
    (void)arg;
    const aws_tls_sni *t = SSL_get_app_data(ssl);
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!t || !name) return SSL_TLSEXT_ERR_OK;
    SSL_CTX *ctx = aws_tls_sni_lookup(t, name);
    if (ctx && ctx != SSL_get_SSL_CTX(ssl)) SSL_set_SSL_CTX(ssl, ctx);
    return SSL_TLSEXT_ERR_OK;
}

// ---------------------------------------------------------------- ALPN

// RFC 7301 §3.2: no protocol in common is a fatal no_application_protocol alert.
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                   unsigned int inlen, void *arg) {
    (void)ssl;
    (void)arg;
    unsigned char *selected;
    unsigned char length;
    if (SSL_select_next_proto(&selected, &length, alpn_protocols, sizeof alpn_protocols - 1, in, inlen)
        != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = selected;
    *outlen = length;
    return SSL_TLSEXT_ERR_OK;
}

// ---------------------------------------------------------------- contexts and sessions

// An encrypted key would make OpenSSL prompt on the terminal: refuse instead.
static int no_password(char *buf, int size, int rwflag, void *u) {
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

static void take_error_into(char *err, size_t len, const char *what, const char *file) {
    unsigned long e = ERR_get_error();
    char reason[256] = "";
    if (e) ERR_error_string_n(e, reason, sizeof reason);
    ERR_clear_error();
    snprintf(err, len, "%s%s%s: %s", what, file ? " " : "", file ? file : "", e ? reason : "unknown error");
}

SSL_CTX *aws_tls_context_new(const char *chain_file, const char *key_file, int ktls, char *err, size_t err_len) {
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        take_error_into(err, err_len, "cannot create a TLS context", NULL);
        return NULL;
    }
    // No SSL_OP_CIPHER_SERVER_PREFERENCE: with only strong suites on offer, the intermediate
    // profile lets the client choose (it knows whether it has AES hardware). A peer that closes
    // without close_notify is an ordinary end of stream for HTTP/1.1 with framed messages.
    uint64_t options = SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF;
    if (ktls) options |= SSL_OP_ENABLE_KTLS;
    SSL_CTX_set_options(ctx, options);
    // Partial writes: SSL_write returns after each record, so a full socket never leaves half a
    // buffer in doubt. Moving buffer: the retry after WANT_WRITE may come from a buffer that moved
    // (a grown array) with the same bytes. Release buffers: an idle connection keeps no 16 KiB
    // read and write buffers.
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    // Read-ahead: one recv takes every record that is there (without it: two per record). The
    // caller then asks SSL_has_pending before waiting for epoll. Kernel TLS reads records itself.
    if (!ktls) SSL_CTX_set_read_ahead(ctx, 1);
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 || SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1
        || SSL_CTX_set_cipher_list(ctx, cipher_list) != 1 || SSL_CTX_set1_groups_list(ctx, groups) != 1) {
        take_error_into(err, err_len, "cannot apply the TLS protocol settings", NULL);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_default_passwd_cb(ctx, no_password);
    if (SSL_CTX_use_certificate_chain_file(ctx, chain_file) != 1) {
        take_error_into(err, err_len, "cannot load the certificate chain", chain_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        take_error_into(err, err_len, "cannot load the private key", key_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        take_error_into(err, err_len, "the private key does not match the certificate", key_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    // Resumption: stateless tickets (TLS 1.2 and 1.3) from the shared key ring, and a session
    // cache for TLS 1.2 clients that resume by session ID. One TLS 1.3 ticket per handshake is
    // enough for HTTP/1.1 (a client resumes one connection at a time).
    static const unsigned char sid_context[] = "aws";
    SSL_CTX_set_session_id_context(ctx, sid_context, sizeof sid_context - 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, 20480);
    SSL_CTX_set_timeout(ctx, 3600);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
    return ctx;
}

SSL *aws_tls_session_new(aws_tls_sni *table, int fd) {
    SSL *ssl = SSL_new(table->default_ctx);
    if (!ssl) return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_app_data(ssl, table);
    SSL_set_accept_state(ssl);
    return ssl;
}

int aws_tls_ktls_send(SSL *ssl) { return BIO_get_ktls_send(SSL_get_wbio(ssl)) ? 1 : 0; }

int aws_tls_kernel_has_tls_ulp(char *ulps, size_t ulps_len) {
    if (ulps_len) ulps[0] = 0;
    FILE *f = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "re");
    if (!f) return 0;
    char line[256] = "";
    if (!fgets(line, sizeof line, f)) line[0] = 0;
    fclose(f);
    line[strcspn(line, "\n")] = 0;
    if (ulps_len) snprintf(ulps, ulps_len, "%s", line);
    for (char *word = strtok(line, " \t"); word; word = strtok(NULL, " \t"))
        if (strcmp(word, "tls") == 0) return 1;
    return 0;
}

int aws_tls_take_error(char *buf, size_t len) {
    unsigned long e = ERR_get_error();
    if (len) buf[0] = 0;
    if (e && len) ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return e ? ERR_GET_REASON(e) : 0;
}

int aws_tls_reason_http_request(void) { return SSL_R_HTTP_REQUEST; }

const char *aws_tls_version(const SSL *ssl) { return SSL_get_version(ssl); }
