/*
 * stream — three responses produced on demand, one part at a time:
 *
 *   GET /stream/lines?n=N      N lines "line <i>\n", i from 1 (default 10, at most 10,000,000):
 *                              chunked text/plain, in batches of up to 16 KiB (n=0: an empty
 *                              body with Content-Length: 0).
 *   GET /stream/bytes?size=N   N bytes of the pattern byte[i] = i % 251 (default 0; N may be 1 GiB
 *                              or more), with a Content-Length (not chunked), in 64 KiB parts.
 *   GET /stream/events?interval=T&count=C
 *                              server-sent events "data: event <i>\n\n", one every T ms (default
 *                              100, 1..3600000) from a thread of the plugin's own; C events
 *                              (default 0: until the client leaves), then the end.
 *
 * A malformed or out-of-range parameter is answered 400 with a line naming it. The routes are
 * registered for GET, which the host also routes HEAD to: HEAD gets the head GET would get
 * (the host drops body bytes), without the work of producing the body. Other methods get the
 * host's 405.
 *
 * ABI features shown:
 *   - the pull model: a part is produced only in on_proceed, once the host has consumed the
 *     previous one, so memory stays flat however long the response is;
 *   - both ownership modes of memory parts: COPIED (lines, events: release == NULL, the host
 *     copies the bytes inside send_part) and BORROWED (bytes: the host reads the plugin's buffer
 *     until it calls release, and the plugin does not touch the buffer until then);
 *   - set_content_length (bytes) versus chunked framing (lines, events);
 *   - per-request state with set_request_data, read back with request_data in every callback
 *     (on_abort and on_end included) and freed in on_end; on_abort when the client leaves
 *     (each logs a line with "aborted");
 *   - post, the one host function callable from any thread, with an atomic reference count so
 *     that neither the request side nor the thread frees shared state the other still uses;
 *   - shutdown waiting for the plugin's threads, so the library is never unloaded under them.
 */
#define _GNU_SOURCE /* pthread_tryjoin_np */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "aws_plugin.h"

static const aws_host_api *host;
static aws_plugin_ctx *plugin;

static aws_str cstr(const char *s) { aws_str r = { s, strlen(s) }; return r; }

static void logf_at(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_at(int level, const char *fmt, ...) {
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    host->log(plugin, level, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static int is_head(const aws_request_view *view) {
    return view->method.len == 4 && memcmp(view->method.ptr, "HEAD", 4) == 0;
}

/* A whole small response from on_request: the host copies the text (release == NULL). */
static int reply_text(aws_request req, int status, const char *text) {
    host->set_status(req, status);
    host->add_header(req, cstr("Content-Type"), cstr("text/plain; charset=utf-8"));
    host->set_content_length(req, strlen(text));
    aws_part part = { AWS_PART_MEMORY, 0, text, strlen(text), -1, 0, NULL, NULL };
    host->send_part(req, &part);
    host->finish(req);
    return 0;
}

/* Finds `key` in a query string ("n=5&x=1") and parses its value as a decimal integer.
 * Returns 1 when the key is absent (*out untouched), 0 when the value is a number in
 * [min, max], -1 when it is malformed or out of range. */
static int query_uint(aws_str q, const char *key, uint64_t min, uint64_t max, uint64_t *out) {
    size_t klen = strlen(key);
    const char *p = q.ptr, *end = q.ptr + q.len;
    while (q.len > 0 && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pair_end = amp ? amp : end;
        size_t plen = (size_t)(pair_end - p);
        if (plen >= klen && memcmp(p, key, klen) == 0 && (plen == klen || p[klen] == '=')) {
            if (plen <= klen + 1) return -1; /* "n" or "n=" */
            uint64_t x = 0;
            for (const char *v = p + klen + 1; v < pair_end; v++) {
                if (*v < '0' || *v > '9') return -1;
                unsigned d = (unsigned)(*v - '0');
                if (x > (UINT64_MAX - d) / 10) return -1;
                x = x * 10 + d;
            }
            if (x < min || x > max) return -1;
            *out = x;
            return 0;
        }
        p = pair_end + 1;
    }
    return 1;
}

/* ==== /stream/lines: copied parts ============================================================ */

#define LINES_MAX 10000000u
#define LINES_BATCH (16 * 1024)

typedef struct lines_state {
    uint64_t next, last;  /* the next line number to write; the last one */
    uint64_t done;        /* bytes of parts the host has consumed */
    size_t outstanding;   /* bytes of the part handed over and not yet consumed */
    char buf[LINES_BATCH];
} lines_state;

/* Builds the next batch of lines and hands it over. */
static void lines_send(aws_request req, lines_state *st) {
    size_t used = 0;
    /* The longest line, "line 10000000\n", is 14 bytes: stop while 32 are still free. */
    while (st->next <= st->last && LINES_BATCH - used >= 32)
        used += (size_t)snprintf(st->buf + used, LINES_BATCH - used, "line %" PRIu64 "\n", st->next++);
    /* release == NULL: the host copies the batch before send_part returns, so `buf` could be
     * reused at once; it is refilled only in on_proceed anyway, when the host wants more. */
    aws_part part = { AWS_PART_MEMORY, 0, st->buf, used, -1, 0, NULL, NULL };
    if (host->send_part(req, &part) != AWS_OK) return; /* gone or refused: the request ends */
    st->outstanding = used;
}

static int lines_request(aws_request req, const aws_request_view *view, void *user) {
    (void)user;
    uint64_t n = 10;
    if (query_uint(view->query, "n", 0, LINES_MAX, &n) < 0)
        return reply_text(req, 400, "stream: parameter n must be an integer from 0 to 10000000\n");
    host->add_header(req, cstr("Content-Type"), cstr("text/plain; charset=utf-8"));
    if (n == 0 && !is_head(view)) return host->finish(req) == AWS_OK ? 0 : 500; /* Content-Length: 0 */
    lines_state *st = malloc(sizeof *st);
    if (!st) return 503;
    st->next = 1;
    /* HEAD: no lines, so one empty part, which sends the chunked head, then finish. */
    st->last = is_head(view) ? 0 : n;
    st->done = 0;
    st->outstanding = 0;
    host->set_request_data(req, st);
    lines_send(req, st); /* no set_content_length: the body goes out chunked */
    return 0;
}

static void lines_proceed(aws_request req, void *user) {
    (void)user;
    lines_state *st = host->request_data(req);
    if (!st) return;
    st->done += st->outstanding;
    st->outstanding = 0;
    /* finish could also follow the last send_part at once (the part may still be outstanding);
     * finishing here instead keeps even a one-batch response chunked: had finish come before
     * the head was sent, the host would have known the length and sent a Content-Length. */
    if (st->next <= st->last) lines_send(req, st); else host->finish(req);
}

static void lines_abort(aws_request req, void *user) {
    (void)user;
    lines_state *st = host->request_data(req);
    if (st) logf_at(AWS_LOG_INFO, "lines stream aborted after %" PRIu64 " bytes", st->done);
}

static void lines_end(aws_request req, void *user) {
    (void)user;
    lines_state *st = host->request_data(req);
    if (!st) return;
    free(st);
}

/* ==== /stream/bytes: borrowed parts with a release callback ================================== */

#define BYTES_PART (64 * 1024)
#define BYTES_PERIOD 251

/* The pattern from every phase: byte i of the stream is pattern[i % 251 + k] for k < 64 KiB.
 * Filled once in init, read-only afterwards. */
static unsigned char pattern[BYTES_PERIOD + BYTES_PART];

typedef struct bytes_state {
    uint64_t size;       /* bytes to send in all */
    uint64_t queued;     /* bytes handed to send_part so far */
    uint64_t done;       /* bytes of parts the host has consumed */
    size_t outstanding;  /* bytes of the part in flight */
    int lent;            /* `buf` is lent to the host: from send_part until release */
    int ended;           /* on_end ran while `buf` was lent: release frees the state */
    unsigned char buf[BYTES_PART];  /* the one buffer of this request, reused for every part */
} bytes_state;

/* The host is done with `buf` (sent, or the request ended). Called exactly once per part. */
static void bytes_release(void *ctx) {
    bytes_state *st = ctx;
    st->lent = 0;
    if (st->ended) free(st); /* on_end came first: the state was waiting for its buffer */
}

static void bytes_send(aws_request req, bytes_state *st) {
    if (st->lent) {
        /* Never happens with a correct host: on_proceed comes after release. Refilling the
         * buffer now would change bytes the host may still be sending. */
        logf_at(AWS_LOG_ERROR, "bytes stream: on_proceed before release; ending the stream");
        host->fail(req, 500);
        return;
    }
    uint64_t left = st->size - st->queued;
    size_t n = left < BYTES_PART ? (size_t)left : BYTES_PART;
    memcpy(st->buf, pattern + st->queued % BYTES_PERIOD, n);
    /* release != NULL: the host BORROWS buf (no copy) and calls bytes_release when done. */
    aws_part part = { AWS_PART_MEMORY, 0, st->buf, n, -1, 0, bytes_release, st };
    st->lent = 1;
    if (host->send_part(req, &part) != AWS_OK) {
        st->lent = 0; /* refused: the host did not take the part, so it will not release it */
        return;
    }
    st->queued += n;
    st->outstanding = n;
    if (st->queued == st->size) host->finish(req);
}

static int bytes_request(aws_request req, const aws_request_view *view, void *user) {
    (void)user;
    uint64_t size = 0;
    if (query_uint(view->query, "size", 0, INT64_MAX, &size) < 0)
        return reply_text(req, 400, "stream: parameter size must be a number of bytes\n");
    host->add_header(req, cstr("Content-Type"), cstr("application/octet-stream"));
    host->set_content_length(req, size); /* declared: the body goes out with a Content-Length */
    /* HEAD: the host sends the head with the declared length and expects no bytes. */
    if (size == 0 || is_head(view)) return host->finish(req) == AWS_OK ? 0 : 500;
    bytes_state *st = malloc(sizeof *st);
    if (!st) return 503;
    st->size = size;
    st->queued = st->done = 0;
    st->outstanding = 0;
    st->lent = st->ended = 0;
    host->set_request_data(req, st);
    bytes_send(req, st);
    return 0;
}

static void bytes_proceed(aws_request req, void *user) {
    (void)user;
    bytes_state *st = host->request_data(req);
    if (!st) return;
    st->done += st->outstanding;
    st->outstanding = 0;
    if (st->queued < st->size) bytes_send(req, st);
}

static void bytes_abort(aws_request req, void *user) {
    (void)user;
    bytes_state *st = host->request_data(req);
    if (st) logf_at(AWS_LOG_INFO, "bytes stream aborted after %" PRIu64 " of %" PRIu64 " bytes", st->done, st->size);
}

static void bytes_end(aws_request req, void *user) {
    (void)user;
    bytes_state *st = host->request_data(req);
    if (!st) return;
    /* The host releases an outstanding part before on_abort/on_end; should it ever not, the
     * buffer is still lent and the state is freed by bytes_release instead. */
    if (st->lent) st->ended = 1; else free(st);
}

/* ==== /stream/events: a plugin thread and post ================================================ */

#define EVENTS_INTERVAL_MAX 3600000u

/* Threads are joinable, so shutdown can be sure none still runs plugin code when it returns:
 * an exiting thread queues its node here, and the loop thread joins it later (without
 * blocking: pthread_tryjoin_np) or shutdown joins whatever is left (blocking). */
typedef struct exited_thread {
    pthread_t thread;
    struct exited_thread *next;
} exited_thread;

static pthread_mutex_t threads_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t threads_cv = PTHREAD_COND_INITIALIZER;
static int threads_running;            /* started and not yet exited */
static exited_thread *threads_exited;  /* exited, not yet joined */

/* Joins exited threads: with `wait`, first waits until every thread has exited (shutdown). */
static void reap_threads(int wait) {
    pthread_mutex_lock(&threads_mu);
    while (wait && threads_running > 0) pthread_cond_wait(&threads_cv, &threads_mu);
    exited_thread *list = threads_exited, *keep = NULL;
    threads_exited = NULL;
    pthread_mutex_unlock(&threads_mu);
    while (list) {
        exited_thread *n = list;
        list = n->next;
        if (wait) {
            pthread_join(n->thread, NULL);
        } else if (pthread_tryjoin_np(n->thread, NULL) != 0) {
            n->next = keep; /* still on its last instructions: try again next time */
            keep = n;
            continue;
        }
        free(n);
    }
    if (keep) {
        pthread_mutex_lock(&threads_mu);
        exited_thread *last = keep;
        while (last->next) last = last->next;
        last->next = threads_exited;
        threads_exited = keep;
        pthread_mutex_unlock(&threads_mu);
    }
}

typedef struct ev_stream {
    /* References: the request side (dropped in on_end), the thread (dropped when it exits) and
     * one per posted tick (dropped by ev_tick, which post always calls exactly once). The last
     * one to let go frees the stream. */
    atomic_int refs;
    /* Set before the thread starts, read-only afterwards. */
    aws_request req;
    uint64_t interval_ms, count;
    exited_thread *node;
    /* Shared with the thread, under `mu`: `stop` is set in on_end, and wakes the thread. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    /* Loop thread only. */
    uint64_t sent;    /* events handed to send_part */
    uint64_t due;     /* ticks received whose event is not sent yet */
    int outstanding;  /* a part is in flight: wait for on_proceed */
    int head_only;    /* a HEAD request: no thread, finish once the head is out */
} ev_stream;

static void ev_unref(ev_stream *s) {
    if (atomic_fetch_sub(&s->refs, 1) == 1) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
    }
}

/* Sends the next due event, if any and if the previous part has been consumed. */
static void ev_send(aws_request req, ev_stream *s) {
    if (s->due == 0 || s->outstanding) return;
    char text[48];
    int n = snprintf(text, sizeof text, "data: event %" PRIu64 "\n\n", s->sent + 1);
    aws_part part = { AWS_PART_MEMORY, 0, text, (size_t)n, -1, 0, NULL, NULL }; /* copied */
    if (host->send_part(req, &part) != AWS_OK) return;
    s->sent++;
    s->due--;
    s->outstanding = 1;
    if (s->count && s->sent == s->count) host->finish(req);
}

/* Posted by the thread; runs on the loop thread. alive == 0: the request has ended meanwhile,
 * and only the reference is dropped. */
static void ev_tick(aws_request req, void *arg, int alive) {
    ev_stream *s = arg;
    if (alive) {
        s->due++;
        ev_send(req, s); /* else on_proceed sends it when the part in flight is consumed */
    }
    ev_unref(s);
}

static void ev_add_ms(struct timespec *t, uint64_t ms) {
    t->tv_sec += (time_t)(ms / 1000);
    t->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t->tv_nsec >= 1000000000L) { t->tv_sec++; t->tv_nsec -= 1000000000L; }
}

/* The plugin's own thread: sleeps (on a condition variable, so on_end can wake it at once) and
 * posts a tick every interval. Touches only `mu`, `cv`, `stop` and the fixed fields. */
static void *ev_thread(void *arg) {
    ev_stream *s = arg;
    exited_thread *node = s->node;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    uint64_t posted = 0;
    pthread_mutex_lock(&s->mu);
    while (!s->stop && (s->count == 0 || posted < s->count)) {
        ev_add_ms(&next, s->interval_ms);
        int rc = 0;
        while (!s->stop && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&s->cv, &s->mu, &next);
        if (s->stop) break;
        pthread_mutex_unlock(&s->mu);
        atomic_fetch_add(&s->refs, 1); /* the tick's reference, dropped in ev_tick */
        int prc = host->post(s->req, ev_tick, s);
        pthread_mutex_lock(&s->mu);
        if (prc != AWS_OK) { /* never happens for a valid handle; ev_tick will not run */
            atomic_fetch_sub(&s->refs, 1);
            break;
        }
        posted++;
    }
    pthread_mutex_unlock(&s->mu);
    ev_unref(s); /* the thread's reference: `s` may be gone after this */

    node->thread = pthread_self();
    pthread_mutex_lock(&threads_mu);
    node->next = threads_exited;
    threads_exited = node;
    threads_running--;
    pthread_cond_broadcast(&threads_cv);
    pthread_mutex_unlock(&threads_mu);
    return NULL;
}

static int events_request(aws_request req, const aws_request_view *view, void *user) {
    (void)user;
    reap_threads(0);
    uint64_t interval = 100, count = 0;
    if (query_uint(view->query, "interval", 1, EVENTS_INTERVAL_MAX, &interval) < 0)
        return reply_text(req, 400, "stream: parameter interval must be milliseconds from 1 to 3600000\n");
    if (query_uint(view->query, "count", 0, UINT32_MAX, &count) < 0)
        return reply_text(req, 400, "stream: parameter count must be an integer from 0 (no end) to 4294967295\n");

    ev_stream *s = calloc(1, sizeof *s);
    exited_thread *node = is_head(view) ? NULL : malloc(sizeof *node);
    pthread_condattr_t ca;
    if (!s || (!node && !is_head(view)) || pthread_condattr_init(&ca) != 0) { free(s); free(node); return 503; }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the thread's deadlines are monotonic */
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&s->mu, NULL);
    s->req = req;
    s->interval_ms = interval;
    s->count = count;
    s->node = node;
    s->head_only = is_head(view);

    if (s->head_only) {
        atomic_init(&s->refs, 1); /* the request side; no thread for HEAD */
    } else {
        atomic_init(&s->refs, 2); /* the request side and the thread */
        pthread_mutex_lock(&threads_mu);
        threads_running++;
        pthread_mutex_unlock(&threads_mu);
        pthread_t t;
        if (pthread_create(&t, NULL, ev_thread, s) != 0) {
            pthread_mutex_lock(&threads_mu);
            threads_running--;
            pthread_mutex_unlock(&threads_mu);
            pthread_cond_destroy(&s->cv);
            pthread_mutex_destroy(&s->mu);
            free(s);
            free(node);
            logf_at(AWS_LOG_WARNING, "events stream: cannot start a thread");
            return 503;
        }
    }
    host->set_request_data(req, s);
    host->add_header(req, cstr("Content-Type"), cstr("text/event-stream"));
    host->add_header(req, cstr("Cache-Control"), cstr("no-cache"));
    /* A part of 0 bytes sends nothing, but makes the host send the head now, so the client sees
     * the response start before the first event. on_proceed follows as for any part. */
    aws_part empty = { AWS_PART_MEMORY, 0, "", 0, -1, 0, NULL, NULL };
    if (host->send_part(req, &empty) == AWS_OK) s->outstanding = 1;
    return 0;
}

static void events_proceed(aws_request req, void *user) {
    (void)user;
    ev_stream *s = host->request_data(req);
    if (!s) return;
    s->outstanding = 0;
    if (s->head_only) host->finish(req); else ev_send(req, s);
}

static void events_abort(aws_request req, void *user) {
    (void)user;
    ev_stream *s = host->request_data(req);
    if (s) logf_at(AWS_LOG_INFO, "events stream aborted after %" PRIu64 " events", s->sent);
}

static void events_end(aws_request req, void *user) {
    (void)user;
    ev_stream *s = host->request_data(req);
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1; /* ticks already posted still run, with alive == 0 */
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    ev_unref(s);
    reap_threads(0);
}

/* ==== registration ============================================================================ */

static const aws_handler lines_handler = {
    .header = AWS_ABI_HEADER_INIT(aws_handler),
    .on_request = lines_request,
    .on_proceed = lines_proceed,
    .on_abort = lines_abort,
    .on_end = lines_end,
};

static const aws_handler bytes_handler = {
    .header = AWS_ABI_HEADER_INIT(aws_handler),
    .on_request = bytes_request,
    .on_proceed = bytes_proceed,
    .on_abort = bytes_abort,
    .on_end = bytes_end,
};

static const aws_handler events_handler = {
    .header = AWS_ABI_HEADER_INIT(aws_handler),
    .on_request = events_request,
    .on_proceed = events_proceed,
    .on_abort = events_abort,
    .on_end = events_end,
};

static int add_route(aws_plugin_ctx *ctx, const char *path, const aws_handler *handler) {
    aws_route route = {
        .header = AWS_ABI_HEADER_INIT(aws_route),
        .method = "GET",
        .path = path,
        .match = AWS_MATCH_EXACT,
        .handler = handler,
    };
    return host->register_route(ctx, &route);
}

static int init(const aws_host_api *api, aws_plugin_ctx *ctx) {
    host = api;
    plugin = ctx;
    for (size_t i = 0; i < sizeof pattern; i++) pattern[i] = (unsigned char)(i % BYTES_PERIOD);
    int rc;
    if ((rc = add_route(ctx, "/stream/lines", &lines_handler)) != AWS_OK) return rc;
    if ((rc = add_route(ctx, "/stream/bytes", &bytes_handler)) != AWS_OK) return rc;
    return add_route(ctx, "/stream/events", &events_handler);
}

/* Runs when no request uses the plugin any more: every stream has been told to stop, so the
 * threads exit promptly. Wait for them (joined, so none is even on its last instructions):
 * once this returns, no plugin code runs except ticks already posted, which the host still
 * calls (with alive == 0, dropping their references) before it unloads the library. */
static void shutdown_plugin(aws_plugin_ctx *ctx) {
    (void)ctx;
    reap_threads(1);
}

static const aws_plugin_descriptor descriptor = {
    .header = AWS_ABI_HEADER_INIT(aws_plugin_descriptor),
    .name = "stream",
    .version = "1.0.0",
    .init = init,
    .shutdown = shutdown_plugin,
};

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &descriptor; }
