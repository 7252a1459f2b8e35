import CHTTPParser

/// The headers a file handler or the connection acts on, classified once when the head is complete.
public enum KnownHeader: Int, CaseIterable {
    case host, range, ifRange, ifMatch, ifNoneMatch, ifModifiedSince, ifUnmodifiedSince, expect,
         contentLength, transferEncoding, contentType, acceptEncoding

    public var lowercasedName: [UInt8] {
        switch self {
        case .host: Array("host".utf8)
        case .range: Array("range".utf8)
        case .ifRange: Array("if-range".utf8)
        case .ifMatch: Array("if-match".utf8)
        case .ifNoneMatch: Array("if-none-match".utf8)
        case .ifModifiedSince: Array("if-modified-since".utf8)
        case .ifUnmodifiedSince: Array("if-unmodified-since".utf8)
        case .expect: Array("expect".utf8)
        case .contentLength: Array("content-length".utf8)
        case .transferEncoding: Array("transfer-encoding".utf8)
        case .contentType: Array("content-type".utf8)
        case .acceptEncoding: Array("accept-encoding".utf8)
        }
    }
}

private let knownHeaderNames: [[UInt8]] = KnownHeader.allCases.map(\.lowercasedName)

/// One request's head as the parser delivered it. All bytes (target, header names and values)
/// are copied into one reusable `storage` array and referred to by offsets, so a connection
/// parses request after request without allocating.
public struct RequestHead {
    public struct Header {
        public var name: Range<Int>
        public var value: Range<Int>
    }

    public private(set) var storage: [UInt8] = []
    public private(set) var target: Range<Int> = 0..<0
    public private(set) var headers: [Header] = []
    /// Index into `headers` of the last occurrence of each known header, or -1.
    public private(set) var known = [Int](repeating: -1, count: KnownHeader.allCases.count)
    /// Bit `rawValue` set for each known header present: tested without touching `known`.
    public private(set) var present: UInt32 = 0
    public private(set) var hostCount = 0
    /// A header name with a character that is not a token character, e.g. "Content-Length :"
    /// (RFC 9112 §5.1: such a request is rejected, never guessed at).
    public private(set) var hasMalformedName = false
    private var lastWasValue = false
    public var method: http_method = HTTP_GET
    public var versionMajor: UInt16 = 1
    public var versionMinor: UInt16 = 1
    public var keepAlive = false
    /// The body's declared length as the head said (-1: none or chunked); http-parser counts its
    /// own copy down as the body arrives, so it is recorded when the head completes.
    public var contentLength: Int64 = -1
    public var hasBody = false
    /// Total bytes of target plus headers so far, for the size limits.
    public var headerBytes: Int { storage.count }

    public init() {
        storage.reserveCapacity(2048)
        headers.reserveCapacity(32)
    }

    public mutating func reset() {
        storage.removeAll(keepingCapacity: true)
        headers.removeAll(keepingCapacity: true)
        if present != 0 {
            for i in known.indices { known[i] = -1 }
            present = 0
        }
        target = 0..<0
        hostCount = 0
        hasMalformedName = false
        lastWasValue = false
        keepAlive = false
    }

    // MARK: filled by the parser callbacks

    public mutating func appendTarget(_ bytes: UnsafeRawBufferPointer) {
        if target.isEmpty { target = storage.count..<storage.count }
        storage.append(contentsOf: bytes)
        target = target.lowerBound..<storage.count
    }

    public mutating func appendHeaderName(_ bytes: UnsafeRawBufferPointer) {
        if lastWasValue || headers.isEmpty {
            headers.append(Header(name: storage.count..<storage.count, value: 0..<0))
            lastWasValue = false
        }
        storage.append(contentsOf: bytes)
        headers[headers.count - 1].name = headers[headers.count - 1].name.lowerBound..<storage.count
    }

    public mutating func appendHeaderValue(_ bytes: UnsafeRawBufferPointer) {
        let i = headers.count - 1
        guard i >= 0 else { return }
        if !lastWasValue {
            headers[i].value = storage.count..<storage.count
            lastWasValue = true
        }
        storage.append(contentsOf: bytes)
        headers[i].value = headers[i].value.lowerBound..<storage.count
    }

    /// A new target for the same request (a CGI program's local redirect).
    public mutating func replaceTarget(_ bytes: [UInt8]) {
        let start = storage.count
        storage.append(contentsOf: bytes)
        target = start..<storage.count
    }

    /// Classifies the headers once the head is complete.
    public mutating func finishHeaders() {
        for (index, header) in headers.enumerated() {
            if header.name.isEmpty || !storage[header.name].allSatisfy(ASCII.isTokenChar) { hasMalformedName = true }
            guard let k = classify(header.name) else { continue }
            known[k.rawValue] = index
            present |= 1 << UInt32(k.rawValue)
            if k == .host { hostCount += 1 }
        }
    }

    private func classify(_ name: Range<Int>) -> KnownHeader? {
        for (i, candidate) in knownHeaderNames.enumerated() where candidate.count == name.count {
            if equalsIgnoringCase(name, candidate) { return KnownHeader(rawValue: i) }
        }
        return nil
    }

    // MARK: reading

    @inlinable @inline(__always)
    public func equalsIgnoringCase(_ span: Range<Int>, _ lowercased: [UInt8]) -> Bool {
        guard span.count == lowercased.count else { return false }
        var j = 0
        for i in span {
            var c = storage[i]
            if c >= 65 && c <= 90 { c |= 0x20 }
            if c != lowercased[j] { return false }
            j += 1
        }
        return true
    }

    /// The value of a known header with surrounding whitespace trimmed, or nil when absent.
    @inlinable @inline(__always)
    public func value(_ header: KnownHeader) -> Range<Int>? {
        guard has(header) else { return nil }
        let i = known[header.rawValue]
        return trimmed(headers[i].value)
    }

    @inlinable @inline(__always)
    public func has(_ header: KnownHeader) -> Bool { present & (1 << UInt32(header.rawValue)) != 0 }

    /// Any of If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since (not If-Range,
    /// which only matters with a Range).
    @inlinable @inline(__always)
    public var hasPreconditions: Bool {
        present & (1 << UInt32(KnownHeader.ifMatch.rawValue) | 1 << UInt32(KnownHeader.ifNoneMatch.rawValue)
            | 1 << UInt32(KnownHeader.ifModifiedSince.rawValue) | 1 << UInt32(KnownHeader.ifUnmodifiedSince.rawValue)) != 0
    }

    @inlinable @inline(__always)
    public func trimmed(_ span: Range<Int>) -> Range<Int> {
        var lo = span.lowerBound, hi = span.upperBound
        while lo < hi && (storage[lo] == 32 || storage[lo] == 9) { lo += 1 }
        while hi > lo && (storage[hi - 1] == 32 || storage[hi - 1] == 9) { hi -= 1 }
        return lo..<hi
    }

    public func string(_ span: Range<Int>) -> String {
        String(decoding: storage[span], as: UTF8.self)
    }

    public var methodName: String { String(cString: http_method_str(method)) }
}
