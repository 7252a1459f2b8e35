@testable import AWSParsing
@testable import Host
import Testing

@Suite struct ByteRangesTests {
    typealias S = ByteRanges.Selection

    private func select(_ header: String, size: Int) -> S {
        let result = ByteRanges.select(embedded(header), size: size)
        // The header's position in its buffer must not matter.
        #expect(ByteRanges.select(bytes(header), size: size) == result)
        return result
    }

    @Test(arguments: [
        ("bytes=0-0", S.partial(0..<1)),
        ("bytes=0-99", .partial(0..<100)),
        ("bytes=10-19", .partial(10..<20)),
        ("bytes=99-99", .partial(99..<100)),
        ("bytes=10-", .partial(10..<100)),
        ("bytes=0-", .partial(0..<100)),
        ("bytes=-1", .partial(99..<100)),
        ("bytes=-30", .partial(70..<100)),
    ])
    func oneRange(_ header: String, _ expected: S) {
        #expect(select(header, size: 100) == expected)
    }

    @Test(arguments: [
        ("bytes=50-1000", S.partial(50..<100)),   // last clamped to the end
        ("bytes=-100", .partial(0..<100)),
        ("bytes=-1000", .partial(0..<100)),       // suffix longer than the file: all of it
    ])
    func clamped(_ header: String, _ expected: S) {
        #expect(select(header, size: 100) == expected)
    }

    @Test(arguments: [
        ("bytes=100-", 100), ("bytes=100-200", 100), ("bytes=1000-1001", 100),
        ("bytes=-0", 100), ("bytes=0-", 0), ("bytes=0-0", 0), ("bytes=-5", 0),
        ("bytes=100-,200-", 100),
    ])
    func unsatisfiable(_ header: String, _ size: Int) {
        #expect(select(header, size: size) == .unsatisfiable)
    }

    @Test(arguments: ["BYTES=10-19", "Bytes=10-19", "bYtEs=10-19"])
    func unitIsCaseInsensitive(_ header: String) {
        #expect(select(header, size: 100) == .partial(10..<20))
    }

    @Test(arguments: [
        ("bytes= 10-19", S.partial(10..<20)),
        ("bytes=\t10-19 ", .partial(10..<20)),
        ("bytes=10-19,", .partial(10..<20)),
        ("bytes=10-19 ,", .partial(10..<20)),
    ])
    func whitespaceAndTrailingComma(_ header: String, _ expected: S) {
        #expect(select(header, size: 100) == expected)
    }

    // RFC 9110 §14.2 lets a server ignore Range; several ranges get the whole representation,
    // even when only one of them is satisfiable.
    @Test(arguments: ["bytes=0-0,5-9", "bytes=0-0, 5-9", "bytes=-1,0-", "bytes=200-,0-1", "bytes=0-1,200-"])
    func severalRangesSelectWhole(_ header: String) {
        #expect(select(header, size: 100) == .whole)
    }

    @Test(arguments: [
        "", "bytes=", "bytes", "bytes-0-1", "bites=0-1", "items=0-1", " bytes=0-1",
        "bytes=-", "bytes=a-b", "bytes=1", "bytes=1-2-3", "bytes=1 -2", "bytes=1- 2",
        "bytes=0-1;", "bytes=0-1 x", "bytes=,0-1", "bytes=0-1,,2-3", "bytes=0x10-0x20",
        "bytes=+1-2", "bytes=--1",
        "bytes=20-10",   // last before first: an invalid range-spec ignores the whole header
        "bytes=0-1,5-3",
    ])
    func malformedSelectsWhole(_ header: String) {
        #expect(select(header, size: 100) == .whole)
    }

    @Test func overflowingDigits() {
        // 19 or more digits read as Int.max: past the end as a first position, the end as a last.
        #expect(select("bytes=9999999999999999999-", size: 100) == .unsatisfiable)
        #expect(select("bytes=99999999999999999999999999999999-", size: 100) == .unsatisfiable)
        #expect(select("bytes=10-99999999999999999999999999999999", size: 100) == .partial(10..<100))
        #expect(select("bytes=-99999999999999999999999999999999", size: 100) == .partial(0..<100))
        // 18 digits still count as a number.
        #expect(select("bytes=0-999999999999999999", size: 100) == .partial(0..<100))
        #expect(select("bytes=999999999999999999-", size: Int.max) == .partial(999_999_999_999_999_999..<Int.max))
        // Leading zeros count towards the 19: the first position becomes Int.max, after the last.
        #expect(select("bytes=0000000000000000005-9", size: 100) == .whole)
        #expect(select("bytes=000000000000000005-9", size: 100) == .partial(5..<10))
    }

    @Test func largeFile() {
        let size = 5_000_000_000
        #expect(select("bytes=4999999999-", size: size) == .partial(4_999_999_999..<size))
        #expect(select("bytes=-4000000000", size: size) == .partial(1_000_000_000..<size))
    }
}
