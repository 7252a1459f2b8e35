import AWSParsing
import Glibc

/// The `Date` header value, rendered once per second per worker rather than per request.
struct DateCache {
    private(set) var bytes: [UInt8] = []
    private var second = -1

    mutating func refresh() {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &ts)
        let now = Int(ts.tv_sec)
        guard now != second else { return }
        second = now
        bytes.removeAll(keepingCapacity: true)
        HTTPDate.append(now, to: &bytes)
    }
}
