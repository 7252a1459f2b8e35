import CLinux
import Glibc

/// The body of a `/dynamic/` response (or a plugin's AIO file part): read with libaio into the
/// worker's aligned buffers and written to the socket, the next read in flight while the
/// previous buffer is sent.
///
/// Each read first asks the page cache (`RWF_NOWAIT` on the buffered descriptor, finished inside
/// `io_submit`); whatever the cache does not hold — the whole range (`EAGAIN`) or its tail (a
/// short read) — is read again from the device through an O_DIRECT descriptor, asynchronously.
/// So a cached file goes at page-cache speed and a cold one is read off the loop's time (only a
/// filesystem without O_DIRECT, or a device read the kernel refuses to queue, is read buffered on
/// the loop); after a miss,
/// `PageCacheWarmer` reads the rest of the range into the cache off the loop, for the requests
/// that follow (O_DIRECT reads bypass the cache and would leave the file cold for good).
/// `--dynamic-io direct` skips the first step: every read goes to the device.
final class AIOBody: BodyProducer {
    /// Reads kept in flight per transfer: one being sent, one being filled.
    static let depth = 2

    /// Set once, by the exchange's init (`bind`), which owns the body.
    unowned(unsafe) private(set) var exchange: Exchange!
    /// The worker's engine, looked up once (not through exchange.worker on every step).
    private unowned(unsafe) let engine: AIOEngine
    var region = FileRegion()
    /// Next (aligned) file offset to read.
    private var nextRead = 0
    /// Engine slots of this transfer, in file order.
    private var slots: [Int] = []
    /// Ask the page cache first (false: `--dynamic-io direct`, or a descriptor that is O_DIRECT).
    private var fromCache = true
    /// The O_DIRECT descriptor of a region with no cache entry (a plugin's part), opened at the
    /// first miss and closed with the body; `unopened` until then, -1 if there can be none.
    private var ownDirectFD: Int32 = AIOBody.unopened
    private static let unopened: Int32 = -2
    /// The rest of the range was handed to `PageCacheWarmer` after this transfer's first miss.
    private var warmed = false

    init(engine: AIOEngine) {
        self.engine = engine
        slots.reserveCapacity(AIOBody.depth)
    }

    func bind(to exchange: Exchange) { self.exchange = exchange }

    /// Call after setting `region`. `withHead`: a small body (one read) that the head waits for,
    /// so that both leave in one send (`holdsHead`), as a small static file does.
    func prepare(withHead: Bool = false) {
        nextRead = region.offset & ~(AIOEngine.alignment - 1)
        slots.removeAll(keepingCapacity: true)
        fromCache = exchange.worker.config.dynamicIO == .auto
        warmed = false
        joinsHead = withHead && region.remaining <= engine.bufferSize - AIOEngine.alignment
        // A plugin's descriptor may be O_DIRECT already: RWF_NOWAIT on it would be a device
        // read, and one queued without an eventfd. Read it as what it is.
        if region.cacheEntry == nil && aws_fd_is_direct(region.fd) != 0 {
            fromCache = false
            ownDirectFD = region.fd
        }
    }

    /// The head waits in the pump's buffer until this body's one read is in.
    private var joinsHead = false
    var holdsHead: Bool { joinsHead }

    /// For `joinsHead`: the read, from the cache or else the device; once it is in, its bytes go
    /// after the head in the pump's buffer and the body is done.
    private func appendToHead(_ pump: BodyPump) -> Progress {
        startReads()
        guard let slot = slots.first else { return .waiting }  // no buffer free yet
        while true {
            switch engine.state(slot) {
            case .free, .queued, .reading:
                return .waiting
            case .failed(let error):
                guard engine.isFromCache(slot) && AIOBody.isCacheMiss(error) else {
                    exchange.worker.logger.error("aio read failed", metadata: ["errno": "\(error)", "peer": "\(exchange.connection.peerDescription)"])
                    return .failed
                }
                // A device read may finish at once (read synchronously when io_submit refuses it).
                readFromDevice(slot, at: engine.fileOffset(slot), wanted: region.end - engine.fileOffset(slot))
            case .ready(let count):
                let start = engine.fileOffset(slot)
                guard start + count >= region.end else {
                    guard engine.isFromCache(slot) else {
                        exchange.worker.logger.error("file shrank during a transfer", metadata: ["peer": "\(exchange.connection.peerDescription)"])
                        return .failed
                    }
                    // Only part of it was cached: all of it again from the device (it is small,
                    // and the buffer must hold the whole body).
                    readFromDevice(slot, at: start, wanted: region.end - start)
                    continue
                }
                pump.out.append(contentsOf: UnsafeRawBufferPointer(start: engine.buffer(slot) + (region.offset - start), count: region.end - region.offset))
                region.offset = region.end
                joinsHead = false
                return .done
            }
        }
    }

    /// Fills the pipeline up to `depth` reads (fewer when the engine has no free buffer: it
    /// calls back when one frees up).
    private func startReads() {
        while slots.count < AIOBody.depth && nextRead < region.end {
            guard let slot = engine.acquire(for: exchange) else { return }
            slots.append(slot)
            read(slot, at: nextRead, wanted: region.end - nextRead)
            nextRead += engine.requested(slot)
        }
    }

    /// Starts one read into `slot`: from the page cache first unless told otherwise (queued for
    /// the end of the loop pass; a miss shows in its completion and `produce` then reads the range
    /// from the device).
    private func read(_ slot: Int, at offset: Int, wanted: Int) {
        if fromCache {
            // Submitted with the loop pass's other cache reads; a miss shows at completion.
            engine.read(slot, fd: region.fd, offset: offset, wanted: wanted, fromCache: true)
        } else {
            readFromDevice(slot, at: offset, wanted: wanted)
        }
    }

    private func readFromDevice(_ slot: Int, at offset: Int, wanted: Int) {
        let direct = directFD
        // Asked of the page cache first: this read is what its miss costs.
        if fromCache { exchange.worker.metrics.aioDirectFallbacks.add() }
        if fromCache && !warmed && direct >= 0 {
            // This request reads from the device; the next ones should find the range cached.
            warmed = true
            PageCacheWarmer.shared.warm(region.fd, offset: offset, length: region.end - offset)
        }
        // A filesystem without O_DIRECT (tmpfs) keeps its files in memory: read them buffered.
        engine.read(slot, fd: direct >= 0 ? direct : region.fd, offset: offset, wanted: wanted, fromCache: false)
    }

    private var directFD: Int32 {
        if let entry = region.cacheEntry { return entry.directFD }
        if ownDirectFD == AIOBody.unopened {
            let fd = AIOBody.reopenDirect(region.fd)
            if fd >= 0 || errno == EINVAL { ownDirectFD = fd } else { return -1 }  // try again next time
        }
        return ownDirectFD
    }

    /// What `RWF_NOWAIT` answers when the data is not (all) in the page cache, or when the
    /// filesystem cannot tell.
    private static func isCacheMiss(_ error: Int32) -> Bool { error == EAGAIN || error == EOPNOTSUPP }

    /// An O_DIRECT descriptor for `fd`'s file, or -1 when the filesystem has none.
    static func reopenDirect(_ fd: Int32) -> Int32 { aws_reopen_direct(fd) }

    func produce(_ pump: BodyPump) -> Progress {
        if joinsHead { return appendToHead(pump) }
        while true {
            startReads()
            guard let slot = slots.first else { return region.offset >= region.end ? .done : .waiting }
            switch engine.state(slot) {
            case .free, .queued, .reading:
                return .waiting
            case .failed(let error):
                if engine.isFromCache(slot) && AIOBody.isCacheMiss(error) {
                    // Nothing of this range was cached: the same range from the device.
                    readFromDevice(slot, at: engine.fileOffset(slot), wanted: min(engine.requested(slot), region.end - engine.fileOffset(slot)))
                    continue
                }
                exchange.worker.logger.error("aio read failed", metadata: ["errno": "\(error)", "peer": "\(exchange.connection.peerDescription)"])
                return .failed
            case .ready(let count):
                let start = engine.fileOffset(slot)
                let available = min(start + count, region.end)
                if region.offset < available {
                    let sent: Int?
                    do {
                        sent = try pump.send(engine.buffer(slot) + (region.offset - start), available - region.offset, more: available < region.end)
                    } catch {
                        return .failed
                    }
                    guard let sent else { return .blocked }
                    region.offset += sent
                    continue
                }
                let requestedEnd = start + engine.requested(slot)
                if available < region.end && count < engine.requested(slot) {
                    guard engine.isFromCache(slot) else {
                        exchange.worker.logger.error("file shrank during a transfer", metadata: ["peer": "\(exchange.connection.peerDescription)"])
                        return .failed
                    }
                    // The page cache held only the front of this range: the rest from the
                    // device, into the same buffer (all of it has been sent), from the last
                    // aligned offset (a cached read stops at a page boundary; EOF is not here).
                    let resume = available & ~(AIOEngine.alignment - 1)
                    readFromDevice(slot, at: resume, wanted: min(requestedEnd, region.end) - resume)
                    continue
                }
                slots.removeFirst()
                engine.release(slot)
            }
        }
    }

    /// The read this body waits for is queued for the end of this loop pass (it comes back
    /// before the loop sleeps).
    var waitsForQueuedRead: Bool { slots.first.map { engine.isQueued($0) } ?? false }

    /// Whether `slot` is the read this body waits for.
    func isWaiting(for slot: Int) -> Bool { slots.first == slot }

    /// Slots with reads in flight stay the engine's until their completions are reaped.
    func release() {
        for slot in slots { engine.release(slot) }
        slots.removeAll(keepingCapacity: true)
        joinsHead = false
        if ownDirectFD >= 0 && ownDirectFD != region.fd { Sys.close(ownDirectFD) }
        ownDirectFD = AIOBody.unopened
        region.release()
    }
}
