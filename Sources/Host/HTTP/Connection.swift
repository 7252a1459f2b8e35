import CHTTPParser
import Glibc

/// One client connection: a small state machine that reads a request head, answers it, and
/// either waits for the next request (keep-alive, pipelining) or closes.
///
/// Connection objects are pooled per worker and reused for the next accepted socket, so their
/// buffers (head storage, output, pipelined input) are allocated once, not per request.
/// `generation` changes on every reuse; whoever keeps a reference across an asynchronous gap
/// (the AIO engine, the timer wheel) checks it to tell "my connection" from "a later one".
final class Connection: EventHandler, Timed {
    enum Phase {
        /// Waiting for the first byte of a request (keep-alive idle).
        case idle
        /// Part of a head has arrived.
        case readingHead
        /// Collecting bytes of an unrecognised method to tell 501 from 400.
        case sniffingMethod
        /// The head is answered but the request has a body: it is read (and dropped) before the
        /// response goes out, so a body that breaks a limit can still be refused with 413.
        case readingBody
        /// A response is being sent; input is left in the socket (or in `pending`) meanwhile.
        case responding
        /// The response is done but the request body is not: read and discard it.
        case drainingBody
        /// Closing after an error: our side is shut, input is discarded until EOF or a deadline,
        /// so the client reads the response instead of a reset.
        case lingering
        /// A plugin owns the request: its body is read while the plugin's response is sent.
        case plugin
    }

    /// The worker owns its connections and outlives them (unowned(unsafe): no reference
    /// counting on the hot path).
    unowned(unsafe) let worker: Worker
    /// This object's index in its worker, part of plugin request handles.
    let slot: Int
    private(set) var fd: Int32 = -1
    /// Every byte in or out goes through the transport (plain today; TLS later).
    private(set) var transport = Transport()
    private(set) var generation: UInt32 = 0
    var isOpen: Bool { fd >= 0 }
    var peer = sockaddr_storage()
    var phase: Phase = .idle

    // Input
    let parser = HTTPParser()
    var request = RequestHead()
    var path = DocumentRoot.Path()
    /// The index.html of a directory target, looked up in the open-file cache by that name.
    var indexPath = DocumentRoot.Path()
    private var pending: [UInt8] = []
    private var pendingStart = 0
    private var headComplete = false
    /// The target's path, decoded once per request (`resolvePath`).
    private var pathResolved = false
    private var pathFailure: HTTPStatus?
    private(set) var messageComplete = true
    /// Set by a parser callback that refuses the request (a limit), answered when the parser stops.
    private var refusal: HTTPStatus?
    private var sniff: [UInt8] = []
    var bodyBytesReceived = 0

    // Output
    var out: [UInt8] = []
    private(set) var outSent = 0
    enum BodyKind { case none, memory, sendfile, aio }
    var bodyKind: BodyKind = .none
    /// The open file behind a body; closed when the body ends if `bodyFDOwned`.
    var bodyFD: Int32 = -1
    var bodyFDOwned = true
    /// The open-file cache entry `bodyFD` belongs to, held while the body is sent.
    var bodyCacheEntry: OpenFileCache.Entry?
    /// A memory body (plugin parts): bytes [bodyOffset, bodyEnd) of it are sent.
    var memoryBody: UnsafeRawPointer?
    var plugin = PluginExchange()
    /// Next file byte to send and the end of the range.
    var bodyOffset = 0
    var bodyEnd = 0
    var aioNextRead = 0
    var aioSlots: [Int] = []
    var status: HTTPStatus = .ok
    var responseReady = false
    var closeAfterResponse = false
    private var willClose = false
    var bytesSent = 0
    private var logLine: [UInt8] = []
    /// The status code as sent (plugins may send codes `HTTPStatus` does not name).
    var statusCode = 200
    private var requestStartNanos: UInt64 = 0
    private var requestsServed = 0
    /// The current request has its access-log line (so a close does not log it twice).
    private var requestLogged = false
    private var interest: Epoll.Interest = []

    // Timers
    var deadline: Int64 = .max
    var wheelTick: Int64 = -1

    init(worker: Worker, slot: Int) {
        self.worker = worker
        self.slot = slot
        pending.reserveCapacity(4096)
        out.reserveCapacity(1024)
        sniff.reserveCapacity(64)
        aioSlots.reserveCapacity(4)
    }

    // MARK: life cycle

    /// Takes ownership of an accepted socket.
    func open(fd: Int32, peer: sockaddr_storage) {
        self.fd = fd
        self.peer = peer
        transport = Transport(plain: fd)
        generation &+= 1
        parser.reset(for: self)
        phase = .idle
        responseReady = false
        willClose = false
        closeAfterResponse = false
        out.removeAll(keepingCapacity: true)
        outSent = 0
        headComplete = false
        messageComplete = true
        refusal = nil
        requestsServed = 0
        pending.removeAll(keepingCapacity: true)
        pendingStart = 0
        interest = .readable
        setDeadline(worker.config.headerTimeout)
    }

    /// Closes the socket and releases everything the connection holds; exactly once per socket.
    func close() {
        guard fd >= 0 else { return }
        if headComplete && !requestLogged { logAccess() }  // cut short: still one line per request
        if plugin.route != nil { endPluginRequest(aborted: !(plugin.finished && plugin.terminated && outSent >= out.count && bodyKind == .none)) }
        releaseBody()
        if registered { worker.loop.unregister(fd) }
        registered = false
        worker.loop.closeAfterBatch(fd)
        fd = -1
        generation &+= 1
        deadline = .max
        worker.connectionClosed(self)
    }

    /// Closes once the client has had the chance to read what was sent: with unread input on the
    /// socket a plain close would reset the connection and could destroy the response in flight.
    private func closeGracefully() {
        if pendingStart >= pending.count && messageComplete && refusal == nil && phase != .sniffingMethod
            && !Sys.hasUnreadInput(fd) {
            close()
            return
        }
        transport.shutdownWrite()
        phase = .lingering
        pending.removeAll(keepingCapacity: true)
        pendingStart = 0
        setInterest(.readable)
        setDeadline(2_000)
    }

    func deadlineExpired(now: Int64) {
        guard isOpen else { return }
        switch phase {
        case .readingHead, .sniffingMethod, .readingBody:
            worker.logger.info(phase == .readingBody ? "request body timed out" : "request head timed out", metadata: ["peer": "\(peerDescription)"])
            status = .requestTimeout
            respondWithError(.requestTimeout, close: true)
            phase = .responding
            drive()
        case .drainingBody:
            worker.logger.info("request body timed out", metadata: ["peer": "\(peerDescription)"])
            close()
        case .responding:
            worker.logger.info("send stalled, closing", metadata: ["peer": "\(peerDescription)"])
            close()
        case .plugin:
            worker.logger.info("plugin request timed out (body or send stalled), closing", metadata: ["peer": "\(peerDescription)"])
            close()
        case .idle, .lingering:
            close()
        }
    }

    func setDeadline(_ millis: Int64) {
        deadline = worker.loop.now + millis
        worker.wheel.schedule(self)
    }

    private func setInterest(_ wanted: Epoll.Interest) {
        guard wanted != interest, isOpen else { return }
        interest = wanted
        guard registered else { return }  // applied when the worker registers the socket
        do { try worker.loop.modify(fd, wanted) } catch { close() }
    }

    /// The socket is in the worker's epoll set. A fresh connection is served once before it is
    /// registered (TCP_DEFER_ACCEPT delivers it with its request), so a connection that is
    /// answered and closed at once never costs an epoll_ctl.
    private(set) var registered = false

    /// Adds the socket to the loop with the interest the connection wants now.
    func register() throws(SyscallError) {
        try worker.loop.register(fd, self, interest)
        registered = true
    }

    // MARK: events

    func handleEvents(_ events: Epoll.Interest) {
        if phase == .plugin {
            if events.contains(.writable) { drive() }
            if isOpen && phase == .plugin && (events.contains(.readable) || !events.isDisjoint(with: [.error, .hangup, .peerClosed])) {
                // Once the body is in, only the peer's close is watched: a plugin response may be
                // idle for long (a stream, a long poll) and must learn at once that its client
                // left. Like nginx for proxied requests, a half-close counts as leaving.
                if messageComplete { close(); return }
                readAvailable()
            }
            if isOpen && phase != .plugin { readAvailable() }
            return
        }
        if phase == .responding {
            if events.contains(.writable) || !events.isDisjoint(with: [.error, .hangup]) { drive() }
            if isOpen && !events.isDisjoint(with: [.error, .hangup]) && phase == .responding { close() }
            return
        }
        readAvailable()
    }

    /// Reads while the connection wants input, feeding the parser straight from the worker's
    /// shared read buffer; only bytes belonging to a later (pipelined) request are copied.
    func readAvailable() {
        let buffer = worker.readBuffer
        while isOpen && wantsInput {
            let n: Int
            do {
                guard let got = try transport.receive(buffer.baseAddress!, buffer.count) else { return }
                n = got
            } catch {
                close()
                return
            }
            if n == 0 {
                endOfInput()
                return
            }
            if phase == .lingering { continue }
            let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
            let used = consume(bytes)
            if used < n { pending.append(contentsOf: bytes[used...]) }
            drive()
            // A short read emptied the socket: rather than a recv that would say EAGAIN, let
            // level-triggered epoll report the next bytes (one syscall less per request).
            if n < buffer.count { return }
        }
    }

    private var wantsInput: Bool {
        switch phase {
        case .responding: false
        case .plugin: !messageComplete
        default: true
        }
    }

    private func endOfInput() {
        switch phase {
        case .plugin:
            close()  // the body will never be complete
        case .idle, .lingering, .drainingBody, .readingBody:
            close()
        case .readingHead, .sniffingMethod:
            // A client that half-closes after an incomplete head will never complete it.
            if refusal == nil && phase == .readingHead { worker.logger.debug("client closed mid-request") }
            close()
        case .responding:
            break  // finish the response; the close follows it
        }
    }

    /// Feeds bytes to the parser until a response is ready; returns how many were used.
    private func consume(_ bytes: UnsafeRawBufferPointer) -> Int {
        var used = 0
        while used < bytes.count && isOpen {
            switch phase {
            case .responding, .lingering:
                return used
            case .plugin:
                if messageComplete { return used }
            case .sniffingMethod:
                sniffMethod(UnsafeRawBufferPointer(rebasing: bytes[used...]))
                return bytes.count
            case .idle, .readingHead, .readingBody, .drainingBody:
                break
            }
            if messageComplete { beginMessage() }
            let chunk = UnsafeRawBufferPointer(rebasing: bytes[used...])
            if !headComplete && sniff.count < 64 { sniff.append(contentsOf: chunk.prefix(64 - sniff.count)) }
            switch parser.execute(chunk) {
            case .needMore:
                used = bytes.count
                if !headComplete && phase == .idle {
                    phase = .readingHead
                    setDeadline(worker.config.headerTimeout)
                } else if phase == .drainingBody || phase == .readingBody {
                    setDeadline(worker.config.bodyTimeout)
                }
            case .messageEnded(let consumed):
                used += consumed
                messageComplete = true
                if phase == .drainingBody { becomeIdle() }
                if phase == .readingBody { phase = .responding; setDeadline(worker.config.sendTimeout) }
            case .failed(let error, _):
                parseFailed(error)
                used = bytes.count
            }
            if responseReady && phase != .responding && phase != .plugin && phase != .readingBody {
                if messageComplete || closeAfterResponse {
                    phase = .responding
                    setDeadline(worker.config.sendTimeout)
                } else {
                    phase = .readingBody
                    setDeadline(worker.config.bodyTimeout)
                }
            }
        }
        return used
    }

    private func beginMessage() {
        request.reset()
        headComplete = false
        messageComplete = false
        refusal = nil
        requestLogged = false
        closeAfterResponse = false
        bodyBytesReceived = 0
        sniff.removeAll(keepingCapacity: true)
    }

    private func becomeIdle() {
        phase = .idle
        setInterest(.readable)
        setDeadline(worker.config.keepAliveTimeout)
    }

    /// Sends what can be sent, then serves any pipelined requests already received.
    func drive() {
        while isOpen {
            if phase == .responding || phase == .plugin {
                let before = phase
                flush()
                if phase == before || !isOpen { return }
            }
            guard phase == .idle || phase == .drainingBody || phase == .readingBody, pendingStart < pending.count else { break }
            let used = pending.withUnsafeBytes { consume(UnsafeRawBufferPointer(rebasing: $0[pendingStart...])) }
            pendingStart += used
            if pendingStart >= pending.count {
                pending.removeAll(keepingCapacity: true)
                pendingStart = 0
            }
        }
        // Input that arrived while we were busy is still in the socket; level-triggered epoll
        // reports it now that we read again.
    }

    /// Decodes and normalizes the target into `path` (once per request); the failure status if
    /// it cannot be served.
    func resolvePath() -> HTTPStatus? {
        if !pathResolved {
            pathFailure = DocumentRoot.resolve(target: request.storage[request.target], into: &path)
            pathResolved = true
        }
        return pathFailure
    }

    // MARK: parser callbacks

    func parserMessageBegin() -> Int32 { 0 }

    func parserTarget(_ bytes: UnsafeRawBufferPointer) -> Int32 {
        request.appendTarget(bytes)
        if request.target.count > worker.config.maxRequestLine {
            refusal = .uriTooLong
            return 1
        }
        return 0
    }

    func parserHeaderName(_ bytes: UnsafeRawBufferPointer) -> Int32 {
        request.appendHeaderName(bytes)
        return checkHeaderLimits()
    }

    func parserHeaderValue(_ bytes: UnsafeRawBufferPointer) -> Int32 {
        request.appendHeaderValue(bytes)
        return checkHeaderLimits()
    }

    private func checkHeaderLimits() -> Int32 {
        if request.headerBytes - request.target.count > worker.config.maxHeaderBytes
            || request.headers.count > worker.config.maxHeaderCount {
            refusal = .requestHeaderFieldsTooLarge
            return 1
        }
        return 0
    }

    func parserHeadersComplete() -> Int32 {
        headComplete = true
        request.finishHeaders()
        request.method = parser.method
        request.versionMajor = parser.versionMajor
        request.versionMinor = parser.versionMinor
        request.keepAlive = parser.shouldKeepAlive
        let length = parser.contentLength
        request.contentLength = length == UInt64.max ? -1 : Int64(clamping: length)
        request.hasBody = parser.isChunked || (length != UInt64.max && length > 0)
        requestStartNanos = Sys.monotonicNanos()
        pathResolved = false
        if parser.wantsUpgrade { closeAfterResponse = true }
        respond()
        return 0
    }

    func parserBody(_ bytes: UnsafeRawBufferPointer) -> Int32 {
        bodyBytesReceived += bytes.count
        // Past the body limit the connection is not worth keeping.
        if bodyBytesReceived > worker.config.maxBodyBytes {
            closeAfterResponse = true
            refusal = .contentTooLarge
            return 1
        }
        // Bodies of requests answered from files are read and dropped; plugins get theirs.
        if plugin.route != nil { pluginBody(bytes) }
        return 0
    }

    func parserMessageComplete() -> Int32 {
        messageComplete = true
        if plugin.route != nil { pluginMessageComplete() }
        return 0
    }

    // MARK: malformed input

    private func parseFailed(_ error: http_errno) {
        if headComplete {
            // The head was answered (or is being answered); the rest of this request is broken
            // or too large, so the connection ends with that response.
            worker.logger.info("bad request body", metadata: ["peer": "\(peerDescription)", "error": "\(String(cString: http_errno_name(error)))"])
            if responseReady && phase != .responding && phase != .plugin {
                // Nothing sent yet: the body's fault replaces the prepared answer.
                respondWithError(refusal ?? .badRequest, close: true)
                phase = .responding
                setDeadline(worker.config.sendTimeout)
            } else if responseReady {
                willClose = true
            } else {
                close()
            }
            return
        }
        let status: HTTPStatus
        if let refusal {
            status = refusal
        } else if error == HPE_INVALID_METHOD {
            phase = .sniffingMethod
            setDeadline(worker.config.headerTimeout)
            sniffMethod(UnsafeRawBufferPointer(start: nil, count: 0))
            return
        } else if error == HPE_HEADER_OVERFLOW {
            status = headComplete ? .badRequest : (request.headers.isEmpty ? .uriTooLong : .requestHeaderFieldsTooLarge)
        } else {
            status = .badRequest
        }
        if refusal == nil { refusal = status }
        worker.logger.info("bad request", metadata: ["peer": "\(peerDescription)", "status": "\(status.rawValue)", "error": "\(String(cString: http_errno_name(error)))"])
        respondWithError(status, close: true)
        phase = .responding
        setDeadline(worker.config.sendTimeout)
    }

    /// http-parser knows a fixed list of methods. An unknown one is still a well-formed request
    /// (RFC 9110 §9.1: answer 501) if it is a token followed by a space; anything else is a 400.
    private func sniffMethod(_ more: UnsafeRawBufferPointer) {
        if sniff.count < 64 { sniff.append(contentsOf: more.prefix(64 - sniff.count)) }
        var i = 0
        while i < sniff.count && (sniff[i] == 13 || sniff[i] == 10) { i += 1 }
        let start = i
        while i < sniff.count && ASCII.isTokenChar(sniff[i]) { i += 1 }
        let verdict: HTTPStatus
        if i == sniff.count {
            if sniff.count < 64 { return }  // need more bytes
            verdict = .badRequest
        } else {
            verdict = (sniff[i] == 32 && i > start) ? .notImplemented : .badRequest
        }
        refusal = verdict
        worker.logger.info("unrecognised request", metadata: ["peer": "\(peerDescription)", "status": "\(verdict.rawValue)"])
        respondWithError(verdict, close: true)
        phase = .responding
        setDeadline(worker.config.sendTimeout)
        drive()
    }

    // MARK: sending

    enum Progress { case done, blocked, waiting, failed }

    /// Sends head, then body, as far as the socket takes them.
    private func flush() {
        let progress: Progress
        if phase == .plugin {
            progress = pluginFlush()
        } else {
            switch sendOut(more: bodyKind != .none) {
            case .done:
                switch bodyKind {
                case .none: progress = .done
                case .memory: progress = pumpMemory()
                case .sendfile: progress = pumpFile()
                case .aio: progress = pumpAIO()
                }
            case let other:
                progress = other
            }
        }
        guard isOpen else { return }
        // While a plugin request's body is still arriving, keep reading it; once it is in, watch
        // only for the peer hanging up.
        let input: Epoll.Interest = phase == .plugin ? (messageComplete ? .peerClosed : .readable) : []
        switch progress {
        case .done:
            finishResponse()
        case .blocked:
            setInterest(input.union(.writable))
            setDeadline(worker.config.sendTimeout)
        case .waiting:
            setInterest(input)
            if phase == .plugin && bodyKind == .none {
                // Waiting for the plugin: no deadline once the request is in (a stream may be
                // quiet for long); the body timeout while it is still arriving.
                if messageComplete { deadline = .max } else { setDeadline(worker.config.bodyTimeout) }
            }
        case .failed:
            close()
        }
    }

    /// Sends the buffered head (and any small body or chunk framing in it).
    func sendOut(more: Bool) -> Progress {
        while outSent < out.count {
            let sent: Int?
            do {
                sent = try out.withUnsafeBytes { try transport.send($0.baseAddress! + outSent, $0.count - outSent, more: more) }
            } catch {
                return .failed
            }
            guard let sent else { return .blocked }
            outSent += sent
            bytesSent += sent
            setDeadline(worker.config.sendTimeout)
        }
        out.removeAll(keepingCapacity: true)
        outSent = 0
        return .done
    }

    /// A memory body, from `memoryBody`.
    func pumpMemory() -> Progress {
        guard let base = memoryBody else { return .done }
        while bodyOffset < bodyEnd {
            do {
                guard let n = try transport.send(base + bodyOffset, bodyEnd - bodyOffset) else { return .blocked }
                bodyOffset += n
                bytesSent += n
                setDeadline(worker.config.sendTimeout)
            } catch {
                return .failed
            }
        }
        return .done
    }

    /// sendfile(2) from the open file until the range is sent or the socket is full.
    func pumpFile() -> Progress {
        while bodyOffset < bodyEnd {
            do {
                guard let n = try transport.sendFile(bodyFD, offset: &bodyOffset, count: min(bodyEnd - bodyOffset, 1 << 30)) else { return .blocked }
                if n == 0 { return .failed }  // the file shrank under us
                bytesSent += n
                setDeadline(worker.config.sendTimeout)
            } catch {
                return .failed
            }
        }
        return .done
    }

    private func finishResponse() {
        logAccess()
        releaseBody()
        if plugin.route != nil {
            endPluginRequest()
            phase = .responding
        }
        requestsServed += 1
        responseReady = false
        if willClose || !isOpen || worker.isShuttingDown {
            closeGracefully()
            return
        }
        if !messageComplete {
            phase = .drainingBody
            setInterest(.readable)
            setDeadline(worker.config.bodyTimeout)
            return
        }
        becomeIdle()
    }

    func releaseBody() {
        if bodyKind == .aio {
            for slot in aioSlots { worker.aio.release(slot) }
            aioSlots.removeAll(keepingCapacity: true)
        }
        if bodyFD >= 0 {
            if bodyFDOwned { Sys.close(bodyFD) }
            bodyFD = -1
            bodyFDOwned = true
        }
        if let entry = bodyCacheEntry {
            worker.fileCache.release(entry)
            bodyCacheEntry = nil
        }
        memoryBody = nil
        bodyKind = .none
    }

    // MARK: building responses

    var isHead: Bool { request.method == HTTP_HEAD }

    /// Starts a response: status line, Date, Server.
    func beginResponse(_ status: HTTPStatus) {
        self.status = status
        statusCode = status.rawValue
        out.removeAll(keepingCapacity: true)
        outSent = 0
        bytesSent = 0
        out.append(contentsOf: StatusTable.shared.statusLine(status))
        out.append(ascii: "Date: ")
        out.append(contentsOf: worker.date.bytes)
        out.append(ascii: "\r\nServer: aws/")
        out.append(ascii: "0.1.0")
        out.append(ascii: "\r\n")
    }

    func addHeader(_ name: StaticString, _ value: some Collection<UInt8>) {
        out.append(ascii: name)
        out.append(ascii: ": ")
        out.append(contentsOf: value)
        out.append(ascii: "\r\n")
    }

    func addHeader(_ name: StaticString, ascii value: StaticString) {
        out.append(ascii: name)
        out.append(ascii: ": ")
        out.append(ascii: value)
        out.append(ascii: "\r\n")
    }

    func addHeader(_ name: StaticString, decimal value: Int) {
        out.append(ascii: name)
        out.append(ascii: ": ")
        out.append(decimal: value)
        out.append(ascii: "\r\n")
    }

    /// Ends the head with the Connection header the close decision calls for.
    func endHead() {
        willClose = closeAfterResponse || !request.keepAlive || worker.isShuttingDown
            || requestsServed + 1 >= worker.config.maxRequestsPerConnection
        if willClose {
            out.append(ascii: "Connection: close\r\n")
        } else if request.versionMinor == 0 {
            out.append(ascii: "Connection: keep-alive\r\n")
        }
        out.append(ascii: "\r\n")
        responseReady = true
    }

    /// A complete error response with its short HTML page.
    func respondWithError(_ status: HTTPStatus, close: Bool = false, allow: String? = nil) {
        if phase != .plugin { releaseBody() }
        if close { closeAfterResponse = true }
        beginResponse(status)
        let page = StatusTable.shared.errorPage(status)
        switch status {
        case .methodNotAllowed:
            if let allow { addHeader("Allow", allow.utf8) } else { addHeader("Allow", ascii: "GET, HEAD, OPTIONS") }
        case .serviceUnavailable: addHeader("Retry-After", ascii: "1")
        default: break
        }
        endHead(body: page, type: "text/html; charset=utf-8")
    }

    /// Ends the head of a response whose whole body is `body`, and appends the body (unless the
    /// request was a HEAD, which gets the same headers and no body).
    func endHead(body: [UInt8], type: StaticString) {
        addHeader("Content-Type", ascii: type)
        addHeader("Content-Length", decimal: body.count)
        endHead()
        if !isHead || !headComplete { out.append(contentsOf: body) }
        bodyKind = .none
    }

    // MARK: logging

    /// "a.b.c.d:port" or "[v6]:port", for log metadata.
    var peerDescription: String {
        var bytes: [UInt8] = []
        appendPeer(to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// One line per request through swift-log's `aws.access` logger, at info:
    /// `<client> "<method> <target> HTTP/1.x" <status> <bytes sent> <duration>ms`.
    private func logAccess() {
        requestLogged = true
        guard let logger = worker.accessLogger else { return }
        var line = logLine
        line.removeAll(keepingCapacity: true)
        appendPeer(to: &line)
        line.append(ascii: " \"")
        if headComplete {
            line.append(contentsOf: UnsafeRawBufferPointer(start: http_method_str(request.method), count: strlen(http_method_str(request.method))))
            line.append(32)
            line.append(contentsOf: request.storage[request.target].prefix(1024))
            line.append(ascii: " HTTP/1.")
            line.append(decimal: Int(request.versionMinor))
        } else {
            line.append(ascii: "-")
        }
        line.append(ascii: "\" ")
        line.append(decimal: statusCode)
        line.append(32)
        line.append(decimal: bytesSent + (out.count - outSent))
        line.append(32)
        let micros = headComplete ? Int((Sys.monotonicNanos() &- requestStartNanos) / 1000) : 0
        line.append(decimal: micros / 1000)
        line.append(46)
        let frac = micros % 1000
        if frac < 100 { line.append(48) }
        if frac < 10 { line.append(48) }
        line.append(decimal: frac)
        line.append(ascii: "ms")
        logger.info("\(String(decoding: line, as: UTF8.self))")
        logLine = line
    }

    /// The client's address as "a.b.c.d:port" or "[v6]:port"; IPv4 without going through String.
    func appendPeer(to out: inout [UInt8]) {
        if peer.ss_family == sa_family_t(AF_INET6) {
            let (address, port) = withUnsafeBytes(of: peer) { raw in
                var sin6 = raw.load(as: sockaddr_in6.self)
                var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
                inet_ntop(AF_INET6, &sin6.sin6_addr, &text, socklen_t(text.count))
                return (text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, Int(UInt16(bigEndian: sin6.sin6_port)))
            }
            out.append(91); out.append(contentsOf: address); out.append(ascii: "]:")
            out.append(decimal: port)
            return
        }
        let (a, port) = withUnsafeBytes(of: peer) { raw in
            let sin = raw.load(as: sockaddr_in.self)
            return (UInt32(bigEndian: sin.sin_addr.s_addr), Int(UInt16(bigEndian: sin.sin_port)))
        }
        out.append(decimal: Int(a >> 24)); out.append(46)
        out.append(decimal: Int((a >> 16) & 255)); out.append(46)
        out.append(decimal: Int((a >> 8) & 255)); out.append(46)
        out.append(decimal: Int(a & 255)); out.append(58)
        out.append(decimal: port)
    }
}
