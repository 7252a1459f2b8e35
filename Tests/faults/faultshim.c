/*
 * faultshim.c — an LD_PRELOAD library that makes the server's socket I/O behave like a
 * hostile (but legal) kernel: short reads, short writes, spurious EAGAIN and EINTR, and on
 * demand ECONNRESET, io_submit -> EAGAIN and accept4 -> EMFILE. Tests/test_faults.py compiles
 * it with cc into a temporary folder and starts the real server with LD_PRELOAD pointing at it.
 *
 * Everything is off unless its variable is set (probabilities are per mille, 0-1000):
 *
 *   FAULT_SEED=S         seed of every decision (default 1)
 *   FAULT_READ_MAX=N     recv/read on a socket returns at most N bytes (a count drawn in 1..N;
 *                        N=1: one byte per call)
 *   FAULT_WRITE_MAX=N    send/write/writev/sendfile to a socket moves at most N bytes (1..N)
 *   FAULT_EAGAIN=P       a call on a NON-BLOCKING socket fails with EAGAIN, nothing moved
 *   FAULT_EAGAIN_FIRST=1 the first read call and the first write call on every accepted socket
 *                        fail with EAGAIN (so every connection takes the wait-for-epoll path
 *                        both ways, whatever the dice say)
 *   FAULT_EINTR=P        a call fails with EINTR, nothing moved
 *   FAULT_ECONNRESET=P   recv/read/send/write/writev fails with ECONNRESET; the socket is shut
 *                        down (both ways) first, so what follows is what follows a real reset
 *                        (end of stream, EPIPE) and the peer sees the connection end
 *   FAULT_AIO_EAGAIN=P   io_submit (libaio) queues nothing and returns -EAGAIN
 *   FAULT_EMFILE=P       accept/accept4 fails with EMFILE (the connection stays queued)
 *   FAULT_PIPES=1        the read/write limits and EAGAIN/EINTR also apply to pipes (the CGI
 *                        programs' stdin/stdout/stderr), not only to sockets
 *   FAULT_STATS=PATH     a file (created, 4 KiB) holding the counters below and a pause word,
 *                        mapped shared: a test reads what was injected while the server runs,
 *                        and writes a non-zero pause word to stop every injection
 *
 * What is touched, and why only that: the read/write limits and errors apply only to
 * descriptors that fstat says are sockets (and pipes with FAULT_PIPES), so the eventfds,
 * signalfd, timerfd, log files and regular files the server reads keep their exact semantics
 * (an eventfd read of 8 bytes cut to 1 would be EINVAL, not a short read). EAGAIN is injected
 * only where the kernel could return it: a socket in O_NONBLOCK mode or a call with
 * MSG_DONTWAIT. recv with MSG_PEEK (the server's "is input waiting" probe before a close) is
 * passed through unchanged. The shim's own calls (fstat, fcntl, mmap, shutdown) are never
 * intercepted.
 *
 * Determinism: every decision is a pure function of (seed, which accepted connection, how
 * many intercepted calls its descriptor has had since it was accepted). The counters are per
 * descriptor and atomic, so worker threads never share a random stream: the same seed and the
 * same sequence of connections replay the same faults at the same calls, whatever the other
 * threads do (a call that really found the socket empty counts too, so timing can still move
 * a fault by a call). io_submit and descriptors not seen accepted (pipes) have counters of
 * their own. The calls are the glibc symbols the server and OpenSSL go through: recv,
 * send, read, write, writev, sendfile(64), accept(4), and io_submit from libaio.so,
 * interposed by name (RTLD_NEXT finds the real one).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* ---- counters (also the layout of the FAULT_STATS file: 64-bit words) ---- */
enum {
    W_MAGIC,          /* 0x666c7473 ("flts") once the shim is loaded */
    W_PAUSED,         /* written by the test: non-zero = inject nothing */
    C_CALLS,          /* intercepted socket (or pipe) I/O calls */
    C_SHORT_READS,    /* reads cut below the count asked for */
    C_SHORT_WRITES,   /* writes cut below the count asked for */
    C_EAGAIN,
    C_EINTR,
    C_ECONNRESET,
    C_AIO_CALLS,
    C_AIO_EAGAIN,
    C_ACCEPT_CALLS,
    C_EMFILE,
    W_COUNT
};

static _Atomic uint64_t local_words[W_COUNT];
static _Atomic uint64_t *words = local_words;

static uint64_t seed = 1;
static size_t read_max, write_max;
static unsigned p_eagain, p_eintr, p_reset, p_aio, p_emfile;
static int with_pipes, eagain_first;

/* ---- the real functions ---- */
static ssize_t (*real_recv)(int, void *, size_t, int);
static ssize_t (*real_send)(int, const void *, size_t, int);
static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_sendfile)(int, int, off_t *, size_t);
static ssize_t (*real_sendfile64)(int, int, off64_t *, size_t);
static int (*real_accept)(int, struct sockaddr *, socklen_t *);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
static int (*real_io_submit)(void *, long, void **);

/* Resolved once, on the first intercepted call (which may come before the constructor, from
 * another library's constructor) or in the constructor. io_submit stays NULL in a process
 * without libaio, which then never calls it. */
static pthread_once_t resolved = PTHREAD_ONCE_INIT;

static void resolve(void) {
    real_recv = dlsym(RTLD_NEXT, "recv");
    real_send = dlsym(RTLD_NEXT, "send");
    real_read = dlsym(RTLD_NEXT, "read");
    real_write = dlsym(RTLD_NEXT, "write");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_sendfile = dlsym(RTLD_NEXT, "sendfile");
    real_sendfile64 = dlsym(RTLD_NEXT, "sendfile64");
    real_accept = dlsym(RTLD_NEXT, "accept");
    real_accept4 = dlsym(RTLD_NEXT, "accept4");
    real_io_submit = dlsym(RTLD_NEXT, "io_submit");
}

#define REAL(name) (pthread_once(&resolved, resolve), real_##name)

static unsigned long env_num(const char *name, unsigned long dflt) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    return strtoul(v, NULL, 0);
}

static unsigned env_permille(const char *name) {
    unsigned long p = env_num(name, 0);
    return p > 1000 ? 1000 : (unsigned)p;
}

__attribute__((constructor)) static void faultshim_init(void) {
    pthread_once(&resolved, resolve);
    seed = env_num("FAULT_SEED", 1);
    read_max = env_num("FAULT_READ_MAX", 0);
    write_max = env_num("FAULT_WRITE_MAX", 0);
    p_eagain = env_permille("FAULT_EAGAIN");
    p_eintr = env_permille("FAULT_EINTR");
    p_reset = env_permille("FAULT_ECONNRESET");
    p_aio = env_permille("FAULT_AIO_EAGAIN");
    p_emfile = env_permille("FAULT_EMFILE");
    with_pipes = env_num("FAULT_PIPES", 0) != 0;
    eagain_first = env_num("FAULT_EAGAIN_FIRST", 0) != 0;
    const char *stats = getenv("FAULT_STATS");
    if (stats && *stats) {
        int fd = open(stats, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) {
            if (ftruncate(fd, 4096) == 0) {
                void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                if (m != MAP_FAILED) words = m;
            }
            close(fd);
        }
    }
    atomic_store(&words[W_MAGIC], 0x666c7473);
}

static void count(int which) { atomic_fetch_add_explicit(&words[which], 1, memory_order_relaxed); }

/* ---- decisions ---- */

/* Per descriptor: which accepted connection it is (a number counted from 1 in accept order;
 * 0 for a descriptor the shim did not see accepted, e.g. a pipe) and how many calls it has had
 * since. Descriptors past the table share one counter: still random, no longer replayable. */
#define MAX_FD 65536
static struct {
    _Atomic uint32_t conn;
    _Atomic uint32_t calls;
    _Atomic uint8_t read_seen, write_seen;   /* for FAULT_EAGAIN_FIRST */
} fds[MAX_FD];
static _Atomic uint32_t accepted;
static _Atomic uint64_t calls_other, aio_calls;

static uint64_t mix(uint64_t x) {   /* splitmix64 finaliser */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* One random word for this call on fd; the caller draws several decisions from it. Keyed by
 * the connection's number, not the descriptor: descriptor numbers are reused, so every
 * connection would otherwise replay the same faults at the same calls. */
static uint64_t draw(int fd) {
    if (fd < 0 || fd >= MAX_FD)
        return mix(seed ^ mix(0xfdULL << 48 ^ atomic_fetch_add_explicit(&calls_other, 1, memory_order_relaxed)));
    uint64_t conn = atomic_load_explicit(&fds[fd].conn, memory_order_relaxed);
    uint64_t id = conn ? conn : (1ULL << 40) | (uint32_t)fd;
    uint64_t n = atomic_fetch_add_explicit(&fds[fd].calls, 1, memory_order_relaxed);
    return mix(seed ^ mix((id << 24) ^ n));
}

/* Decision `salt` of a call: true with probability p per mille. */
static int chance(uint64_t r, int salt, unsigned p) {
    return p != 0 && mix(r + (uint64_t)salt) % 1000 < p;
}

/* A count in 1..max (max > 0), no larger than asked. */
static size_t cut(uint64_t r, int salt, size_t asked, size_t max) {
    size_t n = 1 + (size_t)(mix(r + (uint64_t)salt) % max);
    return n < asked ? n : asked;
}

/* A descriptor accept just returned: the next connection number, its calls from 0. */
static void fresh(int fd) {
    if (fd < 0 || fd >= MAX_FD) return;
    atomic_store_explicit(&fds[fd].calls, 0, memory_order_relaxed);
    atomic_store_explicit(&fds[fd].read_seen, 0, memory_order_relaxed);
    atomic_store_explicit(&fds[fd].write_seen, 0, memory_order_relaxed);
    atomic_store_explicit(&fds[fd].conn, atomic_fetch_add(&accepted, 1) + 1, memory_order_relaxed);
}

/* FAULT_EAGAIN_FIRST: whether this is the connection's first read (or write) call. */
static int first_call(int fd, int is_write) {
    if (!eagain_first || fd < 0 || fd >= MAX_FD || atomic_load_explicit(&fds[fd].conn, memory_order_relaxed) == 0)
        return 0;
    return atomic_exchange(is_write ? &fds[fd].write_seen : &fds[fd].read_seen, 1) == 0;
}

static int paused(void) { return atomic_load_explicit(&words[W_PAUSED], memory_order_relaxed) != 0; }

/* Whether fd is one the shim works on: a socket (recv/send already know), or a pipe with
 * FAULT_PIPES. */
static int targeted(int fd, int known_socket) {
    if (known_socket) return 1;
    struct stat st;
    if (fstat(fd, &st) != 0) return 0;
    return S_ISSOCK(st.st_mode) || (with_pipes && S_ISFIFO(st.st_mode));
}

static int nonblocking(int fd, int flags) {
    if (flags & MSG_DONTWAIT) return 1;
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_NONBLOCK);
}

enum { SALT_RESET = 1, SALT_EINTR, SALT_EAGAIN, SALT_CUT };

/* The fault for a call, if any: returns 0 to go on (with *limit set to the byte cap, 0 = none),
 * or -1 with errno set. `reset_ok`: ECONNRESET may be injected here. */
static int decide(int fd, int flags, int is_write, int reset_ok, size_t asked, size_t *limit) {
    *limit = 0;
    count(C_CALLS);
    uint64_t r = draw(fd);
    if (reset_ok && chance(r, SALT_RESET, p_reset)) {
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) {
            shutdown(fd, SHUT_RDWR);
            count(C_ECONNRESET);
            errno = ECONNRESET;
            return -1;
        }
    }
    if (chance(r, SALT_EINTR, p_eintr)) {
        count(C_EINTR);
        errno = EINTR;
        return -1;
    }
    int first = first_call(fd, is_write);
    if ((first || (p_eagain && chance(r, SALT_EAGAIN, p_eagain))) && nonblocking(fd, flags)) {
        count(C_EAGAIN);
        errno = EAGAIN;
        return -1;
    }
    size_t max = is_write ? write_max : read_max;
    if (max && asked > 1) {
        size_t n = cut(r, SALT_CUT, asked, max);
        if (n < asked) {
            *limit = n;
            count(is_write ? C_SHORT_WRITES : C_SHORT_READS);
        }
    }
    return 0;
}

/* ---- interposed calls ---- */

ssize_t recv(int fd, void *buf, size_t len, int flags) {
    if (len == 0 || (flags & MSG_PEEK) || paused()) return REAL(recv)(fd, buf, len, flags);
    size_t limit;
    if (decide(fd, flags, 0, 1, len, &limit) < 0) return -1;
    return REAL(recv)(fd, buf, limit ? limit : len, flags);
}

ssize_t send(int fd, const void *buf, size_t len, int flags) {
    if (len == 0 || paused()) return REAL(send)(fd, buf, len, flags);
    size_t limit;
    if (decide(fd, flags, 1, 1, len, &limit) < 0) return -1;
    return REAL(send)(fd, buf, limit ? limit : len, flags);
}

ssize_t read(int fd, void *buf, size_t len) {
    if (len == 0 || paused() || !targeted(fd, 0)) return REAL(read)(fd, buf, len);
    size_t limit;
    if (decide(fd, 0, 0, 1, len, &limit) < 0) return -1;
    return REAL(read)(fd, buf, limit ? limit : len);
}

ssize_t write(int fd, const void *buf, size_t len) {
    if (len == 0 || paused() || !targeted(fd, 0)) return REAL(write)(fd, buf, len);
    size_t limit;
    if (decide(fd, 0, 1, 1, len, &limit) < 0) return -1;
    return REAL(write)(fd, buf, limit ? limit : len);
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt) {
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) total += iov[i].iov_len;
    if (total == 0 || paused() || !targeted(fd, 0)) return REAL(writev)(fd, iov, iovcnt);
    size_t limit;
    if (decide(fd, 0, 1, 1, total, &limit) < 0) return -1;
    if (!limit) return REAL(writev)(fd, iov, iovcnt);
    /* A short writev is a prefix of the vector: the first `limit` bytes, from as many
     * entries as they span (limit is small, so a few entries at most). */
    struct iovec part[16];
    int n = 0;
    for (int i = 0; i < iovcnt && limit > 0 && n < 16; i++) {
        if (iov[i].iov_len == 0) continue;
        size_t take = iov[i].iov_len < limit ? iov[i].iov_len : limit;
        part[n].iov_base = iov[i].iov_base;
        part[n].iov_len = take;
        limit -= take;
        n++;
    }
    return REAL(writev)(fd, part, n);
}

ssize_t sendfile(int out, int in, off_t *offset, size_t count) {
    if (count == 0 || paused() || !targeted(out, 0)) return REAL(sendfile)(out, in, offset, count);
    size_t limit;
    if (decide(out, 0, 1, 0, count, &limit) < 0) return -1;
    return REAL(sendfile)(out, in, offset, limit ? limit : count);
}

ssize_t sendfile64(int out, int in, off64_t *offset, size_t count) {
    if (count == 0 || paused() || !targeted(out, 0)) return REAL(sendfile64)(out, in, offset, count);
    size_t limit;
    if (decide(out, 0, 1, 0, count, &limit) < 0) return -1;
    return REAL(sendfile64)(out, in, offset, limit ? limit : count);
}

static int accept_fault(int fd) {
    count(C_ACCEPT_CALLS);
    if (p_emfile && !paused() && chance(draw(fd), SALT_RESET, p_emfile)) {
        count(C_EMFILE);
        errno = EMFILE;
        return -1;
    }
    return 0;
}

int accept(int fd, struct sockaddr *addr, socklen_t *len) {
    if (accept_fault(fd) < 0) return -1;
    int c = REAL(accept)(fd, addr, len);
    if (c >= 0) fresh(c);
    return c;
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    if (accept_fault(fd) < 0) return -1;
    int c = REAL(accept4)(fd, addr, len, flags);
    if (c >= 0) fresh(c);
    return c;
}

/* libaio returns a negative errno (it does not set errno). */
int io_submit(void *ctx, long nr, void **iocbs) {
    count(C_AIO_CALLS);
    if (p_aio && !paused()) {
        uint64_t n = atomic_fetch_add_explicit(&aio_calls, 1, memory_order_relaxed);
        if (chance(mix(seed ^ mix(0xa10ULL << 40 ^ n)), SALT_EAGAIN, p_aio)) {
            count(C_AIO_EAGAIN);
            return -EAGAIN;
        }
    }
    return REAL(io_submit)(ctx, nr, iocbs);
}
