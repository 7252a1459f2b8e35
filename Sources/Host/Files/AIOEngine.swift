import CAIO
import Glibc

/// libaio for one worker: one io_context, one eventfd in the worker's epoll, and a pool of
/// aligned read buffers ("slots") reused across requests.
///
/// A slot and its iocb belong to the engine, not to the connection that asked for the read: the
/// kernel may write into the buffer until the completion is reaped, so a connection that goes
/// away merely disowns its slots and the engine frees them when their completions arrive.
final class AIOEngine: EventHandler {
    /// 4 KiB covers every logical block size O_DIRECT asks for here.
    static let alignment = 4096
    let bufferSize: Int
    private let maxSlots: Int

    enum SlotState { case free, reading, ready(Int), failed(Int32) }

    struct Slot {
        let iocb: UnsafeMutablePointer<iocb>
        let buffer: UnsafeMutableRawPointer
        var state: SlotState = .free
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
    private var freeSlots: [Int] = []
    private let events: UnsafeMutablePointer<io_event>
    private let eventCapacity = 256
    /// Connections waiting for a free slot, woken in order.
    private var waiting: [(Exchange, UInt32)] = []

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
        for s in slots { s.iocb.deallocate(); free(s.buffer) }
        events.deallocate()
    }

    // MARK: slots

    /// A free slot for `owner`, or nil when all are in use (the owner is then queued and its
    /// `aioSlotAvailable` called when one frees up).
    func acquire(for owner: Exchange) -> Int? {
        let index: Int
        if let i = freeSlots.popLast() {
            index = i
        } else if slots.count < maxSlots {
            var buffer: UnsafeMutableRawPointer?
            guard posix_memalign(&buffer, AIOEngine.alignment, bufferSize) == 0, let buffer else { return nil }
            slots.append(Slot(iocb: .allocate(capacity: 1), buffer: buffer))
            index = slots.count - 1
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

    func state(_ index: Int) -> SlotState { slots[index].state }
    func fileOffset(_ index: Int) -> Int { slots[index].fileOffset }
    func requested(_ index: Int) -> Int { slots[index].requested }
    func buffer(_ index: Int) -> UnsafeMutableRawPointer { slots[index].buffer }

    /// Starts reading up to `bufferSize` bytes at `offset` (aligned) of `fd` into the slot; only
    /// as many aligned blocks as cover `wanted`, so a small file costs a small read.
    func read(_ index: Int, fd: Int32, offset: Int, wanted: Int) {
        let cb = slots[index].iocb
        let align = AIOEngine.alignment
        let length = min(bufferSize, (wanted + align - 1) / align * align)
        slots[index].requested = length
        io_prep_pread(cb, fd, slots[index].buffer, length, Int64(offset))
        io_set_eventfd(cb, eventFD)
        cb.pointee.data = UnsafeMutableRawPointer(bitPattern: index + 1)
        slots[index].fileOffset = offset
        slots[index].state = .reading
        var list: UnsafeMutablePointer<iocb>? = cb
        let r = io_submit(context, 1, &list)
        if r == 1 { return }
        // The kernel would not queue it (-EAGAIN under pressure): read synchronously instead, so
        // the transfer goes on rather than failing.
        let n = pread(fd, slots[index].buffer, length, off_t(offset))
        slots[index].state = n >= 0 ? .ready(n) : .failed(errno)
    }

    // MARK: completions

    func handleEvents(_ interest: Epoll.Interest) {
        _ = Sys.drainEventfd(eventFD)
        var zero = timespec()
        while true {
            let n = io_getevents(context, 0, eventCapacity, events, &zero)
            if n <= 0 { return }
            for i in 0..<Int(n) {
                let index = Int(bitPattern: events[i].data) - 1
                let res = Int64(bitPattern: UInt64(events[i].res))
                complete(index, result: res)
            }
            if n < eventCapacity { return }
        }
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
