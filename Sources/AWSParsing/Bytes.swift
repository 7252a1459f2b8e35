/// Appending ASCII text and numbers to byte buffers without going through `String`.
extension Array where Element == UInt8 {
    @inlinable @inline(__always)
    public mutating func append(ascii s: StaticString) {
        s.withUTF8Buffer { append(contentsOf: $0) }
    }

    @inlinable public mutating func append(decimal value: Int) {
        if value < 0 { append(45); append(decimal: -value); return }
        if value < 10 { append(UInt8(48 + value)); return }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // up to 24 digits, no heap
        var n = value, start = 24
        Swift.withUnsafeMutableBytes(of: &digits) { d in
            // Written from the end, then appended in one copy (not a capacity check per digit).
            while n > 0 { start -= 1; d[start] = UInt8(48 + n % 10); n /= 10 }
            append(contentsOf: UnsafeRawBufferPointer(rebasing: d[start...]))
        }
    }

    public mutating func append(hex value: UInt64) {
        let table: StaticString = "0123456789abcdef"
        var started = false
        for shift in stride(from: 60, through: 0, by: -4) {
            let nibble = Int((value >> UInt64(shift)) & 0xf)
            if nibble != 0 || started || shift == 0 {
                started = true
                append(table.utf8Start[nibble])
            }
        }
    }
}

public enum ASCII {
    @inlinable public static func isTokenChar(_ c: UInt8) -> Bool {
        switch c {
        case 48...57, 65...90, 97...122: return true
        case 33, 35, 36, 37, 38, 39, 42, 43, 45, 46, 94, 95, 96, 124, 126: return true  // !#$%&'*+-.^_`|~
        default: return false
        }
    }

    @inlinable public static func lower(_ c: UInt8) -> UInt8 { c >= 65 && c <= 90 ? c | 0x20 : c }
    public static func isAlphanumeric(_ c: UInt8) -> Bool { (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) }

    @inlinable public static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: c - 48
        case 65...70: c - 55
        case 97...102: c - 87
        default: nil
        }
    }
}

public enum URLEncoding {
    /// Appends `bytes` as a URL path: '/' and RFC 3986 unreserved characters stay, and unless
    /// `strict`, the other pchar characters (sub-delims, ':' and '@'); the rest is percent-encoded.
    /// Strict output is also safe as a relative reference and inside an HTML attribute.
    public static func appendPercentEncoded(_ bytes: some Sequence<UInt8>, to out: inout [UInt8], strict: Bool = false) {
        let hex: StaticString = "0123456789ABCDEF"
        for b in bytes {
            switch b {
            case 48...57, 65...90, 97...122, 45, 46, 95, 126, 47:      // unreserved and '/'
                out.append(b)
            // Not `where !strict`: a case's `where` guards its last pattern only ('@').
            case 33, 36, 38, 39, 40, 41, 42, 43, 44, 59, 61, 58, 64:  // sub-delims, ':' '@'
                if strict { fallthrough }
                out.append(b)
            default:
                out.append(37)
                out.append(hex.utf8Start[Int(b >> 4)])
                out.append(hex.utf8Start[Int(b & 15)])
            }
        }
    }
}
