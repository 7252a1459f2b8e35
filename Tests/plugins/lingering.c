/*
 * lingering — a buggy plugin: its init starts a detached thread that runs the plugin's own code
 * for ever (a 5 ms sleep, then a static counter touched) and that shutdown never stops. The reload
 * tests deploy two versions of it (-DVERSION=\"1\", \"2\"): the old version's thread must go on
 * running after that version is shut down and unloaded, and the server must survive it (the host
 * keeps the old image mapped).
 *   GET /lingering   "lingering V ticks=N\n" (N: this version's thread's loops so far)
 * Once the thread sees that its version was shut down (or, built with -DREFUSE_INIT=1, that its
 * init refused to load), it logs one line through the host with the version's ctx:
 * "lingering V: thread still running after shutdown" / "... after a refused init".
 */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include "testplugin.h"

#ifndef VERSION
#define VERSION "0"
#endif

static atomic_long ticks;
static atomic_int shut_down;   /* 1: shutdown ran; 2: init refused to load */

static void *linger(void *arg) {
    (void)arg;
    int told = 0;
    for (;;) {
        struct timespec ts = { 0, 5 * 1000000L };
        nanosleep(&ts, NULL);
        atomic_fetch_add(&ticks, 1);
        int why = atomic_load(&shut_down);
        if (why && !told) {
            told = 1;
            plog(why == 1 ? "lingering " VERSION ": thread still running after shutdown"
                          : "lingering " VERSION ": thread still running after a refused init");
        }
    }
    return NULL;
}

static int on_request(aws_request req, const aws_request_view *view, void *user) {
    (void)view; (void)user;
    char body[64];
    snprintf(body, sizeof body, "lingering " VERSION " ticks=%ld\n", atomic_load(&ticks));
    return reply_text(req, 200, body);
}

static const aws_handler handler = { .header = AWS_ABI_HEADER_INIT(aws_handler), .on_request = on_request };

static int init(const aws_host_api *api, aws_plugin_ctx *ctx) {
    tp_attach(api, ctx);
    pthread_t t;
    if (pthread_create(&t, NULL, linger, NULL) != 0) return 1;
    pthread_detach(t);
    int rc = tp_route("GET", "/lingering", AWS_MATCH_EXACT, 0, &handler);
#ifdef REFUSE_INIT
    atomic_store(&shut_down, 2);
    rc = 1;
#endif
    return rc;
}

/* The bug: the thread is neither told to stop nor joined. */
static void shutdown_plugin(aws_plugin_ctx *ctx) {
    (void)ctx;
    atomic_store(&shut_down, 1);
}

static const aws_plugin_descriptor descriptor = {
    .header = AWS_ABI_HEADER_INIT(aws_plugin_descriptor), .name = "lingering", .version = VERSION,
    .init = init, .shutdown = shutdown_plugin,
};

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &descriptor; }
