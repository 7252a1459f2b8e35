import CHTTPParser
import Glibc

/// HTTP/1 request decoding around http-parser, as a function that returns events: it feeds bytes
/// until something happens that its owner must act on (the head is complete, body bytes, the
/// message ended, an error) and stops there, so every response starts after
/// `http_parser_execute` has returned, never inside one of its callbacks. Only the head's bytes
/// are taken inside callbacks (appended to `head`, within the limits).
///
/// The parser struct and what its callbacks fill (the head, the limits) live at stable heap
/// addresses owned by the decoder; `parser.data` points at the latter. Nothing here knows the
/// connection, so a fuzzer drives exactly the decoder the server runs.
///
/// Framing is strict where http-parser is lenient (StrictFraming.swift): each head's bytes are
/// checked by a `HeadScanner` before the parser sees them, and a chunked body is decoded by a
/// `ChunkedDecoder` instead of the parser, which takes the next request's head again once the
/// body has ended.
public struct HTTP1Decoder: ~Copyable {
    public enum Event {
        /// Every byte was consumed and the parser wants more.
        case needMore
        /// The head is complete after `consumed` bytes (then read `head`, `method`, `contentLength` ...).
        case headComplete(consumed: Int)
        /// Body bytes (chunked framing removed), inside the bytes given; go on from `consumed`
        /// (which may leave the body's last byte to be counted by the next event).
        case body(UnsafeRawBufferPointer, consumed: Int)
        /// The message ended after `consumed` bytes; the rest belongs to the next request.
        case messageComplete(consumed: Int)
        /// The bytes are not valid HTTP, or passed a limit: `refusal` is then the status the limit
        /// calls for (414, 431, 413); nil for malformed bytes.
        case failed(http_errno, refusal: HTTPStatus?)
    }

    /// The limits a request is decoded under.
    public struct Limits: Sendable {
        /// The whole request line: method, space, target, space and "HTTP/1.1" (414 past it).
        public var requestLine: Int
        /// Header names and values together (431 past it); also the chunk extensions and trailers
        /// of one body together (413 past it).
        public var headerBytes: Int
        /// Header fields (431 past it).
        public var headerCount: Int

        public init(requestLine: Int, headerBytes: Int, headerCount: Int) {
            self.requestLine = requestLine
            self.headerBytes = headerBytes
            self.headerCount = headerCount
        }
    }

    @usableFromInline let parser: UnsafeMutablePointer<http_parser>
    /// Everything the callbacks touch, at a stable address (`parser.data` points here).
    private let state: UnsafeMutablePointer<State>

    private enum PendingKind { case none, head, body, end }

    /// Who reads the next bytes.
    private enum Mode {
        /// A head: the scanner, then the parser.
        case head
        /// The head was scanned: the parser (the head's end, a Content-Length body).
        case parser
        /// A chunked body: the chunked decoder.
        case chunked
    }

    private struct State {
        /// What the last callback reported, read once `http_parser_execute` returns.
        var pending = PendingKind.none
        var pendingBody = UnsafeRawBufferPointer(start: nil, count: 0)
        var mode = Mode.head
        var scanner = HeadScanner()
        var chunked = ChunkedDecoder()
        /// The parser was left at a chunked body's start: it is set up afresh before the next head
        /// (not at once, so `isChunked` and the others still describe the request until then).
        var parserStale = false
        /// The head being filled, valid while `decode` runs.
        var head: UnsafeMutablePointer<RequestHead>?
        var limits = Limits(requestLine: 8192, headerBytes: 32 * 1024, headerCount: 100)
        /// The status a head callback refused the request with (a limit). Cleared only by `reset`:
        /// a refused request ends its connection.
        var refusal: HTTPStatus?
    }

    public init() {
        parser = .allocate(capacity: 1)
        http_parser_init(parser, HTTP_REQUEST)
        state = .allocate(capacity: 1)
        state.initialize(to: State())
        parser.pointee.data = UnsafeMutableRawPointer(state)
    }

    deinit {
        parser.deallocate()
        state.deinitialize(count: 1)
        state.deallocate()
    }

    /// Ready for a new connection's first request.
    public func reset(limits: Limits) {
        http_parser_init(parser, HTTP_REQUEST)
        parser.pointee.data = UnsafeMutableRawPointer(state)
        state.pointee.pending = .none
        state.pointee.mode = .head
        state.pointee.scanner = HeadScanner()
        state.pointee.chunked = ChunkedDecoder()
        state.pointee.chunked.metadataLimit = limits.headerBytes
        state.pointee.parserStale = false
        state.pointee.limits = limits
        state.pointee.refusal = nil
    }

    @inlinable public var shouldKeepAlive: Bool { http_should_keep_alive(parser) != 0 }
    @inlinable public var method: http_method { http_method(rawValue: UInt32(parser.pointee.method)) }
    @inlinable public var versionMajor: UInt16 { parser.pointee.http_major }
    @inlinable public var versionMinor: UInt16 { parser.pointee.http_minor }
    @inlinable public var isChunked: Bool { (UInt32(parser.pointee.flags) & F_CHUNKED.rawValue) != 0 }
    /// The head asked for a protocol upgrade (or was a CONNECT). aws upgrades nothing: the request
    /// is answered as an ordinary one and the connection then closed, since http-parser treats
    /// whatever follows as the other protocol's bytes.
    @inlinable public var wantsUpgrade: Bool { parser.pointee.upgrade != 0 }
    /// Body bytes still expected when the length is known (Content-Length), else `UInt64.max`.
    /// Read at `headComplete` it is the declared length.
    @inlinable public var contentLength: UInt64 { parser.pointee.content_length }

    /// Feeds bytes until the next event; the head's bytes go into `head`, which the caller resets
    /// before each request (and may rewrite, e.g. a local redirect's target).
    public func decode(_ bytes: UnsafeRawBufferPointer, into head: inout RequestHead) -> Event {
        withUnsafeMutablePointer(to: &head) { head in
            state.pointee.head = head
            defer { state.pointee.head = nil }
            return decode(bytes)
        }
    }

    private func decode(_ bytes: UnsafeRawBufferPointer) -> Event {
        switch state.pointee.mode {
        case .chunked:
            return decodeChunked(bytes)
        case .head:
            if state.pointee.parserStale {
                http_parser_init(parser, HTTP_REQUEST)
                parser.pointee.data = UnsafeMutableRawPointer(state)
                state.pointee.parserStale = false
            }
            switch state.pointee.scanner.scan(bytes) {
            case .incomplete: break
            case .endOfHead: state.pointee.mode = .parser
            case .invalid(let error, let at):
                // Whichever fault comes first in the stream answers, however TCP cut the bytes:
                // the parser reads the bytes before the bad one first (a bad method there is a
                // 501, a long line a 414, where the bad byte alone would make a 400).
                if at > 0, case .failed(let earlier, let refusal) = execute(UnsafeRawBufferPointer(rebasing: bytes[..<at])) {
                    return .failed(earlier, refusal: refusal)
                }
                return .failed(error, refusal: nil)
            }
        case .parser:
            break
        }
        return execute(bytes)
    }

    /// Runs http-parser over bytes the scanner has passed, up to its next event.
    private func execute(_ bytes: UnsafeRawBufferPointer) -> Event {
        let consumed = withUnsafePointer(to: HTTP1Decoder.settings) { settings in
            http_parser_execute(parser, settings, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        let errno = http_errno(rawValue: parser.pointee.http_errno)
        if errno == HPE_PAUSED {
            http_parser_pause(parser, 0)
            let kind = state.pointee.pending
            state.pointee.pending = .none
            switch kind {
            case .head:
                state.pointee.head!.pointee.finishHeaders()
                // A chunked body is ours to decode (CONNECT has none: its bytes are another
                // protocol's, and the connection closes after the answer).
                if isChunked && method != HTTP_CONNECT {
                    state.pointee.mode = .chunked
                    state.pointee.chunked.start()
                }
                return .headComplete(consumed: consumed)
            case .body: return .body(state.pointee.pendingBody, consumed: consumed)
            case .end, .none:
                nextHead()
                return .messageComplete(consumed: consumed)
            }
        }
        if errno == HPE_OK { return .needMore }
        if let refusal = state.pointee.refusal { return .failed(errno, refusal: refusal) }
        if errno == HPE_HEADER_OVERFLOW {
            // http-parser's own limit on a head (80 KiB), should ours be set higher.
            return .failed(errno, refusal: state.pointee.head!.pointee.headers.isEmpty ? .uriTooLong : .requestHeaderFieldsTooLarge)
        }
        return .failed(errno, refusal: nil)
    }

    private func decodeChunked(_ bytes: UnsafeRawBufferPointer) -> Event {
        switch state.pointee.chunked.decode(bytes) {
        case .needMore:
            return .needMore
        case .data(let start, let count, let consumed):
            return .body(UnsafeRawBufferPointer(rebasing: bytes[start..<(start + count)]), consumed: consumed)
        case .end(let consumed):
            nextHead()
            state.pointee.parserStale = true
            return .messageComplete(consumed: consumed)
        case .failed(.metadataTooLarge):
            // Chunk extensions and trailers past their limit: too large, like a long body.
            return .failed(HPE_HEADER_OVERFLOW, refusal: .contentTooLarge)
        case .failed(.sizeOverflow):
            return .failed(HPE_INVALID_CONTENT_LENGTH, refusal: nil)
        case .failed(.malformed):
            return .failed(HPE_INVALID_CHUNK_SIZE, refusal: nil)
        }
    }

    /// The message ended: the next bytes are a head.
    private func nextHead() {
        state.pointee.mode = .head
        state.pointee.scanner.reset()
    }

    // MARK: callbacks (inside http_parser_execute: they only collect bytes and check limits)

    private static func state(_ p: UnsafeMutablePointer<http_parser>?) -> UnsafeMutablePointer<State> {
        p!.pointee.data.assumingMemoryBound(to: State.self)
    }

    private static func raw(_ at: UnsafePointer<CChar>?, _ length: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: at, count: length)
    }

    /// Records an event and pauses the parser, which makes `http_parser_execute` return with the
    /// exact count of bytes consumed so far.
    private static func stop(_ p: UnsafeMutablePointer<http_parser>?, _ kind: PendingKind,
                             _ body: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) -> Int32 {
        let s = state(p)
        s.pointee.pending = kind
        s.pointee.pendingBody = body
        http_parser_pause(p, 1)
        return 0
    }

    private static func target(_ p: UnsafeMutablePointer<http_parser>?, _ bytes: UnsafeRawBufferPointer) -> Int32 {
        let s = state(p)
        s.pointee.head!.pointee.appendTarget(bytes)
        // The limit is the whole line, as its name says (and as Apache's LimitRequestLine):
        // method, space, target, space and the 8 bytes of "HTTP/1.1", which every valid line
        // ends with. The parser knows the method by the time the target comes.
        let method = http_method(rawValue: UInt32(p!.pointee.method))
        let lineLength = strlen(http_method_str(method)) + 1 + s.pointee.head!.pointee.target.count + 1 + 8
        if lineLength > s.pointee.limits.requestLine {
            s.pointee.refusal = .uriTooLong
            return 1
        }
        return 0
    }

    private static func checkHeaderLimits(_ s: UnsafeMutablePointer<State>) -> Int32 {
        if s.pointee.head!.pointee.headerBytes - s.pointee.head!.pointee.target.count > s.pointee.limits.headerBytes
            || s.pointee.head!.pointee.headers.count > s.pointee.limits.headerCount {
            s.pointee.refusal = .requestHeaderFieldsTooLarge
            return 1
        }
        return 0
    }

    private static let settings: http_parser_settings = {
        var s = http_parser_settings()
        s.on_url = { p, at, n in target(p, raw(at, n)) }
        s.on_header_field = { p, at, n in
            let s = state(p)
            s.pointee.head!.pointee.appendHeaderName(raw(at, n))
            return checkHeaderLimits(s)
        }
        s.on_header_value = { p, at, n in
            let s = state(p)
            s.pointee.head!.pointee.appendHeaderValue(raw(at, n))
            return checkHeaderLimits(s)
        }
        s.on_headers_complete = { p in stop(p, .head) }
        s.on_body = { p, at, n in stop(p, .body, raw(at, n)) }
        s.on_message_complete = { p in stop(p, .end) }
        return s
    }()
}
