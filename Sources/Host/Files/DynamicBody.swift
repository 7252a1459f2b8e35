/// The body of a `/dynamic/` response: read with libaio into the worker's aligned buffers and
/// written to the socket, with the next read in flight while the previous buffer is sent.
extension Connection {
    /// Reads kept in flight per transfer: one being sent, one being filled.
    static let aioDepth = 2

    func pumpAIO() -> Progress {
        let engine = worker.aio
        while true {
            while aioSlots.count < Connection.aioDepth && aioNextRead < bodyEnd {
                guard let slot = engine.acquire(for: self) else { break }
                engine.read(slot, fd: bodyFD, offset: aioNextRead, wanted: bodyEnd - aioNextRead)
                aioNextRead += engine.requested(slot)
                aioSlots.append(slot)
            }
            guard let slot = aioSlots.first else { return bodyOffset >= bodyEnd ? .done : .waiting }
            switch engine.state(slot) {
            case .free, .reading:
                return .waiting
            case .failed(let error):
                worker.logger.error("aio read failed", metadata: ["errno": "\(error)", "peer": "\(peerDescription)"])
                return .failed
            case .ready(let count):
                let start = engine.fileOffset(slot)
                let available = min(start + count, bodyEnd)
                if bodyOffset < available {
                    let sent: Int?
                    do {
                        sent = try transport.send(engine.buffer(slot) + (bodyOffset - start), available - bodyOffset, more: available < bodyEnd)
                    } catch {
                        return .failed
                    }
                    guard let sent else { return .blocked }
                    bodyOffset += sent
                    bytesSent += sent
                    setDeadline(worker.config.sendTimeout)
                    continue
                }
                if available < bodyEnd && count < engine.requested(slot) {
                    worker.logger.error("file shrank during a transfer", metadata: ["peer": "\(peerDescription)"])
                    return .failed
                }
                aioSlots.removeFirst()
                engine.release(slot)
            }
        }
    }

    /// A read this connection started has completed.
    func aioCompleted(_ slot: Int) {
        guard phase == .responding || phase == .plugin, bodyKind == .aio, aioSlots.first == slot else { return }
        drive()
    }

    /// A buffer freed up after this connection found none.
    func aioSlotAvailable() {
        guard phase == .responding || phase == .plugin, bodyKind == .aio else { return }
        drive()
    }
}
