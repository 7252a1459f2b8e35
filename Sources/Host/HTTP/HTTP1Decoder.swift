import CHTTPParser

/// HTTP/1 request decoding around http-parser, as a function that returns events: it feeds bytes
/// until something happens that the exchange must act on (the head is complete, body bytes, the
/// message ended, an error) and stops there, so every response starts after
/// `http_parser_execute` has returned, never inside one of its callbacks. Only the head's bytes
/// are taken inside callbacks (appended to the exchange's `RequestHead`, with its limits).
///
/// The parser struct lives at a stable heap address owned by the decoder; `parser.data` carries
/// the exchange unretained (the exchange owns the decoder, so it outlives every callback).
///
/// Framing is strict where http-parser is lenient (StrictFraming.swift): each head's bytes are
/// checked by a `HeadScanner` before the parser sees them, and a chunked body is decoded by a
/// `ChunkedDecoder` instead of the parser, which takes the next request's head again once the
/// body has ended.
struct HTTP1Decoder: ~Copyable {
    enum Event {
        /// Every byte was consumed and the parser wants more.
        case needMore
        /// The head is complete after `consumed` bytes (then read `method`, `contentLength` ...).
        case headComplete(consumed: Int)
        /// Body bytes (chunked framing removed), inside the bytes given; go on from `consumed`
        /// (which may leave the body's last byte to be counted by the next event).
        case body(UnsafeRawBufferPointer, consumed: Int)
        /// The message ended after `consumed` bytes; the rest belongs to the next request.
        case messageComplete(consumed: Int)
        /// The bytes are not valid HTTP (or a head callback refused them).
        case failed(http_errno)
    }

    private let parser: UnsafeMutablePointer<http_parser>
    /// What the last callback reported, read once `http_parser_execute` returns.
    private let pending: UnsafeMutablePointer<Pending>

    private enum PendingKind { case none, head, body, end }
    private struct Pending {
        var kind = PendingKind.none
        var body = UnsafeRawBufferPointer(start: nil, count: 0)
    }

    /// Who reads the next bytes.
    private enum Mode {
        /// A head: the scanner, then the parser.
        case head
        /// The head was scanned: the parser (the head's end, a Content-Length body).
        case parser
        /// A chunked body: the chunked decoder.
        case chunked
    }
    private struct Framing {
        var mode = Mode.head
        var scanner = HeadScanner()
        var chunked = ChunkedDecoder()
        /// The parser was left at a chunked body's start: it is set up afresh before the next head
        /// (not at once, so `isChunked` and the others still describe the request until then).
        var parserStale = false
    }
    private let framing: UnsafeMutablePointer<Framing>

    init() {
        parser = .allocate(capacity: 1)
        http_parser_init(parser, HTTP_REQUEST)
        pending = .allocate(capacity: 1)
        pending.initialize(to: Pending())
        framing = .allocate(capacity: 1)
        framing.initialize(to: Framing())
    }

    deinit {
        parser.deallocate()
        pending.deallocate()
        framing.deinitialize(count: 1)
        framing.deallocate()
    }

    /// Ready for a new connection's first request, reporting to `exchange`; chunk extensions
    /// and trailers of one body together may take up to `metadataLimit` bytes.
    func reset(for exchange: Exchange, metadataLimit: Int) {
        http_parser_init(parser, HTTP_REQUEST)
        parser.pointee.data = Unmanaged.passUnretained(exchange).toOpaque()
        pending.pointee = Pending()
        framing.pointee = Framing()
        framing.pointee.chunked.metadataLimit = metadataLimit
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
    /// Read at `headComplete` it is the declared length.
    var contentLength: UInt64 { parser.pointee.content_length }

    /// Feeds bytes until the next event.
    func decode(_ bytes: UnsafeRawBufferPointer) -> Event {
        switch framing.pointee.mode {
        case .chunked:
            return decodeChunked(bytes)
        case .head:
            if framing.pointee.parserStale {
                let data = parser.pointee.data
                http_parser_init(parser, HTTP_REQUEST)
                parser.pointee.data = data
                framing.pointee.parserStale = false
            }
            switch framing.pointee.scanner.scan(bytes) {
            case .incomplete: break
            case .endOfHead: framing.pointee.mode = .parser
            case .invalid(let error): return .failed(error)
            }
        case .parser:
            break
        }
        let consumed = withUnsafePointer(to: HTTP1Decoder.settings) { settings in
            http_parser_execute(parser, settings, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        let errno = http_errno(rawValue: parser.pointee.http_errno)
        if errno == HPE_PAUSED {
            http_parser_pause(parser, 0)
            let event = pending.pointee
            pending.pointee.kind = .none
            switch event.kind {
            case .head:
                // A chunked body is ours to decode (CONNECT has none: its bytes are another
                // protocol's, and the connection closes after the answer).
                if isChunked && method != HTTP_CONNECT {
                    framing.pointee.mode = .chunked
                    framing.pointee.chunked.start()
                }
                return .headComplete(consumed: consumed)
            case .body: return .body(event.body, consumed: consumed)
            case .end, .none:
                nextHead()
                return .messageComplete(consumed: consumed)
            }
        }
        if errno != HPE_OK { return .failed(errno) }
        return .needMore
    }

    private func decodeChunked(_ bytes: UnsafeRawBufferPointer) -> Event {
        switch framing.pointee.chunked.decode(bytes) {
        case .needMore:
            return .needMore
        case .data(let start, let count, let consumed):
            return .body(UnsafeRawBufferPointer(rebasing: bytes[start..<(start + count)]), consumed: consumed)
        case .end(let consumed):
            nextHead()
            framing.pointee.parserStale = true
            return .messageComplete(consumed: consumed)
        case .failed(.metadataTooLarge):
            return .failed(HPE_HEADER_OVERFLOW)
        case .failed(.sizeOverflow):
            return .failed(HPE_INVALID_CONTENT_LENGTH)
        case .failed(.malformed):
            return .failed(HPE_INVALID_CHUNK_SIZE)
        }
    }

    /// The message ended: the next bytes are a head.
    private func nextHead() {
        framing.pointee.mode = .head
        framing.pointee.scanner.reset()
    }

    private static func exchange(_ p: UnsafeMutablePointer<http_parser>?) -> Exchange {
        Unmanaged<Exchange>.fromOpaque(p!.pointee.data).takeUnretainedValue()
    }

    private static func raw(_ at: UnsafePointer<CChar>?, _ length: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: at, count: length)
    }

    /// Records an event and pauses the parser, which makes `http_parser_execute` return with the
    /// exact count of bytes consumed so far.
    private static func stop(_ p: UnsafeMutablePointer<http_parser>?, _ kind: PendingKind,
                             _ body: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) -> Int32 {
        let exchange = exchange(p)
        exchange.decoder.pending.pointee = Pending(kind: kind, body: body)
        http_parser_pause(p, 1)
        return 0
    }

    private static let settings: http_parser_settings = {
        var s = http_parser_settings()
        s.on_url = { p, at, n in exchange(p).decodedTarget(raw(at, n)) }
        s.on_header_field = { p, at, n in exchange(p).decodedHeaderName(raw(at, n)) }
        s.on_header_value = { p, at, n in exchange(p).decodedHeaderValue(raw(at, n)) }
        s.on_headers_complete = { p in stop(p, .head) }
        s.on_body = { p, at, n in stop(p, .body, raw(at, n)) }
        s.on_message_complete = { p in stop(p, .end) }
        return s
    }()
}
