/// The header block a CGI program writes before its body (RFC 3875 §6): parsed as it arrives,
/// refused (502) when it is malformed or too long.
public struct CGIResponseHead: Equatable {
    /// `Status: 404 Not Found` — the code and its reason phrase, if the script gave one.
    public var status: Int?
    public var reason: [UInt8] = []
    public var contentType: [UInt8]?
    public var location: [UInt8]?
    public var contentLength: Int?
    /// Fields passed to the client as written (name, value), in order.
    public var fields: [Field] = []

    public struct Field: Equatable {
        public var name: [UInt8]
        public var value: [UInt8]
    }

    public enum Parse: Equatable {
        /// The blank line has not arrived yet.
        case needMore
        /// The head, and where the body begins in the bytes given.
        case complete(CGIResponseHead, bodyStart: Int)
        case invalid(String)
    }

    /// Fields the server sets itself, or that describe the connection rather than the response.
    private static let dropped: [[UInt8]] = ["connection", "keep-alive", "transfer-encoding", "upgrade", "date", "server",
                                             "proxy-connection", "te", "trailer"].map { Array($0.utf8) }

    /// Parses `bytes` (all of the script's output so far). Lines end with LF or CRLF; the block
    /// ends at an empty line. At most `limit` bytes of header block.
    public static func parse(_ bytes: ArraySlice<UInt8>, limit: Int) -> Parse {
        var head = CGIResponseHead()
        var lineStart = bytes.startIndex
        while let lf = bytes[lineStart...].firstIndex(of: 10) {
            if lf - bytes.startIndex >= limit { return .invalid("header block over \(limit) bytes") }
            var line = bytes[lineStart..<lf]
            if line.last == 13 { line = line.dropLast() }
            lineStart = lf + 1
            if line.isEmpty {
                guard head.status != nil || head.contentType != nil || head.location != nil else {
                    return .invalid("no Status, Content-Type or Location")
                }
                return .complete(head, bodyStart: lineStart - bytes.startIndex)
            }
            if let problem = head.add(line) { return .invalid(problem) }
        }
        if bytes.count >= limit { return .invalid("header block over \(limit) bytes") }
        return .needMore
    }

    /// One header line; the problem with it, if any.
    private mutating func add(_ line: ArraySlice<UInt8>) -> String? {
        guard let colon = line.firstIndex(of: 58) else { return "a header line without a colon" }
        let name = line[..<colon]
        guard !name.isEmpty, name.allSatisfy(ASCII.isTokenChar) else { return "a malformed header name" }
        var value = line[(colon + 1)...]
        while let f = value.first, f == 32 || f == 9 { value = value.dropFirst() }
        while let l = value.last, l == 32 || l == 9 { value = value.dropLast() }
        guard !value.contains(0), !value.contains(13) else { return "a control character in a header value" }
        let lower = name.map(ASCII.lower)
        switch lower {
        case Array("status".utf8):
            guard status == nil else { return "two Status fields" }
            guard value.count >= 3, value.prefix(3).allSatisfy({ $0 >= 48 && $0 <= 57 }),
                  value.count == 3 || value[value.startIndex + 3] == 32 else { return "a malformed Status" }
            let code = value.prefix(3).reduce(0) { $0 * 10 + Int($1 - 48) }
            guard (200...599).contains(code) else { return "Status \(code) is not a final status" }
            status = code
            reason = Array(value.dropFirst(4))
        case Array("content-type".utf8):
            guard contentType == nil else { return "two Content-Type fields" }
            contentType = Array(value)
        case Array("location".utf8):
            guard location == nil else { return "two Location fields" }
            guard !value.isEmpty else { return "an empty Location" }
            location = Array(value)
        case Array("content-length".utf8):
            guard contentLength == nil, !value.isEmpty, value.count <= 18, value.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
                return "a malformed or repeated Content-Length"
            }
            contentLength = value.reduce(0) { $0 * 10 + Int($1 - 48) }
        default:
            if Self.dropped.contains(lower) { return nil }
            fields.append(Field(name: Array(name), value: Array(value)))
        }
        return nil
    }

    /// A local redirect (RFC 3875 §6.2.2): a path, no Status — the server answers it itself.
    public var isLocalRedirect: Bool { status == nil && location?.first == 47 }
}
