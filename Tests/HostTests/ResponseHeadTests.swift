@testable import AWSParsing
@testable import Host
import Testing

/// A plugin's head is begun before on_request and finished when its first part goes: the status
/// line and `Date` are rewritten in place, after an interim response and before fields.
@Suite struct ResponseHeadTests {
    private func date(_ seconds: Int) -> DateCache {
        var d = DateCache()
        d.set(seconds)
        return d
    }

    private let interim = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)
    private let server = "Server: aws/\(AWSVersion.string)\r\n"

    private func begun(code: Int, at seconds: Int) -> [UInt8] {
        var out = interim
        ResponseHead.begin(&out, code: code, date: date(seconds))
        ResponseHead.field(&out, "X-First", ascii: "1")
        return out
    }

    @Test func restatusToAKnownStatusKeepsFieldsAndRefreshesTheDate() {
        var out = begun(code: 200, at: 0)
        ResponseHead.restatus(&out, at: interim.count, code: 201, date: date(784_111_777))
        ResponseHead.field(&out, "X-Second", ascii: "2")
        #expect(text(out) == "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
                + server + "X-First: 1\r\nX-Second: 2\r\n")
    }

    @Test func restatusToAnUnnamedStatusHasAnEmptyReason() {
        var out = begun(code: 404, at: 0)
        ResponseHead.restatus(&out, at: interim.count, code: 299, date: date(0))
        #expect(text(out) == "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 299 \r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
                + server + "X-First: 1\r\n")
        ResponseHead.restatus(&out, at: interim.count, code: 204, date: date(0))
        #expect(text(out).hasPrefix("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nDate: "))
    }

    @Test func redateChangesOnlyTheDate() {
        var out = begun(code: 200, at: 0)
        let before = out
        ResponseHead.redate(&out, at: interim.count, date: date(1_700_000_000))
        #expect(out.count == before.count)
        #expect(text(out) == "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\n"
                + server + "X-First: 1\r\n")
    }
}
