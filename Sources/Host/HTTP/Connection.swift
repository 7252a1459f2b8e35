import AWSParsing
import Glibc
import CLinux

/// One client socket: its life cycle, its timer and the exchange (request and response) it is
/// serving, if any. The request's state lives in that `Exchange`, taken from the worker's pool
/// when the first byte of a request arrives and given back when the response is done, so an
/// idle keep-alive connection is this object alone (about 150 bytes) and holds no buffers.
///
/// Connection objects are pooled per worker and reused for the next accepted socket.
/// `generation` changes on every reuse, so whoever keeps a reference across an asynchronous gap
/// can tell "my connection" from "a later one".
final class Connection: EventHandler, Timed {
    enum Phase {
        /// Waiting for the next request: no exchange, no buffers.
        case idle
        /// An exchange is serving a request (its own phase says how far it is).
        case busy
        /// Closing after an error: our side is shut, input is discarded until EOF or a deadline,
        /// so the client reads the response instead of a reset.
        case lingering
    }

    // Stored properties are laid out in the order declared: 8-byte ones first, then 4-byte
    // ones and the address, then the flags, so an idle connection packs into 144 bytes.

    /// The worker owns its connections and outlives them (unowned(unsafe): no reference
    /// counting on the hot path).
    unowned(unsafe) let worker: Worker
    /// Every byte in or out goes through the transport (plain TCP or TLS).
    private(set) var transport = Transport()
    /// The virtual hosts as they were when the connection opened: a reload serves new
    /// connections, and keeps this snapshot (and the sites its requests point at) alive.
    private(set) var sites: SiteTable
    /// The PROXY header's state, made for the first connection of a proxy-protocol listener this
    /// object serves and kept across its reuse there: a side object, so that an idle connection
    /// without PROXY protocol carries one pointer for it rather than a buffer and an address.
    private var proxy: ProxyHeaderState?
    private(set) var exchange: Exchange?
    /// Requests answered on this connection, against `--max-requests-per-connection`.
    var requestsServed = 0
    // Timers
    var deadline: Int64 = .max
    var wheelTick: Int64 = -1
    /// The loop pass of the last read.
    private var lastReadPass: UInt64 = 0

    private(set) var fd: Int32 = -1
    private(set) var generation: UInt32 = 0
    private var interest: Epoll.Interest = []
    private(set) var peer = PeerAddress()

    private(set) var phase: Phase = .idle
    /// On a `--proxy-protocol` listener, until the PROXY header is read.
    private(set) var awaitingProxyHeader = false
    /// The socket is in the worker's epoll set. A fresh connection is served once before it is
    /// registered, so a connection that is answered and closed at once never costs an epoll_ctl.
    private(set) var registered = false
    /// The last read returned less than it asked for: the socket had nothing more then.
    private var drainedAtLastRead = false
    /// TCP_NOTSENT_LOWAT is set (once per connection, for its first big file body).
    private var unsentLimited = false

    /// Who the connection serves: the peer, or the client its PROXY header names.
    var client: PeerAddress { proxy?.client ?? peer }

    var isOpen: Bool { fd >= 0 }

    init(worker: Worker) {
        self.worker = worker
        sites = worker.sites
    }

    // MARK: life cycle

    /// Takes ownership of an accepted socket; `tls`: the certificates of a TLS listener. False
    /// when no TLS session could be made (out of memory): the caller closes the socket.
    func open(fd: Int32, peer: sockaddr_storage, tls: TLSContexts?) -> Bool {
        if let tls {
            guard let session = TLSSession(fd: fd, contexts: tls, fileScratch: worker.tlsFileScratch) else { return false }
            transport = Transport(fd: fd, tls: session)
        } else {
            transport = Transport(plain: fd)
        }
        self.fd = fd
        self.peer = PeerAddress(peer)
        sites = worker.sites
        awaitingProxyHeader = worker.config.proxyProtocol
        if awaitingProxyHeader {
            if proxy == nil { proxy = ProxyHeaderState() }
            proxy!.reset()
        } else {
            proxy = nil
        }
        unsentLimited = false
        drainedAtLastRead = false
        generation &+= 1
        phase = .idle
        requestsServed = 0
        interest = .readable
        // Over TLS this deadline covers the handshake too.
        setDeadline(worker.config.headerTimeout)
        return true
    }

    /// Closes the socket and releases everything the connection holds; exactly once per socket.
    func close() {
        guard fd >= 0 else { return }
        if let x = exchange {
            x.connectionClosing()
            releaseExchange()
        }
        if registered { worker.loop.unregister(fd) }
        registered = false
        transport.end()
        worker.loop.closeAfterBatch(fd)
        fd = -1
        generation &+= 1
        deadline = .max
        worker.connectionClosed(self)
    }

    /// Closes once the client has had the chance to read what was sent: with unread input on the
    /// socket a plain close would reset the connection and could destroy the response in flight.
    static let unsentLowWater: Int32 = 64 * 1024

    /// Keeps at most `unsentLowWater` bytes queued but unsent in the socket while a big body
    /// goes out, so that epoll reports it writable as soon as that much is left rather than when
    /// a third of a multi-megabyte buffer is free. Measured here (kernel 6.x, BBR with TCP's own
    /// pacing, the default of this machine): a 100 MiB sendfile download went at ~2,300 MiB/s
    /// without it — the buffer filled, sat waiting for space, ran dry, and BBR's bandwidth
    /// estimate and pacing rate stayed low — and at ~6,000 MiB/s with it; 1 MiB bodies gained
    /// too. Set only for big sendfile bodies: a copied body (/dynamic/) sends 512 KiB at a time
    /// and lost with it, and small responses never come near it.
    func limitUnsentBytes() {
        guard !unsentLimited, !transport.isTLS else { return }
        unsentLimited = true
        try? Sys.setsockopt(fd, Int32(IPPROTO_TCP), aws_tcp_notsent_lowat(), Connection.unsentLowWater)
    }

    func closeGracefully() {
        // Unread input would make close() send a reset that can destroy the response still in
        // flight. When the last read came up short in this same pass of the loop (a request read
        // and answered at once), the socket was empty microseconds ago: no need to ask it again
        // (a MSG_PEEK recv per closed connection). A response that took longer asks: the client
        // may have sent more meanwhile.
        let drainedJustNow = drainedAtLastRead && lastReadPass == worker.loop.pass
        let unread = transport.hasBufferedInput || (!drainedJustNow && Sys.hasUnreadInput(fd))
        if (exchange?.inputIsClean ?? true) && !unread {
            close()
            return
        }
        transport.shutdownWrite()
        if exchange != nil { releaseExchange() }
        phase = .lingering
        setInterest(.readable)
        setDeadline(2_000)
    }

    /// The exchange is done and nothing of a next request has arrived: back to idle, buffers
    /// returned to the pool.
    func becomeIdle() {
        let worker = self.worker
        releaseExchange()
        phase = .idle
        setInterest(.readable)
        setDeadline(worker.config.keepAliveTimeout)
    }

    private func startExchange() -> Exchange {
        let x = worker.takeExchange()
        x.attach(to: self)
        exchange = x
        phase = .busy
        return x
    }

    private func releaseExchange() {
        guard let x = exchange else { return }
        exchange = nil
        worker.returnExchange(x)
    }

    func deadlineExpired(now: Int64) {
        guard isOpen else { return }
        if awaitingProxyHeader {
            worker.noteProxyRefusal("PROXY protocol header timed out", peer: peerDescription)
        }
        if let x = exchange { x.deadlineExpired() } else { close() }
    }

    func setDeadline(_ millis: Int64) {
        let worker = self.worker
        deadline = worker.loop.now + millis
        worker.wheel.schedule(self)
    }

    /// No deadline (a plugin stream that may be quiet for long).
    func clearDeadline() { deadline = .max }

    func setInterest(_ wanted: Epoll.Interest) {
        guard wanted != interest, isOpen else { return }
        interest = wanted
        guard registered else { return }  // applied when the worker registers the socket
        do { try worker.loop.modify(fd, wanted) } catch { close() }
    }

    /// Adds the socket to the loop with the interest the connection wants now.
    func register() throws(SyscallError) {
        try worker.loop.register(fd, self, interest)
        registered = true
    }

    // MARK: events

    func handleEvents(_ events: Epoll.Interest) {
        if let x = exchange { x.handleEvents(events) } else { readAvailable() }
    }

    /// Reads while the connection wants input, handing bytes to the exchange straight from the
    /// worker's shared read buffer (the exchange copies only what it must keep).
    func readAvailable() {
        if awaitingProxyHeader && !readProxyHeader() { return }
        let worker = self.worker
        let buffer = worker.readBuffer
        while isOpen && (exchange?.wantsInput ?? true) {
            let n: Int
            do {
                guard let got = try transport.receive(buffer.baseAddress!, buffer.count) else {
                    if transport.isTLS { tlsReadBlocked() }
                    return
                }
                n = got
            } catch {
                readFailed(error)
                return
            }
            if n == 0 {
                if let x = exchange { x.endOfInput() } else { close() }
                return
            }
            drainedAtLastRead = n < buffer.count
            lastReadPass = worker.loop.pass
            if phase == .lingering { continue }
            let x = exchange ?? startExchange()
            x.received(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            // A short read emptied the socket: rather than a recv that would say EAGAIN, let
            // level-triggered epoll report the next bytes (one syscall less per request) —
            // unless OpenSSL has read ahead of us, and epoll has nothing left to report.
            if n < buffer.count && !transport.hasBufferedInput { return }
        }
        // Stopped reading (a response is going out) with input buffered inside OpenSSL: read it
        // when the exchange wants input again (`inputResumed`).
    }

    /// The exchange wants input again after a response: input OpenSSL already holds would never
    /// be reported by epoll, so it is read after this batch of events.
    func inputResumed() {
        if transport.hasBufferedInput { worker.readSoon(self) }
    }

    /// A TLS read found nothing to return: while OpenSSL waits for room to write (a handshake
    /// message on a full socket), watch for writable too; once it does not, stop.
    private func tlsReadBlocked() {
        if transport.tls!.readWantsWrite {
            setInterest(interest.union(.writable))
        } else if interest.contains(.writable) && !(exchange?.isSending ?? false) {
            setInterest(interest.subtracting(.writable))
        }
    }

    private func readFailed(_ error: SyscallError) {
        switch transport.tls?.failure {
        case .plainHTTP?:
            refusePlainHTTP()
            return
        case .protocolError(let reason)?:
            worker.logger.info("TLS \(transport.tls!.handshakeDone ? "error" : "handshake failed")", metadata: ["peer": "\(peerDescription)", "reason": "\(reason)"])
        case nil:
            break
        }
        close()
    }

    /// Plain HTTP sent to the TLS port: answered in plain HTTP, as nginx does, so whoever typed
    /// http:// learns what went wrong instead of staring at a reset.
    private func refusePlainHTTP() {
        worker.logger.info("plain HTTP request on the TLS port", metadata: ["peer": "\(peerDescription)"])
        transport.dropTLS()
        var response: [UInt8] = []
        ResponseHead.begin(&response, code: HTTPStatus.badRequest.rawValue, date: worker.date)
        response.append(contentsOf: worker.config.headerSettings.siteFields)
        ResponseHead.field(&response, "Content-Type", ascii: "text/html; charset=utf-8")
        ResponseHead.field(&response, "Content-Length", decimal: Connection.plainHTTPPage.count)
        ResponseHead.end(&response, closing: true, http10: false)
        response.append(contentsOf: Connection.plainHTTPPage)
        _ = response.withUnsafeBytes { try? transport.send($0.baseAddress!, $0.count) }
        closeGracefully()
    }

    private static let plainHTTPPage = Array("""
        <!DOCTYPE html>
        <html><head><title>400 Bad Request</title></head><body><h1>400 Bad Request</h1>
        <p>The plain HTTP request was sent to HTTPS port.</p></body></html>

        """.utf8)

    var peerDescription: String { peer.description }

    // MARK: PROXY protocol

    /// Reads the PROXY header straight from the socket, before TLS or HTTP see a byte: true once
    /// it is read (the connection goes on), false while more is due or after the connection was
    /// closed. Only the header's own bytes are taken from the socket: the version 1 line is
    /// peeked and consumed up to its LF, version 2 read to its stated length.
    private func readProxyHeader() -> Bool {
        let buffer = worker.readBuffer
        let state = proxy!
        if state.header.isEmpty && state.skip == 0 && !worker.config.trustedProxies.isEmpty
            && !worker.config.isTrustedProxy(peer.ip) {
            return refuseProxy("PROXY protocol connection from a peer not in --trusted-proxy")
        }
        while state.skip > 0 {
            guard let n = receiveRaw(buffer.baseAddress!, min(state.skip, buffer.count), peek: false) else { return false }
            state.skip -= n
            if state.skip == 0 { awaitingProxyHeader = false; return true }
        }
        let have = state.header.count
        if have > 0 { state.header.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: have) } }
        let room = max(ProxyProtocol.v1MaxLength, ProxyProtocol.v2MaxAddressed) - have
        guard let n = receiveRaw(buffer.baseAddress! + have, room, peek: true) else { return false }
        switch ProxyProtocol.parse(UnsafeRawBufferPointer(rebasing: buffer[0..<(have + n)])) {
        case .invalid(let reason):
            return refuseProxy("malformed PROXY protocol header (\(reason))")
        case .needMore:
            state.header.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[have..<(have + n)]))
            _ = receiveRaw(buffer.baseAddress!, n, peek: false)
            return false
        case .complete(let length, let source):
            if let source { state.client = PeerAddress(source) }
            let take = min(length - have, n)
            guard take == 0 || receiveRaw(buffer.baseAddress!, take, peek: false) == take else { return false }
            state.skip = length - have - take
            state.header.removeAll(keepingCapacity: true)
            if state.skip > 0 { return readProxyHeader() }
            awaitingProxyHeader = false
            return true
        }
    }

    /// A recv of the plain socket: nil when nothing is there (or the connection was closed: at
    /// end of input or on an error, before the header was complete).
    private func receiveRaw(_ into: UnsafeMutableRawPointer, _ count: Int, peek: Bool) -> Int? {
        let n = Glibc.recv(fd, into, count, peek ? Int32(MSG_PEEK) : 0)
        if n > 0 { return n }
        if n < 0 && (errno == EAGAIN || errno == EINTR) { return nil }
        if n == 0 {
            if let state = proxy, !state.header.isEmpty || state.skip != 0 {
                _ = refuseProxy("connection closed inside its PROXY protocol header")
            } else {
                close()
            }
        } else {
            close()
        }
        return nil
    }

    private func refuseProxy(_ reason: String) -> Bool {
        worker.noteProxyRefusal(reason, peer: peerDescription)
        close()
        return false
    }
}

/// A connection's PROXY protocol header while it is read, and the client it named.
private final class ProxyHeaderState {
    /// The part of the header that arrived so far, and the bytes of its version 2 TLVs still to skip.
    var header: [UInt8] = []
    var skip = 0
    /// The client the header named (nil: a LOCAL or UNKNOWN header, or not read yet: the peer).
    var client: PeerAddress?

    func reset() {
        header.removeAll(keepingCapacity: true)
        skip = 0
        client = nil
    }
}
