/* malloc_count.c — an LD_PRELOAD shim that counts heap allocations.
 *
 *   cc -O2 -shared -fPIC -pthread -o malloc_count.so Tests/alloc/malloc_count.c
 *   MALLOC_COUNT_FILE=/tmp/counts LD_PRELOAD=$PWD/malloc_count.so some-server ...
 *
 * It interposes malloc, calloc, realloc, reallocarray, free, posix_memalign, aligned_alloc,
 * memalign, valloc and pvalloc (the replacement set glibc documents) and forwards each to
 * glibc's own allocator through __libc_malloc, __libc_calloc, __libc_realloc, __libc_free and
 * __libc_memalign: no dlsym, so nothing recurses while the dynamic loader or dlsym allocate.
 *
 * Counters: a 4096-byte file named by the environment variable MALLOC_COUNT_FILE, mapped
 * MAP_SHARED, holding three little-endian uint64 at offsets 0, 8 and 16:
 *   allocations  successful malloc, calloc, memalign-family calls (posix_memalign,
 *                aligned_alloc, memalign, valloc, pvalloc), and realloc/reallocarray calls
 *                that return a new block (including realloc(NULL, n));
 *   frees        free of a non-NULL pointer, plus the old block of a realloc that moved it
 *                (or of realloc(p, 0), which frees p), so allocations - frees = live blocks;
 *   bytes        the sizes requested by the counted allocations.
 * They are updated with relaxed atomic adds, so every thread of every process that maps the
 * file adds to the same counters: the mapping is inherited across fork (nginx's master and
 * its workers), and a process that execs with the variable still set maps the same file. The
 * file is created if missing; one of any other size than 4096 bytes is truncated and zeroed;
 * one that already has the right size is used as it is (readers take differences).
 *
 * The mapping is made by a constructor when the shim is loaded; allocations before it (early
 * process start-up) are not counted. Without MALLOC_COUNT_FILE, or if the file cannot be
 * opened or mapped (a message on stderr then), the shim only forwards.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define COUNT_FILE_SIZE 4096

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void __libc_free(void *ptr);
extern void *__libc_memalign(size_t alignment, size_t size);

struct counters {
    uint64_t allocations;   /* offset 0 */
    uint64_t frees;         /* offset 8 */
    uint64_t bytes;         /* offset 16 */
};

static struct counters *counters;   /* NULL until the constructor has mapped the file */

#define EXPORT __attribute__((visibility("default")))

static inline struct counters *current(void) {
    return __atomic_load_n(&counters, __ATOMIC_ACQUIRE);
}

static inline void count_alloc(size_t size) {
    struct counters *c = current();
    if (c) {
        __atomic_fetch_add(&c->allocations, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&c->bytes, (uint64_t)size, __ATOMIC_RELAXED);
    }
}

static inline void count_free(void) {
    struct counters *c = current();
    if (c)
        __atomic_fetch_add(&c->frees, 1, __ATOMIC_RELAXED);
}

static void say(const char *a, const char *b, int err) {
    /* write(2) only: no stdio (it allocates) at load time */
    const char *e = err ? strerror(err) : "";
    const char *parts[] = {"malloc_count: ", a, b, err ? ": " : "", e, "\n"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        size_t n = strlen(parts[i]);
        if (n && write(2, parts[i], n) < 0)
            return;
    }
}

__attribute__((constructor)) static void malloc_count_init(void) {
    const char *path = getenv("MALLOC_COUNT_FILE");
    if (!path || !*path)
        return;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        say("cannot open ", path, errno);
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        say("cannot stat ", path, errno);
        close(fd);
        return;
    }
    if (st.st_size != COUNT_FILE_SIZE) {
        /* new or of a foreign size: start from zeros */
        if (ftruncate(fd, 0) != 0 || ftruncate(fd, COUNT_FILE_SIZE) != 0) {
            say("cannot size ", path, errno);
            close(fd);
            return;
        }
    }
    void *p = mmap(NULL, COUNT_FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int err = errno;
    close(fd);
    if (p == MAP_FAILED) {
        say("cannot map ", path, err);
        return;
    }
    __atomic_store_n(&counters, (struct counters *)p, __ATOMIC_RELEASE);
}

EXPORT void *malloc(size_t size) {
    void *p = __libc_malloc(size);
    if (p)
        count_alloc(size);
    return p;
}

EXPORT void *calloc(size_t n, size_t size) {
    void *p = __libc_calloc(n, size);
    if (p)
        count_alloc(n * size);   /* no overflow: glibc refused it already */
    return p;
}

EXPORT void free(void *ptr) {
    if (ptr) {
        count_free();
        __libc_free(ptr);
    }
}

EXPORT void *realloc(void *ptr, size_t size) {
    void *p = __libc_realloc(ptr, size);
    if (ptr == NULL) {
        if (p)
            count_alloc(size);
    } else if (p == NULL) {
        if (size == 0)
            count_free();        /* realloc(p, 0) freed p */
    } else if (p != ptr) {
        count_alloc(size);       /* moved: a new block, the old one freed */
        count_free();
    }
    return p;
}

EXPORT void *reallocarray(void *ptr, size_t n, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(ptr, total);
}

static void *aligned(size_t alignment, size_t size) {
    void *p = __libc_memalign(alignment, size);
    if (p)
        count_alloc(size);
    return p;
}

EXPORT int posix_memalign(void **out, size_t alignment, size_t size) {
    if (alignment % sizeof(void *) != 0 || (alignment & (alignment - 1)) != 0 || alignment == 0)
        return EINVAL;
    int saved = errno;
    void *p = aligned(alignment, size);
    if (!p) {
        int err = errno ? errno : ENOMEM;
        errno = saved;
        return err;
    }
    errno = saved;
    *out = p;
    return 0;
}

EXPORT void *aligned_alloc(size_t alignment, size_t size) {
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    return aligned(alignment, size);
}

EXPORT void *memalign(size_t alignment, size_t size) {
    return aligned(alignment, size);
}

EXPORT void *valloc(size_t size) {
    return aligned((size_t)sysconf(_SC_PAGESIZE), size);
}

EXPORT void *pvalloc(size_t size) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t rounded;
    if (__builtin_add_overflow(size, page - 1, &rounded)) {
        errno = ENOMEM;
        return NULL;
    }
    rounded &= ~(page - 1);
    return aligned(page, rounded ? rounded : page);
}
