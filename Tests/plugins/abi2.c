/* abi2 — a descriptor that claims ABI 2.0 (built with -DABI_MAJOR=N to vary it): the host must
 * refuse it without calling init. If init ever runs, it registers GET /abi2 and logs it. */
#include "testplugin.h"

#ifndef ABI_MAJOR
#define ABI_MAJOR 2
#endif
#ifndef ABI_MINOR
#define ABI_MINOR 0
#endif

static int on_request(aws_request req, const aws_request_view *view, void *user) {
    (void)view; (void)user;
    return reply_text(req, 200, "abi2 must not be served\n");
}

static const aws_handler handler = { .header = AWS_ABI_HEADER_INIT(aws_handler), .on_request = on_request };

static int init(const aws_host_api *api, aws_plugin_ctx *ctx) {
    host = api;
    plugin_ctx = ctx;
    plog("abi2 init was called although its ABI major differs");
    aws_route r = { .header = AWS_ABI_HEADER_INIT(aws_route), .method = "GET", .path = "/abi2",
                    .match = AWS_MATCH_EXACT, .handler = &handler };
    return host->register_route(ctx, &r);
}

static const aws_plugin_descriptor descriptor = {
    .header = { AWS_PLUGIN_MAGIC, ABI_MAJOR, ABI_MINOR, (uint32_t)sizeof(aws_plugin_descriptor), 0 },
    .name = "abi2", .version = "2.0.0", .init = init,
};

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &descriptor; }
