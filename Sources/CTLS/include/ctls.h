/*
 * ctls.h — the parts of OpenSSL aws cannot reach from Swift directly: macros (version limits,
 * modes, callbacks set through *_ctrl), and the C callbacks OpenSSL calls during a handshake
 * (SNI, ALPN, session-ticket keys). Everything else (SSL_read_ex, SSL_write_ex, SSL_get_error)
 * Swift calls itself, in Sources/Host/TLS/TLSSession.swift.
 *
 * Threads: contexts and SNI tables are built on the control thread and only read afterwards,
 * by every worker (SSL_CTX is safe to share once configured). The ticket-key ring is global and
 * guarded by its own lock.
 */
#ifndef AWS_CTLS_H
#define AWS_CTLS_H

#include <stddef.h>
#include <openssl/ssl.h>

/* A server context with aws's protocol settings (TLS 1.2-1.3, intermediate ciphers, ALPN
 * http/1.1, ticket keys from the shared ring, a session cache) and the PEM chain and key
 * given. NULL on failure, with the reason in `err`. `ktls`: ask OpenSSL for kernel TLS. */
SSL_CTX *aws_tls_context_new(const char *chain_file, const char *key_file, int ktls, char *err, size_t err_len);

/* Names to contexts for SNI. The table owns a reference to every context it holds. */
typedef struct aws_tls_sni aws_tls_sni;
aws_tls_sni *aws_tls_sni_new(SSL_CTX *default_ctx);
/* `name`: "host.example" or "*.example" (one label). 0 on success. */
int aws_tls_sni_add(aws_tls_sni *table, const char *name, SSL_CTX *ctx);
/* The context chosen for `server_name` (NULL: the default). For tests and logs. */
SSL_CTX *aws_tls_sni_lookup(const aws_tls_sni *table, const char *server_name);
void aws_tls_sni_free(aws_tls_sni *table);

/* A server session on an accepted socket, with the table's default context; the table must
 * outlive the session (the SNI callback reads it during the handshake). NULL on failure. */
SSL *aws_tls_session_new(aws_tls_sni *table, int fd);

/* Whether the session's writes go through kernel TLS (so SSL_sendfile is zero copy). */
int aws_tls_ktls_send(SSL *ssl);

/* Whether the kernel offers the "tls" TCP upper-layer protocol. */
int aws_tls_kernel_has_tls_ulp(char *ulps, size_t ulps_len);

/* The first error on this thread's OpenSSL queue as text (empty when none); clears the queue.
 * Returns the error's reason code. */
int aws_tls_take_error(char *buf, size_t len);

/* Reason code of "an HTTP request arrived instead of a ClientHello". */
int aws_tls_reason_http_request(void);

/* The protocol version as text ("TLSv1.3"). */
const char *aws_tls_version(const SSL *ssl);

/* Seconds a ticket key encrypts new tickets; keys are accepted for three times as long. */
void aws_tls_set_ticket_key_lifetime(unsigned seconds);

/* Session-ticket keys rotated so far (for logs and tests). */
unsigned long aws_tls_ticket_key_generation(void);

#endif
