@testable import Host
import Testing

/// The escaping of request fields in access lines: Apache's rules for combined/common, JSON's
/// (always valid, whatever bytes the client sent) for json.
@Suite struct AccessLogEscapingTests {
    private func apache(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        bytes.withUnsafeBytes { AccessLog.apacheEscape($0, into: &out) }
        return String(decoding: out, as: UTF8.self)
    }

    private func json(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        bytes.withUnsafeBytes { AccessLog.jsonEscape($0, into: &out) }
        return String(decoding: out, as: UTF8.self)
    }

    @Test func apacheEscapesQuotesBackslashesControlAndNonASCIIBytes() {
        #expect(apache(Array("plain /x?a=1".utf8)) == "plain /x?a=1")
        #expect(apache(Array(#"a"b\c"#.utf8)) == #"a\"b\\c"#)
        #expect(apache([0x09, 0x0a, 0x7f, 0xc3, 0xa9]) == #"\x09\x0a\x7f\xc3\xa9"#)
    }

    @Test func jsonKeepsWellFormedUTF8AndEscapesEverythingElse() {
        #expect(json(Array("café €".utf8)) == "café €")
        #expect(json(Array(#"a"b\c"#.utf8)) == #"a\"b\\c"#)
        #expect(json([0x01, 0x0a, 0x1f]) == #"\u0001\u000a\u001f"#)
        // A lone continuation byte, a truncated sequence, an overlong form, a surrogate, past U+10FFFF.
        #expect(json([0x80]) == #"\u0080"#)
        #expect(json([0xe2, 0x82]) == #"\u00e2\u0082"#)
        #expect(json([0xc0, 0xaf]) == #"\u00c0\u00af"#)
        #expect(json([0xed, 0xa0, 0x80]) == #"\u00ed\u00a0\u0080"#)
        #expect(json([0xf4, 0x90, 0x80, 0x80]) == #"\u00f4\u0090\u0080\u0080"#)
        #expect(json([0xf0, 0x9f, 0x98, 0x80, 0xff]) == "\u{1F600}" + #"\u00ff"#)
    }
}
