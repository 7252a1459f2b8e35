/*
 * Small helpers shared by the test plugins in Tests/plugins (compiled by the tests at run time,
 * never committed as .so). Each plugin includes this once; everything is static.
 */
#ifndef AWS_TESTPLUGIN_H
#define AWS_TESTPLUGIN_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "aws_plugin.h"

#define TP_UNUSED __attribute__((unused))

static const aws_host_api *host;
static aws_plugin_ctx *plugin_ctx;

TP_UNUSED static aws_str cstr(const char *s) { aws_str r = { s, strlen(s) }; return r; }

/* Keeps the host table and context, for plugins whose init only registers routes. */
TP_UNUSED static void tp_attach(const aws_host_api *api, aws_plugin_ctx *ctx) {
    host = api;
    plugin_ctx = ctx;
}

/* Registers one route of the current ABI. */
TP_UNUSED static int tp_route(const char *method, const char *path, uint32_t match, uint32_t flags,
                              const aws_handler *handler) {
    aws_route r = { .header = AWS_ABI_HEADER_INIT(aws_route), .method = method, .path = path,
                    .match = match, .flags = flags, .handler = handler };
    return host->register_route(plugin_ctx, &r);
}

TP_UNUSED static int str_eq(aws_str a, const char *b) {
    size_t n = strlen(b);
    return a.len == n && (n == 0 || memcmp(a.ptr, b, n) == 0);
}

/* The integer value of `key` in a query string, or `def`. */
TP_UNUSED static long query_long(aws_str q, const char *key, long def) {
    size_t klen = strlen(key);
    size_t i = 0;
    while (i < q.len) {
        size_t end = i;
        while (end < q.len && q.ptr[end] != '&') end++;
        if (end - i > klen && memcmp(q.ptr + i, key, klen) == 0 && q.ptr[i + klen] == '=') {
            char buf[32];
            size_t n = end - i - klen - 1;
            if (n >= sizeof buf) n = sizeof buf - 1;
            memcpy(buf, q.ptr + i + klen + 1, n);
            buf[n] = 0;
            return strtol(buf, NULL, 10);
        }
        i = end + 1;
    }
    return def;
}

/* A memory part the host copies (release == NULL). */
TP_UNUSED static aws_part mem_part(const void *data, size_t len) {
    aws_part p = { AWS_PART_MEMORY, 0, data, len, -1, 0, NULL, NULL };
    return p;
}

/* A complete text/plain answer with an exact Content-Length. */
TP_UNUSED static int reply_text(aws_request req, int status, const char *text) {
    size_t len = strlen(text);
    host->set_status(req, status);
    host->add_header(req, cstr("Content-Type"), cstr("text/plain; charset=utf-8"));
    host->set_content_length(req, len);
    if (len > 0) {
        aws_part p = mem_part(text, len);
        host->send_part(req, &p);
    }
    return host->finish(req);
}

TP_UNUSED static void plog(const char *msg) { host->log(plugin_ctx, AWS_LOG_NOTICE, msg, strlen(msg)); }

#endif
