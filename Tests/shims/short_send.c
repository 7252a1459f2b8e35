/*
 * short_send — an LD_PRELOAD shim for the tests: every send(2) of the process moves at most
 * SHORT_SEND_BYTES bytes (default 3), as a congested socket may. A server that treats a short
 * send as complete, or drops the remainder, shows it at once as corrupt output.
 *
 *   cc -shared -fPIC -o short_send.so short_send.c -ldl
 *   LD_PRELOAD=./short_send.so SHORT_SEND_BYTES=3 aws ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/types.h>

static ssize_t (*real_send)(int, const void *, size_t, int);
static size_t limit = 3;

__attribute__((constructor)) static void setup(void) {
    real_send = (ssize_t (*)(int, const void *, size_t, int))dlsym(RTLD_NEXT, "send");
    const char *v = getenv("SHORT_SEND_BYTES");
    if (v && atoi(v) > 0) limit = (size_t)atoi(v);
}

ssize_t send(int fd, const void *buf, size_t len, int flags) {
    return real_send(fd, buf, len < limit ? len : limit, flags);
}
