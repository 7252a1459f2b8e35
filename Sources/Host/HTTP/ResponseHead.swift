import AWSParsing

/// Renders every response head aws sends — files, plugins, error pages, the over-limit 503 — into
/// a byte buffer: status line, `Date`, `Server`, then the handler's fields, then the connection
/// decision and the blank line. Status lines and the `Server` field are pre-rendered once.
enum ResponseHead {
    /// "Server: aws/x.y.z\r\n"
    private static let serverField: [UInt8] = Array("Server: aws/\(AWSVersion.string)\r\n".utf8)

    /// Starts a head for `code` (any 3-digit status; a plugin may send one aws has no name for,
    /// which goes out with an empty reason phrase).
    static func begin(_ out: inout [UInt8], code: Int, date: borrowing DateCache) {
        if let status = HTTPStatus(rawValue: code) {
            out.append(contentsOf: StatusTable.shared.statusLine(status))
        } else {
            out.append(ascii: "HTTP/1.1 ")
            out.append(decimal: code)
            out.append(ascii: " \r\n")
        }
        out.append(ascii: "Date: ")
        out.append(contentsOf: date.bytes)
        out.append(ascii: "\r\n")
        out.append(contentsOf: serverField)
    }

    /// In a head begun at `start` and not sent yet: puts `code`'s status line in place of the one
    /// there (a plugin's set_status after its first add_header moves the fields, no allocation
    /// for a known status) and refreshes `Date`, which has a fixed length.
    static func restatus(_ out: inout [UInt8], at start: Int, code: Int, date: borrowing DateCache) {
        let lineEnd = statusLineEnd(out, from: start)
        if let status = HTTPStatus(rawValue: code) {
            out.replaceSubrange(start..<lineEnd, with: StatusTable.shared.statusLine(status))
        } else {
            var line: [UInt8] = []
            line.append(ascii: "HTTP/1.1 ")
            line.append(decimal: code)
            line.append(ascii: " \r\n")
            out.replaceSubrange(start..<lineEnd, with: line)
        }
        redate(&out, at: start, date: date)
    }

    /// Rewrites the `Date` value of a head begun at `start` (an IMF-fixdate is always 29 bytes):
    /// a plugin's head is begun before on_request, and goes out when its first part does.
    static func redate(_ out: inout [UInt8], at start: Int, date: borrowing DateCache) {
        let value = statusLineEnd(out, from: start) + 6  // "Date: "
        date.bytes.withUnsafeBytes { d in
            out.withUnsafeMutableBytes { o in
                precondition(value + d.count <= o.count && o[value - 6] == UInt8(ascii: "D"))
                UnsafeMutableRawBufferPointer(rebasing: o[value..<(value + d.count)]).copyMemory(from: d)
            }
        }
    }

    private static func statusLineEnd(_ out: [UInt8], from start: Int) -> Int {
        var i = start
        while out[i] != 10 { i += 1 }
        return i + 1
    }

    static func field(_ out: inout [UInt8], _ name: StaticString, _ value: some Collection<UInt8>) {
        out.append(ascii: name)
        out.append(ascii: ": ")
        out.append(contentsOf: value)
        out.append(ascii: "\r\n")
    }

    static func field(_ out: inout [UInt8], _ name: StaticString, ascii value: StaticString) {
        out.append(ascii: name)
        out.append(ascii: ": ")
        out.append(ascii: value)
        out.append(ascii: "\r\n")
    }

    static func field(_ out: inout [UInt8], _ name: StaticString, decimal value: Int) {
        out.append(ascii: name)
        out.append(ascii: ": ")
        out.append(decimal: value)
        out.append(ascii: "\r\n")
    }

    /// "Content-Range: bytes a-b/size"
    static func contentRange(_ out: inout [UInt8], _ range: Range<Int>, of size: Int) {
        out.append(ascii: "Content-Range: bytes ")
        out.append(decimal: range.lowerBound)
        out.append(45)
        out.append(decimal: range.upperBound - 1)
        out.append(47)
        out.append(decimal: size)
        out.append(ascii: "\r\n")
    }

    /// Ends the head: `Connection: close` when the server will close, `keep-alive` for an
    /// HTTP/1.0 client that stays, nothing otherwise (HTTP/1.1's default).
    static func end(_ out: inout [UInt8], closing: Bool, http10: Bool) {
        if closing {
            out.append(ascii: "Connection: close\r\n")
        } else if http10 {
            out.append(ascii: "Connection: keep-alive\r\n")
        }
        out.append(ascii: "\r\n")
    }

    /// A whole error response (head and HTML page) for a socket that has no exchange: the 503
    /// sent to a connection over `--max-connections`.
    static func standalone(_ status: HTTPStatus, extra: StaticString, fields: [UInt8], date: borrowing DateCache) -> [UInt8] {
        var out: [UInt8] = []
        let page = StatusTable.shared.errorPage(status)
        begin(&out, code: status.rawValue, date: date)
        out.append(contentsOf: fields)
        out.append(ascii: extra)
        field(&out, "Content-Type", ascii: "text/html; charset=utf-8")
        field(&out, "Content-Length", decimal: page.count)
        end(&out, closing: true, http10: false)
        out.append(contentsOf: page)
        return out
    }
}
