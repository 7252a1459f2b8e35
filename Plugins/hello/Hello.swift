// hello — a plugin written in Swift: GET /hello?name=NAME answers "Hello, NAME!".
//
// A Swift plugin is an ordinary SwiftPM dynamic library that imports the PluginAPI module (the
// C header) and exports `aws_plugin_entry` with @_cdecl. Its tables are globals the host reads
// through pointers, so they are `nonisolated(unsafe)`: the host only calls in on its loop thread.
import PluginAPI

nonisolated(unsafe) private var host: UnsafePointer<aws_host_api>!

private func abiHeader<T>(_ type: T.Type) -> aws_abi_header {
    aws_abi_header(magic: AWS_PLUGIN_MAGIC, abi_major: UInt16(AWS_PLUGIN_ABI_MAJOR),
                   abi_minor: UInt16(AWS_PLUGIN_ABI_MINOR), struct_size: UInt32(MemoryLayout<T>.size), reserved: 0)
}

/// Percent-decodes the value of `name` in a query string into `out` ('+' is a space): the number
/// of bytes written, -1 when there is no such key, nil when it does not fit. Works on the bytes in
/// place: the request costs no allocation in the plugin (a Swift String per request would).
private func decodeName(_ query: UnsafeRawBufferPointer, into out: UnsafeMutableBufferPointer<UInt8>) -> Int? {
    var pairStart = 0
    while pairStart <= query.count {
        var pairEnd = pairStart
        while pairEnd < query.count && query[pairEnd] != UInt8(ascii: "&") { pairEnd += 1 }
        if pairEnd - pairStart >= 5 && query[pairStart] == UInt8(ascii: "n") && query[pairStart + 1] == UInt8(ascii: "a")
            && query[pairStart + 2] == UInt8(ascii: "m") && query[pairStart + 3] == UInt8(ascii: "e")
            && query[pairStart + 4] == UInt8(ascii: "=") {
            var n = 0
            var i = pairStart + 5
            while i < pairEnd {
                guard n < out.count else { return nil }
                let c = query[i]
                if c == UInt8(ascii: "%"), i + 2 < pairEnd, let hi = hexValue(query[i + 1]), let lo = hexValue(query[i + 2]) {
                    out[n] = hi << 4 | lo
                    i += 3
                } else {
                    out[n] = c == UInt8(ascii: "+") ? 32 : c
                    i += 1
                }
                n += 1
            }
            return n
        }
        pairStart = pairEnd + 1
    }
    return -1
}

private func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
    default: return nil
    }
}

private func str(_ s: StaticString) -> aws_str {
    aws_str(ptr: UnsafeRawPointer(s.utf8Start).assumingMemoryBound(to: CChar.self), len: s.utf8CodeUnitCount)
}

private let maxName = 200

private let onRequest: @convention(c) (aws_request, UnsafePointer<aws_request_view>?, UnsafeMutableRawPointer?) -> Int32 = { req, view, _ in
    guard let view else { return 500 }
    let q = view.pointee.query
    let query = UnsafeRawBufferPointer(start: q.ptr, count: q.ptr == nil ? 0 : q.len)
    // "Hello, " + name + "!\n", built on the stack: release == nil makes the host copy the bytes
    // before send_part returns.
    return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 7 + maxName + 2) { buffer in
        let prefix: StaticString = "Hello, "
        UnsafeMutableRawBufferPointer(buffer).copyMemory(from: UnsafeRawBufferPointer(start: prefix.utf8Start, count: 7))
        let nameArea = UnsafeMutableBufferPointer(rebasing: buffer[7..<(7 + maxName)])
        // A decoded name longer than maxName bytes is too long whatever it holds (repairing
        // invalid UTF-8 never makes it shorter).
        guard var n = decodeName(query, into: nameArea) else { return 414 }
        if n < 0 {
            for (i, c) in "world".utf8.enumerated() { nameArea[i] = c }
            n = 5
        }
        // Not UTF-8: the replacement characters a Swift String would show (the rare, slow path).
        if let repaired = repairedUTF8(UnsafeBufferPointer(rebasing: nameArea[..<n])) {
            guard repaired.count <= maxName else { return 414 }
            for (i, c) in repaired.enumerated() { nameArea[i] = c }
            n = repaired.count
        }
        buffer[7 + n] = UInt8(ascii: "!")
        buffer[8 + n] = UInt8(ascii: "\n")
        _ = host.pointee.add_header(req, str("Content-Type"), str("text/plain; charset=utf-8"))
        var part = aws_part(kind: UInt32(AWS_PART_MEMORY), flags: 0, data: UnsafeRawPointer(buffer.baseAddress),
                            length: 9 + n, fd: -1, offset: 0, release: nil, release_ctx: nil)
        _ = host.pointee.send_part(req, &part)
        return host.pointee.finish(req)
    }
}

/// nil when `bytes` are valid UTF-8 (checked in place, no allocation); else the bytes with each
/// invalid sequence replaced by U+FFFD, as a Swift String shows them.
private func repairedUTF8(_ bytes: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
    var input = bytes.makeIterator()
    var decoder = UTF8()
    while true {
        switch decoder.decode(&input) {
        case .scalarValue: continue
        case .emptyInput: return nil
        case .error: return Array(String(decoding: bytes, as: UTF8.self).utf8)
        }
    }
}

nonisolated(unsafe) private let handler: UnsafeMutablePointer<aws_handler> = {
    let h = UnsafeMutablePointer<aws_handler>.allocate(capacity: 1)
    h.initialize(to: aws_handler(header: abiHeader(aws_handler.self), user: nil, on_request: onRequest,
                                 on_body: nil, on_proceed: nil, on_abort: nil, on_end: nil))
    return h
}()

private let pluginInit: @convention(c) (UnsafePointer<aws_host_api>?, OpaquePointer?) -> Int32 = { api, ctx in
    host = api
    let path: StaticString = "/hello"
    let method: StaticString = "GET"
    var route = aws_route(header: abiHeader(aws_route.self),
                          method: UnsafeRawPointer(method.utf8Start).assumingMemoryBound(to: CChar.self),
                          path: UnsafeRawPointer(path.utf8Start).assumingMemoryBound(to: CChar.self),
                          match: UInt32(AWS_MATCH_EXACT), flags: 0, handler: UnsafePointer(handler))
    return api!.pointee.register_route(ctx, &route)
}

nonisolated(unsafe) private let descriptor: UnsafeMutablePointer<aws_plugin_descriptor> = {
    let name: StaticString = "hello"
    let version: StaticString = "1.0.0"
    let d = UnsafeMutablePointer<aws_plugin_descriptor>.allocate(capacity: 1)
    d.initialize(to: aws_plugin_descriptor(
        header: abiHeader(aws_plugin_descriptor.self),
        name: UnsafeRawPointer(name.utf8Start).assumingMemoryBound(to: CChar.self),
        version: UnsafeRawPointer(version.utf8Start).assumingMemoryBound(to: CChar.self),
        init: pluginInit, shutdown: nil))
    return d
}()

@_cdecl("aws_plugin_entry")
public func awsPluginEntry() -> UnsafePointer<aws_plugin_descriptor> {
    UnsafePointer(descriptor)
}
