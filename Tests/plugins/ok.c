/* ok — the simplest well-formed plugin: GET /ok answers "ok\n". Used as the plugin that must
 * keep serving next to broken ones.
 * GET /ok/info answers what the host told it: "name=<plugin_name> greeting=<config greeting or
 * -> root=<document_root>" (the descriptor calls itself "ok" whatever the file is named). */
#include "testplugin.h"

static int on_request(aws_request req, const aws_request_view *view, void *user) {
    (void)view; (void)user;
    return reply_text(req, 200, "ok\n");
}

static int on_info(aws_request req, const aws_request_view *view, void *user) {
    (void)view; (void)user;
    char body[4096];
    const char *greeting = host->config(plugin_ctx, "greeting");
    const char *missing = host->config(plugin_ctx, "no-such-key");
    snprintf(body, sizeof body, "name=%s greeting=%s missing=%s root=%s\n",
             AWS_HOST_HAS(host, plugin_name) ? host->plugin_name(plugin_ctx) : "?",
             greeting ? greeting : "-", missing ? missing : "-", host->document_root(plugin_ctx));
    return reply_text(req, 200, body);
}

static const aws_handler handler = { .header = AWS_ABI_HEADER_INIT(aws_handler), .on_request = on_request };
static const aws_handler info_handler = { .header = AWS_ABI_HEADER_INIT(aws_handler), .on_request = on_info };

static int init(const aws_host_api *api, aws_plugin_ctx *ctx) {
    host = api;
    plugin_ctx = ctx;
    aws_route r = { .header = AWS_ABI_HEADER_INIT(aws_route), .method = "GET", .path = "/ok",
                    .match = AWS_MATCH_EXACT, .handler = &handler };
    int rc = host->register_route(ctx, &r);
    if (rc != AWS_OK) return rc;
    aws_route i = { .header = AWS_ABI_HEADER_INIT(aws_route), .method = "GET", .path = "/ok/info",
                    .match = AWS_MATCH_EXACT, .handler = &info_handler };
    return host->register_route(ctx, &i);
}

static const aws_plugin_descriptor descriptor = {
    .header = AWS_ABI_HEADER_INIT(aws_plugin_descriptor), .name = "ok", .version = "0.1", .init = init,
};

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &descriptor; }
