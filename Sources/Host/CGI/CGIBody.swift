import AWSParsing

/// A CGI program's body: read from its stdout pipe into one buffer and sent through the pump,
/// framed as the response head promised. The pipe is read only when the buffer has gone out,
/// so a client that reads slowly makes the program wait on a full pipe (backpressure) rather
/// than the server buffer its output.
final class CGIBody: BodyProducer {
    enum Framing {
        /// HTTP/1.1 without the program's Content-Length.
        case chunked
        /// The program's Content-Length: bytes still to send (more are dropped).
        case length(Int)
        /// HTTP/1.0 without a length: the connection's close ends the body.
        case untilClose
        /// HEAD, 204, 304: the output is read and dropped.
        case discard
    }

    /// Set once, by the exchange's init (`bind`), which owns the body.
    unowned(unsafe) private(set) var exchange: Exchange!
    /// Room for a chunk-size line before the data and its CRLF after it, so a chunk leaves in
    /// one send.
    private static let front = 16
    private static let capacity = 64 * 1024
    private var storage: UnsafeMutableRawPointer?
    private var start = 0
    private var end = 0
    private var framing = Framing.discard
    /// Output that arrived with the header block, sent before the pipe is read again.
    private var early: [UInt8] = []
    private var finished = false
    /// The program's output reached its end (EOF).
    private(set) var outputEnded = false
    /// Waiting for the program (not for the socket).
    private(set) var waitingForOutput = false

    func bind(to exchange: Exchange) { self.exchange = exchange }

    deinit { storage?.deallocate() }

    func begin(framing: Framing, early bytes: ArraySlice<UInt8>) {
        self.framing = framing
        early = Array(bytes)
        start = 0
        end = 0
        finished = false
        outputEnded = false
        waitingForOutput = false
    }

    func produce(_ pump: BodyPump) -> Progress {
        if storage == nil { storage = .allocate(byteCount: Self.front + Self.capacity + 2, alignment: 16) }
        let buffer = storage!
        while true {
            waitingForOutput = false
            while start < end {
                do {
                    guard let n = try pump.send(buffer + start, end - start) else { return .blocked }
                    start += n
                } catch {
                    return .failed
                }
            }
            if finished { return .done }
            // Refill: first what came with the head, then the pipe.
            let data = buffer + Self.front
            var n: Int
            if !early.isEmpty {
                n = min(early.count, Self.capacity)
                early.withUnsafeBytes { data.copyMemory(from: $0.baseAddress!, byteCount: n) }
                early.removeFirst(n)
            } else {
                guard let process = exchange.cgi.process else { return .failed }
                do {
                    guard let got = try process.readOutput(data, Self.capacity) else {
                        waitingForOutput = true
                        return .waiting
                    }
                    n = got
                } catch {
                    return .failed
                }
                if n == 0 {
                    if let progress = endOfOutput(buffer) { return progress }
                    continue  // the chunked terminator goes out like any chunk
                }
                exchange.cgiMadeProgress()
            }
            frame(buffer, count: n)
        }
    }

    /// Puts `count` bytes at `front` into the response's framing.
    private func frame(_ buffer: UnsafeMutableRawPointer, count n: Int) {
        switch framing {
        case .chunked:
            var size: [UInt8] = []
            size.append(hex: UInt64(n))
            size.append(contentsOf: [13, 10])
            start = Self.front - size.count
            size.withUnsafeBytes { (buffer + start).copyMemory(from: $0.baseAddress!, byteCount: size.count) }
            (buffer + Self.front + n).storeBytes(of: 13, as: UInt8.self)
            (buffer + Self.front + n + 1).storeBytes(of: 10, as: UInt8.self)
            end = Self.front + n + 2
        case .length(let remaining):
            let taken = min(n, remaining)
            start = Self.front
            end = Self.front + taken
            framing = .length(remaining - taken)
            if taken < n {
                // More than the program's Content-Length: dropped, and the connection closes
                // (the program and the client disagree on where this response ends).
                exchange.closeWhenDone()
                exchange.worker.logger.warning("cgi \(exchange.cgi.name): output beyond its Content-Length dropped")
            }
            if remaining - taken == 0 { finished = true }
        case .untilClose:
            start = Self.front
            end = Self.front + n
        case .discard:
            start = 0
            end = 0
        }
    }

    /// The program closed its output: the body ends (nil: after the chunked terminator, which
    /// `endOfOutput` put in the buffer).
    private func endOfOutput(_ buffer: UnsafeMutableRawPointer) -> Progress? {
        outputEnded = true
        finished = true
        switch framing {
        case .chunked:
            let last: StaticString = "0\r\n\r\n"
            buffer.copyMemory(from: last.utf8Start, byteCount: last.utf8CodeUnitCount)
            start = 0
            end = last.utf8CodeUnitCount
            return nil
        case .length(let remaining) where remaining > 0:
            exchange.worker.logger.warning("cgi \(exchange.cgi.name): output ended \(remaining) bytes short of its Content-Length")
            return .failed
        default:
            return .done
        }
    }

    /// The exchange is leaving the warm pool: its 64 KiB buffer goes too.
    func freeBuffer() {
        storage?.deallocate()
        storage = nil
    }

    func release() {
        early = []
        start = 0
        end = 0
        finished = true
    }
}
