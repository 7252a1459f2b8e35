import CHTTPParser

/// The glue between http-parser's C callbacks and a `Connection`. The parser struct lives at a
/// stable heap address owned by the connection; `parser.data` carries the connection unretained
/// (the connection owns the parser, so it outlives every callback).
struct HTTPParser: ~Copyable {
    enum Outcome {
        /// Every byte was consumed and the parser wants more.
        case needMore
        /// One message ended after `consumed` bytes; the rest belongs to the next request.
        case messageEnded(consumed: Int)
        /// The bytes are not valid HTTP (or a callback refused them) at about `consumed`.
        case failed(http_errno, consumed: Int)
    }

    private let parser: UnsafeMutablePointer<http_parser>

    init() {
        parser = .allocate(capacity: 1)
        http_parser_init(parser, HTTP_REQUEST)
    }

    deinit { parser.deallocate() }

    func attach(_ connection: Connection) {
        parser.pointee.data = Unmanaged.passUnretained(connection).toOpaque()
    }

    func reset(for connection: Connection) {
        http_parser_init(parser, HTTP_REQUEST)
        attach(connection)
    }

    var shouldKeepAlive: Bool { http_should_keep_alive(parser) != 0 }
    var method: http_method { http_method(rawValue: UInt32(parser.pointee.method)) }
    var versionMajor: UInt16 { parser.pointee.http_major }
    var versionMinor: UInt16 { parser.pointee.http_minor }
    var isChunked: Bool { (UInt32(parser.pointee.flags) & F_CHUNKED.rawValue) != 0 }
    /// The head asked for a protocol upgrade (or was a CONNECT). aws upgrades nothing: the request
    /// is answered as an ordinary one and the connection then closed, since http-parser treats
    /// whatever follows as the other protocol's bytes.
    var wantsUpgrade: Bool { parser.pointee.upgrade != 0 }
    /// Body bytes still expected when the length is known (Content-Length), else `UInt64.max`.
    var contentLength: UInt64 { parser.pointee.content_length }

    /// Feeds bytes; stops after one complete message (the parser pauses itself there).
    func execute(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        let consumed = withUnsafePointer(to: HTTPParser.settings) { settings in
            http_parser_execute(parser, settings, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        let errno = http_errno(rawValue: parser.pointee.http_errno)
        if errno == HPE_PAUSED {
            http_parser_pause(parser, 0)
            return .messageEnded(consumed: consumed)
        }
        if errno != HPE_OK { return .failed(errno, consumed: consumed) }
        return .needMore
    }

    private static func connection(_ p: UnsafeMutablePointer<http_parser>?) -> Connection {
        Unmanaged<Connection>.fromOpaque(p!.pointee.data).takeUnretainedValue()
    }

    private static func raw(_ at: UnsafePointer<CChar>?, _ length: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: at, count: length)
    }

    private static let settings: http_parser_settings = {
        var s = http_parser_settings()
        s.on_message_begin = { p in connection(p).parserMessageBegin() }
        s.on_url = { p, at, n in connection(p).parserTarget(raw(at, n)) }
        s.on_header_field = { p, at, n in connection(p).parserHeaderName(raw(at, n)) }
        s.on_header_value = { p, at, n in connection(p).parserHeaderValue(raw(at, n)) }
        s.on_headers_complete = { p in connection(p).parserHeadersComplete() }
        s.on_body = { p, at, n in connection(p).parserBody(raw(at, n)) }
        s.on_message_complete = { p in
            let r = connection(p).parserMessageComplete()
            http_parser_pause(p, 1)
            return r
        }
        return s
    }()
}
