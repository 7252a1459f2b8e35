/*
 * skeleton — a template to copy when writing a plugin. It answers GET (and HEAD) /skeleton with
 * a line of text/plain, the greeting from --plugin-config skeleton.greeting=TEXT (default
 * "hello from skeleton"), and shows where everything else would go: every handler callback is
 * present, with a comment on when it runs and what it may do.
 *
 * To start a plugin of your own: copy this file to Plugins/NAME.c, rename the route and the
 * descriptor's name, run `make` in Plugins/, and start (or SIGHUP) the server with
 * `--plugins Plugins`. The file name without ".so" is the plugin's name in logs and in
 * --plugin-config NAME.KEY=VALUE.
 *
 * ABI features shown: the descriptor, init and shutdown, a route with every callback, config,
 * log, plugin_name (a 1.1 function, used only when AWS_HOST_HAS says the host has it), headers,
 * a declared length and a copied memory part.
 */
#include <stdio.h>
#include <string.h>
#include "aws_plugin.h"

/* The host's function table and this plugin's context: both valid from init until unloaded. */
static const aws_host_api *host;
static aws_plugin_ctx *plugin;
/* Configuration, read once in init. config() strings stay valid while the plugin is loaded. */
static const char *greeting = "hello from skeleton";

static aws_str cstr(const char *s) { aws_str r = { s, strlen(s) }; return r; }

static void log_line(int level, const char *text) { host->log(plugin, level, text, strlen(text)); }

/* ---- the handler ---------------------------------------------------------------------------
 * Every callback runs on the event-loop thread that owns the request and must not block. The
 * view and every pointer passed in are borrowed: valid until the callback returns. */

/* The request head is complete (with AWS_ROUTE_BUFFER_BODY: the whole body too, in view->body).
 * Either return an HTTP status 400..599, and the host answers with its error page (no other
 * callback follows), or return 0 to take the request: answer now, as here, or later from
 * on_body, on_proceed or a function given to post. Per-request state goes in
 * set_request_data (and is freed in on_end). */
static int on_request(aws_request req, const aws_request_view *view, void *user) {
    (void)user;
    int get = view->method.len == 3 && memcmp(view->method.ptr, "GET", 3) == 0;
    int head = view->method.len == 4 && memcmp(view->method.ptr, "HEAD", 4) == 0;
    /* Never true for this GET route (the host answers other methods with 405 itself); a route
     * for any method checks like this. A returned status gets the host's error page. */
    if (!get && !head) return 405;

    char body[512];
    int n = snprintf(body, sizeof body, "%s\n", greeting);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof body ? (size_t)n : sizeof body - 1;
    /* Status (default 200), headers and length go before the first part; the host adds Date,
     * Server, Connection and the framing itself. */
    host->add_header(req, cstr("Content-Type"), cstr("text/plain; charset=utf-8"));
    host->set_content_length(req, len);
    /* A memory part with release == NULL is copied before send_part returns, so a stack
     * buffer is fine. For HEAD the host sends the head only and drops the bytes. */
    aws_part part = { AWS_PART_MEMORY, 0, body, len, -1, 0, NULL, NULL };
    host->send_part(req, &part);
    host->finish(req); /* the response is complete: nothing more may be sent */
    return 0;
}

/* A piece of the request body (borrowed bytes), in order; `last` is 1 on the final call, which
 * may carry 0 bytes. Only for routes without AWS_ROUTE_BUFFER_BODY, and only when the request
 * has a body. A GET with a body would land here after on_request answered; it is ignored. */
static void on_body(aws_request req, const void *data, size_t len, int last, void *user) {
    (void)req; (void)data; (void)len; (void)last; (void)user;
}

/* The part given to send_part has been consumed and the host can take the next one: a plugin
 * that streams produces its next part here (one part outstanding at a time). Not called after
 * finish, so this skeleton, which finishes at once, never sees it. */
static void on_proceed(aws_request req, void *user) {
    (void)req; (void)user;
}

/* The client went away (or a timeout ended the request) before the response was finished. The
 * handle is already dead: host calls with it return AWS_E_GONE. Log, stop work in progress;
 * on_end follows. */
static void on_abort(aws_request req, void *user) {
    (void)req; (void)user;
    log_line(AWS_LOG_INFO, "skeleton request aborted by the client");
}

/* Called exactly once for every request on_request took (returned 0), last of all, whether it
 * finished or was aborted: free per-request state here. */
static void on_end(aws_request req, void *user) {
    (void)req; (void)user;
}

/* The handler must stay valid while the plugin is loaded: a static const is the usual choice.
 * Callbacks a plugin does not need may be left NULL (only on_request is required). */
static const aws_handler handler = {
    .header = AWS_ABI_HEADER_INIT(aws_handler),
    .user = NULL,  /* passed back to every callback */
    .on_request = on_request,
    .on_body = on_body,
    .on_proceed = on_proceed,
    .on_abort = on_abort,
    .on_end = on_end,
};

/* ---- loading and unloading ------------------------------------------------------------------ */

/* Once after loading (at start-up or on a SIGHUP reload), before any request. Read the
 * configuration and register routes (only possible here). Return 0, or non-zero to refuse to
 * load (the host logs it; with --strict-plugins the server does not start). */
static int init(const aws_host_api *api, aws_plugin_ctx *ctx) {
    host = api;
    plugin = ctx;
    const char *g = host->config(ctx, "greeting"); /* --plugin-config skeleton.greeting=TEXT */
    if (g) greeting = g;

    /* A function added in ABI 1.1: a plugin built against 1.1 may find itself on a 1.0 host. */
    char line[600];
    const char *name = AWS_HOST_HAS(host, plugin_name) ? host->plugin_name(ctx) : "skeleton";
    snprintf(line, sizeof line, "%s ready, greeting \"%s\"", name, greeting);
    log_line(AWS_LOG_INFO, line);

    aws_route route = {
        .header = AWS_ABI_HEADER_INIT(aws_route),
        .method = "GET",          /* the host routes HEAD to GET routes too; NULL or "*": any */
        .path = "/skeleton",
        .match = AWS_MATCH_EXACT, /* or AWS_MATCH_PREFIX for /skeleton and /skeleton/... */
        .flags = 0,               /* or AWS_ROUTE_BUFFER_BODY to get the body whole */
        .handler = &handler,      /* copied at registration; must stay valid anyway */
    };
    return host->register_route(ctx, &route); /* AWS_E_CONFLICT if another plugin has it */
}

/* Once before unloading (server exit, or a reload replaced this version), when no request uses
 * the plugin any more. Stop threads, free global state. May be NULL. */
static void shutdown_plugin(aws_plugin_ctx *ctx) {
    (void)ctx;
}

/* The descriptor: what aws_plugin_entry returns. The header tells the host which ABI version
 * (and so which struct layout) this plugin was compiled against. */
static const aws_plugin_descriptor descriptor = {
    .header = AWS_ABI_HEADER_INIT(aws_plugin_descriptor),
    .name = "skeleton",
    .version = "1.0.0",
    .init = init,
    .shutdown = shutdown_plugin,
};

/* The one exported symbol. */
AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &descriptor; }
