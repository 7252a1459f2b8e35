/// The `Range` header (RFC 9110 §14.2) reduced to the three answers this server gives. A header
/// it cannot use is ignored, which the RFC allows, so everything malformed selects `.whole`.
public enum ByteRanges {
    public enum Selection: Equatable, Sendable { case whole, partial(Range<Int>), unsatisfiable }

    /// `header` is the field value, trimmed; `size` the length of the representation.
    public static func select(_ header: ArraySlice<UInt8>, size: Int) -> Selection {
        let s = header
        let prefix: [UInt8] = Array("bytes=".utf8)
        guard header.count > prefix.count else { return .whole }
        for (k, c) in prefix.enumerated() where ASCII.lower(s[header.startIndex + k]) != c { return .whole }

        var selected: Range<Int>?
        var count = 0
        var i = header.startIndex + prefix.count
        while i < header.endIndex {
            while i < header.endIndex && (s[i] == 32 || s[i] == 9) { i += 1 }
            var first: Int?, last: Int?
            var digits = 0
            var n = 0
            // More than 18 digits may not fit an Int: read as Int.max, past any file's end.
            while i < header.endIndex, s[i] >= 48, s[i] <= 57 { n = n &* 10 &+ Int(s[i] - 48); digits += 1; i += 1 }
            if digits > 0 { first = digits > 18 ? Int.max : n }
            guard i < header.endIndex, s[i] == 45 else { return .whole }  // malformed: ignore Range
            i += 1
            digits = 0; n = 0
            while i < header.endIndex, s[i] >= 48, s[i] <= 57 { n = n &* 10 &+ Int(s[i] - 48); digits += 1; i += 1 }
            if digits > 0 { last = digits > 18 ? Int.max : n }
            while i < header.endIndex && (s[i] == 32 || s[i] == 9) { i += 1 }
            if i < header.endIndex {
                guard s[i] == 44 else { return .whole }
                i += 1
            }
            count += 1
            var r: Range<Int>?
            switch (first, last) {
            case let (f?, l?):
                guard l >= f else { return .whole }  // invalid range-spec: ignore the header
                if f < size { r = f..<(min(l, size - 1) + 1) }
            case let (f?, nil):
                if f < size { r = f..<size }
            case let (nil, l?):
                if l > 0 && size > 0 { r = (size - min(l, size))..<size }
            case (nil, nil):
                return .whole
            }
            if let r { selected = selected == nil ? r : selected }
        }
        guard count > 0 else { return .whole }
        guard let selected else { return .unsatisfiable }
        // Several ranges are answered with the whole representation (200), which RFC 9110 §14.2
        // allows; it spares clients a multipart body and the server a second copy path.
        return count == 1 ? .partial(selected) : .whole
    }
}
