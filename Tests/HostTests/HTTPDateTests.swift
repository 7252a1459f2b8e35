@testable import AWSParsing
@testable import Host
import Testing

@Suite struct HTTPDateTests {
    private func format(_ seconds: Int) -> String {
        var out: [UInt8] = []
        HTTPDate.append(seconds, to: &out)
        return text(out)
    }

    private func parse(_ s: String) -> Int? { HTTPDate.parse(embedded(s)) }

    @Test(arguments: [
        (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
        (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
        (1_700_000_000, "Tue, 14 Nov 2023 22:13:20 GMT"),
        (2_147_483_648, "Tue, 19 Jan 2038 03:14:08 GMT"),
        (253_402_300_799, "Fri, 31 Dec 9999 23:59:59 GMT"),
    ])
    func formats(_ seconds: Int, _ expected: String) {
        #expect(format(seconds) == expected)
        #expect(parse(expected) == seconds)
    }

    // IMF-fixdate has four year digits, so dates outside 1970...9999 are clamped, not wrapped.
    @Test(arguments: [
        (-1, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (-315_619_200, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (Int.min, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (253_402_300_800, "Fri, 31 Dec 9999 23:59:59 GMT"),
        (Int.max, "Fri, 31 Dec 9999 23:59:59 GMT"),
    ])
    func clampsOutOfRange(_ seconds: Int, _ expected: String) {
        #expect(format(seconds) == expected)
    }

    @Test func appendsAfterExistingBytes() {
        var out = Array("Date: ".utf8)
        HTTPDate.append(0, to: &out)
        #expect(text(out) == "Date: Thu, 01 Jan 1970 00:00:00 GMT")
    }

    @Test func parsesDatesBefore1970() {
        #expect(parse("Fri, 01 Jan 1960 00:00:00 GMT") == -315_619_200)
        #expect(parse("Wed, 31 Dec 1969 23:59:59 GMT") == -1)
        #expect(parse("Mon, 01 Jan 1900 00:00:00 GMT") == -2_208_988_800)
        #expect(parse("Sat, 01 Jan 0000 00:00:00 GMT") == -62_167_219_200)
    }

    // Obsolete formats are unparseable by design: the condition they carry is then ignored.
    @Test(arguments: [
        "Sunday, 06-Nov-94 08:49:37 GMT",   // RFC 850
        "Sun Nov  6 08:49:37 1994",         // asctime
    ])
    func obsoleteFormats(_ s: String) {
        #expect(parse(s) == nil)
    }

    @Test(arguments: [
        "", "Sun, 06 Nov 1994 08:49:37",
        "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 06 Nov 1994 08:49:37 gmt",
        "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 GMT ", " Sun, 06 Nov 1994 08:49:37 GMT",
        "Sun,  06 Nov 1994 08:49:37 GMT", "Sun; 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 nov 1994 08:49:37 GMT", "Sun, 06 Now 1994 08:49:37 GMT",
        "Sun, 00 Nov 1994 08:49:37 GMT", "Sun, 32 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT", "Sun, 06 Nov 1994 08:60:00 GMT", "Sun, 06 Nov 1994 08:49:61 GMT",
        "Sun, 06 Nov 19x4 08:49:37 GMT", "Sun, 06 Nov 1994 08:4-:37 GMT", "Sun, -6 Nov 1994 08:49:37 GMT",
    ])
    func invalid(_ s: String) {
        #expect(parse(s) == nil)
    }

    // What the parser does not check, pinned so that a change is a decision: timegm normalizes
    // out-of-range fields, and neither the weekday nor the separators between fields are read.
    @Test func leniency() {
        #expect(parse("Sun, 06 Nov 1994 08:49:60 GMT") == 784_111_800)   // leap second: next minute
        #expect(parse("Thu, 30 Feb 1995 00:00:00 GMT") == 794_102_400)   // 2 March
        #expect(parse("Xyz, 06 Nov 1994 08:49:37 GMT") == 784_111_777)
        #expect(parse("Sun, 06-Nov-1994T08.49.37 GMT") == 784_111_777)
    }
}
