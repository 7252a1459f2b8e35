@testable import AWSParsing
import Testing

@Suite struct AcceptEncodingTests {
    private func choose(_ header: String, pre: [ContentCoding] = [], fly: [ContentCoding] = ContentCoding.allCases) -> String {
        var p = CodingSet(), f = CodingSet()
        for c in pre { p.insert(c) }
        for c in fly { f.insert(c) }
        // Embedded in a larger array, as request storage holds it.
        let storage = Array("xx".utf8) + Array(header.utf8) + Array("yy".utf8)
        guard let chosen = AcceptEncoding.choose(storage[2..<(storage.count - 2)], precompressed: p, onTheFly: f) else { return "identity" }
        return "\(chosen.coding.token)\(chosen.precompressed ? "+file" : "")"
    }

    @Test func serverOrderAtEqualWeight() {
        #expect(choose("gzip, deflate, br, zstd") == "br")
        #expect(choose("gzip, zstd") == "zstd")
        #expect(choose("gzip") == "gzip")
        #expect(choose("deflate") == "identity")
        #expect(choose("") == "identity")
    }

    @Test func qValuesDecide() {
        #expect(choose("br;q=0.5, gzip;q=0.8, zstd;q=0.7") == "gzip")
        #expect(choose("br;q=0, gzip") == "gzip")
        #expect(choose("br;q=0.001, gzip;q=0") == "br")
        #expect(choose("BR ; Q=1.000 , gzip;q=0.999") == "br")
        #expect(choose("gzip;q=0, br;q=0, zstd;q=0") == "identity")
    }

    @Test func starAndExplicit() {
        #expect(choose("*") == "br")
        #expect(choose("*;q=0.5, gzip") == "gzip")
        #expect(choose("br;q=0, *") == "zstd")
        #expect(choose("gzip, *;q=0") == "gzip")
        #expect(choose("x-gzip") == "gzip")
    }

    @Test func identityWeighedAboveCodings() {
        #expect(choose("gzip;q=0.5, identity") == "identity")
        #expect(choose("gzip;q=0.5, identity;q=0.5") == "gzip")
        #expect(choose("gzip, identity;q=0") == "gzip")
    }

    @Test func precompressedPreferredAtEqualWeight() {
        #expect(choose("gzip, br", pre: [.gzip]) == "gzip+file")
        #expect(choose("gzip;q=0.5, br", pre: [.gzip]) == "br")
        #expect(choose("gzip;q=0.5, br", pre: [.gzip], fly: []) == "gzip+file")
        #expect(choose("br, zstd, gzip", pre: [.zstd, .gzip], fly: []) == "zstd+file")
        #expect(choose("br", pre: [.gzip], fly: []) == "identity")
    }

    @Test func malformedItemsIgnored() {
        #expect(choose("br;q=2, gzip") == "gzip")
        #expect(choose("br;q=0.1234, gzip;q=0.1") == "gzip")
        #expect(choose("br;q=, gzip;q=0.1") == "gzip")
        #expect(choose("br;q, gzip;q=0.1") == "gzip")
        #expect(choose("br;level=5") == "br")
        #expect(choose(",,, ;, br") == "br")
        #expect(choose("br\"x\", gzip;q=0.1") == "gzip")
    }

    @Test func qValueGrammar() {
        #expect(AcceptEncoding.qValue(ArraySlice("0".utf8)) == 0)
        #expect(AcceptEncoding.qValue(ArraySlice("1".utf8)) == 1000)
        #expect(AcceptEncoding.qValue(ArraySlice("0.25".utf8)) == 250)
        #expect(AcceptEncoding.qValue(ArraySlice("1.0".utf8)) == 1000)
        #expect(AcceptEncoding.qValue(ArraySlice("1.5".utf8)) == nil)
        #expect(AcceptEncoding.qValue(ArraySlice(".5".utf8)) == nil)
        #expect(AcceptEncoding.qValue(ArraySlice("0.".utf8)) == 0)
    }
}
