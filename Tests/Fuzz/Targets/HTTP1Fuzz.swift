import AWSParsing
import CHTTPParser
import Glibc

/// The HTTP/1 request decoder (HeadScanner, http-parser, ChunkedDecoder, the head limits), driven
/// as the server drives it: events until the bytes run out or the stream fails. The same bytes fed
/// whole and in small pieces must give the same transcript (heads, body bytes, ends, the failure
/// and its status): where a request ends, and how it is answered, may never depend on how TCP cut
/// the bytes. One exception, which http-parser makes unavoidable: it hands a field over when the
/// field ends or when the bytes do, so a size limit (414, 431) can be seen before or after a
/// malformed byte further on; a failure that is a limit on one side may be a malformed-bytes
/// failure on the other (the request fails either way). Each head must respect the limits it
/// was decoded under.
enum HTTP1Fuzz {
    static let limits = HTTP1Decoder.Limits(requestLine: 256, headerBytes: 768, headerCount: 16)

    static func run(_ input: UnsafeRawBufferPointer) {
        var reader = InputReader(bytes: input)
        let seed = reader.byte()
        let stream = reader.bytes
        let whole = transcript(of: stream, pieces: nil)
        var splitter = Splitter(seed: seed)
        let split = transcript(of: stream, pieces: &splitter)
        check(sameStory(whole, split), "whole: \(whole)\nsplit: \(split)")
    }

    /// Equal transcripts, but for the one allowed difference in the last line: a limit refusal
    /// against a failure without one.
    static func sameStory(_ a: [String], _ b: [String]) -> Bool {
        guard a.count == b.count, a.dropLast() == b.dropLast() else { return false }
        guard let x = a.last, let y = b.last, x != y else { return true }
        guard x.hasPrefix("failed "), y.hasPrefix("failed ") else { return false }
        let limitX = !x.hasSuffix(" -"), limitY = !y.hasSuffix(" -")
        return limitX != limitY
    }

    static func transcript(of stream: UnsafeRawBufferPointer, pieces: UnsafeMutablePointer<Splitter>?) -> [String] {
        let decoder = HTTP1Decoder()
        decoder.reset(limits: limits)
        var head = RequestHead()
        var out: [String] = []
        var body: [UInt8] = []
        var atMessageStart = true
        var offset = 0
        var pending = 0..<0   // bytes handed over but not yet consumed
        var steps = 0
        while true {
            if pending.isEmpty {
                guard offset < stream.count else { break }
                let size = pieces.map { min($0.pointee.next(), stream.count - offset) } ?? (stream.count - offset)
                pending = offset..<(offset + size)
                offset += size
            }
            steps += 1
            check(steps < 1_000_000, "the decoder makes no progress")
            if atMessageStart { head.reset(); atMessageStart = false }
            let chunk = UnsafeRawBufferPointer(rebasing: stream[pending])
            switch decoder.decode(chunk, into: &head) {
            case .needMore:
                pending = pending.upperBound..<pending.upperBound
            case .headComplete(let consumed):
                check(consumed <= chunk.count, "consumed past the bytes given")
                pending = (pending.lowerBound + consumed)..<pending.upperBound
                out.append(describe(head, decoder))
            case .body(let bytes, let consumed):
                check(consumed <= chunk.count, "consumed past the bytes given")
                // Inside the bytes given (the body's last byte may be counted by the next event).
                if let base = bytes.baseAddress, let start = chunk.baseAddress {
                    check(base >= start && base + bytes.count <= start + chunk.count, "body bytes outside the bytes given")
                }
                body.append(contentsOf: bytes)
                pending = (pending.lowerBound + consumed)..<pending.upperBound
            case .messageComplete(let consumed):
                check(consumed <= chunk.count, "consumed past the bytes given")
                pending = (pending.lowerBound + consumed)..<pending.upperBound
                out.append("body \(body.count) \(checksum(body))")
                out.append("end")
                body.removeAll()
                atMessageStart = true
            case .failed(let error, let refusal):
                out.append("body \(body.count) \(checksum(body))")
                out.append("failed \(String(cString: http_errno_name(error))) \(refusal.map { String($0.rawValue) } ?? "-")")
                return out
            }
        }
        if !body.isEmpty { out.append("body \(body.count) \(checksum(body))") }
        return out
    }

    static func describe(_ head: RequestHead, _ decoder: borrowing HTTP1Decoder) -> String {
        check(!head.target.isEmpty, "a head without a target")
        check(head.headers.count <= limits.headerCount, "more headers than the limit")
        let line = strlen(http_method_str(decoder.method)) + 1 + head.target.count + 1 + 8
        check(line <= limits.requestLine, "a request line of \(line) bytes, over the limit")
        check(head.headerBytes - head.target.count <= limits.headerBytes, "more header bytes than the limit")
        var s = "head \(decoder.method.rawValue) \(decoder.versionMajor).\(decoder.versionMinor) "
        s += "chunked=\(decoder.isChunked) length=\(decoder.contentLength) keepAlive=\(decoder.shouldKeepAlive) "
        s += "target=\(head.string(head.target)) malformedName=\(head.hasMalformedName) hosts=\(head.hostCount)"
        for h in head.headers { s += " [\(head.string(h.name)):\(head.string(h.value))]" }
        return s
    }

    static func checksum(_ bytes: [UInt8]) -> UInt64 {
        var h: UInt64 = 14_695_981_039_346_656_037
        for b in bytes { h = (h ^ UInt64(b)) &* 1_099_511_628_211 }
        return h
    }
}

/// The chunked body decoder alone (a body starting at its first chunk-size line), fed whole and
/// in pieces: the same data, the same end or failure.
enum ChunkedFuzz {
    static func run(_ input: UnsafeRawBufferPointer) {
        var reader = InputReader(bytes: input)
        let seed = reader.byte()
        let stream = reader.bytes
        var splitter = Splitter(seed: seed)
        let whole = transcript(of: stream, pieces: nil)
        let split = transcript(of: stream, pieces: &splitter)
        check(whole == split, "whole: \(whole)\nsplit: \(split)")
    }

    static func transcript(of stream: UnsafeRawBufferPointer, pieces: UnsafeMutablePointer<Splitter>?) -> [String] {
        var decoder = ChunkedDecoder()
        decoder.metadataLimit = 256
        decoder.start(atHeadLF: false)
        var data: [UInt8] = []
        var offset = 0
        var pending = 0..<0
        while true {
            if pending.isEmpty {
                guard offset < stream.count else { return ["open \(data.count) \(HTTP1Fuzz.checksum(data))"] }
                let size = pieces.map { min($0.pointee.next(), stream.count - offset) } ?? (stream.count - offset)
                pending = offset..<(offset + size)
                offset += size
            }
            let chunk = UnsafeRawBufferPointer(rebasing: stream[pending])
            switch decoder.decode(chunk) {
            case .needMore:
                pending = pending.upperBound..<pending.upperBound
            case .data(let start, let count, let consumed):
                check(start >= 0 && count > 0 && start + count <= consumed && consumed <= chunk.count, "data outside the bytes given")
                data.append(contentsOf: chunk[start..<(start + count)])
                pending = (pending.lowerBound + consumed)..<pending.upperBound
            case .end(let consumed):
                check(consumed <= chunk.count, "consumed past the bytes given")
                return ["end \(data.count) \(HTTP1Fuzz.checksum(data)) at \(pending.lowerBound + consumed)"]
            case .failed(let failure):
                return ["failed \(failure) after \(data.count) \(HTTP1Fuzz.checksum(data))"]
            }
        }
    }
}
