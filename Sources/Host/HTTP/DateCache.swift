import AWSParsing
import Glibc

/// The `Date` header value, rendered once per second per worker rather than per request.
struct DateCache {
    private(set) var bytes: [UInt8] = []
    /// The second `bytes` shows (`Expires` is computed from it, so it agrees with `Date`).
    private(set) var second = -1

    mutating func refresh() {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &ts)
        set(Int(ts.tv_sec))
    }

    /// The date of `now` (seconds since the epoch).
    mutating func set(_ now: Int) {
        guard now != second else { return }
        second = now
        bytes.removeAll(keepingCapacity: true)
        HTTPDate.append(now, to: &bytes)
    }
}
