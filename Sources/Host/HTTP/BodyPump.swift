/// How far a send got.
enum Progress { case done, blocked, waiting, failed }

/// Something that produces a response body: memory, a file region via sendfile, a file region
/// read with libaio, and later a CGI pipe or TLS-encrypted output. The pump asks it to move
/// bytes; the producer decides how. A new kind of body is one new type conforming to this.
///
/// Producers are owned by their exchange and reused across requests (no allocation per body).
protocol BodyProducer: AnyObject {
    /// Sends as much as it can through `pump.send` / `pump.sendFile`: `.done` when the whole body
    /// is out, `.blocked` when the socket is full, `.waiting` when it waits for data (an AIO read,
    /// a slot), `.failed` when the body cannot be completed.
    func produce(_ pump: BodyPump) -> Progress
    /// Gives back what the body holds (descriptors, cache entries, buffers). Called exactly once
    /// per body, by the pump, whether it finished or not.
    func release()
    /// The buffered bytes (the head) wait for this body: it appends itself to `pump.out` when
    /// its bytes are there, so that head and body leave in one send (a small /dynamic/ file).
    var holdsHead: Bool { get }
}

extension BodyProducer {
    var holdsHead: Bool { false }
}

/// The one send path of an exchange: the buffered bytes before a body (head, chunk framing, a
/// small body), then the current producer. It counts bytes (the exchange pushes the send deadline
/// out after each flush that made progress) and releases each producer exactly once.
final class BodyPump {
    /// Set once, by the exchange's init (`bind`), which owns the pump.
    unowned(unsafe) private(set) var exchange: Exchange!
    /// Bytes to send before the producer's: the head, chunk framing, small bodies.
    var out: [UInt8] = []
    private(set) var outSent = 0
    /// `out[..<interimEnd]` is an interim response (`100 Continue`). It must reach the client
    /// whole, so a new head (`reset`) keeps what of it is unsent and goes after it.
    private var interimEnd = 0
    private(set) var producer: BodyProducer?
    /// Bytes written to the socket for the current response (head included), for the log.
    var bytesSent = 0
    /// Bytes written since the pump was made, never reset: `Exchange.flush` counts a flush's
    /// progress with it.
    private(set) var sentTotal = 0
    /// The connection's socket while the exchange is attached to a plain TCP connection: sends
    /// go to it directly. Through `exchange.connection.transport` every send would cost a retain
    /// and a release of each object on the way. -1 over TLS and while detached.
    var plainSocket: Int32 = -1
    /// The connection closes once this response is out (`Exchange.endHead`).
    var closesConnection = false

    init() { out.reserveCapacity(1024) }

    func bind(to exchange: Exchange) { self.exchange = exchange }

    var hasBody: Bool { producer != nil }
    var outPending: Bool { outSent < out.count }
    /// Bytes buffered but not yet sent.
    var unsent: Int { out.count - outSent }

    /// Starts a response head: nothing buffered, no bytes counted. A producer already given
    /// (a plugin's first part, queued before its head) stays.
    func reset() {
        if outSent < interimEnd && interimEnd <= out.count {
            out.removeSubrange(interimEnd...)
        } else {
            out.removeAll(keepingCapacity: true)
            outSent = 0
            interimEnd = 0
        }
        bytesSent = 0
        closesConnection = false
    }

    /// Nothing buffered at all, an unsent interim response included (a new connection).
    func clear() {
        interimEnd = 0
        outSent = 0
        out.removeAll(keepingCapacity: true)
        bytesSent = 0
        closesConnection = false
    }

    /// Queues an interim response ahead of any head not yet started; the next flush sends it,
    /// across as many sends as the socket needs. False (nothing queued) once a final head has
    /// begun to go out: an interim response may not follow it.
    @discardableResult
    func queueInterim(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard outSent <= interimEnd, interimEnd <= out.count else { return false }
        out.insert(contentsOf: bytes, at: interimEnd)
        interimEnd += bytes.count
        return true
    }

    /// Where a head not yet sent begins in `out`: after the interim response, if any.
    var headStart: Int { interimEnd }

    var interimPending: Bool { outSent < interimEnd }

    /// Sends only the interim response, keeping the head being built after it (a plugin's head
    /// is begun before on_request); once it is all out it leaves the buffer.
    func flushInterim() -> Progress {
        while outSent < interimEnd {
            let sent: Int?
            do {
                sent = try out.withUnsafeBytes { try send($0.baseAddress! + outSent, interimEnd - outSent, more: false) }
            } catch {
                return .failed
            }
            guard let sent else { return .blocked }
            outSent += sent
        }
        out.removeSubrange(0..<interimEnd)
        outSent = 0
        interimEnd = 0
        return .done
    }

    /// Set the producer's state (its region) before: a producer given again is not released.
    func start(_ body: BodyProducer) {
        if producer !== body { release() }
        producer = body
    }

    /// Gives the current producer's resources back (a body cut short, an error replacing it).
    func release() {
        guard let p = producer else { return }
        producer = nil
        p.release()
    }

    /// Buffered bytes, then the producer, as far as the socket takes them.
    func run() -> Progress {
        if let p = producer, p.holdsHead {
            let progress = p.produce(self)
            guard progress == .done else { return progress }
            release()
        }
        // A response that ends its connection goes out with MSG_MORE: its segment is held for the
        // close, whose FIN then rides on it (one packet to the client instead of two, as nginx's
        // tcp_nopush gives). The close (or shutdown) that follows at once sends it.
        let buffered = flushBuffered(more: producer != nil || closesConnection)
        guard buffered == .done, let p = producer else { return buffered }
        let progress = p.produce(self)
        if progress == .done { release() }
        return progress
    }

    /// Sends the buffered bytes; `more`: body bytes follow at once (MSG_MORE).
    func flushBuffered(more: Bool) -> Progress {
        while outSent < out.count {
            let sent: Int?
            do {
                sent = try out.withUnsafeBytes { try send($0.baseAddress! + outSent, $0.count - outSent, more: more) }
            } catch {
                return .failed
            }
            guard let sent else { return .blocked }
            outSent += sent
        }
        out.removeAll(keepingCapacity: true)
        outSent = 0
        interimEnd = 0
        return .done
    }

    // MARK: for producers

    /// Bytes sent, nil when the socket is full.
    @inline(__always)
    func send(_ bytes: UnsafeRawPointer, _ count: Int, more: Bool = false) throws(SyscallError) -> Int? {
        let sent = plainSocket >= 0
            ? try Sys.send(plainSocket, bytes, count, more: more)
            : try exchange.connection.transport.send(bytes, count, more: more)
        guard let n = sent else { return nil }
        progressed(n)
        return n
    }

    /// sendfile(2) from `offset`, advancing it; bytes sent, nil when the socket is full.
    @inline(__always)
    func sendFile(_ fd: Int32, offset: inout Int, count: Int) throws(SyscallError) -> Int? {
        let sent = plainSocket >= 0
            ? try Sys.sendfile(to: plainSocket, from: fd, offset: &offset, count: count)
            : try exchange.connection.transport.sendFile(fd, offset: &offset, count: count)
        guard let n = sent else { return nil }
        progressed(n)
        return n
    }

    /// The metrics and the send deadline are brought up to date by `Exchange.flush`, once per
    /// flush from `sentTotal`, not here on every send.
    @inline(__always)
    private func progressed(_ n: Int) {
        bytesSent += n
        sentTotal &+= n
    }
}

/// A body already in memory (a plugin's memory part): bytes [offset, end) of `base`.
final class MemoryBody: BodyProducer {
    private var base: UnsafeRawPointer?
    private var offset = 0
    private var end = 0
    /// What keeps `base` alive while it is sent (a shared compressed body), if anything does.
    private var owner: AnyObject?

    func set(_ base: UnsafeRawPointer, count: Int, owner: AnyObject? = nil) {
        self.base = base
        offset = 0
        end = count
        self.owner = owner
    }

    func produce(_ pump: BodyPump) -> Progress {
        guard let base else { return .done }
        while offset < end {
            do {
                guard let n = try pump.send(base + offset, end - offset) else { return .blocked }
                offset += n
            } catch {
                return .failed
            }
        }
        return .done
    }

    /// Appends the bytes not yet sent to `out` (which then sends them); the body is done.
    func append(to out: inout [UInt8]) {
        guard let base, offset < end else { return }
        out.append(contentsOf: UnsafeRawBufferPointer(start: base + offset, count: end - offset))
        offset = end
    }

    func release() {
        base = nil
        owner = nil
    }
}
