/* dup — registers GET /dup/route and answers with its own name (-DNAME="..."). Built twice
 * under two file names, the two copies overlap and the server must refuse to start. */
#include "testplugin.h"

#ifndef NAME
#define NAME "dup"
#endif

static int on_request(aws_request req, const aws_request_view *view, void *user) {
    (void)view; (void)user;
    return reply_text(req, 200, NAME "\n");
}

static const aws_handler handler = { .header = AWS_ABI_HEADER_INIT(aws_handler), .on_request = on_request };

static int init(const aws_host_api *api, aws_plugin_ctx *ctx) {
    host = api;
    plugin_ctx = ctx;
    aws_route r = { .header = AWS_ABI_HEADER_INIT(aws_route), .method = "GET", .path = "/dup/route",
                    .match = AWS_MATCH_EXACT, .handler = &handler };
    return host->register_route(ctx, &r);
}

static const aws_plugin_descriptor descriptor = {
    .header = AWS_ABI_HEADER_INIT(aws_plugin_descriptor), .name = NAME, .version = "1.0", .init = init,
};

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &descriptor; }
