/*
 * compress — streaming compression of plugin responses (ABI 1.3, compress_response):
 *   GET /compress/stream?parts=K&size=S&length=L&status=N
 *        asks for compression, then sends K memory parts of S bytes of text each (one per
 *        on_proceed; line i of the body is "line i: ..."), then finishes. Header
 *        X-Compress: the value compress_response returned; X-Length: what set_content_length
 *        returned when L=1 (called after compress_response).
 *   GET /compress/file
 *        asks for compression, then offers a FILE part: X-File-Part is what send_part returned;
 *        the body is then "fallback\n" as a memory part.
 *   GET /compress/late
 *        sends a part, then asks for compression: a misuse (the part would go out
 *        uncompressed under a Content-Encoding head), answered 500 by the host.
 */
#include <fcntl.h>
#include <unistd.h>
#include "testplugin.h"

typedef struct job {
    aws_request req;
    long parts, size, sent;
    char *buf;
} job;

static job *jobs[64];

static job *find(aws_request req) {
    for (int i = 0; i < 64; i++) if (jobs[i] && jobs[i]->req == req) return jobs[i];
    return NULL;
}

static void next_part(job *j) {
    long n = 0;
    /* Deterministic text: lines numbered across the whole body, cut at S bytes per part. */
    while (n < j->size) {
        char line[96];
        int len = snprintf(line, sizeof line, "line %ld: the quick brown fox jumps over the lazy dog\n",
                           j->sent * 1000 + n);
        if (len > j->size - n) len = (int)(j->size - n);
        memcpy(j->buf + n, line, (size_t)len);
        n += len;
    }
    aws_part p = mem_part(j->buf, (size_t)j->size);
    j->sent++;
    host->send_part(j->req, &p);
    if (j->sent == j->parts) host->finish(j->req);
}

static int on_request(aws_request req, const aws_request_view *view, void *user) {
    (void)user;
    if (!AWS_HOST_HAS(host, compress_response)) return 501;
    if (str_eq(view->path, "/compress/late")) {
        aws_part first = mem_part("sent before compress_response\n", 30);
        host->send_part(req, &first);
        if (host->compress_response(req) == AWS_E_STATE) plog("compress_response after send_part: AWS_E_STATE");
        return 0;
    }
    int compress = host->compress_response(req);
    char value[16];
    snprintf(value, sizeof value, "%d", compress);
    host->add_header(req, cstr("X-Compress"), cstr(value));
    host->add_header(req, cstr("Content-Type"), cstr("text/plain; charset=utf-8"));
    if (str_eq(view->path, "/compress/file")) {
        char path[4096];
        snprintf(path, sizeof path, "%s/index.html", host->document_root(plugin_ctx));
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        aws_part f = { AWS_PART_FILE, 0, NULL, 4, fd, 0, NULL, NULL };
        int rc = host->send_part(req, &f);
        if (fd >= 0) close(fd);
        snprintf(value, sizeof value, "%d", rc);
        host->add_header(req, cstr("X-File-Part"), cstr(value));
        aws_part p = mem_part("fallback\n", 9);
        host->send_part(req, &p);
        return host->finish(req);
    }
    long status = query_long(view->query, "status", 200);
    host->set_status(req, (int)status);
    if (query_long(view->query, "length", 0)) {
        snprintf(value, sizeof value, "%d", host->set_content_length(req, 10));
        host->add_header(req, cstr("X-Length"), cstr(value));
    }
    int slot = -1;
    for (int i = 0; i < 64; i++) if (!jobs[i]) { slot = i; break; }
    if (slot < 0) return 503;
    job *j = calloc(1, sizeof *j);
    j->req = req;
    j->parts = query_long(view->query, "parts", 1);
    j->size = query_long(view->query, "size", 1000);
    j->buf = malloc((size_t)j->size + 1);
    jobs[slot] = j;
    if (j->parts == 0) return host->finish(req);
    next_part(j);
    return 0;
}

static void on_proceed(aws_request req, void *user) {
    (void)user;
    job *j = find(req);
    if (j && j->sent < j->parts) next_part(j);
}

static void on_end(aws_request req, void *user) {
    (void)user;
    for (int i = 0; i < 64; i++) {
        if (jobs[i] && jobs[i]->req == req) {
            free(jobs[i]->buf);
            free(jobs[i]);
            jobs[i] = NULL;
        }
    }
}

static const aws_handler handler = { .header = AWS_ABI_HEADER_INIT(aws_handler), .on_request = on_request,
                                     .on_proceed = on_proceed, .on_end = on_end };

static int init(const aws_host_api *api, aws_plugin_ctx *ctx) {
    tp_attach(api, ctx);
    return tp_route("GET", "/compress", AWS_MATCH_PREFIX, 0, &handler);
}

static const aws_plugin_descriptor descriptor = {
    .header = AWS_ABI_HEADER_INIT(aws_plugin_descriptor), .name = "compress", .version = "0.1", .init = init,
};

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &descriptor; }
