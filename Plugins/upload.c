/*
 * upload — POST /upload stores the request body in a file, streamed: each piece goes to disk as
 * it arrives (on_body), so a body never sits in memory whole.
 *
 *   - The folder is --plugin-config upload.dir=DIR, default <document root>/uploads; it is
 *     created (one level, mode 0755) at load time if missing.
 *   - The limit is --plugin-config upload.max=BYTES, default 10485760 (10 MiB). A Content-Length
 *     over it is refused with 413 before anything is written; a chunked body that grows past it
 *     is failed with 413 and its partial file removed. (The server's --max-body caps every body
 *     before the plugin sees it: a larger upload.max has no effect beyond it.)
 *   - Each body gets a fresh, unguessable name: upload-<unix time>-<counter>-<16 hex>.bin,
 *     created with O_CREAT|O_EXCL (never overwriting anything) and mode 0644.
 *   - Success is 201 Created with a small JSON body {"url": ..., "name": ..., "size": N}. When the
 *     folder lies inside the document root, the server serves the file, so `Location` and "url"
 *     give its URL path (/uploads/<name> for the default folder). Otherwise no URL reaches it:
 *     "url" is null and `Location` is just the file name, which identifies the stored file but is
 *     not a URL the server answers.
 *   - A request that is aborted or fails (client gone, limit, disk full) leaves no file behind.
 *   - POST without a body length (neither Content-Length nor chunked) is 411; other methods get
 *     405 with Allow: POST.
 *
 * ABI features shown: a streamed request body (on_body, no AWS_ROUTE_BUFFER_BODY), refusing in
 * on_request with a status (413, 411), both error phases of `fail` (here always before the head:
 * 413, 507 or 500 with the host's error page), configuration (`config`, `document_root`), and
 * per-request state whose cleanup in on_end depends on how the request ended.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "aws_plugin.h"

static const aws_host_api *host;
static aws_plugin_ctx *plugin;
static char upload_dir[PATH_MAX];   /* where files go */
static char url_prefix[PATH_MAX];   /* its URL path ("/uploads"), or "" when outside the root */
static int served;                  /* the folder is inside the document root */
static uint64_t max_bytes = 10485760;
static atomic_uint_fast64_t counter;

static aws_str cstr(const char *s) { aws_str r = { s, strlen(s) }; return r; }

static void logf_at(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_at(int level, const char *fmt, ...) {
    char line[PATH_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    host->log(plugin, level, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* A whole small response from on_request: the host copies the text (release == NULL). */
static int reply(aws_request req, int status, const char *type, const char *body) {
    host->set_status(req, status);
    host->add_header(req, cstr("Content-Type"), cstr(type));
    host->set_content_length(req, strlen(body));
    aws_part part = { AWS_PART_MEMORY, 0, body, strlen(body), -1, 0, NULL, NULL };
    host->send_part(req, &part);
    return host->finish(req) == AWS_OK ? 0 : 500;
}

/* ---- one upload ------------------------------------------------------------------------------ */

typedef struct upload {
    int fd;             /* the open file; -1 once closed */
    uint64_t size;      /* bytes written */
    int failed;         /* `fail` was called: ignore the rest of the body */
    int stored;         /* the file is complete and the 201 is on its way: keep it */
    char name[64];
    char path[PATH_MAX + 64];
} upload;

/* Creates a new file under a fresh name; returns its descriptor or -1 (errno set). */
static int create_file(upload *u) {
    for (int attempt = 0; attempt < 8; attempt++) {
        unsigned char rnd[8];
        if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) return -1;
        char hex[17];
        for (int i = 0; i < 8; i++) snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
        snprintf(u->name, sizeof u->name, "upload-%lld-%" PRIuFAST64 "-%s.bin",
                 (long long)time(NULL), atomic_fetch_add(&counter, 1) + 1, hex);
        snprintf(u->path, sizeof u->path, "%s/%s", upload_dir, u->name);
        int fd = open(u->path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    return -1;
}

/* Writes all of `len` bytes (regular files may write less than asked, e.g. near a quota). */
static int write_all(int fd, const char *p, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Removes the partial file and fails the request (before the head: the host's error page). */
static void give_up(aws_request req, upload *u, int status, const char *why) {
    if (u->fd >= 0) close(u->fd);
    u->fd = -1;
    unlink(u->path);
    u->failed = 1;
    logf_at(status == 413 ? AWS_LOG_INFO : AWS_LOG_ERROR, "upload %s refused after %" PRIu64 " bytes: %s; partial file removed",
            u->name, u->size, why);
    host->fail(req, status);
}

/* The 201 with Location and the JSON body. */
static void respond_created(aws_request req, const char *name, uint64_t size) {
    char url[PATH_MAX + 128], json[PATH_MAX + 256];
    if (served) {
        snprintf(url, sizeof url, "%s/%s", url_prefix, name);
        snprintf(json, sizeof json, "{\"url\": \"%s\", \"name\": \"%s\", \"size\": %" PRIu64 "}\n", url, name, size);
    } else {
        snprintf(url, sizeof url, "%s", name);
        snprintf(json, sizeof json, "{\"url\": null, \"name\": \"%s\", \"size\": %" PRIu64 "}\n", name, size);
    }
    host->set_status(req, 201);
    host->add_header(req, cstr("Location"), cstr(url));
    host->add_header(req, cstr("Content-Type"), cstr("application/json"));
    host->set_content_length(req, strlen(json));
    aws_part part = { AWS_PART_MEMORY, 0, json, strlen(json), -1, 0, NULL, NULL }; /* copied */
    host->send_part(req, &part);
    host->finish(req);
}

static int on_request(aws_request req, const aws_request_view *view, void *user) {
    (void)user;
    if (!(view->method.len == 4 && memcmp(view->method.ptr, "POST", 4) == 0)) {
        host->add_header(req, cstr("Allow"), cstr("POST"));
        return reply(req, 405, "text/plain; charset=utf-8", "upload accepts POST\n");
    }
    int chunked = 0;
    host->request_header(req, "Transfer-Encoding", &chunked);
    if (view->content_length < 0 && !chunked) return 411;
    /* Refused before a byte is written; the host answers with its error page. */
    if (view->content_length > 0 && (uint64_t)view->content_length > max_bytes) return 413;

    upload *u = calloc(1, sizeof *u);
    if (!u) return 503;
    u->fd = create_file(u);
    if (u->fd < 0 && errno == ENOENT && mkdir(upload_dir, 0755) == 0) u->fd = create_file(u);
    if (u->fd < 0) {
        logf_at(AWS_LOG_ERROR, "cannot create a file in %s: %s", upload_dir, strerror(errno));
        free(u);
        return 500;
    }
    if (view->content_length == 0) {
        /* An empty body: no on_body will come. The empty file is the upload. */
        close(u->fd);
        respond_created(req, u->name, 0);
        free(u);
        return 0;
    }
    host->set_request_data(req, u);
    return 0; /* the host sends 100 Continue now if the client asked for it */
}

static void on_body(aws_request req, const void *data, size_t len, int last, void *user) {
    (void)user;
    upload *u = host->request_data(req);
    /* After `fail` the rest of the body may still arrive: it is ignored. */
    if (!u || u->failed || u->stored) return;
    if (len > 0) {
        /* Only a chunked body can grow past the limit: a Content-Length over it was refused in
         * on_request. */
        if (u->size + len > max_bytes) {
            give_up(req, u, 413, "over the size limit");
            return;
        }
        if (write_all(u->fd, data, len) != 0) {
            int e = errno;
            give_up(req, u, e == ENOSPC || e == EDQUOT ? 507 : 500, strerror(e));
            return;
        }
        u->size += len;
    }
    /* The body is complete on last=1, whatever its framing (Content-Length or chunked). */
    if (!last) return;
    int rc = close(u->fd); /* a deferred write error (NFS, quota) can surface here */
    u->fd = -1;
    if (rc != 0) {
        give_up(req, u, 500, strerror(errno));
        return;
    }
    u->stored = 1;
    logf_at(AWS_LOG_INFO, "stored %s (%" PRIu64 " bytes)", u->name, u->size);
    respond_created(req, u->name, u->size);
}

static void on_abort(aws_request req, void *user) {
    (void)user;
    upload *u = host->request_data(req);
    if (!u) return;
    if (u->stored)
        logf_at(AWS_LOG_INFO, "upload %s aborted by the client after it was stored; file kept", u->name);
    else
        logf_at(AWS_LOG_INFO, "upload %s aborted after %" PRIu64 " bytes; partial file removed", u->name, u->size);
}

/* Last of all: whatever happened, the descriptor is closed, and a file that was not stored
 * completely is removed. */
static void on_end(aws_request req, void *user) {
    (void)user;
    upload *u = host->request_data(req);
    if (!u) return;
    if (u->fd >= 0) close(u->fd);
    if (!u->stored && !u->failed) unlink(u->path); /* `failed` already removed it */
    free(u);
}

static const aws_handler handler = {
    .header = AWS_ABI_HEADER_INIT(aws_handler),
    .on_request = on_request,
    .on_body = on_body,
    .on_abort = on_abort,
    .on_end = on_end,
};

/* Percent-encodes a path for a URL, keeping '/' and the unreserved characters. */
static void url_encode_path(const char *in, char *out, size_t size) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < size; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '/' || *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = 0;
}

static int init(const aws_host_api *api, aws_plugin_ctx *ctx) {
    host = api;
    plugin = ctx;
    const char *root = host->document_root(ctx);
    const char *dir = host->config(ctx, "dir");
    const char *max = host->config(ctx, "max");
    if (max) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(max, &end, 10);
        if (errno || end == max || *end || max[0] == '-') {
            logf_at(AWS_LOG_ERROR, "upload.max=%s: expected a number of bytes", max);
            return -1;
        }
        max_bytes = v;
    }
    if (dir && *dir) snprintf(upload_dir, sizeof upload_dir, "%s", dir);
    else snprintf(upload_dir, sizeof upload_dir, "%s/uploads", root);
    if (mkdir(upload_dir, 0755) != 0 && errno != EEXIST)
        logf_at(AWS_LOG_WARNING, "cannot create %s: %s (uploads will fail until it exists)", upload_dir, strerror(errno));

    /* Is the folder inside the document root? Compare canonical paths. */
    char real[PATH_MAX];
    size_t rl = strlen(root);
    if (realpath(upload_dir, real)) {
        snprintf(upload_dir, sizeof upload_dir, "%s", real);
        if (strcmp(root, "/") == 0) {
            served = 1;
            url_encode_path(real, url_prefix, sizeof url_prefix);
        } else if (strncmp(real, root, rl) == 0 && real[rl] == '/') {
            served = 1;
            url_encode_path(real + rl, url_prefix, sizeof url_prefix);
        }
    }
    logf_at(AWS_LOG_INFO, "uploads go to %s (%s), at most %" PRIu64 " bytes each", upload_dir,
            served ? url_prefix : "not served", max_bytes);

    aws_route route = {
        .header = AWS_ABI_HEADER_INIT(aws_route),
        .method = "*",  /* every method: on_request answers 405 itself, with Allow: POST */
        .path = "/upload",
        .match = AWS_MATCH_EXACT,
        .flags = 0,     /* streamed: the body comes through on_body */
        .handler = &handler,
    };
    return host->register_route(ctx, &route);
}

static const aws_plugin_descriptor descriptor = {
    .header = AWS_ABI_HEADER_INIT(aws_plugin_descriptor),
    .name = "upload",
    .version = "1.0.0",
    .init = init,
};

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &descriptor; }
