/*
 * body — a streamed request body (on_body, no AWS_ROUTE_BUFFER_BODY), under /body:
 *   POST|PUT /body/count   counts the bytes and calls of on_body and hashes the bytes (FNV-1a 64)
 *                          in order; at last=1 answers "bytes=N calls=K lasts=L fnv=HEX
 *                          content_length=CL", where CL is what the request view said
 *   POST|PUT /body/early   the head and "started\n" go out from on_request (chunked), before any
 *                          of the body; the body is read and the response finished at last=1
 *   GET /body/stats        "aborts=N ends=M\n": on_abort and on_end calls of /body/count and
 *                          /body/early requests so far
 *   any method /bodybuf    the same route with AWS_ROUTE_BUFFER_BODY: answers "bytes=N fnv=HEX
 *                          content_length=CL" from the view in on_request
 * Per-request state lives in a small table keyed by handle (request_data is not used here, so
 * this plugin does not depend on it in on_end).
 */
#include <inttypes.h>
#include <stdint.h>
#include "testplugin.h"

typedef struct count_state {
    aws_request req;
    uint64_t bytes, calls, lasts, fnv;
    int64_t content_length;
    int answered, answered_early;
} count_state;

static count_state slots[64];
/* Callbacks of every worker thread: atomics. */
static int aborts, ends;

static count_state *find(aws_request req) {
    for (int i = 0; i < 64; i++) if (slots[i].req == req) return &slots[i];
    return NULL;
}

static void answer(aws_request req, count_state *st) {
    char body[256];
    snprintf(body, sizeof body, "bytes=%" PRIu64 " calls=%" PRIu64 " lasts=%" PRIu64 " fnv=%016" PRIx64
             " content_length=%" PRId64 "\n", st->bytes, st->calls, st->lasts, st->fnv, st->content_length);
    st->answered = 1;
    if (st->answered_early) {  /* "started\n" may still be outstanding: no second part */
        host->finish(req);
        return;
    }
    reply_text(req, 200, body);
}

static int on_request(aws_request req, const aws_request_view *view, void *user) {
    (void)user;
    if (str_eq(view->path, "/body/stats")) {
        char body[128];
        snprintf(body, sizeof body, "aborts=%d ends=%d\n", __atomic_load_n(&aborts, __ATOMIC_SEQ_CST),
                 __atomic_load_n(&ends, __ATOMIC_SEQ_CST));
        return reply_text(req, 200, body);
    }
    int early = str_eq(view->path, "/body/early");
    if (!early && !str_eq(view->path, "/body/count")) return 404;
    count_state *st = find(0);
    if (!st) return 503;
    memset(st, 0, sizeof *st);
    st->req = req;
    st->fnv = 0xcbf29ce484222325ull;
    st->content_length = view->content_length;
    if (early) {
        aws_part p = mem_part("started\n", 8);
        host->add_header(req, cstr("Content-Type"), cstr("text/plain"));
        host->send_part(req, &p);
        st->answered_early = 1;
    }
    if (view->content_length == 0 || (view->content_length < 0 && !host->request_header(req, "Transfer-Encoding", NULL).ptr))
        answer(req, st);  /* no body: on_body will not be called */
    return 0;
}

static void on_body(aws_request req, const void *data, size_t len, int last, void *user) {
    (void)user;
    count_state *st = find(req);
    if (!st) return;
    st->calls++;
    st->bytes += len;
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) st->fnv = (st->fnv ^ p[i]) * 0x100000001b3ull;
    if (last) {
        st->lasts++;
        if (!st->answered) answer(req, st);
    }
}

/* Counted for /body/count and /body/early only (the requests that hold a slot), so reading
 * /body/stats does not change what it reports. */
static void on_abort(aws_request req, void *user) {
    (void)user;
    if (find(req)) __atomic_fetch_add(&aborts, 1, __ATOMIC_SEQ_CST);
}

static void on_end(aws_request req, void *user) {
    (void)user;
    count_state *st = find(req);
    if (!st) return;
    __atomic_fetch_add(&ends, 1, __ATOMIC_SEQ_CST);
    memset(st, 0, sizeof *st);
}

static int buffered_request(aws_request req, const aws_request_view *view, void *user) {
    (void)user;
    char body[256];
    uint64_t fnv = 0xcbf29ce484222325ull;
    const unsigned char *p = (const unsigned char *)view->body.ptr;
    for (size_t i = 0; i < view->body.len; i++) fnv = (fnv ^ p[i]) * 0x100000001b3ull;
    snprintf(body, sizeof body, "bytes=%zu fnv=%016" PRIx64 " content_length=%" PRId64 "\n",
             view->body.len, fnv, view->content_length);
    return reply_text(req, 200, body);
}

static const aws_handler buffered_handler = {
    .header = AWS_ABI_HEADER_INIT(aws_handler),
    .on_request = buffered_request,
};

static const aws_handler handler = {
    .header = AWS_ABI_HEADER_INIT(aws_handler),
    .on_request = on_request,
    .on_body = on_body,
    .on_abort = on_abort,
    .on_end = on_end,
};

static int init(const aws_host_api *api, aws_plugin_ctx *ctx) {
    host = api;
    plugin_ctx = ctx;
    aws_route r = { .header = AWS_ABI_HEADER_INIT(aws_route), .method = "*", .path = "/body",
                    .match = AWS_MATCH_PREFIX, .handler = &handler };
    int rc = host->register_route(ctx, &r);
    if (rc != AWS_OK) return rc;
    aws_route b = { .header = AWS_ABI_HEADER_INIT(aws_route), .method = "*", .path = "/bodybuf",
                    .match = AWS_MATCH_EXACT, .flags = AWS_ROUTE_BUFFER_BODY, .handler = &buffered_handler };
    return host->register_route(ctx, &b);
}

static const aws_plugin_descriptor descriptor = {
    .header = AWS_ABI_HEADER_INIT(aws_plugin_descriptor), .name = "body", .version = "1.0", .init = init,
};

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &descriptor; }
