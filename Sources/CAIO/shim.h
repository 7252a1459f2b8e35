#include <libaio.h>

/* The completion ring the kernel shares with the process: an io_context_t is its address
 * (fs/aio.c, struct aio_ring). Reading completions from it directly saves the io_getevents
 * system call, which matters on the /dynamic/ hot path where a page-cache read has completed
 * before io_submit returns (fio's `userspace_reap` does the same). */
struct aws_aio_ring {
    unsigned id;
    unsigned nr;          /* number of io_events */
    unsigned head;        /* written by the consumer (us) */
    unsigned tail;        /* written by the kernel */
    unsigned magic;
    unsigned compat_features;
    unsigned incompat_features;
    unsigned header_length;
    struct io_event io_events[];
};

#define AWS_AIO_RING_MAGIC 0xa10a10a1u

/* Up to `max` completions taken from the ring; -1 when the ring's layout is not the one known
 * here (then use io_getevents). Only one thread may reap a context (each worker owns its own). */
static inline int aws_aio_reap(io_context_t ctx, struct io_event *events, int max) {
    struct aws_aio_ring *ring = (struct aws_aio_ring *)ctx;
    if (ring->magic != AWS_AIO_RING_MAGIC || ring->incompat_features != 0) return -1;
    unsigned head = ring->head, nr = ring->nr;
    unsigned tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
    int n = 0;
    while (n < max && head != tail) {
        events[n++] = ring->io_events[head];
        head = (head + 1) % nr;
    }
    if (n > 0) __atomic_store_n(&ring->head, head, __ATOMIC_RELEASE);
    return n;
}
