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

/// The value of `key` in a query string, percent-decoded ('+' is a space).
private func queryValue(_ query: UnsafeRawBufferPointer, _ key: String) -> String? {
    for pair in query.split(separator: UInt8(ascii: "&")) {
        let parts = pair.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].elementsEqual(key.utf8) else { continue }
        var bytes: [UInt8] = []
        var i = parts[1].startIndex
        while i < parts[1].endIndex {
            let c = parts[1][i]
            if c == UInt8(ascii: "%"), i + 2 < parts[1].endIndex,
               let v = UInt8(String(decoding: parts[1][(i + 1)...(i + 2)], as: UTF8.self), radix: 16) {
                bytes.append(v); i += 3
            } else {
                bytes.append(c == UInt8(ascii: "+") ? 32 : c); i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
    return nil
}

private func str(_ s: StaticString) -> aws_str {
    aws_str(ptr: UnsafeRawPointer(s.utf8Start).assumingMemoryBound(to: CChar.self), len: s.utf8CodeUnitCount)
}

private let onRequest: @convention(c) (aws_request, UnsafePointer<aws_request_view>?, UnsafeMutableRawPointer?) -> Int32 = { req, view, _ in
    guard let view else { return 500 }
    let q = view.pointee.query
    let name = q.ptr.flatMap { queryValue(UnsafeRawBufferPointer(start: $0, count: q.len), "name") } ?? "world"
    guard name.utf8.count <= 200 else { return 414 }
    var greeting = "Hello, \(name)!\n"
    _ = host.pointee.add_header(req, str("Content-Type"), str("text/plain; charset=utf-8"))
    greeting.withUTF8 { bytes in
        // release == nil: the host copies the bytes before send_part returns.
        var part = aws_part(kind: UInt32(AWS_PART_MEMORY), flags: 0, data: UnsafeRawPointer(bytes.baseAddress),
                            length: bytes.count, fd: -1, offset: 0, release: nil, release_ctx: nil)
        _ = host.pointee.send_part(req, &part)
    }
    return host.pointee.finish(req)
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
