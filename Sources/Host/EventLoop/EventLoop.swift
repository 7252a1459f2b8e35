import Glibc
import Synchronization

/// Something the loop wakes when its descriptor is ready.
protocol EventHandler: AnyObject {
    func handleEvents(_ events: Epoll.Interest)
}

/// One event loop per worker thread, in the manner of redis's ae.c: descriptors map to handlers,
/// a periodic tick drives timers, and other threads can hand it work through `post`.
/// Nothing in here is shared between threads except the posted-work queue (a pthread mutex) and the
/// identity of the thread running the loop (an atomic).
///
/// `@unchecked Sendable`: `post` and `isOnLoop` may be called from any thread; every other
/// method only on the loop's own thread.
final class EventLoop: @unchecked Sendable {
    private let epoll: Epoll
    private var handlers: [EventHandler?] = []
    private(set) var now: Int64 = Sys.monotonicMillis()
    private var lastTick: Int64 = 0
    let tickMillis: Int64
    private var tickHandlers: [() -> Void] = []
    private var batchHandlers: [() -> Void] = []
    /// Sockets closed during a batch, closed for real after it: until then their numbers cannot
    /// be reused by an accept, so an event already fetched for an old socket can never reach a
    /// new connection that got the same number.
    private var closing: [Int32] = []
    private(set) var running = false
    /// The thread inside `run`, 0 before it starts: for `isOnLoop` checks from other threads.
    private let thread = Atomic<UInt>(0)

    /// Cross-thread hand-off: an eventfd registered in this loop plus a locked queue.
    private let wakeFD: Int32
    private let postedWork = PostedQueue()
    private var wakeHandler: WakeHandler?

    init(tickMillis: Int64 = 100) throws(SyscallError) {
        self.tickMillis = tickMillis
        epoll = try Epoll()
        wakeFD = try Sys.eventfd()
        let wake = WakeHandler(fd: wakeFD)
        wakeHandler = wake
        try register(wakeFD, wake, .readable)
        wake.loop = self
    }

    deinit { Sys.close(wakeFD) }

    // MARK: descriptors

    func register(_ fd: Int32, _ handler: EventHandler, _ interest: Epoll.Interest) throws(SyscallError) {
        let i = Int(fd)
        if i >= handlers.count { handlers.append(contentsOf: repeatElement(nil, count: max(i + 1 - handlers.count, handlers.count))) }
        try epoll.add(fd, interest)
        handlers[i] = handler
    }

    func modify(_ fd: Int32, _ interest: Epoll.Interest) throws(SyscallError) {
        try epoll.modify(fd, interest)
    }

    /// Forgets `fd`; the caller still owns (and closes) it.
    func unregister(_ fd: Int32) {
        epoll.remove(fd)
        handlers[Int(fd)] = nil
    }

    /// Closes `fd` once the current batch of events has been handled (see `closing`).
    func closeAfterBatch(_ fd: Int32) { closing.append(fd) }

    // MARK: timers and cross-thread work

    /// Called on the loop thread about every `tickMillis`.
    func onTick(_ body: @escaping () -> Void) { tickHandlers.append(body) }

    /// Called on the loop thread after every batch of events (like ae's beforesleep).
    func afterEachBatch(_ body: @escaping () -> Void) { batchHandlers.append(body) }

    /// Counts the waits: two events with the same pass came from the same batch.
    private(set) var pass: UInt64 = 0

    /// True when work queued for the after-batch handlers is waiting (a tick handler queued it,
    /// after they ran): the next wait then only polls.
    var mustNotSleep: () -> Bool = { false }

    /// Thread-safe: runs `work` on the loop thread soon.
    func post(_ work: @escaping @Sendable () -> Void) {
        postedWork.append(work)
        Sys.signalEventfd(wakeFD)
    }

    fileprivate func runPosted() {
        _ = Sys.drainEventfd(wakeFD)
        let work = postedWork.takeAll()
        for item in work { item() }
    }

    // MARK: running

    func stop() { running = false }

    /// After the loop stopped (from any one thread at a time): runs work still queued, so every
    /// posted function runs once. True when anything ran.
    @discardableResult
    func runRemainingPosted() -> Bool {
        var ran = false
        for _ in 0..<1000 where !postedWork.isEmpty {
            runPosted()
            ran = true
        }
        return ran
    }

    /// Whether the caller is the thread running this loop.
    var isOnLoop: Bool { thread.load(ordering: .relaxed) == WorkerThread.current }

    func run() throws(SyscallError) {
        thread.store(WorkerThread.current, ordering: .relaxed)
        running = true
        while running {
            let untilTick = mustNotSleep() ? 0 : max(0, lastTick + tickMillis - now)
            pass &+= 1
            var woke = false
            try epoll.wait(timeoutMillis: Int32(untilTick)) { fd, events in
                if !woke {  // deadlines set while handling these events count from now
                    now = Sys.monotonicMillis()
                    woke = true
                }
                let i = Int(fd)
                if i < handlers.count, let handler = handlers[i] { handler.handleEvents(events) }
            }
            now = Sys.monotonicMillis()
            for handler in batchHandlers { handler() }
            if now - lastTick >= tickMillis {
                lastTick = now
                for tick in tickHandlers { tick() }
            }
            for fd in closing { Sys.close(fd) }
            closing.removeAll(keepingCapacity: true)
        }
    }
}

private final class WakeHandler: EventHandler {
    let fd: Int32
    unowned(unsafe) var loop: EventLoop?
    init(fd: Int32) { self.fd = fd }
    func handleEvents(_ events: Epoll.Interest) { loop?.runPosted() }
}

/// The posted-work queue, behind a pthread mutex rather than `Synchronization.Mutex`: the same
/// cost, and ThreadSanitizer understands it (it intercepts pthread locks). With `Mutex` it did
/// not see the locking — five reports in ten runs of the reload and worker tests, each with both
/// accesses inside `withLock` — so the TSan stage of `make test` failed at random.
final class PostedQueue: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_mutex_t>
    private var items: [@Sendable () -> Void] = []

    init() {
        lock = .allocate(capacity: 1)
        pthread_mutex_init(lock, nil)
    }

    deinit {
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    func append(_ work: @escaping @Sendable () -> Void) {
        pthread_mutex_lock(lock)
        items.append(work)
        pthread_mutex_unlock(lock)
    }

    /// Everything queued, leaving the queue empty.
    func takeAll() -> [@Sendable () -> Void] {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        let taken = items
        items.removeAll(keepingCapacity: true)
        return taken
    }

    var isEmpty: Bool {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return items.isEmpty
    }
}

