import CAIO
import CLinux
import Glibc

/// libaio for one worker: one io_context, one eventfd in the worker's epoll, and a pool of
/// aligned read buffers ("slots") reused across requests.
///
/// Two kinds of read go through it (`read`):
/// - **from the page cache**: a buffered descriptor with `RWF_NOWAIT`. These reads are queued
///   and submitted together once per pass of the event loop (`submitDeferred`, after the batch of
///   events that asked for them): one `io_submit` for all the requests of a batch. The kernel
///   copies cached pages inside `io_submit` and posts the completions before it returns, so the
///   engine takes them at once from the completion ring (`aws_aio_reap`: shared memory, no system
///   call) and tells their exchanges — no eventfd, no further trip through epoll. Where a page is
///   not cached, a read stops there: short, or `-EAGAIN` if it got nothing. It never waits for
///   the disk.
/// - **from the device**: an O_DIRECT descriptor, truly asynchronous; the completion wakes the
///   loop through the eventfd.
///
/// A slot and its iocb belong to the engine, not to the connection that asked for the read: the
/// kernel may write into the buffer until the completion is reaped, so a connection that goes
/// away merely disowns its slots and the engine frees them when their completions arrive.
///
/// The pool grows with the load (up to `maxSlots` buffers) and shrinks back when the load goes:
/// buffers the load did not need for two whole trim intervals (a second each, `IdleCount`,
/// `Worker.trimPools`) are unmapped. (Issue 10, defect 8: a burst of aborted /dynamic/
/// downloads used to leave up to 256 buffers per worker, 60–130 MiB of RSS, mapped for good.)
/// Growing and shrinking cost an mmap or munmap per buffer, never anything per request while
/// the pool is warm.
final class AIOEngine: EventHandler {
    /// 4 KiB covers every logical block size O_DIRECT asks for here.
    static let alignment = 4096
    let bufferSize: Int
    private let maxSlots: Int

    /// `queued`: a page-cache read waiting for `submitDeferred` (the kernel has not seen it:
    /// releasing the slot takes it back at once, before its descriptor can be closed).
    enum SlotState { case free, queued, reading, ready(Int), failed(Int32) }

    struct Slot {
        let iocb: UnsafeMutablePointer<iocb>
        /// nil once the pool gave it back while idle; a slot in use always has one.
        var buffer: UnsafeMutableRawPointer?
        var state: SlotState = .free
        /// The read was `RWF_NOWAIT` on a buffered descriptor: a short count or EAGAIN means the
        /// page cache ran out, not the file.
        var fromCache = false
        var fileOffset = 0
        /// Bytes asked of the kernel; a completion with fewer means end of file.
        var requested = 0
        /// Strong, checked by generation: connections are pooled, never freed under a slot, and a
        /// weak reference would give every connection a side table (slower retain/release).
        var owner: Exchange?
        var ownerGeneration: UInt32 = 0
    }

    private var context: io_context_t?
    let eventFD: Int32
    private var slots: [Slot] = []
    /// Free slots with a buffer, the most recently used last (taken first, so the buffers at the
    /// front are the ones that went unused longest: those are trimmed).
    private var freeSlots: [Int] = []
    /// Free slots whose buffer was given back; reused (with a new buffer) before a slot is added.
    private var bareSlots: [Int] = []
    /// How many free buffers went unused lately.
    private var idle = IdleCount()
    private let events: UnsafeMutablePointer<io_event>
    private let eventCapacity = 256
    /// Connections waiting for a free slot, woken in order from `waitingHead` (a queue without
    /// the O(n) removeFirst; emptied when drained).
    private var waiting: [(Exchange, UInt32)] = []
    private var waitingHead = 0
    /// Page-cache reads waiting for the end of the loop pass (`submitDeferred`).
    private var deferred: [UnsafeMutablePointer<iocb>?] = []
    /// Page-cache reads submitted and not yet reaped: they carry no eventfd, so one still out
    /// after a reap (not seen; the kernel posts them inside io_submit) makes the engine look again.
    private var cacheReadsOut = 0
    /// Completed reads whose exchanges are told after the reap, in order. By identity only: the
    /// exchange itself is reached through the slot, which holds it.
    private var completedOwners: [(index: Int, owner: ObjectIdentifier, generation: UInt32)] = []
    private let nowaitFlag = aws_rwf_nowait()

    /// Reads started, submitted and completed are counted here (`--metrics`).
    private let metrics: WorkerMetrics

    /// `maxSlots`: reads in flight at once. A read that finds none free waits (and its connection
    /// leaves the epoll set meanwhile: two epoll_ctl), so there are enough for a loop pass of a
    /// busy worker (1000 connections sent about 500 requests per pass here). A buffer is
    /// `bufferSize` of address space, but only the pages a read touched are memory: a 1 KiB file
    /// costs one page. When the system's aio budget (fs.aio-max-nr) cannot give that many, a
    /// quarter is asked for.
    init(bufferSize: Int = 512 * 1024, maxSlots: Int = 1024, metrics: WorkerMetrics) throws(SyscallError) {
        self.bufferSize = bufferSize
        self.metrics = metrics
        var ctx: io_context_t?
        var slots = maxSlots
        var r = io_setup(Int32(slots), &ctx)
        if r == -EAGAIN && slots > 256 {
            slots = 256
            r = io_setup(Int32(slots), &ctx)
        }
        if r < 0 { throw SyscallError(call: "io_setup", errno: -r) }
        self.maxSlots = slots
        context = ctx
        eventFD = try Sys.eventfd()
        events = .allocate(capacity: eventCapacity)
        deferred.reserveCapacity(maxSlots)
        completedOwners.reserveCapacity(eventCapacity)
    }

    deinit {
        io_destroy(context)
        Sys.close(eventFD)
        for s in slots {
            s.iocb.deallocate()
            if let buffer = s.buffer { AIOEngine.unmapBuffer(buffer, bufferSize) }
        }
        events.deallocate()
    }

    /// Buffers come straight from the kernel, not from malloc: mmap gives page-aligned memory
    /// (all O_DIRECT needs) and munmap returns it at once. From malloc (posix_memalign), the
    /// first free of such a big chunk raises glibc's dynamic mmap threshold above 512 KiB, after
    /// which later buffers are carved from the heap and the arenas, where a freed one in the
    /// middle stays resident: the pool could not reliably shrink.
    private static func mapBuffer(_ size: Int) -> UnsafeMutableRawPointer? {
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let p, p != UnsafeMutableRawPointer(bitPattern: -1) else { return nil }
        return p
    }

    private static func unmapBuffer(_ buffer: UnsafeMutableRawPointer, _ size: Int) {
        munmap(buffer, size)
    }

    // MARK: slots

    /// A free slot for `owner`, or nil when all are in use (the owner is then queued and its
    /// `aioSlotAvailable` called when one frees up).
    func acquire(for owner: Exchange) -> Int? {
        let index: Int
        if let i = freeSlots.popLast() {
            index = i
            idle.taken(leaving: freeSlots.count)
        } else if !bareSlots.isEmpty || slots.count < maxSlots {
            guard let buffer = AIOEngine.mapBuffer(bufferSize) else { return nil }
            if let i = bareSlots.popLast() {
                index = i
                slots[index].buffer = buffer
            } else {
                slots.append(Slot(iocb: .allocate(capacity: 1), buffer: buffer))
                index = slots.count - 1
            }
            idle.taken(leaving: 0)
        } else {
            if waiting.count == waitingHead || waiting.last?.0 !== owner || waiting.last?.1 != owner.generation {
                waiting.append((owner, owner.generation))
            }
            return nil
        }
        slots[index].owner = owner
        slots[index].ownerGeneration = owner.generation
        slots[index].state = .free
        return index
    }

    /// Returns a slot to the pool unless the kernel still has it, in which case it is freed when
    /// its completion arrives.
    func release(_ index: Int) {
        slots[index].owner = nil
        if case .queued = slots[index].state {
            // Never submitted: drop it now, so that io_submit never sees a descriptor the owner
            // is about to close.
            if let i = deferred.firstIndex(of: slots[index].iocb) { deferred.remove(at: i) }
        } else if case .reading = slots[index].state {
            return
        }
        slots[index].state = .free
        freeSlots.append(index)
    }

    /// Wakes waiters for the slots freed since the last call. Run by the loop between event
    /// batches, never from inside `release`, so no connection is re-entered mid-transfer.
    func wakeWaiters() {
        while waitingHead < waiting.count && !freeSlots.isEmpty {
            let (conn, gen) = waiting[waitingHead]
            waitingHead += 1
            if conn.generation == gen && conn.isAttached { conn.aioSlotAvailable() }
        }
        if waitingHead == waiting.count {
            waiting.removeAll(keepingCapacity: true)
            waitingHead = 0
        } else if waitingHead >= 64 && waitingHead * 2 >= waiting.count {
            // Never drained under a load that always has a waiter: drop the woken ones (and
            // their references) in one move, half the queue or more each time.
            waiting.removeFirst(waitingHead)
            waitingHead = 0
        }
    }

    /// Gives back the free buffers the load did not need lately: the ones that went unused
    /// longest. Called by the worker once per trim interval; how many. None is kept warm: a
    /// worker that served no /dynamic/ request for two seconds holds no buffer (so idle memory
    /// does not grow with the number of workers); the next request maps two afresh, an mmap
    /// and the page faults of what it reads, once after an idle spell.
    @discardableResult
    func trimIdleBuffers() -> Int {
        let n = idle.trim(count: freeSlots.count, keeping: 0)
        guard n > 0 else { return 0 }
        for i in freeSlots[..<n] {
            AIOEngine.unmapBuffer(slots[i].buffer!, bufferSize)
            slots[i].buffer = nil
            bareSlots.append(i)
        }
        freeSlots.removeFirst(n)
        return n
    }

    func state(_ index: Int) -> SlotState { slots[index].state }
    func isFromCache(_ index: Int) -> Bool { slots[index].fromCache }
    func fileOffset(_ index: Int) -> Int { slots[index].fileOffset }
    func requested(_ index: Int) -> Int { slots[index].requested }
    func buffer(_ index: Int) -> UnsafeMutableRawPointer { slots[index].buffer! }

    /// Starts reading up to `bufferSize` bytes at `offset` (aligned) of `fd` into the slot; only
    /// as many aligned blocks as cover `wanted`, so a small file costs a small read.
    ///
    /// `fromCache`: `fd` is buffered and the read must not wait (`RWF_NOWAIT`); it is submitted at
    /// the end of this loop pass with the others and completes there (`.ready`, possibly short,
    /// or `.failed(EAGAIN)`: nothing cached), and the owner's `aioCompleted` is called. Else
    /// `fd` is O_DIRECT (or a filesystem without it), submitted now, completed later.
    func read(_ index: Int, fd: Int32, offset: Int, wanted: Int, fromCache: Bool) {
        let cb = slots[index].iocb
        let align = AIOEngine.alignment
        let length = min(bufferSize, (wanted + align - 1) / align * align)
        slots[index].requested = length
        io_prep_pread(cb, fd, slots[index].buffer!, length, Int64(offset))
        cb.pointee.data = UnsafeMutableRawPointer(bitPattern: index + 1)
        slots[index].fileOffset = offset
        slots[index].fromCache = fromCache
        if fromCache { metrics.aioPageCacheReads.add() } else { metrics.aioDeviceReads.add() }
        if fromCache {
            cb.pointee.aio_rw_flags = UInt32(nowaitFlag)
            slots[index].state = .queued
            deferred.append(cb)
            return
        }
        slots[index].state = .reading
        io_set_eventfd(cb, eventFD)
        var list: UnsafeMutablePointer<iocb>? = cb
        if io_submit(context, 1, &list) == 1 {
            metrics.aioReadsSubmitted.add()
            return
        }
        // The kernel would not queue a device read (-EAGAIN under pressure): read synchronously
        // instead, so the transfer goes on rather than failing.
        let n = pread(fd, slots[index].buffer!, length, off_t(offset))
        slots[index].state = n >= 0 ? .ready(n) : .failed(errno)
    }

    /// Page-cache reads are waiting to be submitted: the loop must not sleep.
    var hasDeferred: Bool { !deferred.isEmpty }

    /// Submits the page-cache reads queued during this loop pass in one io_submit, takes their
    /// completions (and any device read's) from the ring and tells the exchanges, which may queue
    /// more (the next piece of a file, a pipelined request): repeated until none is left. Run by
    /// the loop after each batch of events, outside any exchange's own processing.
    func submitDeferred() {
        // Bounded: a big cached file whose client keeps draining would otherwise go out whole in
        // this one pass, starving the worker's other connections; the loop comes back at once
        // (`hasDeferred` keeps it from sleeping).
        var rounds = 0
        while !deferred.isEmpty && rounds < AIOEngine.roundsPerPass {
            rounds += 1
            let count = deferred.count
            for cb in deferred { slots[Int(bitPattern: cb!.pointee.data) - 1].state = .reading }
            let r = deferred.withUnsafeMutableBufferPointer { io_submit(context, count, $0.baseAddress) }
            let submitted = Int(max(r, 0))
            cacheReadsOut += submitted
            metrics.aioReadsSubmitted.add(submitted)
            // Whatever was not queued (EAGAIN: the ring is full; EOPNOTSUPP: no RWF_NOWAIT on
            // this filesystem; anything else about one read) is read from the device instead,
            // by each owner: an error about one read must not fail the others of the batch.
            for cb in deferred[submitted...] {
                let index = Int(bitPattern: cb!.pointee.data) - 1
                slots[index].state = .failed(EAGAIN)
                noteCompleted(index)
            }
            deferred.removeAll(keepingCapacity: true)
            reapAll()
            tellOwners()
        }
        if cacheReadsOut > 0 {
            // A buffered read the kernel did not finish inside io_submit after all (not known to
            // happen): it has no eventfd, so look again on the next pass.
            Sys.signalEventfd(eventFD)
        }
    }

    static let roundsPerPass = 8

    /// Waiters could be given a slot now.
    var canWakeWaiters: Bool { waitingHead < waiting.count && !freeSlots.isEmpty }

    func isQueued(_ index: Int) -> Bool { if case .queued = slots[index].state { true } else { false } }

    func handleEvents(_ interest: Epoll.Interest) {
        _ = Sys.drainEventfd(eventFD)
        reapAll()
        tellOwners()
        if cacheReadsOut > 0 { Sys.signalEventfd(eventFD) }
    }

    /// Takes every completion from the ring; the owners are told by `tellOwners`.
    private func reapAll() {
        while true {
            let n = takeCompletions()
            if n <= 0 { return }
            metrics.aioReadsCompleted.add(n)
            for i in 0..<n {
                let index = Int(bitPattern: events[i].data) - 1
                let res = Int64(bitPattern: UInt64(events[i].res))
                if slots[index].fromCache { cacheReadsOut -= 1 }
                slots[index].state = res >= 0 ? .ready(Int(res)) : .failed(Int32(-res))
                noteCompleted(index)
            }
            if n < eventCapacity { return }
        }
    }

    /// A read finished: its owner is told (after the reap), or the slot goes back to the pool if
    /// the owner has gone.
    private func noteCompleted(_ index: Int) {
        guard let owner = slots[index].owner, owner.generation == slots[index].ownerGeneration, owner.isAttached else {
            release(index)
            return
        }
        completedOwners.append((index, ObjectIdentifier(owner), slots[index].ownerGeneration))
    }

    /// Calls `aioCompleted` of each owner noted, unless the slot changed hands meanwhile (an
    /// earlier owner's processing released it, and it was taken again).
    private func tellOwners() {
        var i = 0
        while i < completedOwners.count {
            let (index, owner, generation) = completedOwners[i]
            i += 1
            // The slot may have been released by an earlier owner's processing and taken again.
            guard let current = slots[index].owner, ObjectIdentifier(current) == owner,
                  slots[index].ownerGeneration == generation else { continue }
            if current.generation == generation && current.isAttached { current.aioCompleted(index) }
        }
        completedOwners.removeAll(keepingCapacity: true)
    }

    /// Completions waiting in the ring, into `events`: read straight from the ring the kernel
    /// shares with us (no system call), or with io_getevents where its layout is unknown.
    private func takeCompletions() -> Int {
        let n = aws_aio_reap(context, events, Int32(eventCapacity))
        if n >= 0 { return Int(n) }
        var zero = timespec()
        return Int(io_getevents(context, 0, eventCapacity, events, &zero))
    }

}
