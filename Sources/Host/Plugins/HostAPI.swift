import AWSParsing
import Glibc
import Logging
import PluginAPI

/// The table of host functions every plugin receives (`aws_host_api`). Each entry is a plain C
/// function; the request handle is decoded and validated on every call, so a stale handle gets
/// AWS_E_GONE instead of touching a connection that has moved on.
enum HostAPI {
    /// Workers by index, set once before any worker thread starts and read-only afterwards;
    /// handles carry the index in their top byte.
    nonisolated(unsafe) static var workers: [Worker] = []

    nonisolated(unsafe) static let table: UnsafeMutablePointer<aws_host_api> = {
        let t = UnsafeMutablePointer<aws_host_api>.allocate(capacity: 1)
        t.initialize(to: aws_host_api())
        t.pointee.header = aws_abi_header(magic: AWS_PLUGIN_MAGIC, abi_major: UInt16(AWS_PLUGIN_ABI_MAJOR),
                                          abi_minor: UInt16(AWS_PLUGIN_ABI_MINOR),
                                          struct_size: UInt32(MemoryLayout<aws_host_api>.size), reserved: 0)
        t.pointee.register_route = { ctx, route in HostAPI.registerRoute(ctx, route) }
        t.pointee.register_function = { ctx, path, signature, fn in HostAPI.registerFunction(ctx, path, signature, fn) }
        t.pointee.config = { ctx, key in
            guard let c = PluginContext.from(ctx), let key else { return nil }
            return UnsafePointer(c.config[String(cString: key)])
        }
        t.pointee.log = { ctx, level, message, len in
            guard let c = PluginContext.from(ctx), let message, len >= 0 else { return }
            let text = String(decoding: UnsafeRawBufferPointer(start: message, count: min(len, 65536)), as: UTF8.self)
            let l: Logger.Level = switch level {
            case Int32(AWS_LOG_DEBUG): .debug
            case Int32(AWS_LOG_INFO): .info
            case Int32(AWS_LOG_NOTICE): .notice
            case Int32(AWS_LOG_WARNING): .warning
            default: .error
            }
            c.logger.log(level: l, "\(text)")
        }
        t.pointee.document_root = { ctx in UnsafePointer(PluginContext.from(ctx)?.rootCString) }
        t.pointee.now_ns = { Sys.monotonicNanos() }
        t.pointee.set_status = { req, status in HostAPI.with(req) { $0.pluginSetStatus(Int(status)) } }
        t.pointee.add_header = { req, name, value in HostAPI.with(req) { $0.pluginAddHeader(name, value) } }
        t.pointee.set_content_length = { req, length in HostAPI.with(req) { $0.pluginSetContentLength(length) } }
        t.pointee.send_part = { req, part in HostAPI.with(req) { $0.pluginSendPart(part) } }
        t.pointee.finish = { req in HostAPI.with(req) { $0.pluginFinish() } }
        t.pointee.fail = { req, status in HostAPI.with(req) { $0.pluginFail(Int(status)) } }
        t.pointee.request_header = { req, name, found in
            found?.pointee = 0
            guard let name, case .success(let c) = HostAPI.exchange(req) else { return aws_str(ptr: nil, len: 0) }
            return c.pluginRequestHeader(name, found)
        }
        t.pointee.post = { req, fn, arg in HostAPI.post(req, fn, arg) }
        t.pointee.set_request_data = { req, data in
            switch HostAPI.exchange(req, evenWhileEnding: true) {
            case .success(let c): c.plugin.userData = data; return Int32(AWS_OK)
            case .failure(let e): return e.code
            }
        }
        t.pointee.request_data = { req in
            guard case .success(let c) = HostAPI.exchange(req, evenWhileEnding: true) else { return nil }
            return c.plugin.userData
        }
        t.pointee.request_scratch = { req, size in
            guard case .success(let c) = HostAPI.exchange(req, evenWhileEnding: true) else { return nil }
            return c.pluginScratch(size)
        }
        t.pointee.plugin_name = { ctx in UnsafePointer(PluginContext.from(ctx)?.nameCString) }
        t.pointee.compress_response = { req in HostAPI.with(req) { $0.pluginCompressResponse() } }
        return t
    }()

    // MARK: handles

    static func handle(worker: Int, slot: Int, generation: UInt32) -> aws_request {
        UInt64(worker) << 56 | UInt64(slot) << 32 | UInt64(generation)
    }

    /// The exchange a handle names. Called from a thread that runs no loop (a plugin's own),
    /// any handle is AWS_E_THREAD; on another worker's loop, an ended handle is AWS_E_GONE (the
    /// worker's live-handle table is atomic) and a live one AWS_E_THREAD.
    static func exchange(_ req: aws_request, evenWhileEnding: Bool = false) -> Result<Exchange, HostCallError> {
        let w = Int(req >> 56), slot = Int((req >> 32) & 0xff_ffff), gen = UInt32(truncatingIfNeeded: req)
        guard gen != 0, w < workers.count else { return .failure(.gone) }
        let worker = workers[w]
        if !worker.isLoopThread {
            guard workers.contains(where: { $0.isLoopThread }) else { return .failure(.wrongThread) }
            return .failure(worker.liveHandles.isLive(req, slot: slot) ? .wrongThread : .gone)
        }
        guard let x = worker.exchange(slot: slot), x.plugin.generation == gen,
              x.plugin.stage == .active || (evenWhileEnding && x.plugin.stage == .ending) else { return .failure(.gone) }
        return .success(x)
    }

    enum HostCallError: Error {
        case gone, wrongThread
        var code: Int32 { self == .gone ? Int32(AWS_E_GONE) : Int32(AWS_E_THREAD) }
    }

    private static func with(_ req: aws_request, _ body: (Exchange) -> Int32) -> Int32 {
        switch exchange(req) {
        case .success(let c): return body(c)
        case .failure(let e): return e.code
        }
    }

    // MARK: post

    private struct Posted: @unchecked Sendable {
        let fn: @convention(c) (aws_request, UnsafeMutableRawPointer?, Int32) -> Void
        let arg: UnsafeMutableRawPointer?
        let req: aws_request
    }

    private static func post(_ req: aws_request, _ fn: (@convention(c) (aws_request, UnsafeMutableRawPointer?, Int32) -> Void)?, _ arg: UnsafeMutableRawPointer?) -> Int32 {
        let w = Int(req >> 56)
        guard let fn, UInt32(truncatingIfNeeded: req) != 0, w < workers.count else { return Int32(AWS_E_INVALID) }
        let posted = Posted(fn: fn, arg: arg, req: req)
        let worker = workers[w]
        worker.loop.post {
            let c = try? HostAPI.exchange(posted.req).get()
            worker.callbackWatch.measure(.posted, c?.plugin.route, code: unsafeBitCast(posted.fn, to: UnsafeRawPointer.self)) {
                posted.fn(posted.req, posted.arg, c == nil ? 0 : 1)
            }
            c?.pluginCallbackReturned()
        }
        return Int32(AWS_OK)
    }

    // MARK: registration

    private static func registerRoute(_ ctx: OpaquePointer?, _ route: UnsafePointer<aws_route>?) -> Int32 {
        guard let c = PluginContext.from(ctx), let route else { return Int32(AWS_E_INVALID) }
        guard c.registering else {
            c.logger.error("register_route called outside init")
            return Int32(AWS_E_STATE)
        }
        let r = route.pointee
        guard r.header.magic == AWS_PLUGIN_MAGIC, r.header.abi_major == AWS_PLUGIN_ABI_MAJOR,
              let path = r.path, path.pointee == 47, let handlerPtr = r.handler else {
            c.logger.error("register_route: invalid route (magic, version, path or handler)")
            return Int32(AWS_E_INVALID)
        }
        let h = handlerPtr.pointee
        let hsize = Int(h.header.struct_size)
        func has(_ kp: PartialKeyPath<aws_handler>) -> Bool { hsize >= MemoryLayout<aws_handler>.offset(of: kp)! + 8 }
        guard h.header.magic == AWS_PLUGIN_MAGIC, has(\aws_handler.on_request), let onRequest = h.on_request else {
            c.logger.error("register_route: handler without on_request")
            return Int32(AWS_E_INVALID)
        }
        let handler = PluginHandler(
            user: has(\aws_handler.user) ? h.user : nil,
            onRequest: onRequest,
            onBody: has(\aws_handler.on_body) ? h.on_body : nil,
            onProceed: has(\aws_handler.on_proceed) ? h.on_proceed : nil,
            onAbort: has(\aws_handler.on_abort) ? h.on_abort : nil,
            onEnd: has(\aws_handler.on_end) ? h.on_end : nil)
        var method: String? = r.method.map { String(cString: $0) }
        if method == "*" || method == "" { method = nil }
        if let m = method, Route.methodCode(m) == nil {
            c.logger.error("register_route: unknown method \(m) (methods are upper-case, e.g. GET)")
            return Int32(AWS_E_INVALID)
        }
        guard r.match == AWS_MATCH_EXACT || r.match == AWS_MATCH_PREFIX else { return Int32(AWS_E_INVALID) }
        return add(c, method: method, path: String(cString: path), prefix: r.match == AWS_MATCH_PREFIX,
                   buffers: (r.flags & UInt32(AWS_ROUTE_BUFFER_BODY)) != 0, target: .handler(handler))
    }

    private static func registerFunction(_ ctx: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ signature: UnsafePointer<CChar>?, _ fn: (@convention(c) () -> Void)?) -> Int32 {
        guard let c = PluginContext.from(ctx), let path, let signature, let fn, path.pointee == 47 else { return Int32(AWS_E_INVALID) }
        guard c.registering else { return Int32(AWS_E_STATE) }
        do {
            let function = try FFIFunction(signature: String(cString: signature), function: fn)
            return add(c, method: nil, path: String(cString: path), prefix: false, buffers: true, target: .function(function))
        } catch {
            c.logger.error("register_function \(String(cString: path)): \(error)")
            return Int32(AWS_E_INVALID)
        }
    }

    private static func add(_ c: PluginContext, method: String?, path: String, prefix: Bool, buffers: Bool, target: RouteTarget) -> Int32 {
        var decoded = TargetPath()
        guard TargetPath.resolve(target: Array(path.utf8)[...], into: &decoded) == nil else {
            c.logger.error("register: invalid path \(path)")
            return Int32(AWS_E_INVALID)
        }
        let key = decoded.bytes
        let display = "\(method ?? "*") \(path)\(prefix ? "*" : "")"
        for p in c.pending where p.path == key && p.prefix == prefix && (p.method == nil || method == nil || p.method == method) {
            c.logger.error("route \(display) registered twice by \(c.name)")
            return Int32(AWS_E_CONFLICT)
        }
        for other in c.existingRoutes where other.path == key && other.prefix == prefix
            && (other.method == nil || method == nil || other.method == method) {
            c.registrationError = "route \(display) of plugin \(c.name) overlaps \(other.displayMethod) \(other.displayPath) of plugin \(other.plugin.name)"
            c.registrationConflict = true
            return Int32(AWS_E_CONFLICT)
        }
        c.pending.append((method, key, prefix, buffers, target))
        return Int32(AWS_OK)
    }
}
