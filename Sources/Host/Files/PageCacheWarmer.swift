import Glibc

/// Brings a missed range of a /dynamic/ file into the page cache, off the serving threads.
///
/// A read that misses the cache goes to the device with O_DIRECT, which bypasses the cache:
/// without this, a file that was cold once would be read from the device by every request after.
/// `posix_fadvise(WILLNEED)` starts the kernel's readahead for the range so that later requests
/// find it cached; it can block (submitting I/O, reading extent metadata), so it runs here, on a
/// thread of its own, never on a worker's loop.
///
/// Shared by all workers: the queue is behind a pthread mutex (its only mutable state), the
/// thread is started at the first request and lives as long as the process.
final class PageCacheWarmer: @unchecked Sendable {
    static let shared = PageCacheWarmer()

    private struct Range { var fd: Int32; var offset: Int; var length: Int }

    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let ready = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var queue: [Range] = []
    private var started = false
    /// More ranges than this waiting means the device is far behind: later ones are dropped
    /// (those files stay cold a little longer; nothing is lost but a hint).
    private let limit = 256

    private init() {
        pthread_mutex_init(lock, nil)
        pthread_cond_init(ready, nil)
    }

    /// Asks for `length` bytes of `fd` from `offset` to be read into the page cache. The
    /// descriptor is duplicated (the caller keeps its own); false when the hint was dropped.
    @discardableResult
    func warm(_ fd: Int32, offset: Int, length: Int) -> Bool {
        let copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        guard copy >= 0 else { return false }
        pthread_mutex_lock(lock)
        if !started {
            started = (try? WorkerThread.spawn(name: "aws-warmer") { [self] in run() }) != nil
        }
        let accepted = started && queue.count < limit
        if accepted {
            queue.append(Range(fd: copy, offset: offset, length: length))
            pthread_cond_signal(ready)
        }
        pthread_mutex_unlock(lock)
        if !accepted { Sys.close(copy) }
        return accepted
    }

    private func run() {
        while true {
            pthread_mutex_lock(lock)
            while queue.isEmpty { pthread_cond_wait(ready, lock) }
            let range = queue.removeFirst()
            pthread_mutex_unlock(lock)
            _ = posix_fadvise(range.fd, off_t(range.offset), off_t(range.length), POSIX_FADV_WILLNEED)
            Sys.close(range.fd)
        }
    }
}
