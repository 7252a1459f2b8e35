/*
 * sleepy — a plugin that breaks the first rule of callbacks: it sleeps in them, blocking its
 * loop, so the tests can see the host's watch over slow callbacks. Each route sleeps ?ms=N
 * milliseconds (default 300) in one kind of callback, logging "sleepy: KIND sleeping N ms"
 * (through the host, so it is in the server log before the sleep starts) and then answers
 * "slept N ms\n":
 *   GET  /sleepy            in on_request
 *   POST /sleepy/body       in on_body (the call with last = 1); the body is streamed
 *   GET  /sleepy/proceed    in on_proceed (after a first part "slept ", sent from on_request)
 *   GET  /sleepy/post       in a function a plugin thread posts for the request
 *   GET  /sleepy/post-late  answers at once; a thread posts a function 50 ms later, when the
 *                           request has ended (alive = 0), and that function sleeps
 *   GET  /sleepy/fn?ms=N    the C function `int nap(int ms)` (register_function), answers N
 */
#include <pthread.h>
#include <time.h>
#include "testplugin.h"

static void nap_ms(long ms) {
    if (ms < 0) ms = 0;
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0) {}
}

static void say(const char *kind, long ms) {
    char line[96];
    snprintf(line, sizeof line, "sleepy: %s sleeping %ld ms", kind, ms);
    plog(line);
}

static int reply_slept(aws_request req, long ms) {
    char body[48];
    snprintf(body, sizeof body, "slept %ld ms\n", ms);
    return reply_text(req, 200, body);
}

static int nap(int ms) {
    say("function", ms);
    nap_ms(ms);
    return ms;
}

/* ---- posted functions ---- */
struct posting { aws_request req; long ms; long delay; };

static void posted(aws_request req, void *arg, int alive) {
    struct posting *p = arg;
    say(alive ? "posted function" : "late posted function", p->ms);
    nap_ms(p->ms);
    if (alive) reply_slept(req, p->ms);
    free(p);
}

static void *poster(void *arg) {
    struct posting *p = arg;
    if (p->delay) nap_ms(p->delay);
    host->post(p->req, posted, p);
    return NULL;
}

static int start_poster(aws_request req, long ms, long delay) {
    struct posting *p = malloc(sizeof *p);
    if (!p) return 503;
    p->req = req;
    p->ms = ms;
    p->delay = delay;
    pthread_t t;
    if (pthread_create(&t, NULL, poster, p) != 0) { free(p); return 503; }
    pthread_detach(t);
    return 0;
}

/* ---- handlers ---- */
static int on_request(aws_request req, const aws_request_view *view, void *user) {
    (void)user;
    long ms = query_long(view->query, "ms", 300);
    if (str_eq(view->path, "/sleepy")) {
        say("on_request", ms);
        nap_ms(ms);
        return reply_slept(req, ms);
    }
    if (str_eq(view->path, "/sleepy/proceed")) {
        long *saved = host->request_scratch(req, sizeof *saved);
        if (!saved) return 503;
        *saved = ms;
        host->set_request_data(req, saved);
        aws_part part = mem_part("slept ", 6);
        return host->send_part(req, &part) == AWS_OK ? 0 : 500;
    }
    if (str_eq(view->path, "/sleepy/post")) return start_poster(req, ms, 0);
    if (str_eq(view->path, "/sleepy/post-late")) {
        int rc = start_poster(req, ms, 50);
        return rc ? rc : reply_text(req, 200, "posting later\n");
    }
    return 404;
}

static void on_proceed(aws_request req, void *user) {
    (void)user;
    long *ms = host->request_data(req);
    if (!ms) return;
    say("on_proceed", *ms);
    nap_ms(*ms);
    char rest[40];
    int n = snprintf(rest, sizeof rest, "%ld ms\n", *ms);
    host->set_request_data(req, NULL);
    aws_part part = mem_part(rest, (size_t)n);
    host->send_part(req, &part);
    host->finish(req);
}

static int on_body_request(aws_request req, const aws_request_view *view, void *user) {
    (void)user;
    long *saved = host->request_scratch(req, sizeof *saved);
    if (!saved) return 503;
    *saved = query_long(view->query, "ms", 300);
    host->set_request_data(req, saved);
    return 0;
}

static void on_body(aws_request req, const void *data, size_t len, int last, void *user) {
    (void)data; (void)len; (void)user;
    if (!last) return;
    long ms = *(long *)host->request_data(req);
    say("on_body", ms);
    nap_ms(ms);
    reply_slept(req, ms);
}

static const aws_handler handler = {
    .header = AWS_ABI_HEADER_INIT(aws_handler), .on_request = on_request, .on_proceed = on_proceed,
};
static const aws_handler body_handler = {
    .header = AWS_ABI_HEADER_INIT(aws_handler), .on_request = on_body_request, .on_body = on_body,
};

static int init(const aws_host_api *api, aws_plugin_ctx *ctx) {
    tp_attach(api, ctx);
    int rc = tp_route("GET", "/sleepy", AWS_MATCH_PREFIX, 0, &handler);
    if (rc == AWS_OK) rc = tp_route("POST", "/sleepy/body", AWS_MATCH_EXACT, 0, &body_handler);
    if (rc == AWS_OK) rc = host->register_function(ctx, "/sleepy/fn", "int nap(int ms)", (void (*)(void))nap);
    return rc;
}

static const aws_plugin_descriptor descriptor = {
    .header = AWS_ABI_HEADER_INIT(aws_plugin_descriptor), .name = "sleepy", .version = "1", .init = init,
};

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &descriptor; }
