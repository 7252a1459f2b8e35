#define _GNU_SOURCE
#include "clinux.h"
#include <fcntl.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <sched.h>
#include <malloc.h>

int aws_accept4(int fd, struct sockaddr *addr, socklen_t *len) {
    return accept4(fd, addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
}
int aws_msg_more(void) { return MSG_MORE; }
int aws_tcp_defer_accept(void) { return TCP_DEFER_ACCEPT; }
int aws_tcp_notsent_lowat(void) { return TCP_NOTSENT_LOWAT; }
int aws_so_reuseport(void) { return SO_REUSEPORT; }

int aws_open_beneath(int dirfd, const char *path, int extra_flags) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (uint64_t)(O_RDONLY | O_NONBLOCK | O_CLOEXEC | extra_flags);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

int aws_signalfd_for(const int *signals, int count) {
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < count; i++) sigaddset(&set, signals[i]);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) return -1;
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

int aws_signalfd_read(int fd) {
    struct signalfd_siginfo info;
    ssize_t n = read(fd, &info, sizeof info);
    if (n == (ssize_t)sizeof info) return (int)info.ssi_signo;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    return -1;
}

int aws_cpu_count(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
    int n = CPU_COUNT(&set);
    return n > 0 ? n : 1;
}

void aws_set_thread_name(const char *name) {
    pthread_setname_np(pthread_self(), name);
}

int aws_malloc_trim(void) { return malloc_trim(0); }

#include <stdio.h>
#include <sys/uio.h>

int aws_rwf_nowait(void) { return RWF_NOWAIT; }

/* A second, O_DIRECT description of an open file: reopened through /proc/self/fd, so it names
 * the same inode whatever has happened to its path since (renamed, replaced, a symlink changed).
 * -1 with errno set when the filesystem has no O_DIRECT (tmpfs: EINVAL) or /proc is missing. */
int aws_reopen_direct(int fd) {
    char path[40];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_DIRECT);
}

int aws_fd_is_direct(int fd) {
    int flags = fcntl(fd, F_GETFL);
    return flags >= 0 && (flags & O_DIRECT) != 0;
}
