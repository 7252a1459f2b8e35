/// The content codings aws sends, in the server's order of preference when a client weighs them
/// alike: brotli compresses text best, zstd is close and faster, gzip is what every client has.
public enum ContentCoding: Int, CaseIterable, Sendable {
    case br = 0, zstd = 1, gzip = 2

    /// The `Content-Encoding` token.
    public var token: StaticString {
        switch self {
        case .br: "br"
        case .zstd: "zstd"
        case .gzip: "gzip"
        }
    }

    /// The file name suffix of a precompressed variant (`FILE.br` beside `FILE`).
    public var suffix: StaticString {
        switch self {
        case .br: ".br"
        case .zstd: ".zst"
        case .gzip: ".gz"
        }
    }

    public var bit: UInt8 { 1 << UInt8(rawValue) }
}

/// A set of codings as a bit mask (`ContentCoding.bit`).
public struct CodingSet: Equatable, Sendable {
    public var bits: UInt8
    public init(bits: UInt8 = 0) { self.bits = bits }
    public static let all = CodingSet(bits: 0b111)
    public func contains(_ c: ContentCoding) -> Bool { bits & c.bit != 0 }
    public mutating func insert(_ c: ContentCoding) { bits |= c.bit }
    public var isEmpty: Bool { bits == 0 }
}

/// `Accept-Encoding` (RFC 9110 §12.5.3) read without allocating: the weight (q-value, in
/// thousandths) the client gives each coding aws knows, and identity.
public enum AcceptEncoding {
    public struct Weights {
        /// By `ContentCoding.rawValue`; 0: not acceptable.
        public var codings: (Int, Int, Int) = (0, 0, 0)
        /// Identity's weight when the client named it (or `*`); nil: acceptable, unweighted.
        public var identity: Int?

        public init() {}

        public func weight(_ c: ContentCoding) -> Int {
            switch c {
            case .br: codings.0
            case .zstd: codings.1
            case .gzip: codings.2
            }
        }

        mutating func set(_ c: ContentCoding, _ q: Int) {
            switch c {
            case .br: codings.0 = q
            case .zstd: codings.1 = q
            case .gzip: codings.2 = q
            }
        }
    }

    /// The weights a header value gives. A coding named explicitly takes its own weight whatever
    /// `*` says, wherever each stands; an item whose q-value cannot be read is ignored.
    public static func parse(_ value: ArraySlice<UInt8>) -> Weights {
        var explicit: UInt8 = 0
        var star: Int?
        var weights = Weights()
        var explicitIdentity: Int?
        var i = value.startIndex
        let end = value.endIndex
        while i < end {
            // One item: OWS token OWS *( ";" OWS param ) OWS ("," | end)
            while i < end && (value[i] == 32 || value[i] == 9 || value[i] == 44) { i += 1 }
            let tokenStart = i
            while i < end && ASCII.isTokenChar(value[i]) { i += 1 }
            let token = value[tokenStart..<i]
            var q = 1000
            var valid = !token.isEmpty
            while i < end && value[i] != 44 {
                let c = value[i]
                if c == 59 {  // ';' a parameter: only q counts
                    i += 1
                    while i < end && (value[i] == 32 || value[i] == 9) { i += 1 }
                    let nameStart = i
                    while i < end && ASCII.isTokenChar(value[i]) { i += 1 }
                    let isQ = i - nameStart == 1 && ASCII.lower(value[nameStart]) == 113
                    while i < end && (value[i] == 32 || value[i] == 9) { i += 1 }
                    guard i < end, value[i] == 61 else { valid = false; continue }
                    i += 1
                    while i < end && (value[i] == 32 || value[i] == 9) { i += 1 }
                    let valueStart = i
                    while i < end && value[i] != 44 && value[i] != 59 && value[i] != 32 && value[i] != 9 { i += 1 }
                    if isQ {
                        if let parsed = qValue(value[valueStart..<i]) { q = parsed } else { valid = false }
                    }
                } else if c == 32 || c == 9 {
                    i += 1
                } else {
                    valid = false
                    i += 1
                }
            }
            guard valid else { continue }
            if token.count == 1 && token.first == 42 {
                star = q
            } else if let coding = coding(token) {
                weights.set(coding, q)
                explicit |= coding.bit
            } else if equalsLowercased(token, "identity") {
                explicitIdentity = q
            }
        }
        if let star {
            for c in ContentCoding.allCases where explicit & c.bit == 0 { weights.set(c, star) }
        }
        weights.identity = explicitIdentity ?? star
        return weights
    }

    /// The coding to send, or nil for identity: the highest weight among the codings there are
    /// (`precompressed` variant files, or `onTheFly` compression); at equal weight a precompressed
    /// variant (no work, zero copy), then br, zstd, gzip. Identity wins when the client weighs it
    /// above every coding offered.
    public static func choose(_ value: ArraySlice<UInt8>, precompressed: CodingSet, onTheFly: CodingSet) -> (coding: ContentCoding, precompressed: Bool)? {
        let weights = parse(value)
        var best: (coding: ContentCoding, precompressed: Bool)?
        var bestRank = 0
        for c in ContentCoding.allCases {
            let q = weights.weight(c)
            guard q > 0 else { continue }
            let pre = precompressed.contains(c)
            guard pre || onTheFly.contains(c) else { continue }
            let rank = q * 2 + (pre ? 1 : 0)
            if rank > bestRank {  // strictly greater: the earlier coding wins ties
                best = (c, pre)
                bestRank = rank
            }
        }
        if let best, let identity = weights.identity, identity > weights.weight(best.coding) { return nil }
        return best
    }

    static func coding(_ token: ArraySlice<UInt8>) -> ContentCoding? {
        if equalsLowercased(token, "br") { return .br }
        if equalsLowercased(token, "zstd") { return .zstd }
        if equalsLowercased(token, "gzip") || equalsLowercased(token, "x-gzip") { return .gzip }
        return nil
    }

    /// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
    static func qValue(_ s: ArraySlice<UInt8>) -> Int? {
        guard let first = s.first, first == 48 || first == 49 else { return nil }
        var q = Int(first - 48) * 1000
        var i = s.index(after: s.startIndex)
        if i == s.endIndex { return q }
        guard s[i] == 46 else { return nil }
        i += 1
        var scale = 100
        var digits = 0
        while i < s.endIndex {
            let d = s[i]
            guard d >= 48 && d <= 57, digits < 3 else { return nil }
            q += Int(d - 48) * scale
            scale /= 10
            digits += 1
            i += 1
        }
        return q <= 1000 ? q : nil
    }

    private static func equalsLowercased(_ token: ArraySlice<UInt8>, _ name: StaticString) -> Bool {
        guard token.count == name.utf8CodeUnitCount else { return false }
        var j = 0
        for c in token {
            if ASCII.lower(c) != name.utf8Start[j] { return false }
            j += 1
        }
        return true
    }
}
