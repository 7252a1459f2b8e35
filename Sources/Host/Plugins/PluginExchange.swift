import AWSParsing
import CHTTPParser
import Glibc
import PluginAPI

/// A plugin request's state, kept in the exchange and reset per request (its buffers are
/// reused, so a plugin request allocates nothing the host can avoid).
///
/// Three small state machines, one per concern, because they move independently: where the
/// request is in its life (`stage`), what the plugin has said of its response (`response`),
/// and the pull cycle of body parts (`part`).
struct PluginExchange {
    /// The request's life, as the plugin sees it.
    enum Stage {
        /// Routed, on_request not called yet (a buffered body is still arriving).
        case routed
        /// on_request took the request; on_end has not been called yet.
        case active
        /// on_abort / on_end are running: the handle still reaches the request's data and
        /// scratch, but nothing else.
        case ending
        /// Over for the plugin: refused by on_request, answered by a function endpoint, or ended.
        case settled
    }

    /// What the plugin has said of its response.
    enum Response: Equatable {
        /// Nothing sent: status and headers may still change.
        case open
        /// finish came before any part made the head go out; `intact` is false when the body
        /// is not the declared length (the connection then closes after it).
        case finishedBeforeHead(intact: Bool)
        /// The head is rendered; more parts may come.
        case streaming
        /// finish was called after the head; the body's end is still to be queued.
        case finishing
        /// Everything is queued: the last chunk, or the host's error page instead of the response.
        case complete
        /// The response broke after its head (fail, misuse, a short body): the connection closes
        /// once the outstanding part is out. `from` says how far it had come.
        case failed(from: FailedFrom)
    }

    enum FailedFrom: Equatable { case streaming, finishCalled, complete }

    /// The pull cycle of body parts.
    enum Part {
        /// No part outstanding, none sent since the last on_proceed.
        case none
        /// Taken by send_part, not yet framed.
        case queued
        /// Its chunk-size line (if chunked) is queued; it is being sent.
        case framed
        /// The last part is sent: on_proceed is due.
        case proceedDue
        var isOutstanding: Bool { self == .queued || self == .framed }
    }

    var route: Route?
    /// The worker's route table (plugins folder) `route` came from.
    var table = 0
    var handler: PluginHandler?
    var function: FFIFunction?
    var generation: UInt32 = 0
    var handle: aws_request = 0
    var stage = Stage.settled
    var response = Response.open
    var part = Part.none
    /// The rendered head chose chunked framing (HTTP/1.1, no length known).
    var chunked = false
    /// The status the head begun in `pump.out` carries (set_status rewrites its line there).
    var status = 200
    var declaredLength: UInt64?
    /// The outstanding part's length and how to give it back.
    var partLength = 0
    var partRelease: (@convention(c) (UnsafeMutableRawPointer?) -> Void)?
    var partReleaseContext: UnsafeMutableRawPointer?
    var bytesQueued: UInt64 = 0
    var userData: UnsafeMutableRawPointer?
    var scratch: [UnsafeMutableRawPointer] = []
    var body: [UInt8] = []
    /// The outstanding part went out as a chunk (its CRLF follows it).
    var partIsChunk = false
    /// compress_response was called: the head says Vary: Accept-Encoding.
    var varyEncoding = false
    /// compress_response chose a coding: every memory part goes through it.
    var compressor: StreamCompressor?
    /// Copies of memory parts handed over without a release callback; reused across requests.
    var copyBuffer: UnsafeMutableRawPointer?
    var copyCapacity = 0
    // Backing for the request view's strings that are not in the head storage.
    var pathBytes: [UInt8] = []
    var remote: [UInt8] = []
    /// The address `remote` shows: rendered again only when the client changes.
    var remoteOf: PeerAddress?
    var viewHeaders: UnsafeMutablePointer<aws_header>?
    var viewHeaderCapacity = 0
}

extension PluginExchange.Response {
    var headRendered: Bool {
        switch self {
        case .open, .finishedBeforeHead: false
        default: true
        }
    }

    /// finish (or fail) was called, or the host answered instead.
    var finishCalled: Bool {
        switch self {
        case .open, .streaming, .failed(from: .streaming): false
        default: true
        }
    }

    var isFailed: Bool { if case .failed = self { true } else { false } }
}

extension Exchange {
    /// The view's scheme: static strings, so the plugin's borrowed view may point at them.
    private static var http: aws_str { staticString("http") }
    private static var https: aws_str { staticString("https") }
    private static func staticString(_ s: StaticString) -> aws_str {
        aws_str(ptr: UnsafeRawPointer(s.utf8Start).assumingMemoryBound(to: CChar.self), len: s.utf8CodeUnitCount)
    }

    // MARK: dispatch

    /// Routes a complete head to a plugin when one owns the path. Returns false when no plugin
    /// route applies (the request then goes to the file handler).
    func dispatchToPlugin() -> Bool {
        guard let tableIndex = site.pluginTable else { return false }
        let table = worker.routeTables[tableIndex]
        guard !table.isEmpty else { return false }
        if resolvePath() != nil { return false }
        let (route, owned) = table.match(path: path.bytes, method: request.method)
        guard let route else {
            if owned {
                var allowed = table.methods(forPath: path.bytes)
                if allowed.contains("GET") && !allowed.contains("HEAD") { allowed.append("HEAD") }
                if request.method == HTTP_OPTIONS {
                    // The plugin did not take OPTIONS itself: the host answers with what it takes.
                    beginResponse(.ok)
                    addHeader("Allow", (allowed + ["OPTIONS"]).joined(separator: ", ").utf8)
                    addHeader("Content-Length", ascii: "0")
                    endHead()
                    return true
                }
                respondWithError(.methodNotAllowed, allow: allowed.isEmpty ? nil : allowed.joined(separator: ", "))
                return true
            }
            return false
        }
        plugin.route = route
        plugin.table = tableIndex
        plugin.generation = plugin.generation == UInt32.max ? 1 : plugin.generation + 1
        plugin.handle = HostAPI.handle(worker: worker.index, slot: slot, generation: plugin.generation)
        worker.liveHandles.set(plugin.handle, slot: slot)
        plugin.stage = .routed
        route.plugin.addUses(1)
        phase = .handler
        switch route.target {
        case .function(let f):
            plugin.function = f
            if requestHasBody && !messageComplete { sendContinueIfExpected(); return true }
            respondWithFunction(f)
        case .handler(let h):
            plugin.handler = h
            if route.buffersBody && requestHasBody && !messageComplete {
                sendContinueIfExpected()
                return true
            }
            invokeOnRequest()
        }
        return true
    }

    var requestHasBody: Bool { request.hasBody }

    func sendContinueIfExpected() {
        guard request.has(.expect), request.versionMinor >= 1 else { return }
        let line: StaticString = "HTTP/1.1 100 Continue\r\n\r\n"
        // Queued like any output, never sent on the side: a send that takes only part of the
        // line leaves the rest for the next flush, and the final head follows it (a line cut
        // short and followed by the final head would corrupt the stream).
        pump.queueInterim(UnsafeRawBufferPointer(start: line.utf8Start, count: line.utf8CodeUnitCount))
    }

    /// Before a handler's head is complete: an interim response goes out now, the head being
    /// built after it stays.
    func flushInterim() -> Progress {
        guard pump.interimPending else { return .waiting }
        let progress = pump.flushInterim()
        return progress == .done ? .waiting : progress
    }

    /// Calls on_request with a view of the request.
    private func invokeOnRequest() {
        guard let handler = plugin.handler else { return }
        plugin.stage = .active
        // The head is built where it is sent from: status line, Date and Server now, the
        // plugin's fields as it adds them, the framing when its first part or finish comes.
        beginResponse(code: plugin.status)
        let watch = worker.callbackWatch, route = plugin.route
        worker.metrics.pluginRequests.add()
        let rc = withRequestView { view in watch.measure(.onRequest, route) { handler.onRequest(plugin.handle, view, handler.user) } }
        if rc != 0 {
            worker.metrics.pluginErrors.add(WorkerMetrics.PluginError.onRequest.rawValue)
            plugin.stage = .settled
            let status = HTTPStatus.errorStatus(Int(rc))
            if !(400..<600).contains(Int(rc)) {
                worker.logger.error("plugin \(plugin.route?.plugin.name ?? "?") on_request returned \(rc), not 0 or a 4xx/5xx status")
            }
            endPluginRequest(callEnd: false)
            respondWithError(status, close: requestHasBody && !messageComplete)
            phase = .responding
            return
        }
        if requestHasBody && !messageComplete && plugin.response == .open { sendContinueIfExpected() }
    }

    /// Builds the borrowed `aws_request_view` and runs `body` with it.
    private func withRequestView<R>(_ body: (UnsafePointer<aws_request_view>) -> R) -> R {
        plugin.pathBytes.removeAll(keepingCapacity: true)
        plugin.pathBytes.append(47)
        plugin.pathBytes.append(contentsOf: path.bytes)
        if path.trailingSlash && !path.bytes.isEmpty { plugin.pathBytes.append(47) }
        let client = self.client
        if plugin.remoteOf != client {
            plugin.remote.removeAll(keepingCapacity: true)
            client.append(to: &plugin.remote)
            plugin.remoteOf = client
        }
        if plugin.viewHeaderCapacity < request.headers.count {
            plugin.viewHeaders?.deallocate()
            plugin.viewHeaderCapacity = max(request.headers.count, 32)
            plugin.viewHeaders = .allocate(capacity: plugin.viewHeaderCapacity)
        }
        let method = http_method_str(request.method)!
        return request.storage.withUnsafeBufferPointer { storage in
            let base = UnsafeRawPointer(storage.baseAddress!).assumingMemoryBound(to: CChar.self)
            func str(_ r: Range<Int>) -> aws_str { aws_str(ptr: base + r.lowerBound, len: r.count) }
            for (i, h) in request.headers.enumerated() {
                plugin.viewHeaders![i] = aws_header(name: str(h.name), value: str(request.trimmed(h.value)))
            }
            let target = request.target
            var query = aws_str(ptr: nil, len: 0)
            if let q = storage[target].firstIndex(of: 63) {
                let end = storage[(q + 1)..<target.upperBound].firstIndex(of: 35) ?? target.upperBound
                query = str((q + 1)..<end)
            }
            return plugin.pathBytes.withUnsafeBufferPointer { pathBuf in
                plugin.remote.withUnsafeBufferPointer { remoteBuf in
                    plugin.body.withUnsafeBufferPointer { bodyBuf in
                        var view = aws_request_view(
                            method: aws_str(ptr: method, len: strlen(method)),
                            target: str(target),
                            path: aws_str(ptr: UnsafeRawPointer(pathBuf.baseAddress!).assumingMemoryBound(to: CChar.self), len: pathBuf.count),
                            query: query,
                            version_major: Int32(request.versionMajor),
                            version_minor: Int32(request.versionMinor),
                            headers: UnsafePointer(plugin.viewHeaders),
                            header_count: request.headers.count,
                            remote_addr: aws_str(ptr: UnsafeRawPointer(remoteBuf.baseAddress!).assumingMemoryBound(to: CChar.self), len: remoteBuf.count),
                            content_length: request.contentLength,
                            body: aws_str(ptr: bodyBuf.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }, len: bodyBuf.count),
                            scheme: connection.transport.isTLS ? Self.https : Self.http,
                            tls_version: connection.transport.tls.map { tls in
                                let v = tls.version
                                return aws_str(ptr: v.baseAddress!.assumingMemoryBound(to: CChar.self), len: v.count)
                            } ?? aws_str(ptr: nil, len: 0))
                        return body(&view)
                    }
                }
            }
        }
    }

    // MARK: request body

    /// A piece of the body arrived for a plugin route.
    func pluginBody(_ bytes: UnsafeRawBufferPointer) {
        guard let route = plugin.route else { return }
        if route.buffersBody && plugin.stage == .routed {
            plugin.body.append(contentsOf: bytes)
            return
        }
        guard plugin.stage == .active, let handler = plugin.handler, let onBody = handler.onBody, bytes.count > 0 else { return }
        worker.callbackWatch.measure(.onBody, route) { onBody(plugin.handle, bytes.baseAddress, bytes.count, 0, handler.user) }
    }

    /// The request's message is complete: buffered routes run now; streaming ones get last=1.
    func pluginMessageComplete() {
        guard let route = plugin.route else { return }
        if plugin.stage == .routed {
            if let f = plugin.function {
                respondWithFunction(f)
            } else if route.buffersBody {
                invokeOnRequest()
            }
            return
        }
        guard plugin.stage == .active, requestHasBody, let handler = plugin.handler, let onBody = handler.onBody else { return }
        worker.callbackWatch.measure(.onBody, route) { onBody(plugin.handle, nil, 0, 1, handler.user) }
    }

    // MARK: host calls (validated handle, loop thread); they only record: sending happens after
    // the plugin's callback has returned, so the host never re-enters a plugin.

    func pluginSetStatus(_ status: Int) -> Int32 {
        guard plugin.response == .open else { return misuse("set_status after the head was sent") }
        guard (200...599).contains(status) else { return Int32(AWS_E_INVALID) }  // no interim (1xx) responses
        if status != plugin.status {
            plugin.status = status
            statusCode = status
            ResponseHead.restatus(&pump.out, at: pump.headStart, code: status, date: worker.date)
        }
        return Int32(AWS_OK)
    }

    func pluginAddHeader(_ name: aws_str, _ value: aws_str) -> Int32 {
        guard plugin.response == .open else { return misuse("add_header after the head was sent") }
        guard let np = name.ptr, name.len > 0, name.len <= 8192, value.len >= 0, value.len <= 65536 else { return Int32(AWS_E_INVALID) }
        let n = UnsafeRawBufferPointer(start: np, count: name.len)
        let v = UnsafeRawBufferPointer(start: value.ptr, count: value.ptr == nil ? 0 : value.len)
        guard n.allSatisfy(ASCII.isTokenChar), !v.contains(where: { $0 == 13 || $0 == 10 || $0 == 0 }) else { return Int32(AWS_E_INVALID) }
        if Exchange.isReservedForPlugins(n) { return Int32(AWS_E_INVALID) }
        pump.out.append(contentsOf: n)
        pump.out.append(ascii: ": ")
        pump.out.append(contentsOf: v)
        pump.out.append(ascii: "\r\n")
        return Int32(AWS_OK)
    }

    /// Fields the host writes itself: a plugin may not add them.
    private static let reservedForPlugins: [[UInt8]] = ["date", "server", "content-length", "transfer-encoding", "connection"].map { Array($0.utf8) }

    private static func isReservedForPlugins(_ name: UnsafeRawBufferPointer) -> Bool {
        for reserved in reservedForPlugins where reserved.count == name.count {
            var i = 0
            while i < name.count && reserved[i] == ASCII.lower(name[i]) { i += 1 }
            if i == name.count { return true }
        }
        return false
    }

    func pluginSetContentLength(_ length: UInt64) -> Int32 {
        guard plugin.response == .open else { return misuse("set_content_length after the head was sent") }
        if plugin.compressor != nil { return Int32(AWS_E_STATE) }  // the compressed length is unknown
        guard length <= UInt64(Int64.max) else { return Int32(AWS_E_INVALID) }
        plugin.declaredLength = length
        return Int32(AWS_OK)
    }

    func pluginSendPart(_ part: UnsafePointer<aws_part>?) -> Int32 {
        guard let part else { return Int32(AWS_E_INVALID) }
        guard !plugin.response.finishCalled else { return misuse("send_part after finish") }
        guard !plugin.part.isOutstanding else { return misuse("send_part while a part is outstanding (wait for on_proceed)") }
        let p = part.pointee
        let length = p.length
        // Validate everything before taking the part: a refused part changes nothing. Sizes
        // come from C (size_t, int64_t): out-of-range values are refused, never trapped on.
        guard length >= 0, plugin.bytesQueued <= UInt64(Int.max) - UInt64(length) else { return Int32(AWS_E_INVALID) }
        switch p.kind {
        case UInt32(AWS_PART_MEMORY):
            guard p.data != nil || length == 0 else { return Int32(AWS_E_INVALID) }
        case UInt32(AWS_PART_FILE):
            guard p.fd >= 0, p.offset >= 0, p.offset <= Int64(Int.max - length), fcntl(p.fd, F_GETFD) >= 0 else { return Int32(AWS_E_INVALID) }
        default:
            return Int32(AWS_E_INVALID)
        }
        if let declared = plugin.declaredLength, plugin.bytesQueued + UInt64(length) > declared {
            return misuse("send_part beyond the declared Content-Length")
        }
        if plugin.compressor != nil && p.kind != UInt32(AWS_PART_MEMORY) { return Int32(AWS_E_STATE) }
        if isHead || length == 0 || statusForbidsBody {
            acceptPart(p)  // nothing to send; the part is released when the flush reaches it
            return Int32(AWS_OK)
        }
        if let compressor = plugin.compressor, let data = p.data {
            guard compressor.compress(UnsafeRawBufferPointer(start: data, count: length), last: false) else {
                return misuse("compressing a part failed")
            }
            // The compressor's buffer holds the bytes to send until the next part: the plugin's
            // own are released once they are out, as for any borrowed part.
            if compressor.outputCount > 0 {
                memoryBody.set(UnsafeRawPointer(compressor.output!), count: compressor.outputCount)
                pump.start(memoryBody)
            }
            acceptPart(p)
            plugin.partLength = compressor.outputCount
            return Int32(AWS_OK)
        }
        switch p.kind {
        case UInt32(AWS_PART_MEMORY):
            guard let data = p.data else { return Int32(AWS_E_INVALID) }
            if p.release == nil {
                if plugin.copyCapacity < length {
                    free(plugin.copyBuffer)
                    plugin.copyCapacity = max(length, 16 * 1024)
                    plugin.copyBuffer = malloc(plugin.copyCapacity)
                }
                guard let copy = plugin.copyBuffer else { plugin.copyCapacity = 0; return Int32(AWS_E_NOMEM) }
                memcpy(copy, data, length)
                memoryBody.set(UnsafeRawPointer(copy), count: length)
            } else {
                memoryBody.set(data, count: length)
            }
            pump.start(memoryBody)
        default:  // AWS_PART_FILE, validated above
            var region = FileRegion(fd: p.fd, ownsFD: false, cacheEntry: nil, offset: Int(p.offset), end: Int(p.offset) + length)
            if p.release == nil {
                // The plugin may close its descriptor as soon as this returns: send from a copy.
                let copy = fcntl(p.fd, F_DUPFD_CLOEXEC, 0)
                guard copy >= 0 else { return Int32(AWS_E_NOMEM) }
                region.fd = copy
                region.ownsFD = true
            }
            if (p.flags & UInt32(AWS_PART_FILE_AIO)) != 0 {
                aioBody.region = region
                aioBody.prepare()
                pump.start(aioBody)
            } else {
                sendfileBody.region = region
                pump.start(sendfileBody)
            }
        }
        acceptPart(p)
        return Int32(AWS_OK)
    }

    /// compress_response: 1 when the body will be compressed, 0 when it goes out as sent.
    func pluginCompressResponse() -> Int32 {
        guard plugin.response == .open else { return misuse("compress_response after the head was sent") }
        // A part already queued would go out uncompressed under a Content-Encoding head.
        guard plugin.bytesQueued == 0 && !plugin.part.isOutstanding else { return misuse("compress_response after send_part") }
        plugin.varyEncoding = true
        if plugin.compressor != nil { return 1 }
        let settings = worker.config.compression
        guard settings.enabled, let accept = request.value(.acceptEncoding),
              let choice = AcceptEncoding.choose(request.storage[accept], precompressed: CodingSet(), onTheFly: .all),
              let compressor = StreamCompressor(choice.coding, level: settings.level(choice.coding)) else { return 0 }
        plugin.compressor = compressor
        plugin.declaredLength = nil
        return 1
    }

    /// 204 and 304 responses have no body (RFC 9110 §6.4.1): parts are taken and dropped.
    private var statusForbidsBody: Bool { HTTPStatus.forbidsBody(plugin.status) }

    private func acceptPart(_ p: aws_part) {
        plugin.partRelease = p.release
        plugin.partReleaseContext = p.release_ctx
        plugin.partLength = p.length
        plugin.part = .queued
        plugin.bytesQueued += UInt64(p.length)
    }

    func pluginFinish() -> Int32 {
        guard !plugin.response.finishCalled else { return misuse("finish called twice") }
        var intact = true
        if let declared = plugin.declaredLength, plugin.bytesQueued != declared, !isHead {
            worker.logger.error("plugin \(plugin.route?.plugin.name ?? "?") finished after \(plugin.bytesQueued) of \(declared) declared bytes; closing")
            intact = false
        }
        switch plugin.response {
        case .open: plugin.response = .finishedBeforeHead(intact: intact)
        case .streaming: plugin.response = intact ? .finishing : .failed(from: .finishCalled)
        default: plugin.response = .failed(from: .finishCalled)  // failed while streaming
        }
        return Int32(AWS_OK)
    }

    func pluginFail(_ status: Int) -> Int32 {
        switch plugin.response {
        case .open, .finishedBeforeHead:
            worker.metrics.pluginErrors.add(WorkerMetrics.PluginError.fail.rawValue)
            replaceWithError(HTTPStatus.errorStatus(status), close: requestHasBody && !messageComplete)
        case .streaming, .failed(from: .streaming):
            worker.metrics.pluginErrors.add(WorkerMetrics.PluginError.fail.rawValue)
            plugin.response = .failed(from: .finishCalled)
        case .finishing, .complete, .failed:
            return misuse("fail after finish")
        }
        return Int32(AWS_OK)
    }

    /// Before the head: the host's error page answers instead of the plugin.
    private func replaceWithError(_ status: HTTPStatus, close: Bool = false) {
        plugin.response = .complete
        discardQueuedBody()
        respondWithError(status, close: close)
    }

    func pluginRequestHeader(_ name: UnsafePointer<CChar>, _ found: UnsafeMutablePointer<Int32>?) -> aws_str {
        let wanted = Array(UnsafeRawBufferPointer(start: name, count: strlen(name))).map(ASCII.lower)
        for h in request.headers where request.equalsIgnoringCase(h.name, wanted) {
            found?.pointee = 1
            let v = request.trimmed(h.value)
            return request.storage.withUnsafeBufferPointer { b in
                aws_str(ptr: UnsafeRawPointer(b.baseAddress! + v.lowerBound).assumingMemoryBound(to: CChar.self), len: v.count)
            }
        }
        return aws_str(ptr: nil, len: 0)
    }

    func pluginScratch(_ size: Int) -> UnsafeMutableRawPointer? {
        guard let p = malloc(max(size, 1)) else { return nil }
        plugin.scratch.append(p)
        return p
    }

    private func misuse(_ what: String) -> Int32 {
        worker.metrics.pluginErrors.add(WorkerMetrics.PluginError.misuse.rawValue)
        worker.logger.error("plugin \(plugin.route?.plugin.name ?? "?") misuse: \(what); ending the request")
        switch plugin.response {
        case .open: replaceWithError(.internalServerError)
        case .finishedBeforeHead, .failed: break
        case .streaming: plugin.response = .failed(from: .streaming)
        case .finishing: plugin.response = .failed(from: .finishCalled)
        case .complete: plugin.response = .failed(from: .complete)
        }
        return Int32(AWS_E_STATE)
    }

    private func discardQueuedBody() {
        pump.release()
        // A part with a release callback stays outstanding: its release runs after the callback.
        if plugin.part.isOutstanding && plugin.partRelease == nil { plugin.part = .none }
        plugin.partLength = 0
    }

    // MARK: sending

    /// Memory parts up to this size are copied into the output buffer after the head rather
    /// than sent from where they are: one send instead of two (as for static files up to 16 KiB).
    static let inlinePartLimit = 16 * 1024

    /// A posted function or another callback returned: send whatever it queued.
    func pluginCallbackReturned() {
        guard isAttached, connection.isOpen, phase == .handler else { return }
        drive()
    }

    /// The plugin phase's flush: head, framing, the outstanding part, then on_proceed or the end.
    /// Runs only outside plugin callbacks.
    func pluginFlush() -> Progress {
        while true {
            if plugin.response.isFailed && (!pump.outPending || !plugin.part.isOutstanding) { return .failed }
            if !plugin.response.headRendered {
                guard plugin.part.isOutstanding || plugin.response.finishCalled else { return flushInterim() }
                renderPluginHead()
            }
            if plugin.part == .queued {
                plugin.part = .framed
                plugin.partIsChunk = plugin.chunked && pump.hasBody
                if plugin.partIsChunk {
                    pump.out.append(hex: UInt64(plugin.partLength))
                    pump.out.append(ascii: "\r\n")
                }
                // A small memory part joins the head (and its framing) in the buffered output:
                // a part and finish in one callback leave in one send, like a small file.
                if pump.producer === memoryBody && plugin.partLength <= Exchange.inlinePartLimit {
                    memoryBody.append(to: &pump.out)
                    pump.release()
                }
            }
            if plugin.response == .finishing && !plugin.part.isOutstanding {
                plugin.response = .complete
                if let compressor = plugin.compressor, !isHead && !statusForbidsBody {
                    // The end of the compressed stream, in a chunk of its own before the last.
                    guard compressor.compress(UnsafeRawBufferPointer(start: nil, count: 0), last: true) else { return .failed }
                    if compressor.outputCount > 0 {
                        if plugin.chunked {
                            pump.out.append(hex: UInt64(compressor.outputCount))
                            pump.out.append(ascii: "\r\n")
                        }
                        pump.out.append(contentsOf: UnsafeRawBufferPointer(start: compressor.output, count: compressor.outputCount))
                        if plugin.chunked { pump.out.append(ascii: "\r\n") }
                    }
                }
                if plugin.chunked && !isHead { pump.out.append(ascii: "0\r\n\r\n") }
            }
            switch pump.flushBuffered(more: plugin.part.isOutstanding && pump.hasBody) {
            case .done: break
            case let other: return other
            }
            if plugin.part.isOutstanding {
                let wasFramedChunk = plugin.partIsChunk
                if pump.hasBody {
                    let progress = pump.run()  // releases the part's producer once it is sent
                    guard progress == .done else { return progress }
                }
                releasePart()
                if wasFramedChunk { pump.out.append(ascii: "\r\n") }
                if !plugin.response.finishCalled { plugin.part = .proceedDue }
                continue
            }
            if plugin.response.finishCalled { return plugin.response.isFailed ? .failed : .done }
            if plugin.part == .proceedDue, let handler = plugin.handler, let onProceed = handler.onProceed {
                plugin.part = .none
                worker.callbackWatch.measure(.onProceed, plugin.route) { onProceed(plugin.handle, handler.user) }
                guard isAttached, connection.isOpen, plugin.stage == .active else { return .failed }
                continue
            }
            return .waiting
        }
    }

    private func renderPluginHead() {
        let finished: Bool
        switch plugin.response {
        case .finishedBeforeHead(let intact):
            finished = true
            plugin.response = intact ? .finishing : .failed(from: .finishCalled)
        default:
            finished = false
            plugin.response = .streaming
        }
        let noBody = statusForbidsBody
        if noBody { pump.release() }  // queued before the status said so
        // Begun before on_request, which may have been a while ago (a stream's first event).
        ResponseHead.redate(&pump.out, at: pump.headStart, date: worker.date)
        if plugin.varyEncoding { addHeader("Vary", ascii: "Accept-Encoding") }
        if let compressor = plugin.compressor, !noBody { addHeader("Content-Encoding", ascii: compressor.coding.token) }
        if !noBody {
            if plugin.compressor != nil {
                // Its compressed length is known only at its end.
                if request.versionMinor >= 1 {
                    addHeader("Transfer-Encoding", ascii: "chunked")
                    plugin.chunked = true
                } else {
                    closeAfterResponse = true
                }
            } else if let declared = plugin.declaredLength {
                addHeader("Content-Length", decimal: Int(declared))
            } else if finished {
                addHeader("Content-Length", decimal: Int(plugin.bytesQueued))
            } else if request.versionMinor >= 1 {
                addHeader("Transfer-Encoding", ascii: "chunked")
                plugin.chunked = true
            } else {
                closeAfterResponse = true  // HTTP/1.0 without a length: the close ends the body
            }
        }
        endHead()
    }

    private func releasePart() {
        plugin.part = .none
        if let release = plugin.partRelease {
            plugin.partRelease = nil
            let context = plugin.partReleaseContext
            worker.callbackWatch.measure(.release, plugin.route) { release(context) }
        }
    }

    /// Ends the plugin's view of the request: on_abort if it did not finish, then on_end.
    func endPluginRequest(callEnd: Bool = true, aborted: Bool = false) {
        guard let route = plugin.route else { return }
        let handler = plugin.handler
        let handle = plugin.handle
        let wasActive = plugin.stage == .active
        plugin.stage = .settled
        if phase == .handler { pump.release() }
        if plugin.part.isOutstanding { releasePart() }
        if wasActive && callEnd, let handler {
            plugin.stage = .ending
            if aborted, let onAbort = handler.onAbort { worker.callbackWatch.measure(.onAbort, route) { onAbort(handle, handler.user) } }
            if let onEnd = handler.onEnd { worker.callbackWatch.measure(.onEnd, route) { onEnd(handle, handler.user) } }
            plugin.stage = .settled
        }
        for p in plugin.scratch { free(p) }
        plugin.scratch.removeAll(keepingCapacity: true)
        plugin.route = nil
        plugin.handler = nil
        plugin.function = nil
        plugin.userData = nil
        plugin.body.removeAll(keepingCapacity: true)
        plugin.declaredLength = nil
        plugin.status = 200
        plugin.response = .open
        plugin.part = .none
        plugin.chunked = false
        plugin.bytesQueued = 0
        plugin.varyEncoding = false
        plugin.compressor = nil
        worker.liveHandles.set(0, slot: slot)
        worker.pluginHosts[plugin.table].release(route.plugin)
    }
}
