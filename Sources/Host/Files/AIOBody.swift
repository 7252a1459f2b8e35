/// The body of a `/dynamic/` response (or a plugin's AIO file part): read with libaio into the
/// worker's aligned buffers and written to the socket, the next read in flight while the
/// previous buffer is sent.
final class AIOBody: BodyProducer {
    /// Reads kept in flight per transfer: one being sent, one being filled.
    static let depth = 2

    unowned(unsafe) let exchange: Exchange
    var region = FileRegion()
    /// Next (aligned) file offset to read.
    private var nextRead = 0
    /// Engine slots of this transfer, in file order.
    private var slots: [Int] = []

    init(exchange: Exchange) {
        self.exchange = exchange
        slots.reserveCapacity(AIOBody.depth)
    }

    /// Call after setting `region`.
    func prepare() {
        nextRead = region.offset & ~(AIOEngine.alignment - 1)
        slots.removeAll(keepingCapacity: true)
    }

    func produce(_ pump: BodyPump) -> Progress {
        let engine = exchange.worker.aio
        while true {
            while slots.count < AIOBody.depth && nextRead < region.end {
                guard let slot = engine.acquire(for: exchange) else { break }
                engine.read(slot, fd: region.fd, offset: nextRead, wanted: region.end - nextRead)
                nextRead += engine.requested(slot)
                slots.append(slot)
            }
            guard let slot = slots.first else { return region.offset >= region.end ? .done : .waiting }
            switch engine.state(slot) {
            case .free, .reading:
                return .waiting
            case .failed(let error):
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
                if available < region.end && count < engine.requested(slot) {
                    exchange.worker.logger.error("file shrank during a transfer", metadata: ["peer": "\(exchange.connection.peerDescription)"])
                    return .failed
                }
                slots.removeFirst()
                engine.release(slot)
            }
        }
    }

    /// Whether `slot` is the read this body waits for.
    func isWaiting(for slot: Int) -> Bool { slots.first == slot }

    /// Slots with reads in flight stay the engine's until their completions are reaped.
    func release() {
        for slot in slots { exchange.worker.aio.release(slot) }
        slots.removeAll(keepingCapacity: true)
        region.release(exchange.worker.fileCache)
    }
}
