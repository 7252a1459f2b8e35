import AWSParsing
import CHTTPParser
import Glibc

/// One request and its response on a connection: the decoder, the request head, the response
/// being sent and, when a plugin answers, the plugin's side of it. Exchanges are pooled per
/// worker and attached to a connection only while it has a request in progress, so their
/// buffers (head storage, output, pipelined input) are allocated once and shared over time by
/// many connections.
///
/// Life of a request: bytes arrive (`received`) → the decoder reports the head → `respond()`
/// (Router) picks plugin or file and prepares the head and a body producer → `drive()` sends
/// through the pump → `finishResponse()` logs, then goes on with pipelined bytes or hands the
/// connection back to idle.
final class Exchange {
    enum Phase {
        /// Ready for a request's first byte (pipelined input may be waiting in `pending`).
        case ready
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
        /// A handler — a plugin or a CGI program — owns the request: its body is read while the
        /// handler's response is sent.
        case handler
    }

    unowned(unsafe) let worker: Worker
    /// This exchange's index in its worker: plugin request handles name it.
    let slot: Int
    /// The connection served now; only valid while `isAttached`.
    unowned(unsafe) private(set) var connection: Connection!
    private(set) var isAttached = false
    /// Changes on every attach and detach: the AIO engine and plugin handles check it.
    private(set) var generation: UInt32 = 0
    var phase: Phase = .ready

    // Input
    let decoder = HTTP1Decoder()
    /// The request's head, which the decoder fills.
    var request = RequestHead()
    var path = TargetPath()
    /// The index.html of a directory target, looked up in the open-file cache by that name.
    var indexPath = TargetPath()
    /// A precompressed variant's path (FILE.br ...), looked up in the open-file cache by that name.
    var variantPath = TargetPath()
    private var pending: [UInt8] = []
    private var pendingStart = 0
    private(set) var headComplete = false
    /// The target's path, decoded once per request (`resolvePath`).
    private var pathResolved = false
    private var pathFailure: HTTPStatus?
    private(set) var messageComplete = true
    /// The status that answers a request refused before its handler ran (a limit, malformed bytes).
    private var refusal: HTTPStatus?
    private var sniff: [UInt8] = []
    private var bodyBytesReceived = 0
    /// The request's bytes stopped making sense (or broke a limit) after this error: whatever
    /// else arrives for it is discarded, the response already chosen ends the connection.
    private var brokenBy: http_errno?

    // Output
    // Created with the exchange and bound to it at the end of `init`: `let`s, not lazy vars, so
    // that the many reads of them per request cost no optional check, retain and release each.
    let pump = BodyPump()
    let sendfileBody: SendfileBody
    let aioBody: AIOBody
    let memoryBody = MemoryBody()
    var plugin = PluginExchange()
    /// The CGI program serving this request, when one does.
    var cgi = CGIExchange()
    let cgiBody = CGIBody()
    /// The virtual host answering the request, chosen by `respond`; the connection's site table
    /// keeps it alive (unowned: no reference counting per request).
    unowned(unsafe) var site: Site
    /// The site's settings for the request's path (extra headers, Cache-Control, autoindex).
    unowned(unsafe) var pathRule: PathRule?
    /// The status code as sent (plugins may send codes `HTTPStatus` does not name).
    var statusCode = 200
    /// The head (and any body bytes in `pump.out`) is prepared.
    private var responseReady = false
    var closeAfterResponse = false
    private var willClose = false
    private var requestStartNanos: UInt64 = 0
    /// Local redirects of CGI programs followed for this request (at most 10).
    var internalRedirects = 0
    /// The current request has its access-log line (so a close does not log it twice).
    private var requestLogged = false
    /// Bytes of `pump.out` up to the end of the response head (0 until `endHead`): the
    /// access log counts body bytes only, like Apache's `%b`.
    private var responseHeadBytes = 0
    /// The client a trusted proxy's X-Forwarded-For / Forwarded names for this request.
    private var forwardedClient: PeerAddress?

    init(worker: Worker, slot: Int) {
        self.worker = worker
        self.slot = slot
        site = worker.sites.fallback
        sendfileBody = SendfileBody(worker: worker)
        aioBody = AIOBody(engine: worker.aio)
        pending.reserveCapacity(4096)
        pump.bind(to: self)
        aioBody.bind(to: self)
        cgiBody.bind(to: self)
    }

    // MARK: life cycle (called by the connection and the worker)

    func attach(to connection: Connection) {
        self.connection = connection
        // The site of another connection (maybe of a table since freed) must not be read.
        site = connection.sites.fallback
        pathRule = nil
        isAttached = true
        generation &+= 1
        decoder.reset(limits: worker.config.headLimits)
        phase = .ready
        responseReady = false
        willClose = false
        closeAfterResponse = false
        headComplete = false
        messageComplete = true
        refusal = nil
        brokenBy = nil
        forwardedClient = nil
        pending.removeAll(keepingCapacity: true)
        pendingStart = 0
        pump.release()
        pump.clear()
        pump.plainSocket = connection.transport.isTLS ? -1 : connection.fd
    }

    func detach() {
        isAttached = false
        connection = nil
        pump.plainSocket = -1
        generation &+= 1
    }

    /// Frees the buffers an exchange grew (the pool keeps only a few exchanges warm). `pending`
    /// stays: a close can return the exchange while `drive` still reads it. The plugin handle
    /// generation stays too, so a handle of an earlier request on this slot never comes back.
    func shrink() {
        sniff = []
        request = RequestHead()
        pump.out = []
        cgiBody.freeBuffer()
        free(plugin.copyBuffer)
        plugin.viewHeaders?.deallocate()
        let generation = plugin.generation
        plugin = PluginExchange()
        plugin.generation = generation
    }

    /// The connection is closing under this exchange: one log line for a request cut short,
    /// the plugin told, the body's resources given back.
    func connectionClosing() {
        if headComplete && !requestLogged { logAccess() }
        if plugin.route != nil {
            endPluginRequest(aborted: !((plugin.response == .complete || plugin.response == .failed(from: .complete))
                                         && !pump.outPending && !pump.hasBody))
        }
        if cgi.isActive { endCGIRequest(abandon: true) }
        pump.release()
    }

    /// Nothing unread that a close would turn into a reset.
    var inputIsClean: Bool {
        pendingStart >= pending.count && messageComplete && refusal == nil && phase != .sniffingMethod
    }

    func deadlineExpired() {
        let peer = connection.peerDescription
        switch phase {
        case .readingHead, .sniffingMethod, .readingBody:
            worker.logger.info(phase == .readingBody ? "request body timed out" : "request head timed out", metadata: ["peer": "\(peer)"])
            respondWithError(.requestTimeout, close: true)
            phase = .responding
            drive()
        case .drainingBody:
            worker.logger.info("request body timed out", metadata: ["peer": "\(peer)"])
            connection.close()
        case .responding:
            worker.logger.info("send stalled, closing", metadata: ["peer": "\(peer)"])
            connection.close()
        case .handler:
            if cgi.isActive {
                cgiDeadlineExpired()
            } else {
                worker.logger.info("plugin request timed out (body or send stalled), closing", metadata: ["peer": "\(peer)"])
                connection.close()
            }
        case .ready:
            connection.close()
        }
    }

    // MARK: events

    func handleEvents(_ events: Epoll.Interest) {
        let connection = self.connection!
        if phase == .handler {
            if events.contains(.writable) { drive() }
            if connection.isOpen && isAttached && phase == .handler
                && (events.contains(.readable) || !events.isDisjoint(with: [.error, .hangup, .peerClosed])) {
                // Once the body is in, only the peer's close is watched: a plugin response may be
                // idle for long (a stream, a long poll) and must learn at once that its client
                // left. Like nginx for proxied requests, a half-close counts as leaving.
                if messageComplete { connection.close(); return }
                connection.readAvailable()
            }
            if connection.isOpen && !(isAttached && phase == .handler) { connection.readAvailable() }
            return
        }
        if phase == .responding {
            if events.contains(.writable) || !events.isDisjoint(with: [.error, .hangup]) { drive() }
            if connection.isOpen && isAttached && !events.isDisjoint(with: [.error, .hangup]) && phase == .responding {
                connection.close()
            }
            return
        }
        connection.readAvailable()
    }

    /// A response is going out: writable interest is the pump's.
    var isSending: Bool { phase == .responding || phase == .handler }

    var wantsInput: Bool {
        switch phase {
        case .responding: false
        case .handler: !messageComplete && !cgi.inputIsFull
        default: true
        }
    }

    func endOfInput() {
        switch phase {
        case .responding:
            break  // finish the response; the close follows it
        case .readingHead:
            // A client that half-closes after an incomplete head will never complete it.
            if refusal == nil { worker.logger.debug("client closed mid-request") }
            connection.close()
        default:
            connection.close()
        }
    }

    /// Bytes from the socket: decoded as far as the current request lets them go; the rest
    /// (a pipelined request) is kept for later.
    func received(_ bytes: UnsafeRawBufferPointer) {
        let used = consume(bytes)
        if used < bytes.count && isAttached { pending.append(contentsOf: bytes[used...]) }
        drive()
    }

    // MARK: decoding

    /// Feeds bytes to the decoder until a response is ready; returns how many were used.
    private func consume(_ bytes: UnsafeRawBufferPointer) -> Int {
        guard isAttached, let connection = self.connection else { return 0 }
        let worker = self.worker
        var used = 0
        while used < bytes.count && isAttached {
            switch phase {
            case .responding:
                return used
            case .handler:
                if messageComplete { return used }
            case .sniffingMethod:
                sniffMethod(UnsafeRawBufferPointer(rebasing: bytes[used...]))
                return bytes.count
            case .ready, .readingHead, .readingBody, .drainingBody:
                break
            }
            if let error = brokenBy {
                decodingFailed(error)
                return bytes.count
            }
            if messageComplete { beginMessage() }
            let chunk = UnsafeRawBufferPointer(rebasing: bytes[used...])
            // Rebased: a slice of a raw buffer would be appended byte by byte, not copied.
            if !headComplete && sniff.count < 64 { sniff.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk.prefix(64 - sniff.count))) }
            switch decoder.decode(chunk, into: &request) {
            case .needMore:
                used = bytes.count
                if !headComplete && phase == .ready {
                    phase = .readingHead
                    connection.setDeadline(worker.config.headerTimeout)
                } else if phase == .drainingBody || phase == .readingBody {
                    connection.setDeadline(worker.config.bodyTimeout)
                }
            case .headComplete(let consumed):
                used += consumed
                headCompleted()
            case .body(let body, let consumed):
                used += consumed
                bodyReceived(body)
            case .messageComplete(let consumed):
                used += consumed
                messageComplete = true
                if plugin.route != nil { pluginMessageComplete() } else if cgi.isActive { cgiMessageComplete() }
                if phase == .drainingBody { phase = .ready }
                if phase == .readingBody { startResponding() }
            case .failed(let error, let limit):
                if let limit { refusal = limit }
                decodingFailed(error)
                used = bytes.count
            }
            guard isAttached else { return used }
            if responseReady && phase != .responding && phase != .handler && phase != .readingBody {
                // A response that closes without reading the body starts now; otherwise the
                // message is read to its end first (for a bodiless request: the head's last LF,
                // which the head-complete pause leaves unconsumed), so no unread byte turns the
                // close into a lingering one.
                if messageComplete || (closeAfterResponse && request.hasBody) {
                    startResponding()
                } else {
                    phase = .readingBody
                    connection.setDeadline(worker.config.bodyTimeout)
                }
            }
        }
        return used
    }

    private func startResponding() {
        phase = .responding
        connection.setDeadline(worker.config.sendTimeout)
    }

    private func beginMessage() {
        request.reset()
        headComplete = false
        messageComplete = false
        refusal = nil
        requestLogged = false
        closeAfterResponse = false
        // Until `respond` chooses: a request refused before its head is the default site's.
        site = connection.sites.fallback
        pathRule = nil
        internalRedirects = 0
        bodyBytesReceived = 0
        forwardedClient = nil
        sniff.removeAll(keepingCapacity: true)
    }

    private func headCompleted() {
        headComplete = true
        request.method = decoder.method
        request.versionMajor = decoder.versionMajor
        request.versionMinor = decoder.versionMinor
        request.keepAlive = decoder.shouldKeepAlive
        let length = decoder.contentLength
        request.contentLength = length == UInt64.max ? -1 : Int64(clamping: length)
        request.hasBody = decoder.isChunked || (length != UInt64.max && length > 0)
        requestStartNanos = Sys.monotonicNanos()
        pathResolved = false
        let trusted = worker.config.trustedProxies
        if !trusted.isEmpty {
            // A closure literal: a partial application of Config's method would box a copy of
            // the whole Config on every request.
            forwardedClient = ForwardedClient.resolve(request, peer: connection.client.ip) { address in
                trusted.contains { $0.contains(address) }
            }.map(PeerAddress.init)
        }
        if decoder.wantsUpgrade { closeAfterResponse = true }
        respond()
    }

    private func bodyReceived(_ bytes: UnsafeRawBufferPointer) {
        bodyBytesReceived += bytes.count
        // Past the body limit the connection is not worth keeping.
        if bodyBytesReceived > worker.config.maxBodyBytes {
            closeAfterResponse = true
            refusal = .contentTooLarge
            decodingFailed(HPE_CB_body)
            return
        }
        // Bodies of requests answered from files are read and dropped; plugins and CGI programs
        // get theirs.
        if plugin.route != nil { pluginBody(bytes) } else if cgi.isActive { cgiRequestBody(bytes) }
    }

    /// The target changed (an internal redirect): decode it again.
    func resetPath() { pathResolved = false }

    /// This response ends the connection whatever its head said (a body that cannot be framed).
    func closeWhenDone() { willClose = true }

    /// Decodes and normalizes the target into `path` (once per request); the failure status if
    /// it cannot be served.
    func resolvePath() -> HTTPStatus? {
        if !pathResolved {
            pathFailure = TargetPath.resolve(target: request.storage[request.target], into: &path)
            pathResolved = true
        }
        return pathFailure
    }

    // MARK: malformed input

    private func decodingFailed(_ error: http_errno) {
        brokenBy = error
        let peer = connection.peerDescription
        if headComplete {
            // The head was answered (or is being answered); the rest of this request is broken
            // or too large, so the connection ends with that response.
            worker.logger.info("bad request body", metadata: ["peer": "\(peer)", "error": "\(String(cString: http_errno_name(error)))"])
            if cgi.isActive && !cgi.headSent {
                // The program has not answered: the body's fault is the answer, the program ends.
                endCGIRequest(abandon: true)
                respondWithError(refusal ?? .badRequest, close: true)
                startResponding()
            } else if plugin.route != nil && !plugin.response.headRendered {
                // Likewise when the plugin's head has not gone out: the plugin is told the request
                // is over (on_abort, then on_end, if on_request ran) and the body's fault answers.
                endPluginRequest(aborted: true)
                respondWithError(refusal ?? .badRequest, close: true)
                startResponding()
            } else if plugin.route != nil && !plugin.response.finishCalled {
                // The plugin's head is out and it has not finished: it may be waiting for the rest
                // of the body, which will never come, so its response cannot end. The close tells
                // it (on_abort, on_end).
                connection.close()
            } else if responseReady && phase != .responding && phase != .handler {
                // Nothing sent yet: the body's fault replaces the prepared answer.
                respondWithError(refusal ?? .badRequest, close: true)
                startResponding()
            } else if responseReady {
                willClose = true
            } else {
                connection.close()
            }
            return
        }
        let status: HTTPStatus
        if let refusal {
            status = refusal
        } else if error == HPE_INVALID_METHOD {
            phase = .sniffingMethod
            connection.setDeadline(worker.config.headerTimeout)
            sniffMethod(UnsafeRawBufferPointer(start: nil, count: 0))
            return
        } else {
            status = .badRequest
        }
        if refusal == nil { refusal = status }
        worker.logger.info("bad request", metadata: ["peer": "\(peer)", "status": "\(status.rawValue)", "error": "\(String(cString: http_errno_name(error)))"])
        respondWithError(status, close: true)
        startResponding()
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
        worker.logger.info("unrecognised request", metadata: ["peer": "\(connection.peerDescription)", "status": "\(verdict.rawValue)"])
        respondWithError(verdict, close: true)
        startResponding()
        drive()
    }

    // MARK: sending

    /// Sends what can be sent, then serves any pipelined requests already received.
    func drive() {
        guard isAttached, let connection = self.connection else { return }
        while isAttached && connection.isOpen {
            if phase == .responding || phase == .handler {
                let before = phase
                flush()
                if !isAttached || phase == before || !connection.isOpen { return }
            }
            guard phase == .ready || phase == .drainingBody || phase == .readingBody, pendingStart < pending.count else { break }
            let used = pending.withUnsafeBytes { consume(UnsafeRawBufferPointer(rebasing: $0[pendingStart...])) }
            guard isAttached else { return }
            pendingStart += used
            if pendingStart >= pending.count {
                pending.removeAll(keepingCapacity: true)
                pendingStart = 0
            }
        }
        // Everything received is answered and nothing is half-read: the connection goes idle and
        // the exchange back to the pool. Input that arrived while we were busy is still in the
        // socket; level-triggered epoll reports it now that we read again.
        if isAttached && phase == .ready && pendingStart >= pending.count && connection.isOpen {
            connection.becomeIdle()
        }
    }

    /// Sends head, then body, as far as the socket takes them.
    private func flush() {
        let worker = self.worker
        let sentBefore = pump.sentTotal
        let progress = phase != .handler ? pump.run() : cgi.isActive ? cgiFlush() : pluginFlush()
        let sent = pump.sentTotal &- sentBefore
        if sent > 0 { worker.metrics.bytesSent.add(sent) }
        guard isAttached, let connection = self.connection, connection.isOpen else { return }
        // Progress pushes the send deadline out (a finished response gets the keep-alive one;
        // a CGI response waiting for its program has the CGI timeout, which cgiFlush set).
        if sent > 0 && progress != .done && !cgi.isActive { connection.setDeadline(worker.config.sendTimeout) }
        // While a handler's request body is still arriving, keep reading it (unless a CGI
        // program's input is full: backpressure); once it is in, watch only for the peer hanging up.
        let input: Epoll.Interest = phase != .handler ? [] : messageComplete ? .peerClosed : cgi.inputIsFull ? [] : .readable
        switch progress {
        case .done:
            finishResponse()
        case .blocked:
            connection.setInterest(input.union(.writable))
            guard isAttached else { return }  // epoll_ctl failed: the connection is closed
            connection.setDeadline(worker.config.sendTimeout)
        case .waiting:
            // A page-cache read queued for the end of this loop pass comes back before the next
            // wait: leave the interest as it is (two epoll_ctl per request otherwise).
            if pump.producer === aioBody && aioBody.waitsForQueuedRead { return }
            connection.setInterest(input)
            guard isAttached else { return }
            if phase == .handler && !pump.hasBody && !cgi.isActive {
                // Waiting for the plugin: no deadline once the request is in (a stream may be
                // quiet for long); the body timeout while it is still arriving.
                if messageComplete { connection.clearDeadline() } else { connection.setDeadline(worker.config.bodyTimeout) }
            }
        case .failed:
            connection.close()
        }
    }

    private func finishResponse() {
        // Bound once: every read of an unowned(unsafe) property costs a retain and a release.
        let connection = self.connection!
        let worker = self.worker
        logAccess()
        pump.release()
        if plugin.route != nil {
            endPluginRequest()
            phase = .responding
        }
        if cgi.isActive {
            endCGIRequest(abandon: false)
            phase = .responding
        }
        connection.requestsServed += 1
        responseReady = false
        if willClose || !connection.isOpen || worker.isShuttingDown {
            connection.closeGracefully()
            return
        }
        if !messageComplete {
            phase = .drainingBody
            connection.setInterest(.readable)
            if isAttached { connection.setDeadline(worker.config.bodyTimeout) }
            connection.inputResumed()
            return
        }
        // `drive` goes on with pipelined input, or makes the connection idle.
        phase = .ready
        connection.setInterest(.readable)
        if isAttached { connection.setDeadline(worker.config.keepAliveTimeout) }
        connection.inputResumed()
    }

    // MARK: building responses

    var isHead: Bool { request.method == HTTP_HEAD }
    var peerDescription: String { connection.peerDescription }

    /// Who sent the request: the connection's peer, unless a PROXY header or a trusted proxy's
    /// forwarding header says otherwise. The access log, plugins (`remote_addr`) and CGI
    /// (`REMOTE_ADDR`) all take it from here.
    var client: PeerAddress { forwardedClient ?? connection.client }

    /// Starts a response: status line, Date, Server.
    func beginResponse(_ status: HTTPStatus) { beginResponse(code: status.rawValue) }

    func beginResponse(code: Int) {
        let worker = self.worker
        statusCode = code
        pump.reset()
        responseHeadBytes = 0
        if code == 200 && (worker.hstsField == nil || !connection.transport.isTLS) {
            pump.out.append(contentsOf: worker.okHeadStart)
            return
        }
        ResponseHead.begin(&pump.out, code: code, date: worker.date)
        // RFC 6797 §7.2: only over a secure transport.
        if let hsts = worker.hstsField, connection.transport.isTLS { pump.out.append(contentsOf: hsts) }
        // nosniff and --header: on every response, errors too (a CSP matters most on pages an
        // attacker can make the server produce).
        pump.out.append(contentsOf: worker.config.headerSettings.siteFields)
    }

    func addHeader(_ name: StaticString, _ value: some Collection<UInt8>) { ResponseHead.field(&pump.out, name, value) }
    func addHeader(_ name: StaticString, ascii value: StaticString) { ResponseHead.field(&pump.out, name, ascii: value) }
    func addHeader(_ name: StaticString, decimal value: Int) { ResponseHead.field(&pump.out, name, decimal: value) }

    /// Ends the head with the Connection header the close decision calls for.
    func endHead() {
        let worker = self.worker
        willClose = closeAfterResponse || !request.keepAlive || worker.isShuttingDown
            || connection.requestsServed + 1 >= worker.config.maxRequestsPerConnection
        // The site's fields for this path, on responses that are not errors (nginx's add_header).
        if let rule = pathRule, statusCode < 400 { pump.out.append(contentsOf: rule.fields) }
        ResponseHead.end(&pump.out, closing: willClose, http10: request.versionMinor == 0)
        pump.closesConnection = willClose
        responseHeadBytes = pump.out.count
        responseReady = true
    }

    /// A complete error response with its short HTML page.
    /// `varyEncoding`: the answer depended on Accept-Encoding (a negotiated file's 412).
    func respondWithError(_ status: HTTPStatus, close: Bool = false, allow: String? = nil, varyEncoding: Bool = false) {
        // A plugin's queued part is given back by the plugin code, with its release callback.
        if phase != .handler { pump.release() }
        if close { closeAfterResponse = true }
        beginResponse(status)
        let page = StatusTable.shared.errorPage(status)
        switch status {
        case .methodNotAllowed:
            if let allow { addHeader("Allow", allow.utf8) } else { addHeader("Allow", ascii: "GET, HEAD, OPTIONS") }
        case .serviceUnavailable: addHeader("Retry-After", ascii: "1")
        default: break
        }
        if varyEncoding { addHeader("Vary", ascii: "Accept-Encoding") }
        endHead(body: page, type: "text/html; charset=utf-8")
    }

    /// Ends the head of a response whose whole body is `body`, and appends the body (unless the
    /// request was a HEAD, which gets the same headers and no body).
    func endHead(body: [UInt8], type: StaticString) {
        addHeader("Content-Type", ascii: type)
        addHeader("Content-Length", decimal: body.count)
        endHead()
        if !isHead || !headComplete { pump.out.append(contentsOf: body) }
    }

    /// A complete response with a small in-memory body.
    func respondWithBody(_ status: HTTPStatus, type: StaticString, _ body: [UInt8]) {
        beginResponse(status)
        endHead(body: body, type: type)
    }

    // MARK: AIO

    /// A read this exchange started has completed.
    func aioCompleted(_ slot: Int) {
        guard phase == .responding || phase == .handler, pump.producer === aioBody, aioBody.isWaiting(for: slot) else { return }
        drive()
    }

    /// A buffer freed up after this exchange found none.
    func aioSlotAvailable() {
        guard phase == .responding || phase == .handler, pump.producer === aioBody else { return }
        drive()
    }

    // MARK: logging

    /// One access-log line per request (in `--log-format`), into this worker's buffer; a request
    /// cut short before its head logs `-` for its request line.
    private func logAccess() {
        requestLogged = true
        let counts = worker.countsRequests
        guard counts || worker.accessLog != nil else { return }
        let nanos = headComplete ? Sys.monotonicNanos() &- requestStartNanos : 0
        if counts {
            worker.metrics.requestEnded(status: statusCode, method: WorkerMetrics.methodIndex(request.method, headComplete: headComplete), nanos: nanos)
        }
        guard let log = worker.accessLog, let file = site.accessLog else { return }
        let sent = pump.bytesSent + pump.unsent
        let record = AccessRecord(
            client: client,
            hasHead: headComplete,
            status: statusCode,
            bodyBytes: responseHeadBytes > 0 ? max(0, sent - responseHeadBytes) : 0,
            micros: Int(nanos / 1000),
            worker: worker.index,
            tlsVersion: connection.transport.tls?.version,
            plugin: plugin.route?.plugin.name)
        log.log(record, request: request, file: file)
    }
}
