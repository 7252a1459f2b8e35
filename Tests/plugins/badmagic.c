/* badmagic — a descriptor whose magic is wrong: the host must refuse it without calling init. */
#include "testplugin.h"

static int on_request(aws_request req, const aws_request_view *view, void *user) {
    (void)view; (void)user;
    return reply_text(req, 200, "badmagic must not be served\n");
}

static const aws_handler handler = { .header = AWS_ABI_HEADER_INIT(aws_handler), .on_request = on_request };

static int init(const aws_host_api *api, aws_plugin_ctx *ctx) {
    host = api;
    plugin_ctx = ctx;
    plog("badmagic init was called although its magic is wrong");
    aws_route r = { .header = AWS_ABI_HEADER_INIT(aws_route), .method = "GET", .path = "/badmagic",
                    .match = AWS_MATCH_EXACT, .handler = &handler };
    return host->register_route(ctx, &r);
}

static const aws_plugin_descriptor descriptor = {
    .header = { 0x12345678u, AWS_PLUGIN_ABI_MAJOR, AWS_PLUGIN_ABI_MINOR, (uint32_t)sizeof(aws_plugin_descriptor), 0 },
    .name = "badmagic", .version = "1.0", .init = init,
};

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &descriptor; }
