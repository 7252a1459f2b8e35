/*
 * versioned — the plugin the reload tests deploy twice, built with -DVERSION=\"1\" and \"2\":
 *   GET /versioned                  "version V\n"
 *   GET /versioned/slow?parts=N&ms=T
 *                                   N lines "vV part i\n", one every T ms, produced by a plugin
 *                                   thread and handed to the loop with post; chunked
 *   GET /versioned/post-later?ms=T  answers at once; a plugin thread posts a function T ms later
 *                                   (alive == 0 then), which writes "versioned V: late post ran
 *                                   alive=A" to stderr directly (not through the plugin's ctx)
 * Threads are joined in shutdown, so an old version is unloaded only once its thread is done.
 */
#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include "testplugin.h"

#ifndef VERSION
#define VERSION "0"
#endif

/* ---- plugin threads, joined at shutdown ---- */
static pthread_mutex_t threads_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t threads[1024];
static int thread_count;

static void start_thread(void *(*fn)(void *), void *arg) {
    pthread_mutex_lock(&threads_lock);
    if (thread_count == 1024) {
        for (int i = 0; i < thread_count; i++) pthread_join(threads[i], NULL);
        thread_count = 0;
    }
    pthread_create(&threads[thread_count++], NULL, fn, arg);
    pthread_mutex_unlock(&threads_lock);
}

static void shutdown_plugin(aws_plugin_ctx *ctx) {
    (void)ctx;
    pthread_mutex_lock(&threads_lock);
    for (int i = 0; i < thread_count; i++) pthread_join(threads[i], NULL);
    thread_count = 0;
    pthread_mutex_unlock(&threads_lock);
    plog("versioned " VERSION " shut down");
}

/* ---- one slow response: state shared by the thread's posts and the loop callbacks; all
 * touched on the loop thread only (posted functions and callbacks), freed when both the
 * request has ended and the thread's last post has run. ---- */
typedef struct slow {
    aws_request req;
    int parts, ms;
    int produced;      /* ticks posted so far */
    int sent;          /* lines handed to send_part */
    int outstanding;   /* a part waits for on_proceed */
    int finished;
    int refs;          /* the request (until on_end) + the thread (until its last post) */
    char line[64];
} slow;

/* Requests of /versioned/slow in flight. With several workers, on_request and on_end run on
 * several loop threads at once: the table is shared, so it has a lock (a slot's `slow` itself
 * is touched only on its request's loop thread). */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static slow *live[64];

static void release(slow *s) {
    if (--s->refs == 0) free(s);
}

static void pump(slow *s) {
    if (s->outstanding || s->finished) return;
    if (s->sent < s->produced) {
        int n = snprintf(s->line, sizeof s->line, "v" VERSION " part %d\n", s->sent + 1);
        aws_part part = mem_part(s->line, (size_t)n);
        s->sent++;
        s->outstanding = 1;
        host->send_part(s->req, &part);
    } else if (s->sent == s->parts) {
        s->finished = 1;
        host->finish(s->req);
    }
}

/* Posted by the thread once per line; the last one also drops the thread's reference, so no
 * posted function of this request is still queued once its last line has been produced (the
 * request cannot finish before that). */
static void tick(aws_request req, void *arg, int alive) {
    (void)req;
    slow *s = arg;
    s->produced++;
    if (alive) pump(s);
    if (s->produced == s->parts) release(s);
}

static void *slow_thread(void *arg) {
    slow *s = arg;
    aws_request req = s->req;
    int parts = s->parts, ms = s->ms;
    for (int i = 0; i < parts; i++) {  /* `s` may be freed once the last tick is posted */
        struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
        host->post(req, tick, s);
    }
    return NULL;
}

/* ---- a post that arrives after its request (and maybe its plugin version) is done ---- */
static void later_fn(aws_request req, void *arg, int alive) {
    (void)req; (void)arg;
    char line[80];
    int n = snprintf(line, sizeof line, "versioned " VERSION ": late post ran alive=%d\n", alive);
    (void)!write(2, line, (size_t)n);
}

struct later { aws_request req; long ms; };

static void *later_thread(void *arg) {
    struct later l = *(struct later *)arg;
    free(arg);
    struct timespec ts = { l.ms / 1000, (l.ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
    host->post(l.req, later_fn, NULL);
    return NULL;
}

static int on_request(aws_request req, const aws_request_view *view, void *user) {
    (void)user;
    if (str_eq(view->path, "/versioned")) return reply_text(req, 200, "version " VERSION "\n");
    if (str_eq(view->path, "/versioned/slow")) {
        slow *s = calloc(1, sizeof *s);
        if (!s) return 503;
        s->req = req;
        s->parts = (int)query_long(view->query, "parts", 10);
        s->ms = (int)query_long(view->query, "ms", 100);
        if (s->parts < 1) s->parts = 1;
        s->refs = 2;
        int slot = -1;
        pthread_mutex_lock(&live_lock);
        for (int i = 0; i < 64; i++) if (!live[i]) { slot = i; break; }
        if (slot >= 0) live[slot] = s;
        pthread_mutex_unlock(&live_lock);
        if (slot < 0) { free(s); return 503; }
        host->set_request_data(req, s);
        host->add_header(req, cstr("Content-Type"), cstr("text/plain"));
        host->add_header(req, cstr("X-Version"), cstr(VERSION));
        start_thread(slow_thread, s);
        return 0;
    }
    if (str_eq(view->path, "/versioned/post-later")) {
        struct later *l = malloc(sizeof *l);
        l->req = req;
        l->ms = query_long(view->query, "ms", 300);
        start_thread(later_thread, l);
        return reply_text(req, 200, "version " VERSION " posting later\n");
    }
    return 404;
}

static void on_proceed(aws_request req, void *user) {
    (void)user;
    slow *s = host->request_data(req);
    if (!s) return;
    s->outstanding = 0;
    pump(s);
}

static void on_end(aws_request req, void *user) {
    (void)user;
    slow *found = NULL;
    pthread_mutex_lock(&live_lock);
    for (int i = 0; i < 64; i++) {
        if (live[i] && live[i]->req == req) {
            found = live[i];
            live[i] = NULL;
            break;
        }
    }
    pthread_mutex_unlock(&live_lock);
    if (found) release(found);
}

static const aws_handler handler = {
    .header = AWS_ABI_HEADER_INIT(aws_handler),
    .on_request = on_request,
    .on_proceed = on_proceed,
    .on_end = on_end,
};

static int init(const aws_host_api *api, aws_plugin_ctx *ctx) {
    tp_attach(api, ctx);
    return tp_route("GET", "/versioned", AWS_MATCH_PREFIX, 0, &handler);
}

static const aws_plugin_descriptor descriptor = {
    .header = AWS_ABI_HEADER_INIT(aws_plugin_descriptor), .name = "versioned", .version = VERSION,
    .init = init, .shutdown = shutdown_plugin,
};

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &descriptor; }
