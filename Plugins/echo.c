/*
 * echo — POST /echo answers with the request body and its Content-Type; HEAD /echo answers
 * with the headers a POST of an empty body would get. Other methods get 405 with Allow.
 *
 * The route asks the host to buffer the body (AWS_ROUTE_BUFFER_BODY, up to --max-body), so the
 * whole body is in view->body when on_request runs, and one memory part answers it.
 */
#include <string.h>
#include "aws_plugin.h"

static const aws_host_api *host;

static aws_str cstr(const char *s) { aws_str r = { s, strlen(s) }; return r; }

static int on_request(aws_request req, const aws_request_view *view, void *user) {
    (void)user;
    int found = 0;
    aws_str type = host->request_header(req, "Content-Type", &found);
    int is_head = view->method.len == 4 && memcmp(view->method.ptr, "HEAD", 4) == 0;
    int is_post = view->method.len == 4 && memcmp(view->method.ptr, "POST", 4) == 0;
    if (!is_head && !is_post) {
        /* Answer 405 ourselves so the Allow header names what this route accepts. */
        static const char msg[] = "echo accepts POST and HEAD\n";
        host->set_status(req, 405);
        host->add_header(req, cstr("Allow"), cstr("POST, HEAD"));
        host->add_header(req, cstr("Content-Type"), cstr("text/plain; charset=utf-8"));
        aws_part part = { AWS_PART_MEMORY, 0, msg, sizeof msg - 1, -1, 0, NULL, NULL };
        host->send_part(req, &part);
        return host->finish(req);
    }
    host->add_header(req, cstr("Content-Type"), found ? type : cstr("application/octet-stream"));
    host->set_content_length(req, is_post ? view->body.len : 0);
    if (is_post && view->body.len > 0) {
        /* release == NULL: the host copies the bytes, which are only borrowed during this call. */
        aws_part part = { AWS_PART_MEMORY, 0, view->body.ptr, view->body.len, -1, 0, NULL, NULL };
        host->send_part(req, &part);
    }
    return host->finish(req);
}

static const aws_handler handler = {
    .header = AWS_ABI_HEADER_INIT(aws_handler),
    .on_request = on_request,
};

static int init(const aws_host_api *api, aws_plugin_ctx *ctx) {
    host = api;
    aws_route route = {
        .header = AWS_ABI_HEADER_INIT(aws_route),
        .method = "*",
        .path = "/echo",
        .match = AWS_MATCH_EXACT,
        .flags = AWS_ROUTE_BUFFER_BODY,
        .handler = &handler,
    };
    return host->register_route(ctx, &route);
}

static const aws_plugin_descriptor descriptor = {
    .header = AWS_ABI_HEADER_INIT(aws_plugin_descriptor),
    .name = "echo",
    .version = "1.0.0",
    .init = init,
};

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &descriptor; }
