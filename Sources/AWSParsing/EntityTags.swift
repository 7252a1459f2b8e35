/// Entity-tag lists, the values of If-Match and If-None-Match (RFC 9110 §13.1.1, §13.1.2).
public enum EntityTags {
    /// Whether a comma-separated list of entity tags (or "*") contains `etag`. The weak
    /// comparison ignores a `W/` prefix; the strong one never matches a weak tag.
    public static func list(_ value: ArraySlice<UInt8>, contains etag: [UInt8], weak: Bool) -> Bool {
        let s = value
        var i = value.startIndex
        while i < value.endIndex {
            while i < value.endIndex && (s[i] == 32 || s[i] == 9 || s[i] == 44) { i += 1 }
            guard i < value.endIndex else { break }
            if s[i] == 42 { return true }  // "*": any current representation
            var isWeak = false
            if s[i] == 87 && i + 1 < value.endIndex && s[i + 1] == 47 { isWeak = true; i += 2 }
            let start = i
            if i < value.endIndex && s[i] == 34 {
                i += 1
                while i < value.endIndex && s[i] != 34 { i += 1 }
                if i < value.endIndex { i += 1 }
            } else {
                while i < value.endIndex && s[i] != 44 { i += 1 }
            }
            if (weak || !isWeak) && s[start..<i].elementsEqual(etag) { return true }
        }
        return false
    }
}
