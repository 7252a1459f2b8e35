// What a request's metrics cost, per request, in three designs (see README.md):
//   aws         aws's per-worker single-writer counters (Sources/Host/Metrics/WorkerMetrics.swift)
//   sm-lookup   swift-metrics + swift-prometheus, Counter/Timer made from their labels per request
//   sm-cached   swift-metrics + swift-prometheus, one Counter per label pair made up front
//   prom-lookup swift-prometheus's own API, counter/histogram looked up per request
//   prom-cached swift-prometheus's own API, made up front
// Usage: metrics-cost [ops per run, default 10000000] [runs, default 5] [designs, comma-separated, default all]
//                     [1: one thread only, no allocation count (for valgrind)]
import Glibc
import MallocCounter
import Metrics
import Prometheus
import Synchronization

// MARK: - aws's counters, copied from Sources/Host/Metrics/WorkerMetrics.swift

extension Atomic where Value == Int {
    /// Adds on the counter's only writing thread: a relaxed load and store, not an atomic
    /// read-modify-write.
    @inline(__always)
    func add(_ n: Int = 1) { store(load(ordering: .relaxed) &+ n, ordering: .relaxed) }
}

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
}

let methods = ["GET", "HEAD", "POST", "OPTIONS", "other", "none"]
let statusClasses = ["1xx", "2xx", "3xx", "4xx", "5xx"]
let durationBounds: [UInt64] = [
    100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000, 50_000_000,
    100_000_000, 250_000_000, 500_000_000, 1_000_000_000, 2_500_000_000, 5_000_000_000, 10_000_000_000,
]

final class WorkerMetrics: Sendable {
    let requests = CounterArray(count: statusClasses.count * methods.count)
    let durationBuckets = CounterArray(count: durationBounds.count + 1)
    let durationNanos = Atomic<Int>(0)

    @inline(__always)
    func requestEnded(statusClass: Int, method: Int, nanos: UInt64) {
        requests.add(statusClass * methods.count + method)
        durationNanos.add(Int(truncatingIfNeeded: nanos))
        var bucket = 0
        let bounds = durationBounds
        while bucket < bounds.count && nanos > bounds[bucket] { bucket += 1 }
        durationBuckets.add(bucket)
    }
}

// MARK: - Requests

/// A request's method, status class and duration, drawn ahead of time so that label values and
/// buckets vary from request to request as a server's do.
struct Request {
    var method: Int
    var statusClass: Int
    var nanos: UInt64
}

let requestMask = 4095
let requests: [Request] = {
    var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
    func next() -> UInt64 {
        seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return seed >> 33
    }
    return (0...requestMask).map { _ in
        let m = Int(next() % 100)
        let s = Int(next() % 100)
        return Request(
            method: m < 80 ? 0 : m < 90 ? 1 : m < 96 ? 2 : m < 98 ? 3 : m < 99 ? 4 : 5,
            statusClass: s < 85 ? 1 : s < 92 ? 2 : s < 98 ? 3 : s < 99 ? 4 : 0,
            nanos: 20_000 &+ next() % 3_000_000  // 20 µs to 3 ms
        )
    }
}()

// MARK: - Designs

/// One thread's view of a design: `run` records `ops` requests.
protocol Bench: AnyObject, Sendable {
    func run(_ ops: Int)
}

final class LoopOnly: Bench {
    let sink = Atomic<Int>(0)
    @inline(never) func run(_ ops: Int) {
        var acc = 0
        requests.withUnsafeBufferPointer { reqs in
            for i in 0..<ops {
                let r = reqs[i & requestMask]
                acc &+= r.method &+ r.statusClass &+ Int(r.nanos)
            }
        }
        sink.store(acc, ordering: .relaxed)
    }
}

final class ClockRead: Bench {
    let sink = Atomic<Int>(0)
    @inline(never) func run(_ ops: Int) {
        var acc = 0
        var ts = timespec()
        for _ in 0..<ops {
            clock_gettime(CLOCK_MONOTONIC, &ts)
            acc &+= ts.tv_nsec
        }
        sink.store(acc, ordering: .relaxed)
    }
}

final class AWS: Bench {
    let metrics = WorkerMetrics()
    @inline(never) func run(_ ops: Int) {
        let metrics = self.metrics
        requests.withUnsafeBufferPointer { reqs in
            for i in 0..<ops {
                let r = reqs[i & requestMask]
                metrics.requestEnded(statusClass: r.statusClass, method: r.method, nanos: r.nanos)
            }
        }
    }
}

final class SwiftMetricsLookup: Bench {
    @inline(never) func run(_ ops: Int) {
        requests.withUnsafeBufferPointer { reqs in
            for i in 0..<ops {
                let r = reqs[i & requestMask]
                Metrics.Counter(
                    label: "aws_requests_total",
                    dimensions: [("method", methods[r.method]), ("status", statusClasses[r.statusClass])]
                ).increment()
                Metrics.Timer(label: "aws_request_duration_seconds").recordNanoseconds(Int64(r.nanos))
            }
        }
    }
}

final class SwiftMetricsCached: Bench {
    let counters: [Metrics.Counter]
    let timer: Metrics.Timer
    init() {
        var counters: [Metrics.Counter] = []
        for s in statusClasses {
            for m in methods {
                counters.append(Metrics.Counter(label: "aws_requests_total", dimensions: [("method", m), ("status", s)]))
            }
        }
        self.counters = counters
        timer = Metrics.Timer(label: "aws_request_duration_seconds")
    }
    @inline(never) func run(_ ops: Int) {
        let counters = self.counters, timer = self.timer
        requests.withUnsafeBufferPointer { reqs in
            for i in 0..<ops {
                let r = reqs[i & requestMask]
                counters[r.statusClass * methods.count + r.method].increment()
                timer.recordNanoseconds(Int64(r.nanos))
            }
        }
    }
}

let durationBuckets = durationBounds.map { Duration.nanoseconds(Int64($0)) }
enum Descriptors {
    nonisolated(unsafe) static let requests = MetricNameDescriptor(metricName: "aws_requests", unitName: "total", helpText: "")
    nonisolated(unsafe) static let duration = MetricNameDescriptor(metricName: "aws_request_duration", unitName: "seconds", helpText: "")
}

final class PrometheusLookup: Bench {
    let registry: PrometheusCollectorRegistry
    init(_ registry: PrometheusCollectorRegistry) { self.registry = registry }
    @inline(never) func run(_ ops: Int) {
        let registry = self.registry
        requests.withUnsafeBufferPointer { reqs in
            for i in 0..<ops {
                let r = reqs[i & requestMask]
                registry.makeCounter(
                    descriptor: Descriptors.requests,
                    labels: [("method", methods[r.method]), ("status", statusClasses[r.statusClass])]
                ).increment()
                registry.makeDurationHistogram(descriptor: Descriptors.duration, labels: [], buckets: durationBuckets)
                    .record(.nanoseconds(Int64(r.nanos)))
            }
        }
    }
}

final class PrometheusCached: Bench {
    let counters: [Prometheus.Counter]
    let histogram: DurationHistogram
    init(_ registry: PrometheusCollectorRegistry) {
        var counters: [Prometheus.Counter] = []
        for s in statusClasses {
            for m in methods {
                counters.append(registry.makeCounter(descriptor: Descriptors.requests, labels: [("method", m), ("status", s)]))
            }
        }
        self.counters = counters
        histogram = registry.makeDurationHistogram(descriptor: Descriptors.duration, labels: [], buckets: durationBuckets)
    }
    @inline(never) func run(_ ops: Int) {
        let counters = self.counters, histogram = self.histogram
        requests.withUnsafeBufferPointer { reqs in
            for i in 0..<ops {
                let r = reqs[i & requestMask]
                counters[r.statusClass * methods.count + r.method].increment()
                histogram.record(.nanoseconds(Int64(r.nanos)))
            }
        }
    }
}

// MARK: - Measuring

func now() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func fmt(_ x: Double) -> String {
    let r = (x * 10).rounded() / 10
    return String(r)
}

final class ThreadBox: @unchecked Sendable {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

/// Runs `bodies` on threads of their own and waits for them.
func onThreads(_ bodies: [() -> Void]) {
    var threads: [pthread_t] = []
    for body in bodies {
        var t = pthread_t()
        let box = Unmanaged.passRetained(ThreadBox(body)).toOpaque()
        let rc = pthread_create(&t, nil, { arg in
            let box = Unmanaged<ThreadBox>.fromOpaque(arg!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        precondition(rc == 0)
        threads.append(t)
    }
    for t in threads { pthread_join(t, nil) }
}

final class Results: @unchecked Sendable {
    var nanos: [UInt64]
    init(_ n: Int) { nanos = .init(repeating: 0, count: n) }
}

/// ns per request on each of `threads` threads running at once (the mean of the threads'), median of `runs`.
func measure(_ makeBench: () -> Bench, threads: Int, ops: Int, runs: Int) -> (median: Double, min: Double, max: Double) {
    let benches = (0..<threads).map { _ in makeBench() }
    for b in benches { b.run(min(ops, 200_000)) }  // warm up: every label pair made, caches filled
    var perRun: [Double] = []
    for _ in 0..<runs {
        if threads == 1 {
            let t0 = now()
            benches[0].run(ops)
            perRun.append(Double(now() - t0) / Double(ops))
        } else {
            let ready = Atomic<Int>(0)
            let results = Results(threads)
            onThreads(benches.enumerated().map { (i, b) in
                {
                    ready.wrappingAdd(1, ordering: .acquiringAndReleasing)
                    while ready.load(ordering: .acquiring) < threads {}
                    let t0 = now()
                    b.run(ops)
                    results.nanos[i] = now() - t0
                }
            })
            perRun.append(results.nanos.map { Double($0) / Double(ops) }.reduce(0, +) / Double(threads))
        }
    }
    return (median(perRun), perRun.min()!, perRun.max()!)
}

/// Heap allocations per request (all threads of the process), over `ops` requests after warm-up.
func allocations(_ makeBench: () -> Bench, ops: Int) -> Double {
    let b = makeBench()
    b.run(200_000)
    malloc_counter_start()
    b.run(ops)
    return Double(malloc_counter_stop()) / Double(ops)
}

// MARK: - Main

let args = CommandLine.arguments
let ops = args.count > 1 ? Int(args[1])! : 10_000_000
let runs = args.count > 2 ? Int(args[2])! : 5
let only = args.count > 3 && args[3] != "all" ? Set(args[3].split(separator: ",").map(String.init)) : nil
let oneThreadOnly = args.count > 4 && args[4] == "1"

var factory = PrometheusMetricsFactory(registry: PrometheusCollectorRegistry())
factory.defaultDurationHistogramBuckets = durationBuckets  // aws's 16 bounds, for a like-for-like histogram
MetricsSystem.bootstrap(factory)
let sharedMetrics = SwiftMetricsCached()
let promRegistry = PrometheusCollectorRegistry()
let sharedPromLookup = PrometheusLookup(promRegistry)
let sharedPromCached = PrometheusCached(promRegistry)
let sharedMetricsLookup = SwiftMetricsLookup()

let designs: [(String, String, () -> Bench)] = [
    ("loop", "loop only: read the request's method, status and duration (baseline)", { LoopOnly() }),
    ("clock", "one clock_gettime(CLOCK_MONOTONIC) (reference: every design reads the clock once)", { ClockRead() }),
    ("aws", "aws: 3 single-writer relaxed load+store (method×status cell, bucket, sum), per-worker cells", { AWS() }),
    ("sm-lookup", "swift-metrics+swift-prometheus: Counter(label:dimensions:) + Timer(label:) made per request", { sharedMetricsLookup }),
    ("sm-cached", "swift-metrics+swift-prometheus: cached Counter per label pair + Timer, increment + record", { sharedMetrics }),
    ("prom-lookup", "swift-prometheus API: registry.makeCounter(labels:) + makeDurationHistogram per request", { sharedPromLookup }),
    ("prom-cached", "swift-prometheus API: cached Counter per label pair + DurationHistogram", { sharedPromCached }),
]

print("ops per run: \(ops), runs: \(runs), nproc: \(sysconf(Int32(_SC_NPROCESSORS_ONLN)))")
print("")
print("| design | 1 thread ns/req median (min–max) | 2 threads ns/req median (min–max) | allocations/req |")
print("|---|---|---|---|")
for (name, _, make) in designs where only?.contains(name) ?? true {
    let one = measure(make, threads: 1, ops: ops, runs: runs)
    if oneThreadOnly {
        print("| \(name) | \(fmt(one.median)) (\(fmt(one.min))–\(fmt(one.max))) | | |")
        continue
    }
    let two = measure(make, threads: 2, ops: ops, runs: runs)
    let allocs = allocations(make, ops: 1_000_000)
    print("| \(name) | \(fmt(one.median)) (\(fmt(one.min))–\(fmt(one.max))) | \(fmt(two.median)) (\(fmt(two.min))–\(fmt(two.max))) | \(fmt(allocs)) |")
}
print("")
for (name, what, _) in designs { print("- \(name): \(what)") }
