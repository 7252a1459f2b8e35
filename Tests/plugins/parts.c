/*
 * parts — response parts of every kind and ownership, under /parts:
 *   GET /parts/file?off=O&len=N&aio=A&release=R&pieces=P
 *        bytes [O, O+N) of <document root>/parts.bin as FILE parts (P pieces, one per
 *        on_proceed), with AWS_PART_FILE_AIO when A=1; R=0: release NULL (the host dup()s the
 *        descriptor, the plugin closes its own at once); R=1: the plugin keeps the descriptor
 *        open until release, where it records the file offset (the host must not move it)
 *   GET /parts/borrowed?size=N&part=K
 *        N bytes (byte i = i * 7 % 256) in memory parts of K bytes lent to the host
 *        (release != NULL): the buffer is rewritten only after its release
 *   GET /parts/stats
 *        "releases=R bad_offsets=B early_proceeds=E open_fds=F"
 */
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>
#include "testplugin.h"

static int releases, bad_offsets, early_proceeds, open_fds;

typedef struct job {
    aws_request req;
    int fd, aio, keep_fd;
    int64_t off, left, piece;
    int lent;                 /* a part is lent to the host (not yet released) */
    int memory;               /* /parts/borrowed */
    int64_t sent;
    unsigned char *buf;
    int ended;
} job;

static job *jobs[64];

static job *find(aws_request req) {
    for (int i = 0; i < 64; i++) if (jobs[i] && jobs[i]->req == req) return jobs[i];
    return NULL;
}

static void job_free(job *j) {
    if (j->fd >= 0) { close(j->fd); open_fds--; }
    free(j->buf);
    free(j);
}

static void file_release(void *ctx) {
    job *j = ctx;
    releases++;
    j->lent = 0;
    if (j->fd >= 0 && lseek(j->fd, 0, SEEK_CUR) != 0) bad_offsets++;
    if (j->ended) job_free(j);
}

static void mem_release(void *ctx) {
    job *j = ctx;
    releases++;
    j->lent = 0;
    if (j->ended) job_free(j);
}

static void next_part(job *j) {
    if (j->lent) { early_proceeds++; host->fail(j->req, 500); return; }
    int64_t n = j->left < j->piece ? j->left : j->piece;
    aws_part p;
    memset(&p, 0, sizeof p);
    p.length = (size_t)n;
    if (j->memory) {
        for (int64_t i = 0; i < n; i++) j->buf[i] = (unsigned char)((j->sent + i) * 7 % 256);
        p.kind = AWS_PART_MEMORY;
        p.data = j->buf;
        p.fd = -1;
        p.release = mem_release;
        p.release_ctx = j;
    } else {
        p.kind = AWS_PART_FILE;
        p.flags = j->aio ? AWS_PART_FILE_AIO : 0;
        p.fd = j->fd;
        p.offset = j->off;
        if (j->keep_fd) { p.release = file_release; p.release_ctx = j; }
    }
    j->lent = p.release != NULL;
    if (host->send_part(j->req, &p) != AWS_OK) { j->lent = 0; return; }
    j->off += n;
    j->sent += n;
    j->left -= n;
    if (!j->keep_fd && !j->memory && j->left == 0) { close(j->fd); open_fds--; j->fd = -1; }
    if (j->left == 0) host->finish(j->req);
}

static int on_request(aws_request req, const aws_request_view *view, void *user) {
    (void)user;
    aws_str p = view->path;
    if (str_eq(p, "/parts/stats")) {
        char body[128];
        snprintf(body, sizeof body, "releases=%d bad_offsets=%d early_proceeds=%d open_fds=%d\n",
                 releases, bad_offsets, early_proceeds, open_fds);
        return reply_text(req, 200, body);
    }
    int slot = -1;
    for (int i = 0; i < 64; i++) if (!jobs[i]) { slot = i; break; }
    if (slot < 0) return 503;
    job *j = calloc(1, sizeof *j);
    j->req = req;
    j->fd = -1;
    if (str_eq(p, "/parts/file")) {
        char path[4096];
        snprintf(path, sizeof path, "%s/parts.bin", host->document_root(plugin_ctx));
        j->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (j->fd < 0) { free(j); return 500; }
        open_fds++;
        j->off = query_long(view->query, "off", 0);
        j->left = query_long(view->query, "len", 0);
        j->aio = (int)query_long(view->query, "aio", 0);
        j->keep_fd = (int)query_long(view->query, "release", 0);
        long pieces = query_long(view->query, "pieces", 1);
        j->piece = pieces > 1 ? (j->left + pieces - 1) / pieces : j->left;
        if (j->piece == 0) j->piece = 1;
    } else if (str_eq(p, "/parts/borrowed")) {
        j->memory = 1;
        j->left = query_long(view->query, "size", 0);
        j->piece = query_long(view->query, "part", 65536);
        j->buf = malloc((size_t)j->piece);
    } else {
        free(j);
        return 404;
    }
    jobs[slot] = j;
    host->add_header(req, cstr("Content-Type"), cstr("application/octet-stream"));
    host->set_content_length(req, (uint64_t)j->left);
    if (j->left == 0) return host->finish(req);
    next_part(j);
    return 0;
}

static void on_proceed(aws_request req, void *user) {
    (void)user;
    job *j = find(req);
    if (j && j->left > 0) next_part(j);
}

static void on_end(aws_request req, void *user) {
    (void)user;
    for (int i = 0; i < 64; i++) {
        if (jobs[i] && jobs[i]->req == req) {
            job *j = jobs[i];
            jobs[i] = NULL;
            if (j->lent) j->ended = 1; else job_free(j);
        }
    }
}

static const aws_handler handler = {
    .header = AWS_ABI_HEADER_INIT(aws_handler),
    .on_request = on_request,
    .on_proceed = on_proceed,
    .on_end = on_end,
};

static int init(const aws_host_api *api, aws_plugin_ctx *ctx) {
    tp_attach(api, ctx);
    return tp_route("GET", "/parts", AWS_MATCH_PREFIX, 0, &handler);
}

static const aws_plugin_descriptor descriptor = {
    .header = AWS_ABI_HEADER_INIT(aws_plugin_descriptor), .name = "parts", .version = "1.0", .init = init,
};

AWS_PLUGIN_EXPORT const aws_plugin_descriptor *aws_plugin_entry(void) { return &descriptor; }
