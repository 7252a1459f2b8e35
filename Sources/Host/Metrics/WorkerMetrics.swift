import CHTTPParser
import Synchronization

/// A worker's counters for `/metrics` (`--metrics`).
///
/// Threads: every counter has one writer, the worker's loop thread, which adds with a relaxed
/// load and a relaxed store (`add`) — no read-modify-write, so no locked instruction and no
/// cache line shared with another writer: on x86-64 and arm64 both are plain moves. The metrics
/// thread only reads them (relaxed loads). A value read is whole (never torn) and may be a
/// moment old; two counters read one after the other need not be from the same instant, which
/// a scrape tolerates (`MetricsText` clamps the one difference it takes, a gauge).
///
/// The counters are updated whether or not `--metrics` is on (a store each); only the request
/// duration, which costs a clock read, is measured only when it is (`Worker.countsRequests`).
final class WorkerMetrics: Sendable {
    // Connections (Worker.acceptAll, Worker.connectionClosed).
    /// Connections accepted and served (those refused over --max-connections are not).
    let connectionsAccepted = Atomic<Int>(0)
    let connectionsClosed = Atomic<Int>(0)
    /// Refused over `--max-connections` (503, or closed for TLS).
    let connectionsRefused = Atomic<Int>(0)

    // Requests: one count per access-log line (Exchange.logAccess), cut-short requests included.
    /// By status class and method: `requests[statusClass * methodCount + method]`.
    let requests: CounterArray
    /// Head and body bytes written to the sockets, counted as they go (BodyPump), so a long
    /// download shows while it runs (interim responses included; the 503 of a connection
    /// refused over --max-connections, sent without an exchange, is not).
    let bytesSent = Atomic<Int>(0)
    /// Per bucket of `durationBounds` (not cumulative; the last one is past the largest bound).
    let durationBuckets: CounterArray
    let durationNanos = Atomic<Int>(0)

    // libaio (AIOEngine, AIOBody).
    let aioPageCacheReads = Atomic<Int>(0)
    let aioDeviceReads = Atomic<Int>(0)
    /// Reads the kernel took (io_submit) and then completed: in flight = submitted - completed.
    let aioReadsSubmitted = Atomic<Int>(0)
    let aioReadsCompleted = Atomic<Int>(0)
    /// Page-cache reads that missed and were read again from the device.
    let aioDirectFallbacks = Atomic<Int>(0)

    // Open-file cache (OpenFileCache.lookup).
    let fileCacheHits = Atomic<Int>(0)
    let fileCacheMisses = Atomic<Int>(0)

    // Plugins.
    /// on_request calls.
    let pluginRequests = Atomic<Int>(0)
    /// By `PluginError`.
    let pluginErrors: CounterArray
    /// Callbacks longer than `--plugin-slow-ms` (CallbackWatch).
    let pluginSlowCallbacks = Atomic<Int>(0)

    init() {
        requests = CounterArray(count: WorkerMetrics.statusClasses.count * WorkerMetrics.methods.count)
        durationBuckets = CounterArray(count: WorkerMetrics.durationBounds.count + 1)
        pluginErrors = CounterArray(count: PluginError.allCases.count)
    }

    /// Label values of the `status` label: index 0 is 1xx.
    static let statusClasses = ["1xx", "2xx", "3xx", "4xx", "5xx"]
    /// Label values of the `method` label. `none`: a request refused before its head was read
    /// whole (malformed, too large, timed out), whose method is not known.
    static let methods = ["GET", "HEAD", "POST", "OPTIONS", "other", "none"]
    static let methodCount = methods.count

    /// Upper bounds of the duration buckets, in nanoseconds, and as `le` labels.
    static let durationBounds: [UInt64] = [
        100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000, 50_000_000,
        100_000_000, 250_000_000, 500_000_000, 1_000_000_000, 2_500_000_000, 5_000_000_000, 10_000_000_000,
    ]
    static let durationLabels = ["0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
                                 "0.1", "0.25", "0.5", "1", "2.5", "5", "10"]

    enum PluginError: Int, CaseIterable {
        /// on_request returned non-zero.
        case onRequest
        /// aws_fail.
        case fail
        /// A call out of order (the host logs "misuse").
        case misuse

        var label: String {
            switch self {
            case .onRequest: "on_request"
            case .fail: "fail"
            case .misuse: "misuse"
            }
        }
    }

    static func methodIndex(_ method: http_method, headComplete: Bool) -> Int {
        guard headComplete else { return 5 }
        switch method {
        case HTTP_GET: return 0
        case HTTP_HEAD: return 1
        case HTTP_POST: return 2
        case HTTP_OPTIONS: return 3
        default: return 4
        }
    }

    static func statusClassIndex(_ status: Int) -> Int { min(max(status / 100, 1), 5) - 1 }

    /// A request's access-log line was written (or would have been): its counts.
    @inline(__always)
    func requestEnded(status: Int, method: Int, nanos: UInt64) {
        requests.add(WorkerMetrics.statusClassIndex(status) * WorkerMetrics.methodCount + method)
        durationNanos.add(Int(truncatingIfNeeded: nanos))
        var bucket = 0
        let bounds = WorkerMetrics.durationBounds
        while bucket < bounds.count && nanos > bounds[bucket] { bucket += 1 }
        durationBuckets.add(bucket)
    }

    deinit {
        requests.deallocate()
        durationBuckets.deallocate()
        pluginErrors.deallocate()
    }
}

extension Atomic where Value == Int {
    /// Adds on the counter's only writing thread (see `WorkerMetrics`): a relaxed load and
    /// store, not an atomic read-modify-write.
    @inline(__always)
    func add(_ n: Int = 1) { store(load(ordering: .relaxed) &+ n, ordering: .relaxed) }

    @inline(__always)
    var value: Int { load(ordering: .relaxed) }
}

/// A fixed row of single-writer counters (`WorkerMetrics`), one allocation, never resized.
struct CounterArray: @unchecked Sendable {
    private let base: UnsafeMutablePointer<Atomic<Int>>
    let count: Int

    init(count: Int) {
        self.count = count
        base = .allocate(capacity: count)
        for i in 0..<count { (base + i).initialize(to: Atomic(0)) }
    }

    @inline(__always)
    func add(_ index: Int, _ n: Int = 1) { base[index].add(n) }

    func value(_ index: Int) -> Int { base[index].value }

    func deallocate() {
        base.deinitialize(count: count)
        base.deallocate()
    }
}
