/// application/x-www-form-urlencoded: the query of a function endpoint's URL and its POST body.
/// `a=1&b=x+y`, percent-decoded, '+' as space. A pair whose name is not UTF-8 once decoded is
/// dropped; a value that is not is taken as empty. The last of a repeated name wins.
public enum FormURLEncoded {
    public static func parse(_ bytes: ArraySlice<UInt8>, into values: inout [String: String]) {
        for pair in bytes.split(separator: 38, omittingEmptySubsequences: true) {
            let parts = pair.split(separator: 61, maxSplits: 1, omittingEmptySubsequences: false)
            guard let key = decode(parts[0]) else { continue }
            values[key] = parts.count > 1 ? (decode(parts[1]) ?? "") : ""
        }
    }

    /// One name or value: '+' is a space, %XX a byte (a '%' without two hex digits stays as it is).
    static func decode(_ s: ArraySlice<UInt8>) -> String? {
        var out: [UInt8] = []
        var i = s.startIndex
        while i < s.endIndex {
            let c = s[i]
            if c == 43 {
                out.append(32); i += 1
            } else if c == 37, i + 2 < s.endIndex, let hi = ASCII.hexValue(s[i + 1]), let lo = ASCII.hexValue(s[i + 2]) {
                out.append(hi << 4 | lo); i += 3
            } else {
                out.append(c); i += 1
            }
        }
        return String(validating: out, as: UTF8.self)
    }
}
