/*
 * aws_plugin.h — the aws plugin ABI, version 1.2.
 *
 * A plugin is a shared library in the folder given to `aws --plugins DIR`. It exports one
 * symbol, `aws_plugin_entry` (see AWS_PLUGIN_ENTRY_SYMBOL), and from then on talks to the
 * server only through the tables declared here. Nothing else is linked: a plugin needs this
 * header and a C compiler (or Swift, or anything that can export a C function), never the
 * server's sources or its exact version.
 *
 * VERSIONING
 *   - Every table the two sides exchange starts with `aws_abi_header`: a magic number, the ABI
 *     major and minor its author compiled against, and the size of the struct as compiled.
 *   - A different MAJOR is refused at load time, with a log line naming the file and both
 *     versions. Majors change only when a field changes meaning or moves.
 *   - MINOR versions only ever append fields at the END of a struct. A reader treats any field
 *     that lies beyond the `struct_size` it was given as absent (NULL / 0): the host does this
 *     for plugin tables, and plugins do it for the host table with AWS_HOST_HAS(). So a plugin
 *     built against 1.0 loads in a 1.1 host, and a 1.1 plugin can run on a 1.0 host if it checks
 *     AWS_HOST_HAS() before calling a 1.1 function.
 *   History: 1.0 — initial. 1.1 — aws_host_api.request_scratch, aws_host_api.plugin_name.
 *   1.2 — aws_request_view.scheme and .tls_version (HTTPS). The view is the host's struct, so a
 *   plugin reads these two only when the host table's header.abi_minor is 2 or more.
 *
 * THREADS AND RE-ENTRANCY
 *   - Every callback runs on the event-loop thread that owns the request, and must not block:
 *     no blocking I/O, no sleeping, no waiting on locks held for long. Work that blocks belongs on
 *     a thread of the plugin's own, which hands results back with `post` (the one host function
 *     that may be called from any thread).
 *   - All other host functions must be called on the loop thread, from inside a callback or a
 *     posted function.
 *   - The server runs N event loops (`--workers N`, default one per CPU), each on its own
 *     thread. A request lives on one loop from start to end: all its callbacks and the
 *     functions posted for it run on that loop's thread. Different requests of the same plugin
 *     run on different loops AT THE SAME TIME, so anything a plugin shares between requests
 *     (globals, counters, caches) may be touched by several threads at once and needs its own
 *     locking or atomics. `init` and `shutdown` run on the server's control thread, never
 *     concurrently with each other, and `init` finishes before any request reaches the plugin.
 *   - A host function given a live handle on another loop's thread, or a handle that was once
 *     valid on any thread that runs no loop (a plugin's own), returns AWS_E_THREAD; an ended
 *     handle on a loop thread returns AWS_E_GONE.
 *   - The host never calls into a plugin from inside a host function: e.g. `send_part` never
 *     calls `on_proceed` before it returns. Callbacks happen only after the current one returned.
 *   - A callback that blocks anyway stalls every connection of its loop. The host times every
 *     call into plugin code on a loop (callbacks, part releases, posted functions, function
 *     endpoints): one longer than the server's --plugin-slow-ms (default 100 ms) is logged with
 *     the plugin, the route and the time, and counted; one still running after a second is
 *     reported while it runs.
 *
 * UNLOADING AND THREADS THAT OUTLIVE THEIR VERSION
 *   A plugin stops and joins every thread it started by the time `shutdown` returns. If one
 *   keeps running anyway (a bug), it runs the code and globals of a version the server has
 *   retired. So that such a bug costs memory and never the server, the host NEVER UNMAPS A
 *   LIBRARY WHOSE `init` HAS BEEN CALLED (it is never dlclose'd: not after `shutdown`, not when
 *   `init` refused to load, not at exit), and never frees its `ctx`: that version's code,
 *   globals, `host` table, `ctx`, config strings and document root stay valid until the process
 *   exits. Its request handles return AWS_E_GONE (AWS_E_THREAD from its own threads), and `post`
 *   still calls fn exactly once, with alive = 0.
 *   The price: every version that has been initialised stays in memory until the server exits.
 *   Each load is from a copy of the file of its own (in $TMPDIR/aws-plugins-<pid>/, removed at
 *   exit), so every reload that loads a changed file keeps, for good, the pages of the old
 *   version the process touched, a few memory mappings, and the copy on disk (in memory if
 *   $TMPDIR is a tmpfs): about 26 KiB of RSS and 17 KB of disk for a small C plugin (figures in
 *   Plugins/README.md). An unchanged file is not loaded again. Restart the server to give the
 *   memory back.
 *   A library refused before its `init` is called (no entry symbol, bad magic, another ABI
 *   major) is closed again at once: start nothing from ELF constructors.
 *
 * REQUEST HANDLES
 *   An `aws_request` is a 64-bit value, not a pointer: it names one request on one connection
 *   plus a generation number. Once the request has ended (response finished, client gone,
 *   connection closed) every host function given that handle returns AWS_E_GONE and does
 *   nothing — it never crashes, even if the connection object has been reused since.
 *
 * ERRORS IN TWO PHASES
 *   - Before the response head is sent, a handler can fail the request with an HTTP status
 *     (return it from on_request, or call `fail`): the host sends its own error page.
 *   - After the head is sent, `fail` can only end the stream: the host closes the connection so
 *     the client sees a truncated response rather than a wrong one.
 *   - Misuse (a second response, sending after `finish`, a part while one is outstanding) is
 *     answered with an error code, logged, and the request ended; never a server crash.
 *
 * OWNERSHIP, IN ONE RULE
 *   Pointers the host hands to a callback (strings, the request view, body bytes) are borrowed:
 *   valid until that callback returns; copy what you keep. Pointers a plugin hands to the host
 *   are copied before the call returns, except body parts, which say how they are owned
 *   (see aws_part).
 */
#ifndef AWS_PLUGIN_H
#define AWS_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AWS_PLUGIN_MAGIC 0x61777331u /* "aws1" */
#define AWS_PLUGIN_ABI_MAJOR 1
#define AWS_PLUGIN_ABI_MINOR 3

/* The name of the one symbol a plugin exports; its type is aws_plugin_entry_fn. */
#define AWS_PLUGIN_ENTRY_SYMBOL "aws_plugin_entry"

/* ---- return codes of host functions (negative) ----------------------------------------- */
enum {
    AWS_OK = 0,
    AWS_E_GONE = -1,      /* the request has ended: the client left or the response finished */
    AWS_E_STATE = -2,     /* not allowed now: e.g. a header after the head was sent, a second part
                             while one is outstanding, anything after finish */
    AWS_E_INVALID = -3,   /* a bad argument: NULL where a value is required, a status out of
                             range, a header name that is not a token, a value with CR or LF */
    AWS_E_CONFLICT = -4,  /* register_route: another route already owns that method and path */
    AWS_E_NOMEM = -5,
    AWS_E_THREAD = -6     /* called from a thread other than the request's loop thread */
};

/* Log levels for aws_host_api.log, the same as the server's --log-level names. */
enum {
    AWS_LOG_DEBUG = 1,
    AWS_LOG_INFO = 2,
    AWS_LOG_NOTICE = 3,
    AWS_LOG_WARNING = 4,
    AWS_LOG_ERROR = 5
};

/* The header every exchanged table begins with. `struct_size` is sizeof the struct as its
 * author compiled it. */
typedef struct aws_abi_header {
    uint32_t magic;        /* AWS_PLUGIN_MAGIC */
    uint16_t abi_major;    /* AWS_PLUGIN_ABI_MAJOR when compiled */
    uint16_t abi_minor;    /* AWS_PLUGIN_ABI_MINOR when compiled */
    uint32_t struct_size;  /* sizeof(the whole struct) */
    uint32_t reserved;     /* 0 */
} aws_abi_header;

#define AWS_ABI_HEADER_INIT(type) \
    { AWS_PLUGIN_MAGIC, AWS_PLUGIN_ABI_MAJOR, AWS_PLUGIN_ABI_MINOR, (uint32_t)sizeof(type), 0 }

/* A byte string that is NOT necessarily NUL-terminated. `ptr` may be NULL when `len` is 0. */
typedef struct aws_str {
    const char *ptr;
    size_t len;
} aws_str;

/* A request handle: see REQUEST HANDLES above. 0 is never a valid handle. */
typedef uint64_t aws_request;

/* Opaque: the host's record of one loaded plugin; passed back to registration and logging. */
typedef struct aws_plugin_ctx aws_plugin_ctx;

/* ---- the request, as a handler sees it --------------------------------------------------- */

typedef struct aws_header {
    aws_str name;   /* as the client sent it (case preserved) */
    aws_str value;  /* leading and trailing whitespace removed */
} aws_header;

/* A read-only view of the request, borrowed: valid only during the callback it is passed to.
 * All strings are raw bytes from the request; `path` is percent-decoded, the others are not. */
typedef struct aws_request_view {
    aws_str method;          /* "GET", "POST", ... */
    aws_str target;          /* the request target as sent: "/echo?x=1" */
    aws_str path;            /* decoded path without the query: "/echo" */
    aws_str query;           /* after '?', without it; empty when absent */
    int version_major;       /* 1 */
    int version_minor;       /* 0 or 1 */
    const aws_header *headers;
    size_t header_count;
    aws_str remote_addr;     /* "127.0.0.1:54321" or "[::1]:54321" */
    int64_t content_length;  /* the request body's length, -1 when unknown (chunked) or none */
    /* With AWS_ROUTE_BUFFER_BODY: the whole body (possibly empty). Otherwise empty: the body
     * arrives through on_body. */
    aws_str body;
    /* ---- ABI 1.2: read these only when the host's header.abi_minor >= 2 ---- */
    aws_str scheme;          /* "https" when the request came over TLS, else "http" */
    aws_str tls_version;     /* "TLSv1.3" or "TLSv1.2" over TLS; empty (len 0) over plain HTTP */
} aws_request_view;

/* ---- response body parts ---------------------------------------------------------------- */

enum {
    AWS_PART_MEMORY = 1,  /* bytes in memory */
    AWS_PART_FILE = 2     /* a region of an open file, sent with sendfile(2) */
};

/* One part of a response body, handed to send_part.
 *
 * MEMORY parts: if `release` is NULL the host copies the bytes before send_part returns.
 * Otherwise the host BORROWS them and calls release(release_ctx) exactly once when it no longer
 * needs them (sent, or the request ended); the bytes must stay valid and unchanged until then.
 *
 * FILE parts: the host sends `length` bytes of `fd` from `offset` (sendfile; or libaio when
 * AWS_PART_FILE_AIO is set in `flags`: from the page cache with RWF_NOWAIT where it holds the
 * range, else through an O_DIRECT descriptor the host opens on the same file; an fd opened
 * O_DIRECT is read as it is). The descriptor is BORROWED like memory: if `release` is
 * NULL the host dup()s it and the plugin may close its own at once; otherwise it stays open until
 * release(release_ctx) is called. The host never changes the descriptor's file offset or flags.
 *
 * A part of length 0 sends no bytes but makes the host send the response head now (a stream
 * can show its headers before its first data). If send_part returns an error the part was not
 * taken: release is NOT called for it. For a HEAD request the host drops the bytes (release
 * still runs), and `finish` may come before the declared length was sent. */
typedef struct aws_part {
    uint32_t kind;      /* AWS_PART_MEMORY or AWS_PART_FILE */
    uint32_t flags;     /* AWS_PART_FILE_AIO */
    const void *data;   /* MEMORY */
    size_t length;      /* MEMORY and FILE: bytes to send */
    int fd;             /* FILE */
    int64_t offset;     /* FILE */
    void (*release)(void *release_ctx);
    void *release_ctx;
} aws_part;

#define AWS_PART_FILE_AIO 1u

/* ---- handlers and routes ---------------------------------------------------------------- */

/* A route's callbacks. Every callback gets the request handle and the route's `user` pointer.
 * Only on_request is required. */
typedef struct aws_handler {
    aws_abi_header header;  /* AWS_ABI_HEADER_INIT(aws_handler) */
    void *user;

    /* The request head is complete (with AWS_ROUTE_BUFFER_BODY: the whole body has arrived).
     * Return 0 to take the request — answer now or later (on_body, on_proceed, a posted
     * function) — or an HTTP status 400..599 to have the host answer with its error page. */
    int (*on_request)(aws_request req, const aws_request_view *view, void *user);

    /* A piece of the request body, in order; `last` is 1 on the final call (which may carry 0
     * bytes). Not called with AWS_ROUTE_BUFFER_BODY, nor for requests without a body. The bytes
     * are borrowed. */
    void (*on_body)(aws_request req, const void *data, size_t len, int last, void *user);

    /* The part handed to send_part has been consumed: the host can take the next one.
     * A plugin that streams produces its next part here (pull model: one part outstanding). */
    void (*on_proceed)(aws_request req, void *user);

    /* The client went away (or a timeout ended the request, or its body turned out malformed
     * or over the limit: the host then answers 400/413 itself if the head has not gone out, else
     * closes the connection) before the response was complete. The handle is
     * already invalid; free per-request state here or in on_end. A client that closes its
     * sending side once the request is complete counts as gone (as nginx treats clients of
     * proxied requests), so an idle stream learns at once that nobody is listening. */
    void (*on_abort)(aws_request req, void *user);

    /* Called exactly once for every request on_request accepted, last of all callbacks,
     * whether it finished or was aborted. */
    void (*on_end)(aws_request req, void *user);
} aws_handler;

enum {
    AWS_MATCH_EXACT = 1,   /* the path equals `path` */
    AWS_MATCH_PREFIX = 2   /* the path is `path` or starts with `path` followed by '/', or
                              `path` ends in '/' and the path starts with it */
};

enum {
    /* Deliver the body whole in aws_request_view.body (up to the server's --max-body; larger
     * bodies get 413 without calling the plugin) instead of through on_body. */
    AWS_ROUTE_BUFFER_BODY = 1u
};

typedef struct aws_route {
    aws_abi_header header;    /* AWS_ABI_HEADER_INIT(aws_route) */
    const char *method;       /* "POST", ... or NULL / "*" for any method */
    const char *path;         /* begins with '/' */
    uint32_t match;           /* AWS_MATCH_EXACT or AWS_MATCH_PREFIX */
    uint32_t flags;           /* AWS_ROUTE_BUFFER_BODY */
    const aws_handler *handler; /* must stay valid until the plugin is unloaded */
} aws_route;

/* ---- the host's table ------------------------------------------------------------------- */

typedef struct aws_host_api {
    aws_abi_header header;

    /* -- registration: only during the plugin's init ------------------------------------- */

    /* Adds a route. Routes of one plugin may not overlap each other; a route that overlaps
     * another plugin's is a start-up error naming both plugins (AWS_E_CONFLICT). */
    int (*register_route)(aws_plugin_ctx *ctx, const aws_route *route);

    /* Exposes an ordinary C function at `path` (GET or POST). `signature` declares it in C:
     *   "double area(double w, double h)", "int64_t add(int64_t a, int64_t b)",
     *   "const char *greet(const char *name)".
     * Types: int, int32_t, int64_t, long, uint32_t, uint64_t, double, float, const char *,
     * and void (return only). Parameters are taken by name from the query string or an
     * application/x-www-form-urlencoded body, converted to the C type, and the function is
     * called through libffi; the result is sent as text, or as JSON {"result": ...} when the
     * request asks with `Accept: application/json` or `format=json`. A missing or malformed
     * parameter is answered 400 naming it. A returned `const char *` is copied and not freed.
     * The host sets errno to 0 before the call: a function that leaves it non-zero (ERANGE,
     * EDOM, ... as strtol and <math.h> do) has no result for these arguments, and the request
     * is answered 422 with "NAME: strerror(errno)". So a function must not leave errno set by
     * a call that did not make it fail. */
    int (*register_function)(aws_plugin_ctx *ctx, const char *path, const char *signature, void (*fn)(void));

    /* -- configuration and services (any time, on the loop thread or during init) ---------- */

    /* The value of --plugin-config NAME.KEY=VALUE for this plugin, or NULL. NUL-terminated,
     * valid until the plugin is unloaded. */
    const char *(*config)(aws_plugin_ctx *ctx, const char *key);

    /* Writes a line to the server log under the plugin's name. Copied. */
    void (*log)(aws_plugin_ctx *ctx, int level, const char *message, size_t len);

    /* The document root, absolute and canonical, NUL-terminated, valid while loaded. */
    const char *(*document_root)(aws_plugin_ctx *ctx);

    /* Monotonic time in nanoseconds. Any thread. */
    uint64_t (*now_ns)(void);

    /* -- the response --------------------------------------------------------------------- */

    /* Sets the status (200..599) before the head is sent. Default 200. With 204 or 304 the
     * response has no body: parts are accepted and dropped (their release still runs). */
    int (*set_status)(aws_request req, int status);

    /* Adds a response header (copied). The host supplies Date, Server, Content-Length or
     * Transfer-Encoding and Connection itself and refuses those names (AWS_E_INVALID). */
    int (*add_header)(aws_request req, aws_str name, aws_str value);

    /* Declares the body's length. Without it the body goes out chunked on HTTP/1.1 and
     * delimited by closing the connection on HTTP/1.0. */
    int (*set_content_length)(aws_request req, uint64_t length);

    /* Queues one body part; sends the head first if it has not been sent. One part may be
     * outstanding: wait for on_proceed before the next (else AWS_E_STATE). */
    int (*send_part)(aws_request req, const aws_part *part);

    /* Ends the response (after the last part, which may still be outstanding). With a
     * declared length, fewer bytes than declared is an error that closes the connection. */
    int (*finish)(aws_request req);

    /* Fails the request: before the head, the host answers `status` (400..599) with its error
     * page; after it, the connection is closed. */
    int (*fail)(aws_request req, int status);

    /* A lookup of a request header by name (case-insensitive); `found` 0 when absent. Valid
     * only during a callback for this request (the bytes are borrowed). */
    aws_str (*request_header)(aws_request req, const char *name, int *found);

    /* Runs fn(req, arg, alive) on the request's loop thread soon. The ONE host function that
     * may be called from any thread. fn is always called exactly once: `alive` is 1 if the
     * request is still going, 0 if it has ended meanwhile (so `arg` can always be freed there).
     * Returns AWS_E_INVALID (and never calls fn) for a handle that was never valid. */
    int (*post)(aws_request req, void (*fn)(aws_request req, void *arg, int alive), void *arg);

    /* Per-request user data, kept by the host for the plugin (NULL by default). */
    int (*set_request_data)(aws_request req, void *data);
    void *(*request_data)(aws_request req);

    /* -- since 1.1 --------------------------------------------------------------------------- */

    /* Scratch memory (8-byte aligned) freed automatically when the request ends. NULL if the
     * request is gone or memory is short. */
    void *(*request_scratch)(aws_request req, size_t size);

    /* The plugin's name as the host knows it (the file name without ".so"). */
    const char *(*plugin_name)(aws_plugin_ctx *ctx);

    /* -- since 1.3 (check with AWS_HOST_HAS(host, compress_response)) ---------------------- */

    /* Asks for the response body to be compressed as it streams: before the first send_part
     * (and so before the head is sent); called after a part it is a misuse (AWS_E_STATE, and
     * the request ends like any misuse), since that part would go out uncompressed.
     * The host picks br, zstd or gzip by the request's Accept-Encoding (q-values) unless the
     * server runs with --no-compress. Returns 1 when it will compress: Content-Encoding is
     * added, any declared length is dropped and set_content_length is refused (AWS_E_STATE)
     * from now on, so the body goes out chunked (HTTP/1.1) or delimited by the close (1.0);
     * every MEMORY part is compressed and flushed as it is sent (a stream's events are not held
     * back), finish ends the compressed stream; FILE parts are refused (AWS_E_STATE: the host
     * would have to read them on its loop). Returns 0 when it will not (the client accepts no
     * coding the host has, or compression is off): the body goes out as sent. Either way the
     * response carries Vary: Accept-Encoding. A 204 or 304 response has no body and no
     * Content-Encoding. Send text: already-compressed data gains nothing. */
    int (*compress_response)(aws_request req);
} aws_host_api;

/* True when the host's table is new enough to have `field`. */
#define AWS_HOST_HAS(host, field) \
    ((host)->header.struct_size >= offsetof(aws_host_api, field) + sizeof((host)->field))

/* ---- the plugin's descriptor ------------------------------------------------------------ */

/* One configuration pair from --plugin-config NAME.KEY=VALUE. */
typedef struct aws_config_entry {
    const char *key;
    const char *value;
} aws_config_entry;

typedef struct aws_plugin_descriptor {
    aws_abi_header header;  /* AWS_ABI_HEADER_INIT(aws_plugin_descriptor) */
    const char *name;       /* a short name for logs; the host uses the file name if NULL */
    const char *version;    /* the plugin's own version string, for logs */

    /* Called once after loading, on the server's control thread (not a loop thread), before
     * serving starts or, on reload, before the new version receives any request.
     * Register routes here. Return 0, or non-zero to refuse to load (the host logs it and
     * skips the plugin). `host` and `ctx` stay valid until the process exits (see UNLOADING). */
    int (*init)(const aws_host_api *host, aws_plugin_ctx *ctx);

    /* Called once before unloading, on the control thread, when no request on any loop uses
     * the plugin any more (or at exit). Stop and join your threads here. Functions the plugin
     * posted before it returns still run (with alive = 0). The library is not unmapped after it
     * (see UNLOADING). May be NULL. */
    void (*shutdown)(aws_plugin_ctx *ctx);
} aws_plugin_descriptor;

/* The exported entry point: returns the plugin's descriptor, which must stay valid until the
 * library is unloaded (a static const struct is the usual choice).
 *
 *     AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &plugin; }
 */
typedef const aws_plugin_descriptor *(*aws_plugin_entry_fn)(void);

#define AWS_PLUGIN_EXPORT __attribute__((visibility("default")))

/* ---- pinned layout: these change only with the major version ----------------------------- */
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define AWS_STATIC_ASSERT(c, m) _Static_assert(c, m)
#elif defined(__cplusplus)
#define AWS_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define AWS_STATIC_ASSERT(c, m)
#endif
#if UINTPTR_MAX == 0xffffffffffffffffu
AWS_STATIC_ASSERT(sizeof(aws_abi_header) == 16, "aws_abi_header is 16 bytes");
AWS_STATIC_ASSERT(sizeof(aws_str) == 16, "aws_str is 16 bytes");
AWS_STATIC_ASSERT(sizeof(aws_request) == 8, "aws_request is 64-bit");
AWS_STATIC_ASSERT(sizeof(aws_header) == 32, "aws_header layout");
AWS_STATIC_ASSERT(sizeof(aws_request_view) == 160, "aws_request_view layout 1.2");
AWS_STATIC_ASSERT(sizeof(aws_part) == 56, "aws_part layout");
AWS_STATIC_ASSERT(sizeof(aws_handler) == 64, "aws_handler layout v1");
AWS_STATIC_ASSERT(sizeof(aws_route) == 48, "aws_route layout v1");
AWS_STATIC_ASSERT(sizeof(aws_plugin_descriptor) == 48, "aws_plugin_descriptor layout v1");
AWS_STATIC_ASSERT(offsetof(aws_host_api, register_route) == 16, "host table starts after its header");
AWS_STATIC_ASSERT(offsetof(aws_host_api, request_scratch) == 16 + 16 * 8, "1.0 host table has 16 functions");
AWS_STATIC_ASSERT(offsetof(aws_host_api, compress_response) == 16 + 18 * 8, "1.1 host table has 18 functions");
AWS_STATIC_ASSERT(sizeof(aws_host_api) == 16 + 19 * 8, "1.3 host table has 19 functions");
#endif

#ifdef __cplusplus
}
#endif
#endif /* AWS_PLUGIN_H */
