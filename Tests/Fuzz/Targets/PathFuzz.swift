import AWSParsing
import CHTTPParser
import Glibc

/// Target decoding and normalisation (TargetPath.resolve): whatever the bytes, an accepted path
/// is relative, holds no NUL, no empty, "." or ".." segment — nothing that could leave the root —
/// and resolving it again (percent-encoded) gives the same path.
enum PathFuzz {
    static func run(_ input: UnsafeRawBufferPointer) {
        var path = TargetPath()
        guard TargetPath.resolve(target: Array(input)[...], into: &path) == nil else { return }
        let bytes = path.bytes
        check(!bytes.contains(0), "a NUL in \(bytes)")
        check(bytes.first != 47, "a leading slash in \(bytes)")
        if !bytes.isEmpty {
            for segment in bytes.split(separator: 47, omittingEmptySubsequences: false) {
                check(!segment.isEmpty, "an empty segment in \(bytes)")
                check(!segment.elementsEqual([46]) && !segment.elementsEqual([46, 46]), "a dot segment in \(bytes)")
            }
        }
        var encoded: [UInt8] = [47]
        URLEncoding.appendPercentEncoded(bytes, to: &encoded, strict: true)
        var again = TargetPath()
        check(TargetPath.resolve(target: encoded[...], into: &again) == nil, "\(encoded) refused on the second pass")
        check(again.bytes == bytes, "not idempotent: \(bytes) then \(again.bytes)")
    }
}

/// Range headers (ByteRanges.select) against a representation size taken from the input: a
/// partial answer is a non-empty range inside the representation; an unsatisfiable one only
/// when a range was given.
enum RangesFuzz {
    static func run(_ input: UnsafeRawBufferPointer) {
        var reader = InputReader(bytes: input)
        let size = Int(reader.integer(bytes: 5))  // up to 1 TiB
        let header = Array(reader.bytes)
        switch ByteRanges.select(header[...], size: size) {
        case .whole:
            break
        case .partial(let r):
            check(r.lowerBound >= 0 && r.lowerBound < r.upperBound && r.upperBound <= size, "range \(r) of \(size)")
        case .unsatisfiable:
            check(header.count > 6, "unsatisfiable without a range")
        }
    }
}

/// Conditional requests (Preconditions.evaluate / selectRange over If-Match, If-None-Match,
/// If-Modified-Since, If-Unmodified-Since, If-Range and Range, with EntityTags and HTTPDate
/// underneath): any header values give an answer, and the rules that must hold do: a partial
/// range lies inside the file; the file's own entity tag first in an If-None-Match list (whatever
/// follows it) is a 304 for a GET, first in an If-Match list never a 412; a date rendered by
/// HTTPDate parses back to itself.
enum ConditionalFuzz {
    static let names = ["If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range", "Range"]

    static func run(_ input: UnsafeRawBufferPointer) {
        var reader = InputReader(bytes: input)
        var info = stat()
        info.st_ino = UInt(reader.integer(bytes: 3))
        info.st_size = Int(reader.integer(bytes: 4))
        info.st_mtim.tv_sec = Int(reader.integer(bytes: 5) % 253_402_300_800)
        info.st_mtim.tv_nsec = Int(reader.integer(bytes: 4) % 1_000_000_000)
        let validators = Validators(info)

        var rendered: [UInt8] = []
        HTTPDate.append(info.st_mtim.tv_sec, to: &rendered)
        check(HTTPDate.parse(rendered[...]) == info.st_mtim.tv_sec, "date \(info.st_mtim.tv_sec) does not round-trip")

        // The rest: header values separated by NUL bytes, in the order of `names`.
        let values = Array(reader.bytes).split(separator: 0, maxSplits: names.count - 1, omittingEmptySubsequences: false)
        let head = request(zip(names, values).filter { !$0.1.isEmpty }.map { ($0.0, Array($0.1)) })
        _ = Preconditions.evaluate(head, validators)
        if case .partial(let r) = Preconditions.selectRange(head, size: info.st_size, validators: validators) {
            check(r.lowerBound >= 0 && r.lowerBound < r.upperBound && r.upperBound <= info.st_size, "range \(r) of \(info.st_size)")
        }

        // The file's own tag first, the fuzzed list after it.
        let rest = values.count > 1 ? Array(values[1]) : []
        let own = request([("If-None-Match", validators.etag + [44] + rest)])
        check(Preconditions.evaluate(own, validators) == .notModified, "own tag first in If-None-Match is not 304")
        let match = request([("If-Match", validators.etag + [44] + rest)])
        check(Preconditions.evaluate(match, validators) == .proceed, "own tag first in If-Match is not a pass")
    }

    static func request(_ fields: [(String, [UInt8])]) -> RequestHead {
        var head = RequestHead()
        head.appendTarget(UnsafeRawBufferPointer(start: nil, count: 0))
        for (name, value) in fields {
            Array(name.utf8).withUnsafeBytes { head.appendHeaderName($0) }
            value.withUnsafeBytes { head.appendHeaderValue($0) }
        }
        head.finishHeaders()
        head.method = HTTP_GET
        return head
    }
}

/// The header block of a CGI program's output (CGIResponseHead.parse): any bytes give an answer;
/// a complete head starts its body inside the bytes, has a final status, and passes on only
/// fields with token names and values free of CR, LF and NUL (nothing that could split the
/// response the server writes from them). Parsing a prefix of the block never completes early.
enum CGIHeadFuzz {
    static func run(_ input: UnsafeRawBufferPointer) {
        let bytes = Array(input)
        let limit = 1024
        switch CGIResponseHead.parse(bytes[...], limit: limit) {
        case .needMore:
            check(bytes.count < limit, "needMore past the limit")
        case .invalid:
            break
        case .complete(let head, let bodyStart):
            check(bodyStart > 0 && bodyStart <= bytes.count, "body start \(bodyStart) of \(bytes.count)")
            if let status = head.status { check((200...599).contains(status), "status \(status)") }
            for field in head.fields {
                check(!field.name.isEmpty && field.name.allSatisfy(ASCII.isTokenChar), "field name \(field.name)")
                check(!field.value.contains(13) && !field.value.contains(10) && !field.value.contains(0), "field value \(field.value)")
            }
            for value in [head.contentType, head.location].compactMap({ $0 }) + [head.reason] {
                check(!value.contains(13) && !value.contains(10), "a line break in \(value)")
            }
            // One byte short of the blank line's end, the block is not complete yet.
            if case .complete = CGIResponseHead.parse(bytes[..<(bodyStart - 1)], limit: limit) {
                check(false, "complete before the blank line ended")
            }
        }
    }
}

/// Form decoding (FormURLEncoded, a function endpoint's query and POST body): any bytes give a
/// dictionary, and encoding that dictionary again (every byte but unreserved ones as %XX) and
/// parsing it gives the same dictionary.
enum FormFuzz {
    static func run(_ input: UnsafeRawBufferPointer) {
        var values: [String: String] = [:]
        FormURLEncoded.parse(Array(input)[...], into: &values)
        var encoded: [UInt8] = []
        for (name, value) in values {
            if !encoded.isEmpty { encoded.append(38) }
            URLEncoding.appendPercentEncoded(Array(name.utf8), to: &encoded, strict: true)
            encoded.append(61)
            URLEncoding.appendPercentEncoded(Array(value.utf8), to: &encoded, strict: true)
        }
        var again: [String: String] = [:]
        FormURLEncoded.parse(encoded[...], into: &again)
        check(again == values, "\(values) came back as \(again)")
    }
}
