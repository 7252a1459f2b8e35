import CHTTPParser

// Where a request ends must be decided exactly as any front end (proxy, load balancer) in front
// of aws decides it: when two HTTP implementations split the same bytes differently, the bytes
// one of them takes for a body the other takes for a new request (request smuggling). The
// http-parser library aws uses is built without HTTP_PARSER_STRICT and accepts framing that other
// servers read differently: any bytes up to a CR in a chunk extension (a bare LF included), any
// byte after a CR in a chunk-size line, any two bytes after chunk data, any byte after the CR
// that ends a head, obs-fold. The parts here close those gaps: `HeadScanner` checks the line
// structure of a head before the parser sees it, `ChunkedDecoder` replaces the parser for chunked
// bodies, and `TransferCodingList` judges Transfer-Encoding. RFC 9112 §2.2, §5.2, §6.1, §7.1.

/// The line structure of a request head, checked ahead of the parser over the same bytes (which
/// it never changes). A line ends with CRLF or a bare LF (RFC 9112 §2.2 lets a recipient accept
/// LF alone; nginx does, and classic clients send it), and the head ends at the first empty line.
/// Refused: a CR not followed by LF (bare CR), a line that starts with whitespace (obs-fold, or
/// whitespace before the first field: RFC 9112 §5.2 and §2.2 allow rejecting both), and control
/// characters in the request line (a front end may split the line on a tab where aws would not).
/// Everything else — methods, targets, field names and values — is still the parser's (and
/// RequestHead's) to judge. Cost: one pass over the head's bytes, which are already in cache.
public struct HeadScanner {
    public enum Verdict: Equatable {
        /// Every byte was scanned; the head goes on.
        case incomplete
        /// The empty line that ends the head was seen; bytes after it were not looked at.
        case endOfHead
        /// The head is malformed at byte `at` of those given (the error names why, for the log).
        case invalid(http_errno, at: Int)
    }

    private enum State: UInt8 {
        /// Before the request line: empty lines are skipped (RFC 9112 §2.2).
        case leading, leadingCR
        case requestLine
        /// Inside a field line.
        case field
        /// After a CR inside a line: only LF may follow.
        case lineCR
        /// At the start of a line after the request line.
        case lineStart
        /// After the CR of the empty line.
        case endCR
        case done
    }

    private var state = State.leading

    public init() {}

    public mutating func reset() { state = .leading }

    public mutating func scan(_ bytes: UnsafeRawBufferPointer) -> Verdict {
        guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return .incomplete }
        var s = state
        var i = 0
        let n = bytes.count
        scanning: while i < n {
            switch s {
            case .field:
                // The common case, in a tight loop: any byte but CR and LF (the parser judges them),
                // eight at a time while no byte of the word is below 14 (an exact test for n <= 128:
                // "hasless" in Sean Anderson's Bit Twiddling Hacks).
                while i + 8 <= n {
                    let x = UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self)
                    if (x &- 0x0E0E_0E0E_0E0E_0E0E) & ~x & 0x8080_8080_8080_8080 != 0 { break }
                    i += 8
                }
                while i < n && base[i] > 13 { i += 1 }
                guard i < n else { break scanning }
                let b = base[i]
                i += 1
                if b == 13 { s = .lineCR } else if b == 10 { s = .lineStart }
                continue
            case .requestLine:
                while i < n && base[i] >= 32 && base[i] != 127 { i += 1 }
                guard i < n else { break scanning }
                let b = base[i]
                i += 1
                if b == 13 { s = .lineCR } else if b == 10 { s = .lineStart } else { return fail(HPE_INVALID_URL, i) }
                continue
            default:
                break
            }
            let b = base[i]
            i += 1
            switch s {
            case .field, .requestLine:
                break  // handled above
            case .lineStart:
                switch b {
                case 13: s = .endCR
                case 10: state = .done; return .endOfHead
                case 32, 9: return fail(HPE_INVALID_HEADER_TOKEN, i)  // obs-fold
                default: s = .field
                }
            case .lineCR:
                guard b == 10 else { return fail(HPE_LF_EXPECTED, i) }
                s = .lineStart
            case .endCR:
                guard b == 10 else { return fail(HPE_LF_EXPECTED, i) }
                state = .done
                return .endOfHead
            case .leading:
                if b == 13 { s = .leadingCR } else if b != 10 {
                    if b < 32 || b == 127 { return fail(HPE_INVALID_CONSTANT, i) }
                    s = .requestLine
                }
            case .leadingCR:
                guard b == 10 else { return fail(HPE_LF_EXPECTED, i) }
                s = .leading
            case .done:
                return .endOfHead
            }
        }
        state = s
        return .incomplete
    }

    private mutating func fail(_ error: http_errno, _ next: Int) -> Verdict {
        state = .done
        return .invalid(error, at: next - 1)
    }
}

/// The chunked transfer coding of a request body (RFC 9112 §7.1), decoded strictly:
///
///     chunk      = 1*HEXDIG [ BWS chunk-ext ] CRLF chunk-data CRLF     (size > 0)
///     last-chunk = 1*"0" [ BWS chunk-ext ] CRLF
///     chunk-ext  = *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )
///     then a trailer section: *( field-line CRLF ) CRLF
///
/// Every line ends with CRLF exactly: a bare LF or a bare CR anywhere in the framing is an
/// error (no client library sends either, and each one is read differently by some server).
/// Whitespace is allowed after the size as BWS, even without an extension (some old clients pad
/// the size). A size that does not fit 63 bits is an error, not a wrap-around. Extensions are
/// checked and ignored; trailer fields are checked (a token, a colon, no control character but
/// HT, no obs-fold) and dropped (RFC 9110 §6.5.1). Extension and trailer bytes together are
/// limited to `metadataLimit` per body (an endless extension is otherwise a way to keep a
/// connection busy that no body limit sees).
public struct ChunkedDecoder {
    public enum Failure: Equatable {
        /// The framing is not the chunked coding.
        case malformed
        /// A chunk size beyond 63 bits.
        case sizeOverflow
        /// Extensions and trailers past `metadataLimit`.
        case metadataTooLarge
    }

    public enum Outcome: Equatable {
        /// Every byte was used and the body goes on.
        case needMore
        /// Chunk data at `start..<start+count` of the bytes given; go on from `consumed`.
        case data(start: Int, count: Int, consumed: Int)
        /// The body ended after `consumed` bytes; the rest belongs to the next request.
        case end(consumed: Int)
        case failed(Failure)
    }

    private enum State: UInt8 {
        /// The LF that ends the head (the parser stops before it).
        case headLF
        case sizeStart, size, sizeWS
        case extStart, extName, extNameWS, extValueStart, extToken, extQuoted, extQuotedEscape, extAfterValue
        /// The CR that ends a chunk-size line has been seen.
        case lineLF
        case data, dataCR, dataLF
        case trailerLineStart, trailerName, trailerValue, trailerLF
        case endLF
        case done
    }

    private var state = State.done
    /// The size being read, then the data bytes still to come.
    private var remaining: UInt64 = 0
    private var metadataBytes = 0
    public var metadataLimit = 32 * 1024

    public init() {}

    /// A new body whose head's last byte (LF) comes first; `atHeadLF: false` starts at the first
    /// chunk-size line.
    public mutating func start(atHeadLF: Bool = true) {
        state = atHeadLF ? .headLF : .sizeStart
        remaining = 0
        metadataBytes = 0
    }

    public mutating func decode(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return .needMore }
        let n = bytes.count
        var i = 0
        while i < n {
            if state == .data {
                let count = Int(min(remaining, UInt64(n - i)))
                remaining -= UInt64(count)
                if remaining == 0 { state = .dataCR }
                return .data(start: i, count: count, consumed: i + count)
            }
            let b = base[i]
            i += 1
            switch state {
            case .headLF:
                guard b == 10 else { return fail(.malformed) }
                state = .sizeStart
            case .sizeStart:
                guard let v = ASCII.hexValue(b) else { return fail(.malformed) }
                remaining = UInt64(v)
                state = .size
            case .size:
                if let v = ASCII.hexValue(b) {
                    guard remaining <= UInt64(Int64.max) >> 4 else { return fail(.sizeOverflow) }
                    remaining = remaining << 4 | UInt64(v)
                } else if b == 13 {
                    state = .lineLF
                } else if b == 59 {
                    state = .extStart
                } else if b == 32 || b == 9 {
                    state = .sizeWS
                } else {
                    return fail(.malformed)
                }
            case .sizeWS:
                switch b {
                case 32, 9: break
                case 59: state = .extStart
                case 13: state = .lineLF
                default: return fail(.malformed)
                }
            case .lineLF:
                guard b == 10 else { return fail(.malformed) }
                state = remaining == 0 ? .trailerLineStart : .data
            case .dataCR:
                guard b == 13 else { return fail(.malformed) }
                state = .dataLF
            case .dataLF:
                guard b == 10 else { return fail(.malformed) }
                state = .sizeStart
            case .endLF:
                guard b == 10 else { return fail(.malformed) }
                state = .done
                return .end(consumed: i)
            default:
                // Extensions and trailers: counted against the limit.
                metadataBytes += 1
                if metadataBytes > metadataLimit { return fail(.metadataTooLarge) }
                if let failure = metadata(b) { return fail(failure) }
            }
        }
        return .needMore
    }

    /// One byte of a chunk extension or of the trailer section.
    private mutating func metadata(_ b: UInt8) -> Failure? {
        switch state {
        case .extStart:
            if b == 32 || b == 9 { return nil }
            guard ASCII.isTokenChar(b) else { return .malformed }
            state = .extName
        case .extName:
            if ASCII.isTokenChar(b) { return nil }
            switch b {
            case 32, 9: state = .extNameWS
            case 61: state = .extValueStart
            case 59: state = .extStart
            case 13: state = .lineLF
            default: return .malformed
            }
        case .extNameWS:
            switch b {
            case 32, 9: break
            case 61: state = .extValueStart
            case 59: state = .extStart
            case 13: state = .lineLF
            default: return .malformed
            }
        case .extValueStart:
            if b == 32 || b == 9 { return nil }
            if b == 34 { state = .extQuoted; return nil }
            guard ASCII.isTokenChar(b) else { return .malformed }
            state = .extToken
        case .extToken:
            if ASCII.isTokenChar(b) { return nil }
            switch b {
            case 32, 9: state = .extAfterValue
            case 59: state = .extStart
            case 13: state = .lineLF
            default: return .malformed
            }
        case .extQuoted:
            // qdtext (HT, SP, VCHAR but DQUOTE and backslash, obs-text), a quoted-pair, or the end.
            switch b {
            case 34: state = .extAfterValue
            case 92: state = .extQuotedEscape
            case 9, 32...126, 128...255: break
            default: return .malformed
            }
        case .extQuotedEscape:
            guard b == 9 || (b >= 32 && b != 127) else { return .malformed }
            state = .extQuoted
        case .extAfterValue:
            switch b {
            case 32, 9: break
            case 59: state = .extStart
            case 13: state = .lineLF
            default: return .malformed
            }
        case .trailerLineStart:
            if b == 13 { state = .endLF; return nil }
            guard ASCII.isTokenChar(b) else { return .malformed }  // obs-fold, ':' or a CTL
            state = .trailerName
        case .trailerName:
            if ASCII.isTokenChar(b) { return nil }
            guard b == 58 else { return .malformed }  // whitespace before the colon included
            state = .trailerValue
        case .trailerValue:
            if b == 13 { state = .trailerLF; return nil }
            guard b == 9 || (b >= 32 && b != 127) else { return .malformed }
        case .trailerLF:
            guard b == 10 else { return .malformed }
            state = .trailerLineStart
        default:
            return .malformed
        }
        return nil
    }

    private mutating func fail(_ failure: Failure) -> Outcome {
        state = .done
        return .failed(failure)
    }
}

/// The transfer codings of a request's Transfer-Encoding fields, fed one field value at a time
/// in order (several fields form one list, RFC 9110 §5.3), judged by RFC 9112 §6.1 and §6.3:
/// - `.chunked`: the list is exactly `chunked` (empty list elements aside);
/// - `.invalid` (400, then close): an empty list, a malformed element, chunked not last or more
///   than once, or chunked with parameters — the body's length cannot be determined (§6.3);
/// - `.notImplemented` (501, then close): chunked is last and once, but other codings come
///   before it (`gzip, chunked`, `identity, chunked`): aws decodes no coding but chunked (§6.1).
public struct TransferCodingList {
    public enum Verdict: Equatable { case chunked, notImplemented, invalid }

    private var elements = 0
    private var chunkedCount = 0
    private var lastIsChunked = false
    private var otherCoding = false
    private var malformed = false

    public init() {}

    /// One field value (a slice of the head's storage).
    public mutating func add(_ value: ArraySlice<UInt8>) {
        var element = value.startIndex
        while true {
            let end = value[element...].firstIndex(of: 44) ?? value.endIndex
            addElement(value[element..<end])
            if end == value.endIndex { break }
            element = end + 1
        }
    }

    private mutating func addElement(_ raw: ArraySlice<UInt8>) {
        // OWS around the element; empty elements are allowed and ignored (RFC 9110 §5.6.1).
        guard let first = raw.firstIndex(where: { $0 != 32 && $0 != 9 }) else { return }
        var rest = raw[first...]
        while let last = rest.last, last == 32 || last == 9 { rest = rest.dropLast() }
        elements += 1
        let nameEnd = rest.firstIndex(where: { !ASCII.isTokenChar($0) }) ?? rest.endIndex
        let name = rest[..<nameEnd]
        let parameters = rest[nameEnd...].drop(while: { $0 == 32 || $0 == 9 })
        if name.isEmpty || !(parameters.isEmpty || parameters.first == 59) { malformed = true }
        let isChunked = parameters.isEmpty && name.count == 7
            && zip(name, "chunked".utf8).allSatisfy { ASCII.lower($0) == $1 }
        if isChunked { chunkedCount += 1 } else { otherCoding = true }
        lastIsChunked = isChunked
    }

    public var verdict: Verdict {
        if malformed || elements == 0 || !lastIsChunked || chunkedCount != 1 { return .invalid }
        return otherCoding ? .notImplemented : .chunked
    }
}
