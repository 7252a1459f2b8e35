import CHTTPParser
import Glibc
@testable import AWSParsing
@testable import Host
import Testing

/// Runs the scanner over `text` cut into pieces of `piece` bytes (every split point must give
/// the same verdict as one buffer); the offset of a bad byte is counted from the start of `text`.
private func scanHead(_ text: String, piece: Int = Int.max) -> HeadScanner.Verdict {
    var scanner = HeadScanner()
    let all = Array(text.utf8)
    var start = 0
    while start < all.count {
        let end = min(all.count, start + piece)
        let verdict = all[start..<end].withUnsafeBytes { scanner.scan($0) }
        if case .invalid(let error, let at) = verdict { return .invalid(error, at: start + at) }
        if verdict != .incomplete { return verdict }
        start = end
    }
    return .incomplete
}

@Suite struct HeadScannerTests {
    @Test(arguments: [
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\nHost: x\n\n",                      // bare LF line ends (RFC 9112 §2.2)
        "GET / HTTP/1.1\r\nHost: x\n\r\n",
        "\r\n\nGET / HTTP/1.1\r\n\r\n",                     // empty lines before the request line
        "GET /\u{e9} HTTP/1.1\r\nX: a\tb \r\n\r\n",         // obs-text, HT inside a value
    ])
    func acceptsWellFormedHeads(_ head: String) {
        for piece in [1, 2, 3, 7, Int.max] {
            #expect(scanHead(head, piece: piece) == .endOfHead, "piece \(piece)")
        }
    }

    /// Each case names the offset of the byte that makes it malformed.
    @Test(arguments: [
        ("GET / HTTP/1.1\r\nHost: x\r\nX:\rY: z\r\n\r\n", HPE_LF_EXPECTED, 28),     // bare CR after an empty value
        ("GET / HTTP/1.1\r\nHost: x\r\n\rX", HPE_LF_EXPECTED, 26),                    // bare CR ends the head
        ("\rGET / HTTP/1.1\r\n\r\n", HPE_LF_EXPECTED, 1),                             // bare CR before the request line
        ("GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n chunked\r\n\r\n", HPE_INVALID_HEADER_TOKEN, 41),  // obs-fold
        ("GET / HTTP/1.1\r\nContent-Length:\r\n\t5\r\n\r\n", HPE_INVALID_HEADER_TOKEN, 33),
        ("GET / HTTP/1.1\r\n Host: x\r\n\r\n", HPE_INVALID_HEADER_TOKEN, 16),       // whitespace before the first field
        ("GET /a\tb HTTP/1.1\r\n\r\n", HPE_INVALID_URL, 6),                           // HT in the request line
        ("GET /a\u{0c}b HTTP/1.1\r\n\r\n", HPE_INVALID_URL, 6),
    ])
    func refusesAmbiguousLines(_ head: String, _ error: http_errno, _ at: Int) {
        for piece in [1, 2, 5, Int.max] {
            #expect(scanHead(head, piece: piece) == .invalid(error, at: at), "piece \(piece)")
        }
    }

    @Test func findsEveryCROrLFInLongLines() {
        // Lines long enough for the eight-bytes-at-a-time path, the byte in question at every
        // offset, with obs-text (bytes >= 0x80) around it.
        for k in 0..<40 {
            let pad = String(repeating: "a\u{e9}", count: k / 2) + (k % 2 == 1 ? "b" : "")
            let value = "GET / HTTP/1.1\r\nX-Long: \(pad)"
            let end = value.utf8.count
            #expect(scanHead(value + "\rX: y\r\n\r\n") == .invalid(HPE_LF_EXPECTED, at: end + 1), "bare CR after \(k)")
            #expect(scanHead(value + "\r\n folded\r\n\r\n") == .invalid(HPE_INVALID_HEADER_TOKEN, at: end + 2), "fold after \(k)")
            #expect(scanHead(value + "\nY: \(pad)\r\n\r\n") == .endOfHead, "bare LF after \(k)")
            #expect(scanHead(value + "\r\n\r\n") == .endOfHead, "CRLF after \(k)")
        }
    }

    @Test func neverReadsPastTheBuffer() throws {
        // Each head ends where an unreadable page begins: a read past its last byte faults.
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let mem = try #require(mmap(nil, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
        defer { munmap(mem, 2 * page) }
        #expect(mprotect(mem + page, page, PROT_NONE) == 0)
        for text in ["GET /partial", "GET / HTTP/1.1\r\nHost: partial", "GET / HTTP/1.1\r\nX: a value past eight bytes",
                     "GET / HTTP/1.1\r\nX: y\r", "GET / HTTP/1.1\r\nX: y\r\n"] {
            let bytes = Array(text.utf8)
            let start = mem + page - bytes.count
            bytes.withUnsafeBytes { start.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
            var scanner = HeadScanner()
            #expect(scanner.scan(UnsafeRawBufferPointer(start: start, count: bytes.count)) == .incomplete, "\(text)")
        }
    }

    @Test func stopsAtTheEmptyLine() {
        // The body that follows is not looked at: here it holds a bare CR and a fold.
        #expect(scanHead("POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n\r x\n") == .endOfHead)
        #expect(scanHead("GET / HTTP/1.1\r\nHost: x\r\n") == .incomplete)
    }
}

/// The result of decoding `input` (pieces of `piece` bytes) with a decoder that starts at the
/// first chunk-size line: the body, and how many bytes the body took (nil: not complete).
private struct Decoded: Equatable {
    var body: [UInt8] = []
    var consumed: Int?
    var failure: ChunkedDecoder.Failure?
}

private func decodeChunked(_ input: [UInt8], piece: Int = Int.max, limit: Int = 32 * 1024, headLF: Bool = false) -> Decoded {
    var decoder = ChunkedDecoder()
    decoder.metadataLimit = limit
    decoder.start(atHeadLF: headLF)
    var out = Decoded()
    var offset = 0
    var bufferEnd = 0
    while offset < input.count {
        if offset >= bufferEnd { bufferEnd = min(input.count, offset + piece) }
        let outcome = input[offset..<bufferEnd].withUnsafeBytes { decoder.decode($0) }
        switch outcome {
        case .needMore:
            offset = bufferEnd
        case .data(let start, let count, let consumed):
            out.body += input[(offset + start)..<(offset + start + count)]
            offset += consumed
        case .end(let consumed):
            out.consumed = offset + consumed
            return out
        case .failed(let failure):
            out.failure = failure
            return out
        }
    }
    return out
}

private func decodeChunked(_ text: String, piece: Int = Int.max, limit: Int = 32 * 1024) -> Decoded {
    decodeChunked(Array(text.utf8), piece: piece, limit: limit)
}

@Suite struct ChunkedDecoderTests {
    @Test(arguments: [
        ("5\r\nhello\r\n0\r\n\r\n", "hello"),
        ("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world"),
        ("A\r\n0123456789\r\n0\r\n\r\n", "0123456789"),
        ("00005\r\nhello\r\n000\r\n\r\n", "hello"),
        ("5;a\r\nhello\r\n0;b=c\r\n\r\n", "hello"),
        ("5 ; a = b ; c=\"x;\\\"y\" ;d\r\nhello\r\n0\r\n\r\n", "hello"),   // BWS, quoted-string with an escape
        ("5  \r\nhello\r\n0\r\n\r\n", "hello"),                             // whitespace after the size
        ("5\r\nhello\r\n0\r\nX-Trailer: yes\r\nY:\r\n\r\n", "hello"),      // trailers are dropped
        ("0\r\n\r\n", ""),
    ])
    func decodes(_ input: String, _ body: String) {
        let total = input.utf8.count
        for piece in [1, 2, 3, 7, Int.max] {
            let d = decodeChunked(input, piece: piece)
            #expect(d == Decoded(body: Array(body.utf8), consumed: total), "piece \(piece)")
        }
    }

    @Test func leavesTheNextRequestAlone() {
        let d = decodeChunked("3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n")
        #expect(d == Decoded(body: Array("abc".utf8), consumed: 13))
    }

    @Test func startsAtTheHeadsLastLF() {
        let d = decodeChunked(Array("\n1\r\nz\r\n0\r\n\r\n".utf8), headLF: true)
        #expect(d.body == Array("z".utf8) && d.consumed == 12)
        #expect(decodeChunked(Array("x1\r\nz\r\n0\r\n\r\n".utf8), headLF: true).failure == .malformed)
    }

    @Test(arguments: [
        "2;\nxx\r\nab\r\n0\r\n\r\n",        // bare LF in an extension (issue 10, defect 3)
        "2;a\nb\r\nab\r\n0\r\n\r\n",
        "2;a\rb\r\nab\r\n0\r\n\r\n",        // bare CR in an extension
        "2;a=\"x\ny\"\r\nab\r\n0\r\n\r\n",  // LF in a quoted value
        "2;\r\nab\r\n0\r\n\r\n",            // ';' without a name
        "2;a b\r\nab\r\n0\r\n\r\n",
        "2;=x\r\nab\r\n0\r\n\r\n",
        "2;a=\u{01}\r\nab\r\n0\r\n\r\n",
        "2;a=\"x\r\nab\r\n0\r\n\r\n",      // unterminated quoted-string
        "zz\r\nab\r\n0\r\n\r\n",            // chunk sizes: not hex
        "-1\r\nab\r\n0\r\n\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
        "+5\r\nhello\r\n0\r\n\r\n",
        " 5\r\nhello\r\n0\r\n\r\n",
        "\r\nhello\r\n0\r\n\r\n",          // no size
        "5\nhello\r\n0\r\n\r\n",            // bare LF after the size
        "5\rXhello\r\n0\r\n\r\n",           // CR not followed by LF
        "2\r\nabcd\r\n0\r\n\r\n",           // data longer than the chunk
        "2\r\nabXY0\r\n\r\n",               // any two bytes after the data (http-parser took them)
        "2\r\nab\n0\r\n\r\n",               // bare LF after the data
        "2\r\nab0\r\n\r\n",                 // missing CRLF after the data
        "0\r\n\n",                          // bare LF ends the trailer section
        "0\r\nX: y\nZ: w\r\n\r\n",          // bare LF in a trailer
        "0\r\nX: y\r\n folded\r\n\r\n",     // obs-fold in the trailers
        "0\r\nX : y\r\n\r\n",               // whitespace before the colon
        "0\r\nX\r\n\r\n",                   // no colon
        "0\r\n: y\r\n\r\n",                 // no name
        "0\r\nX: a\u{00}b\r\n\r\n",         // NUL in a trailer value
        "0\r\n\rX",                         // bare CR ends the body
    ])
    func refusesMalformedFraming(_ input: String) {
        for piece in [1, 3, Int.max] {
            #expect(decodeChunked(input, piece: piece).failure == .malformed, "piece \(piece)")
        }
    }

    @Test func neverReadsPastTheBuffer() throws {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let mem = try #require(mmap(nil, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
        defer { munmap(mem, 2 * page) }
        #expect(mprotect(mem + page, page, PROT_NONE) == 0)
        for text in ["5", "5;ext=\"quo", "5\r\nhel", "5\r\nhello\r", "0\r\nTrailer: val", "0\r\n\r"] {
            let bytes = Array(text.utf8)
            let start = mem + page - bytes.count
            bytes.withUnsafeBytes { start.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
            var decoder = ChunkedDecoder()
            decoder.start(atHeadLF: false)
            var offset = 0
            while offset < bytes.count {
                let outcome = decoder.decode(UnsafeRawBufferPointer(start: start + offset, count: bytes.count - offset))
                guard case .data(_, _, let consumed) = outcome else {
                    #expect(outcome == .needMore, "\(text)")
                    break
                }
                offset += consumed
            }
        }
    }

    @Test func refusesSizesBeyond63Bits() {
        #expect(decodeChunked("10000000000000005\r\n").failure == .sizeOverflow)   // 2^64 + 5
        #expect(decodeChunked("8000000000000000\r\n").failure == .sizeOverflow)    // 2^63
        #expect(decodeChunked("ffffffffffffffffff\r\n").failure == .sizeOverflow)
        // 2^63 - 1 is a size (the body limit refuses it later); leading zeros do not count.
        #expect(decodeChunked("00000000007fffffffffffffff\r\nab").failure == nil)
    }

    @Test func limitsExtensionsAndTrailersTogether() {
        let ext = String(repeating: "a", count: 60)
        let ok = "1;\(ext)\r\nx\r\n0\r\nT: \(String(repeating: "b", count: 30))\r\n\r\n"
        #expect(decodeChunked(ok, limit: 100).consumed == ok.utf8.count)
        let over = "1;\(ext)\r\nx\r\n1;\(ext)\r\ny\r\n0\r\n\r\n"
        #expect(decodeChunked(over, limit: 100).failure == .metadataTooLarge)
        // An endless extension is cut off at the limit, not read forever.
        let endless = "1;" + String(repeating: "e", count: 1000)
        #expect(decodeChunked(endless, piece: 10, limit: 100).failure == .metadataTooLarge)
    }
}

private func codings(_ values: String...) -> TransferCodingList.Verdict {
    var list = TransferCodingList()
    for v in values { list.add(embedded(v)) }
    return list.verdict
}

@Suite struct TransferCodingListTests {
    @Test func chunkedAlone() {
        #expect(codings("chunked") == .chunked)
        #expect(codings("Chunked") == .chunked)
        #expect(codings(" chunked ") == .chunked)
        #expect(codings(", chunked,") == .chunked)         // empty list elements are ignored
        #expect(codings("", "chunked") == .chunked)
    }

    @Test func otherCodingsBeforeChunkedAreNotImplemented() {
        #expect(codings("gzip, chunked") == .notImplemented)
        #expect(codings("identity, chunked") == .notImplemented)
        #expect(codings("gzip", "chunked") == .notImplemented)   // two fields form one list
        #expect(codings("x-custom;q=1, chunked") == .notImplemented)
        #expect(codings("deflate,gzip,chunked") == .notImplemented)
    }

    @Test func unframeableListsAreInvalid() {
        #expect(codings("gzip") == .invalid)                     // chunked not last (RFC 9112 §6.3)
        #expect(codings("chunked, gzip") == .invalid)
        #expect(codings("chunked", "gzip") == .invalid)
        #expect(codings("chunked, identity") == .invalid)
        #expect(codings("chunked, chunked") == .invalid)         // chunked twice
        #expect(codings("chunked", "chunked") == .invalid)
        #expect(codings("chunked;x=1") == .invalid)              // chunked has no parameters
        #expect(codings("") == .invalid)
        #expect(codings(" , ") == .invalid)
        #expect(codings("gz ip, chunked") == .invalid)           // not a token list
        #expect(codings("\"gzip\", chunked") == .invalid)
        #expect(codings("xchunked") == .invalid)
    }
}
