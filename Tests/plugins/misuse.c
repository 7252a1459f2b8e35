/*
 * misuse — a plugin that breaks the rules on purpose, under the prefix /misuse:
 *   /misuse/status?code=N          on_request returns N (the host answers with its error page)
 *   /misuse/fail500                fail(req, 500) before anything was sent
 *   /misuse/twice                  send_part twice without waiting for on_proceed, then finish
 *   /misuse/twice-streamed         a first part (head goes out, chunked), then in on_proceed two
 *                                  parts in a row and finish
 *   /misuse/header-after-finish    a complete answer, then add_header / set_status / send_part /
 *                                  finish again
 *   /misuse/fail-after-head        a first part, then fail(req, 500) in on_proceed
 *   /misuse/declared-short         Content-Length 100, 10 bytes, finish
 *   /misuse/invalid                invalid arguments; reports the codes and answers 200
 *   /misuse/invalid-part-then-length
 *                                  three refused send_parts, then a normal answer with an exact
 *                                  Content-Length: the refused parts must not count
 *   /misuse/report                 the codes recorded by the requests above, one per line
 * Every code is recorded in a global (one loop thread) and reported by /misuse/report.
 */
#include "testplugin.h"

enum { M_NONE, M_TWICE_STREAMED, M_FAIL_AFTER_HEAD };

static int rc_fail500 = 99;
static int rc_twice[3] = { 99, 99, 99 };
static int rc_streamed[4] = { 99, 99, 99, 99 };
static int rc_late[4] = { 99, 99, 99, 99 };
static int rc_fail_after_head[2] = { 99, 99 };
static int rc_short[3] = { 99, 99, 99 };
static int rc_refused_parts[3] = { 99, 99, 99 };
static int ends;

static int on_request(aws_request req, const aws_request_view *view, void *user) {
    (void)user;
    aws_str p = view->path;
    if (str_eq(p, "/misuse/status")) {
        return (int)query_long(view->query, "code", 500);
    }
    if (str_eq(p, "/misuse/fail500")) {
        rc_fail500 = host->fail(req, 500);
        return 0;
    }
    if (str_eq(p, "/misuse/twice")) {
        aws_part a = mem_part("first part\n", 11), b = mem_part("second part\n", 12);
        rc_twice[0] = host->send_part(req, &a);
        rc_twice[1] = host->send_part(req, &b);
        rc_twice[2] = host->finish(req);
        return 0;
    }
    if (str_eq(p, "/misuse/twice-streamed")) {
        host->set_request_data(req, (void *)(uintptr_t)M_TWICE_STREAMED);
        aws_part a = mem_part("first\n", 6);
        rc_streamed[0] = host->send_part(req, &a);
        return 0;
    }
    if (str_eq(p, "/misuse/header-after-finish")) {
        reply_text(req, 200, "complete\n");
        rc_late[0] = host->add_header(req, cstr("X-Late"), cstr("1"));
        rc_late[1] = host->set_status(req, 404);
        aws_part a = mem_part("late\n", 5);
        rc_late[2] = host->send_part(req, &a);
        rc_late[3] = host->finish(req);
        return 0;
    }
    if (str_eq(p, "/misuse/fail-after-head")) {
        host->set_request_data(req, (void *)(uintptr_t)M_FAIL_AFTER_HEAD);
        aws_part a = mem_part("partial\n", 8);
        rc_fail_after_head[0] = host->send_part(req, &a);
        return 0;
    }
    if (str_eq(p, "/misuse/declared-short")) {
        rc_short[0] = host->set_content_length(req, 100);
        aws_part a = mem_part("0123456789", 10);
        rc_short[1] = host->send_part(req, &a);
        rc_short[2] = host->finish(req);
        return 0;
    }
    if (str_eq(p, "/misuse/invalid")) {
        /* Only calls refused before they touch any state: refused parts are the subject of
         * /misuse/invalid-part-then-length. */
        char body[512];
        aws_str crlf = { "a\r\nInjected: 1", 14 };
        int r_status0 = host->set_status(req, 99);
        int r_status1 = host->set_status(req, 600);
        int r_status101 = host->set_status(req, 101);
        int r_cl = host->add_header(req, cstr("Content-Length"), cstr("5"));
        int r_te = host->add_header(req, cstr("transfer-encoding"), cstr("chunked"));
        int r_conn = host->add_header(req, cstr("Connection"), cstr("close"));
        int r_crlf = host->add_header(req, cstr("X-Bad"), crlf);
        int r_name = host->add_header(req, cstr("Bad Name"), cstr("v"));
        int r_empty = host->add_header(req, cstr(""), cstr("v"));
        int r_nullpart = host->send_part(req, NULL);
        int r_post0 = host->post(0, NULL, NULL);
        snprintf(body, sizeof body,
                 "status99=%d status600=%d status101=%d content-length=%d transfer-encoding=%d "
                 "connection=%d crlf=%d badname=%d emptyname=%d nullpart=%d post0=%d\n",
                 r_status0, r_status1, r_status101, r_cl, r_te, r_conn, r_crlf, r_name, r_empty,
                 r_nullpart, r_post0);
        return reply_text(req, 200, body);
    }
    if (str_eq(p, "/misuse/invalid-part-then-length")) {
        aws_part nullmem = { AWS_PART_MEMORY, 0, NULL, 5, -1, 0, NULL, NULL };
        aws_part badkind = { 77, 0, "x", 1, -1, 0, NULL, NULL };
        aws_part badfd = { AWS_PART_FILE, 0, NULL, 10, -1, 0, NULL, NULL };
        rc_refused_parts[0] = host->send_part(req, &nullmem);
        rc_refused_parts[1] = host->send_part(req, &badkind);
        rc_refused_parts[2] = host->send_part(req, &badfd);
        return reply_text(req, 200, "fine after refused parts\n");
    }
    if (str_eq(p, "/misuse/report")) {
        char body[1024];
        snprintf(body, sizeof body,
                 "fail500=%d\n"
                 "twice=%d,%d,%d\n"
                 "streamed=%d,%d,%d,%d\n"
                 "late=%d,%d,%d,%d\n"
                 "fail-after-head=%d,%d\n"
                 "short=%d,%d,%d\n"
                 "refused-parts=%d,%d,%d\n"
                 "ends=%d\n",
                 rc_fail500, rc_twice[0], rc_twice[1], rc_twice[2],
                 rc_streamed[0], rc_streamed[1], rc_streamed[2], rc_streamed[3],
                 rc_late[0], rc_late[1], rc_late[2], rc_late[3],
                 rc_fail_after_head[0], rc_fail_after_head[1],
                 rc_short[0], rc_short[1], rc_short[2],
                 rc_refused_parts[0], rc_refused_parts[1], rc_refused_parts[2], ends);
        return reply_text(req, 200, body);
    }
    return 404;
}

static void on_proceed(aws_request req, void *user) {
    (void)user;
    uintptr_t mode = (uintptr_t)host->request_data(req);
    if (mode == M_TWICE_STREAMED) {
        host->set_request_data(req, (void *)(uintptr_t)M_NONE);
        aws_part a = mem_part("a\n", 2), b = mem_part("b\n", 2);
        rc_streamed[1] = host->send_part(req, &a);
        rc_streamed[2] = host->send_part(req, &b);
        rc_streamed[3] = host->finish(req);
    } else if (mode == M_FAIL_AFTER_HEAD) {
        host->set_request_data(req, (void *)(uintptr_t)M_NONE);
        rc_fail_after_head[1] = host->fail(req, 500);
    }
}

static void on_end(aws_request req, void *user) { (void)req; (void)user; ends++; }

static const aws_handler handler = {
    .header = AWS_ABI_HEADER_INIT(aws_handler),
    .on_request = on_request,
    .on_proceed = on_proceed,
    .on_end = on_end,
};

static int init(const aws_host_api *api, aws_plugin_ctx *ctx) {
    tp_attach(api, ctx);
    return tp_route("GET", "/misuse", AWS_MATCH_PREFIX, 0, &handler);
}

static const aws_plugin_descriptor descriptor = {
    .header = AWS_ABI_HEADER_INIT(aws_plugin_descriptor), .name = "misuse", .version = "1.0", .init = init,
};

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &descriptor; }
