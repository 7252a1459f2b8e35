import Glibc

/// IMF-fixdate rendering and parsing (RFC 9110 §5.6.7) without Foundation or allocation.
public enum HTTPDate {
    private static let days: [UInt8] = Array("SunMonTueWedThuFriSat".utf8)
    private static let months: [UInt8] = Array("JanFebMarAprMayJunJulAugSepOctNovDec".utf8)

    /// Appends "Sun, 06 Nov 1994 08:49:37 GMT" (29 bytes).
    public static func append(_ seconds: Int, to out: inout [UInt8]) {
        // IMF-fixdate has four year digits: clamp to 1970...9999 (files can carry any date).
        var t = time_t(min(max(seconds, 0), 253_402_300_799))
        var tm = Glibc.tm()
        gmtime_r(&t, &tm)
        let d = Int(tm.tm_wday) * 3, m = Int(tm.tm_mon) * 3
        out.append(days[d]); out.append(days[d + 1]); out.append(days[d + 2])
        out.append(44); out.append(32)
        two(Int(tm.tm_mday), &out); out.append(32)
        out.append(months[m]); out.append(months[m + 1]); out.append(months[m + 2]); out.append(32)
        let y = Int(tm.tm_year) + 1900
        two(y / 100, &out); two(y % 100, &out); out.append(32)
        two(Int(tm.tm_hour), &out); out.append(58)
        two(Int(tm.tm_min), &out); out.append(58)
        two(Int(tm.tm_sec), &out)
        out.append(contentsOf: [32, 71, 77, 84])  // " GMT"
    }

    @inline(__always) private static func two(_ v: Int, _ out: inout [UInt8]) {
        out.append(UInt8(48 + v / 10)); out.append(UInt8(48 + v % 10))
    }

    /// Parses an IMF-fixdate; obsolete formats (RFC 850, asctime) are answered as unparseable,
    /// which makes the condition it belongs to false, as RFC 9110 §13.1.3 allows.
    public static func parse(_ b: ArraySlice<UInt8>) -> Int? {
        let s = Array(b)
        guard s.count == 29, s[3] == 44, s[4] == 32, s[25] == 32,
              s[26] == 71, s[27] == 77, s[28] == 84 else { return nil }
        func num(_ i: Int, _ n: Int) -> Int? {
            var v = 0
            for j in i..<(i + n) {
                guard s[j] >= 48 && s[j] <= 57 else { return nil }
                v = v * 10 + Int(s[j] - 48)
            }
            return v
        }
        guard let day = num(5, 2), let year = num(12, 4), let hour = num(17, 2),
              let minute = num(20, 2), let second = num(23, 2) else { return nil }
        var month = -1
        for i in 0..<12 where months[i * 3] == s[8] && months[i * 3 + 1] == s[9] && months[i * 3 + 2] == s[10] {
            month = i
        }
        guard month >= 0, day >= 1, day <= 31, hour < 24, minute < 60, second < 61 else { return nil }
        var tm = Glibc.tm()
        tm.tm_year = Int32(year - 1900); tm.tm_mon = Int32(month); tm.tm_mday = Int32(day)
        tm.tm_hour = Int32(hour); tm.tm_min = Int32(minute); tm.tm_sec = Int32(second)
        return Int(timegm(&tm))
    }
}
