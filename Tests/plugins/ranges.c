/*
 * ranges — a test plugin that hands the host out-of-range numbers through the documented API.
 * Each route reports the return codes it got; the host must refuse (AWS_E_INVALID), never crash.
 *   GET /ranges/length     set_content_length(UINT64_MAX), then a normal answer
 *   GET /ranges/part       a memory part of length (size_t)-1, a file part at INT64_MAX
 *   GET /ranges/nocontent  set_status(204) then a part: the client must get no body
 *   GET /ranges/interim    set_status(100) refused; the answer is 200
 *   GET /ranges/restatus   add_header, set_status(299), add_header, set_status(201): the head
 *                          the host began before on_request is rewritten in place, fields kept
 *   GET /ranges/unnamed    add_header, then set_status(299), a status aws has no name for
 */
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>
#include "testplugin.h"

static char report[256];

static int answer(aws_request req, const char *text) {
    host->add_header(req, cstr("Content-Type"), cstr("text/plain"));
    aws_part part = { AWS_PART_MEMORY, 0, text, strlen(text), -1, 0, NULL, NULL };
    host->send_part(req, &part);
    return host->finish(req);
}

static int on_request(aws_request req, const aws_request_view *view, void *user) {
    (void)user;
    if (str_eq(view->path, "/ranges/length")) {
        int a = host->set_content_length(req, UINT64_MAX);
        snprintf(report, sizeof report, "set_content_length=%d\n", a);
        return answer(req, report);
    }
    if (str_eq(view->path, "/ranges/part")) {
        static const char x[] = "x";
        aws_part huge = { AWS_PART_MEMORY, 0, x, (size_t)-1, -1, 0, NULL, NULL };
        int a = host->send_part(req, &huge);
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        aws_part far = { AWS_PART_FILE, 0, NULL, 1, fd, INT64_MAX, NULL, NULL };
        int b = host->send_part(req, &far);
        close(fd);
        int c = host->add_header(req, cstr("X-Bad"), (aws_str){ "v", (size_t)-1 });
        snprintf(report, sizeof report, "memory=%d file=%d header=%d\n", a, b, c);
        return answer(req, report);
    }
    if (str_eq(view->path, "/ranges/nocontent")) {
        host->set_status(req, 204);
        return answer(req, "this must not be sent");
    }
    if (str_eq(view->path, "/ranges/interim")) {
        int a = host->set_status(req, 100);
        snprintf(report, sizeof report, "set_status_100=%d\n", a);
        return answer(req, report);
    }
    if (str_eq(view->path, "/ranges/restatus")) {
        host->add_header(req, cstr("X-First"), cstr("1"));
        int a = host->set_status(req, 299);
        host->add_header(req, cstr("X-Second"), cstr("2"));
        int b = host->set_status(req, 201);
        snprintf(report, sizeof report, "set_status=%d,%d\n", a, b);
        return answer(req, report);
    }
    if (str_eq(view->path, "/ranges/unnamed")) {
        host->add_header(req, cstr("X-First"), cstr("1"));
        host->set_status(req, 299);
        return answer(req, "unnamed\n");
    }
    return 404;
}

static const aws_handler handler = { .header = AWS_ABI_HEADER_INIT(aws_handler), .on_request = on_request };

static int init(const aws_host_api *api, aws_plugin_ctx *ctx) {
    tp_attach(api, ctx);
    return tp_route("GET", "/ranges", AWS_MATCH_PREFIX, 0, &handler);
}

static const aws_plugin_descriptor descriptor = {
    .header = AWS_ABI_HEADER_INIT(aws_plugin_descriptor), .name = "ranges", .version = "1", .init = init,
};

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &descriptor; }
