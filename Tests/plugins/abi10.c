/*
 * abi10 — a plugin as a 1.0 author would have built it: abi_minor 0, a descriptor that ends
 * before `shutdown` and a handler that ends after `on_request` (their struct_size says so).
 * The fields past those sizes are filled with poison pointers: a host that read them instead of
 * treating them as absent would jump to address 0x10 and crash (at a request body, at the end
 * of a request, or at shutdown).
 *
 * Any method on /abi10 answers "abi10 ok ..." with what the plugin saw of the host table; a
 * request body is not read by the plugin (it has no on_body), the host must drain it.
 */
#include <stdint.h>
#include "testplugin.h"

#define POISON ((uintptr_t)0x10)

static int on_request(aws_request req, const aws_request_view *view, void *user) {
    char body[256];
    snprintf(body, sizeof body, "abi10 ok method=%.*s host-abi=%u.%u host-size=%u has-scratch=%d user=%s\n",
             (int)view->method.len, view->method.ptr,
             (unsigned)host->header.abi_major, (unsigned)host->header.abi_minor,
             (unsigned)host->header.struct_size, (int)AWS_HOST_HAS(host, request_scratch),
             user == (void *)&host ? "ok" : "wrong");
    return reply_text(req, 200, body);
}

static aws_handler handler;

static int init(const aws_host_api *api, aws_plugin_ctx *ctx) {
    host = api;
    plugin_ctx = ctx;
    memset(&handler, 0, sizeof handler);
    handler.header = (aws_abi_header){ AWS_PLUGIN_MAGIC, 1, 0, (uint32_t)offsetof(aws_handler, on_body), 0 };
    handler.user = (void *)&host;
    handler.on_request = on_request;
    handler.on_body = (void (*)(aws_request, const void *, size_t, int, void *))POISON;
    handler.on_proceed = (void (*)(aws_request, void *))POISON;
    handler.on_abort = (void (*)(aws_request, void *))POISON;
    handler.on_end = (void (*)(aws_request, void *))POISON;
    aws_route r = { .header = { AWS_PLUGIN_MAGIC, 1, 0, (uint32_t)sizeof(aws_route), 0 },
                    .method = "*", .path = "/abi10", .match = AWS_MATCH_EXACT, .flags = 0, .handler = &handler };
    return host->register_route(ctx, &r);
}

static aws_plugin_descriptor descriptor;

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) {
    descriptor.header = (aws_abi_header){ AWS_PLUGIN_MAGIC, 1, 0, (uint32_t)offsetof(aws_plugin_descriptor, shutdown), 0 };
    descriptor.name = "abi10";
    descriptor.version = "1.0.7";
    descriptor.init = init;
    descriptor.shutdown = (void (*)(aws_plugin_ctx *))POISON;
    return &descriptor;
}
