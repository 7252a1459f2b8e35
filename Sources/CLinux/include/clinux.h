/* Thin wrappers over the Linux calls and constants that Glibc's Swift module does not
 * expose (epoll, eventfd, sendfile, signalfd) or only declares under _GNU_SOURCE (accept4,
 * O_DIRECT, openat2). Defining _GNU_SOURCE in a header clashes with Glibc's module, so the
 * GNU-only pieces are compiled in clinux.c and exported as plain functions. */
#ifndef AWS_CLINUX_H
#define AWS_CLINUX_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <signal.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

int aws_accept4(int fd, struct sockaddr *addr, socklen_t *len);   /* NONBLOCK | CLOEXEC */
/* RWF_NOWAIT for an iocb's aio_rw_flags: a buffered read that would block fails with EAGAIN. */
int aws_rwf_nowait(void);
/* An O_DIRECT descriptor for the file open as fd (via /proc/self/fd), or -1 with errno. */
int aws_reopen_direct(int fd);
/* Whether fd was opened with O_DIRECT. */
int aws_fd_is_direct(int fd);
int aws_msg_more(void);
int aws_tcp_defer_accept(void);
int aws_tcp_notsent_lowat(void);
int aws_so_reuseport(void);

/* The CPUs this process may run on (sched_getaffinity), at least 1. */
int aws_cpu_count(void);
/* Names the calling thread (at most 15 bytes are kept), as shown in /proc/PID/task/TID/comm. */
void aws_set_thread_name(const char *name);
/* The file of the loaded object that holds `addr` (dladdr), or NULL: names a plugin from one of
 * its function pointers (dl.c). */
const char *aws_dl_file_of(const void *addr);

/* malloc_trim(0): gives the free pages inside every malloc arena back to the kernel (glibc's
 * <malloc.h>, which Glibc's Swift module does not include). Walks and locks every arena in
 * turn: call it after a burst has drained, never per request. 1 when memory was released. */
int aws_malloc_trim(void);

/* openat2(dirfd, path, O_RDONLY|O_NONBLOCK|O_CLOEXEC|extra, RESOLVE_BENEATH): the kernel refuses
 * any resolution (`..`, symlinks) that leaves dirfd. Returns -1 with errno set; ENOSYS on old kernels. */
int aws_open_beneath(int dirfd, const char *path, int extra_flags);

/* Blocks the given signals in the calling thread (and threads it creates later) and returns a
 * signalfd that reports them. */
int aws_signalfd_for(const int *signals, int count);
int aws_signalfd_read(int fd);   /* the signal number, 0 if none pending, -1 on error */

/* CGI programs (spawn.c). Starts `path` with argv {path}, `envp`, working directory `dir`, and
 * fds 0/1/2 from in/out/err; every other descriptor is closed in the child, the signal mask is
 * empty, every signal has its default action, and the child leads a process group of its own.
 * The pid, or -errno. */
int aws_spawn_cgi(const char *path, char *const envp[], const char *dir, int in, int out, int err);
/* A pidfd for `pid` (readable once it exits), -1 with errno. */
int aws_pidfd_open(int pid);
/* Reaps the child of `pidfd` if it has exited: 1 (and its exit status, or 128 + the signal that
 * ended it, in *status), 0 while it runs, -1 with errno. */
int aws_pidfd_reap(int pidfd, int *status);
/* pipe2(O_CLOEXEC), with the parent's end (fds[parent_end]) non-blocking; the child's end stays
 * blocking, as programs expect of their standard streams. */
int aws_cgi_pipe(int fds[2], int parent_end);

static inline uint32_t aws_epollin(void) { return EPOLLIN; }
static inline uint32_t aws_epollout(void) { return EPOLLOUT; }
static inline uint32_t aws_epollerr(void) { return EPOLLERR; }
static inline uint32_t aws_epollhup(void) { return EPOLLHUP; }
static inline uint32_t aws_epollrdhup(void) { return EPOLLRDHUP; }
static inline uint32_t aws_epollexclusive(void) { return EPOLLEXCLUSIVE; }

/* Atomic 64-bit load (acquire) and store (release) on plain memory shared between threads. */
static inline uint64_t aws_atomic_load_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void aws_atomic_store_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

#endif
