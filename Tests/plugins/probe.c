/*
 * probe — checks request-handle lifetimes and `post` from a plugin thread, under /probe:
 *   /probe/store          remembers its handle, answers "stored\n"
 *   /probe/hang           remembers its handle, sends "started\n" (chunked) and never finishes:
 *                         only the client leaving ends it (on_abort, then on_end)
 *   /probe/check[?hang=1] calls every host function with the remembered, ended handle of
 *                         /probe/store (of /probe/hang with hang=1) and answers the return
 *                         codes, one "name=value" per line
 *   /probe/late?delay=MS  sends "waiting\n", then a plugin thread sleeps MS ms, calls set_status
 *                         from the wrong thread and posts; the posted function finishes the
 *                         response with "done\n" if the request is alive, else counts alive=0
 *   /probe/stats          counters: aborts, ends, posted alive values, codes seen in callbacks
 *   /probe/scheme         "scheme=<view.scheme> tls=<view.tls_version>\n" (ABI 1.2 fields); 501
 *                         naming both minors when the host's table (or this build's header)
 *                         is older than 1.2
 * Threads are joined in shutdown, so the library is never unloaded under a running thread.
 */
#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include "testplugin.h"

static aws_request stored_handle, hang_handle;
static int hang_aborts, hang_ends, aborts, ends;
static int abort_set_status_rc = 99, abort_request_data_null = -1;
static int check_post_alive0, check_post_alive1;
static int late_alive0, late_alive1, late_dead_send_rc = 99, late_started;
static volatile int late_thread_rc = 99, late_post_rc = 99;

/* ---- plugin threads, joined at shutdown ---- */
static pthread_mutex_t threads_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t threads[1024];
static int thread_count;

static void start_thread(void *(*fn)(void *), void *arg) {
    pthread_mutex_lock(&threads_lock);
    if (thread_count == 1024) {  /* never in the tests; keep it bounded anyway */
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
}

/* ---- checks with an ended handle ---- */
static void check_posted(aws_request req, void *arg, int alive) {
    (void)req; (void)arg;
    if (alive) check_post_alive1++; else check_post_alive0++;
}

static int check(aws_request req, aws_request old) {
    char body[1024];
    aws_part part = mem_part("x", 1);
    int found = 7;
    int r_status = host->set_status(old, 200);
    int r_header = host->add_header(old, cstr("X-Old"), cstr("1"));
    int r_length = host->set_content_length(old, 1);
    int r_part = host->send_part(old, &part);
    int r_finish = host->finish(old);
    int r_fail = host->fail(old, 500);
    int r_setdata = host->set_request_data(old, (void *)&body);
    void *data = host->request_data(old);
    aws_str hv = host->request_header(old, "Host", &found);
    void *scratch = AWS_HOST_HAS(host, request_scratch) ? host->request_scratch(old, 16) : NULL;
    int r_post = host->post(old, check_posted, NULL);
    snprintf(body, sizeof body,
             "handle_nonzero=%d\nset_status=%d\nadd_header=%d\nset_content_length=%d\nsend_part=%d\n"
             "finish=%d\nfail=%d\nset_request_data=%d\nrequest_data_null=%d\nrequest_header_found=%d\n"
             "request_header_null=%d\nrequest_scratch_null=%d\npost=%d\n",
             old != 0, r_status, r_header, r_length, r_part, r_finish, r_fail, r_setdata, data == NULL,
             found, hv.ptr == NULL, scratch == NULL, r_post);
    return reply_text(req, 200, body);
}

/* ---- late post from a thread ---- */
static void late_posted(aws_request req, void *arg, int alive) {
    (void)arg;
    if (alive) {
        late_alive1++;
        aws_part part = mem_part("done\n", 5);
        host->send_part(req, &part);
        host->finish(req);
    } else {
        late_alive0++;
        aws_part part = mem_part("x", 1);
        late_dead_send_rc = host->send_part(req, &part);
    }
}

struct late_arg { aws_request req; long delay_ms; };

static void *late_thread(void *p) {
    struct late_arg *a = p;
    struct timespec ts = { a->delay_ms / 1000, (a->delay_ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
    late_thread_rc = host->set_status(a->req, 200);       /* wrong thread: AWS_E_THREAD */
    late_post_rc = host->post(a->req, late_posted, NULL); /* any thread */
    free(a);
    return NULL;
}

static int on_request(aws_request req, const aws_request_view *view, void *user) {
    (void)user;
    aws_str p = view->path;
    if (str_eq(p, "/probe/store")) {
        stored_handle = req;
        return reply_text(req, 200, "stored\n");
    }
    if (str_eq(p, "/probe/hang")) {
        hang_handle = req;
        host->set_request_data(req, (void *)&hang_handle);
        host->add_header(req, cstr("Content-Type"), cstr("text/plain"));
        aws_part part = mem_part("started\n", 8);
        host->send_part(req, &part);
        return 0;
    }
    if (str_eq(p, "/probe/check")) {
        long which = query_long(view->query, "hang", 0);
        return check(req, which ? hang_handle : stored_handle);
    }
    if (str_eq(p, "/probe/late")) {
        struct late_arg *a = malloc(sizeof *a);
        a->req = req;
        a->delay_ms = query_long(view->query, "delay", 300);
        host->add_header(req, cstr("Content-Type"), cstr("text/plain"));
        aws_part part = mem_part("waiting\n", 8);
        host->send_part(req, &part);
        late_started++;
        start_thread(late_thread, a);
        return 0;
    }
    if (str_eq(p, "/probe/remote")) {
        char body[128];
        snprintf(body, sizeof body, "remote=%.*s\n", (int)view->remote_addr.len, view->remote_addr.ptr);
        return reply_text(req, 200, body);
    }
    if (str_eq(p, "/probe/scheme")) {
        char body[256];
#if AWS_PLUGIN_ABI_MINOR >= 2
        /* scheme and tls_version lie at the end of the view: only a 1.2+ host fills them in. */
        if (host->header.abi_minor >= 2) {
            snprintf(body, sizeof body, "scheme=%.*s tls=%.*s\n",
                     (int)view->scheme.len, view->scheme.len ? view->scheme.ptr : "",
                     (int)view->tls_version.len, view->tls_version.len ? view->tls_version.ptr : "");
            return reply_text(req, 200, body);
        }
#endif
        snprintf(body, sizeof body, "no scheme in the request view: host ABI 1.%u, probe built against 1.%d\n",
                 (unsigned)host->header.abi_minor, AWS_PLUGIN_ABI_MINOR);
        return reply_text(req, 501, body);
    }
    if (str_eq(p, "/probe/stats")) {
        char body[1024];
        snprintf(body, sizeof body,
                 "aborts=%d\nends=%d\nhang_aborts=%d\nhang_ends=%d\nabort_set_status=%d\n"
                 "abort_request_data_null=%d\ncheck_post_alive0=%d\ncheck_post_alive1=%d\n"
                 "late_started=%d\nlate_alive0=%d\nlate_alive1=%d\nlate_dead_send=%d\n"
                 "late_thread_set_status=%d\nlate_post=%d\n",
                 aborts, ends, hang_aborts, hang_ends, abort_set_status_rc, abort_request_data_null,
                 check_post_alive0, check_post_alive1, late_started, late_alive0, late_alive1,
                 late_dead_send_rc, late_thread_rc, late_post_rc);
        return reply_text(req, 200, body);
    }
    return 404;
}

static void on_abort(aws_request req, void *user) {
    (void)user;
    aborts++;
    if (req == hang_handle) {
        hang_aborts++;
        abort_set_status_rc = host->set_status(req, 200);
        abort_request_data_null = host->request_data(req) == NULL;
    }
    plog("probe: request aborted");
}

static void on_end(aws_request req, void *user) {
    (void)user;
    ends++;
    if (req == hang_handle) hang_ends++;
}

static const aws_handler handler = {
    .header = AWS_ABI_HEADER_INIT(aws_handler),
    .on_request = on_request,
    .on_abort = on_abort,
    .on_end = on_end,
};

static int init(const aws_host_api *api, aws_plugin_ctx *ctx) {
    tp_attach(api, ctx);
    return tp_route("GET", "/probe", AWS_MATCH_PREFIX, 0, &handler);
}

static const aws_plugin_descriptor descriptor = {
    .header = AWS_ABI_HEADER_INIT(aws_plugin_descriptor), .name = "probe", .version = "1.0",
    .init = init, .shutdown = shutdown_plugin,
};

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &descriptor; }
