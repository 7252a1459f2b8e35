import CAIO
import CLinux
import Glibc

/// libaio for one worker: one io_context, one eventfd in the worker's epoll, and a pool of
/// aligned read buffers ("slots") reused across requests.
///
/// Two kinds of read go through it (`read`):
/// - **from the page cache**: a buffered descriptor with `RWF_NOWAIT`. The kernel copies cached
///   pages inside `io_submit` and posts the completion before returning, so the engine reaps it
///   at once from the completion ring (`aws_aio_reap`: the ring is shared memory, no system
///   call) and the caller finds the slot `.ready` — no eventfd, no trip through epoll. Where a page is not cached, the read stops there: short, or
///   `-EAGAIN` if it got nothing. It never waits for the disk.
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

    enum SlotState { case free, reading, ready(Int), failed(Int32) }

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
    /// Connections waiting for a free slot, woken in order.
    private var waiting: [(Exchange, UInt32)] = []
    /// Device reads of other exchanges reaped while reaping a page-cache read: their owners are
    /// told from `handleEvents` (their eventfd signal is still pending), never from inside
    /// another exchange's send.
    private var reapedForOthers: [(index: Int, owner: Exchange, generation: UInt32)] = []
    private let nowaitFlag = aws_rwf_nowait()

    init(bufferSize: Int = 512 * 1024, maxSlots: Int = 256) throws(SyscallError) {
        self.bufferSize = bufferSize
        self.maxSlots = maxSlots
        var ctx: io_context_t?
        let r = io_setup(Int32(maxSlots), &ctx)
        if r < 0 { throw SyscallError(call: "io_setup", errno: -r) }
        context = ctx
        eventFD = try Sys.eventfd()
        events = .allocate(capacity: eventCapacity)
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
            if waiting.last?.0 !== owner || waiting.last?.1 != owner.generation {
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
        if case .reading = slots[index].state { return }
        slots[index].state = .free
        freeSlots.append(index)
    }

    /// Wakes waiters for the slots freed since the last call. Run by the loop between event
    /// batches, never from inside `release`, so no connection is re-entered mid-transfer.
    func wakeWaiters() {
        while !waiting.isEmpty && !freeSlots.isEmpty {
            let (conn, gen) = waiting.removeFirst()
            if conn.generation == gen && conn.isAttached { conn.aioSlotAvailable() }
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
    /// `fromCache`: `fd` is buffered and the read must not wait (`RWF_NOWAIT`); it has finished
    /// when this returns (`.ready`, possibly short, or `.failed(EAGAIN)`: nothing cached). Else
    /// `fd` is O_DIRECT (or a filesystem without it) and the completion arrives later.
    func read(_ index: Int, fd: Int32, offset: Int, wanted: Int, fromCache: Bool) {
        let cb = slots[index].iocb
        let align = AIOEngine.alignment
        let length = min(bufferSize, (wanted + align - 1) / align * align)
        slots[index].requested = length
        io_prep_pread(cb, fd, slots[index].buffer!, length, Int64(offset))
        if fromCache {
            cb.pointee.aio_rw_flags = UInt32(nowaitFlag)
        } else {
            io_set_eventfd(cb, eventFD)
        }
        cb.pointee.data = UnsafeMutableRawPointer(bitPattern: index + 1)
        slots[index].fileOffset = offset
        slots[index].fromCache = fromCache
        slots[index].state = .reading
        var list: UnsafeMutablePointer<iocb>? = cb
        let r = io_submit(context, 1, &list)
        if r == 1 {
            if fromCache { reap(submitted: index) }
            return
        }
        if fromCache {
            // Not queued (EAGAIN: the ring is full; EOPNOTSUPP: no RWF_NOWAIT on this
            // filesystem): the caller reads this range from the device instead.
            slots[index].state = .failed(r < 0 ? Int32(-r) : EAGAIN)
            return
        }
        // The kernel would not queue a device read (-EAGAIN under pressure): read synchronously
        // instead, so the transfer goes on rather than failing.
        let n = pread(fd, slots[index].buffer!, length, off_t(offset))
        slots[index].state = n >= 0 ? .ready(n) : .failed(errno)
    }

    /// Collects the completion of the page-cache read just submitted, which the kernel posted
    /// before `io_submit` returned, and whatever device reads completed meanwhile.
    private func reap(submitted: Int) {
        let n = takeCompletions()
        var found = false
        for i in 0..<max(Int(n), 0) {
            let index = Int(bitPattern: events[i].data) - 1
            let res = Int64(bitPattern: UInt64(events[i].res))
            slots[index].state = res >= 0 ? .ready(Int(res)) : .failed(Int32(-res))
            if index == submitted { found = true; continue }
            guard let owner = slots[index].owner, owner.generation == slots[index].ownerGeneration, owner.isAttached else {
                release(index)
                continue
            }
            reapedForOthers.append((index, owner, slots[index].ownerGeneration))
        }
        if !found {
            // Not posted synchronously after all (a filesystem that queues buffered reads): it
            // carries no eventfd, so look for it on the next pass of the loop.
            Sys.signalEventfd(eventFD)
        }
    }

    // MARK: completions

    func handleEvents(_ interest: Epoll.Interest) {
        _ = Sys.drainEventfd(eventFD)
        if !reapedForOthers.isEmpty {
            for (index, owner, generation) in reapedForOthers
            where slots[index].owner === owner && slots[index].ownerGeneration == generation && owner.generation == generation {
                owner.aioCompleted(index)
            }
            reapedForOthers.removeAll(keepingCapacity: true)
        }
        while true {
            let n = takeCompletions()
            if n <= 0 { return }
            for i in 0..<Int(n) {
                let index = Int(bitPattern: events[i].data) - 1
                let res = Int64(bitPattern: UInt64(events[i].res))
                complete(index, result: res)
            }
            if n < eventCapacity { return }
        }
    }

    /// Completions waiting in the ring, into `events`: read straight from the ring the kernel
    /// shares with us (no system call), or with io_getevents where its layout is unknown.
    private func takeCompletions() -> Int {
        let n = aws_aio_reap(context, events, Int32(eventCapacity))
        if n >= 0 { return Int(n) }
        var zero = timespec()
        return Int(io_getevents(context, 0, eventCapacity, events, &zero))
    }

    private func complete(_ index: Int, result: Int64) {
        slots[index].state = result >= 0 ? .ready(Int(result)) : .failed(Int32(-result))
        guard let owner = slots[index].owner, owner.generation == slots[index].ownerGeneration, owner.isAttached else {
            release(index)
            return
        }
        owner.aioCompleted(index)
    }
}
