/// One worker's counters at one moment, as plain numbers (read on the metrics thread).
struct MetricsSnapshot {
    var connectionsAccepted = 0
    var connectionsOpen = 0
    var connectionsRefused = 0
    /// By status class and method (`WorkerMetrics.requests`).
    var requests = [Int](repeating: 0, count: WorkerMetrics.statusClasses.count * WorkerMetrics.methodCount)
    var bytesSent = 0
    /// Per bucket, not cumulative; the last one past the largest bound.
    var durationBuckets = [Int](repeating: 0, count: WorkerMetrics.durationBounds.count + 1)
    var durationNanos = 0
    var aioPageCacheReads = 0
    var aioDeviceReads = 0
    var aioInFlight = 0
    var aioDirectFallbacks = 0
    var fileCacheHits = 0
    var fileCacheMisses = 0
    var pluginRequests = 0
    var pluginErrors = [Int](repeating: 0, count: WorkerMetrics.PluginError.allCases.count)
    var pluginSlowCallbacks = 0

    init() {}

    init(_ m: WorkerMetrics) {
        // Each difference is taken from its subtrahend read first: the writer raises it only
        // after the minuend, so the difference is not negative (clamped anyway).
        let closed = m.connectionsClosed.value
        connectionsAccepted = m.connectionsAccepted.value
        connectionsOpen = max(0, connectionsAccepted - closed)
        connectionsRefused = m.connectionsRefused.value
        for i in requests.indices { requests[i] = m.requests.value(i) }
        bytesSent = m.bytesSent.value
        for i in durationBuckets.indices { durationBuckets[i] = m.durationBuckets.value(i) }
        durationNanos = m.durationNanos.value
        aioPageCacheReads = m.aioPageCacheReads.value
        aioDeviceReads = m.aioDeviceReads.value
        let completed = m.aioReadsCompleted.value
        aioInFlight = max(0, m.aioReadsSubmitted.value - completed)
        aioDirectFallbacks = m.aioDirectFallbacks.value
        fileCacheHits = m.fileCacheHits.value
        fileCacheMisses = m.fileCacheMisses.value
        pluginRequests = m.pluginRequests.value
        for i in pluginErrors.indices { pluginErrors[i] = m.pluginErrors.value(i) }
        pluginSlowCallbacks = m.pluginSlowCallbacks.value
    }
}

/// The Prometheus text exposition format (version 0.0.4) of the workers' counters.
///
/// Every metric comes twice, under two names: `aws_NAME` for the whole server (the sum over the
/// workers, without a `worker` label) and `aws_worker_NAME` with `worker="N"` per worker. Two
/// names, not one with a `worker="total"` series, so that `sum(aws_worker_NAME)` equals
/// `aws_NAME` and no query counts anything twice.
enum MetricsText {
    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    private enum Kind: String { case counter, gauge }

    /// A counter or gauge: its samples in one worker, each with its labels (`a="x",b="y"` or "").
    private struct Family: Sendable {
        let name: String
        let kind: Kind
        let help: String
        let samples: @Sendable (MetricsSnapshot) -> [(labels: String, value: Int)]
    }

    private static func single(_ name: String, _ kind: Kind, _ help: String, _ value: @escaping @Sendable (MetricsSnapshot) -> Int) -> Family {
        Family(name: name, kind: kind, help: help) { [("", value($0))] }
    }

    private static let families: [Family] = [
        single("connections_accepted_total", .counter, "Connections accepted (not counting those refused over --max-connections).") { $0.connectionsAccepted },
        single("connections_open", .gauge, "Connections open now.") { $0.connectionsOpen },
        single("connections_refused_total", .counter, "Connections refused over --max-connections (503, or closed for TLS).") { $0.connectionsRefused },
        Family(name: "http_requests_total", kind: .counter,
               help: "Requests answered or cut short (one per access-log line), by status class and method (none: the head was never read whole).") { s in
            var out: [(String, Int)] = []
            for (c, status) in WorkerMetrics.statusClasses.enumerated() {
                for (m, method) in WorkerMetrics.methods.enumerated() {
                    out.append(("method=\"\(method)\",status=\"\(status)\"", s.requests[c * WorkerMetrics.methodCount + m]))
                }
            }
            return out
        },
        single("http_sent_bytes_total", .counter, "Response bytes written to sockets (heads and bodies).") { $0.bytesSent },
        single("aio_reads_in_flight", .gauge, "libaio reads submitted to the kernel and not yet completed.") { $0.aioInFlight },
        Family(name: "aio_reads_total", kind: .counter,
               help: "libaio reads of /dynamic/ files started, by source: page_cache (RWF_NOWAIT) or device (O_DIRECT).") { s in
            [("source=\"page_cache\"", s.aioPageCacheReads), ("source=\"device\"", s.aioDeviceReads)]
        },
        single("aio_direct_fallbacks_total", .counter, "Page-cache reads that missed (wholly or partly) and were read again from the device.") { $0.aioDirectFallbacks },
        single("open_file_cache_hits_total", .counter, "Open-file cache lookups that found a valid entry.") { $0.fileCacheHits },
        single("open_file_cache_misses_total", .counter, "Open-file cache lookups that found none (the file is opened, or does not exist).") { $0.fileCacheMisses },
        single("plugin_requests_total", .counter, "Requests handed to a plugin (on_request calls).") { $0.pluginRequests },
        Family(name: "plugin_errors_total", kind: .counter,
               help: "Plugin request errors: on_request returned non-zero, aws_fail called, or an API call out of order (misuse).") { s in
            WorkerMetrics.PluginError.allCases.map { ("kind=\"\($0.label)\"", s.pluginErrors[$0.rawValue]) }
        },
        single("plugin_slow_callbacks_total", .counter, "Plugin callbacks that ran longer than --plugin-slow-ms.") { $0.pluginSlowCallbacks },
    ]

    private static let durationName = "http_request_duration_seconds"
    private static let durationHelp = "Time from a request's complete head to its access-log line (0 for a request whose head never completed)."

    static func render(_ workers: [MetricsSnapshot]) -> String {
        var text = ""
        text.reserveCapacity(4096 + workers.count * 4096)
        for family in families {
            // The whole server: each sample summed over the workers.
            var totals: [(labels: String, value: Int)] = []
            for (w, snapshot) in workers.enumerated() {
                let samples = family.samples(snapshot)
                if w == 0 { totals = samples } else { for i in samples.indices { totals[i].value += samples[i].value } }
            }
            if workers.isEmpty { totals = family.samples(MetricsSnapshot()) }
            header(&text, "aws_" + family.name, family.kind.rawValue, family.help)
            for sample in totals { line(&text, "aws_" + family.name, sample.labels, String(sample.value)) }
            header(&text, "aws_worker_" + family.name, family.kind.rawValue, family.help + " Per worker.")
            for (w, snapshot) in workers.enumerated() {
                for sample in family.samples(snapshot) {
                    line(&text, "aws_worker_" + family.name, workerLabel(w, sample.labels), String(sample.value))
                }
            }
        }
        // The writer thread's, not a worker's: one series for the server.
        header(&text, "aws_access_log_dropped_lines_total", "counter",
               "Access-log lines dropped because the destination did not keep up (the writer's queue was full) or a write failed.")
        line(&text, "aws_access_log_dropped_lines_total", "", String(AccessLogWriter.droppedLines))
        var total = MetricsSnapshot()
        for s in workers {
            for i in s.durationBuckets.indices { total.durationBuckets[i] += s.durationBuckets[i] }
            total.durationNanos += s.durationNanos
        }
        header(&text, "aws_" + durationName, "histogram", durationHelp)
        histogram(&text, "aws_" + durationName, "", total)
        header(&text, "aws_worker_" + durationName, "histogram", durationHelp + " Per worker.")
        for (w, s) in workers.enumerated() { histogram(&text, "aws_worker_" + durationName, "worker=\"\(w)\"", s) }
        return text
    }

    private static func workerLabel(_ worker: Int, _ labels: String) -> String {
        labels.isEmpty ? "worker=\"\(worker)\"" : "worker=\"\(worker)\",\(labels)"
    }

    private static func header(_ text: inout String, _ name: String, _ type: String, _ help: String) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    private static func line(_ text: inout String, _ name: String, _ labels: String, _ value: String) {
        text += labels.isEmpty ? "\(name) \(value)\n" : "\(name){\(labels)} \(value)\n"
    }

    /// Cumulative buckets, `+Inf`, `_sum` (seconds) and `_count`.
    private static func histogram(_ text: inout String, _ name: String, _ labels: String, _ s: MetricsSnapshot) {
        let prefix = labels.isEmpty ? "" : labels + ","
        var cumulative = 0
        for (i, le) in WorkerMetrics.durationLabels.enumerated() {
            cumulative += s.durationBuckets[i]
            line(&text, name + "_bucket", prefix + "le=\"\(le)\"", String(cumulative))
        }
        cumulative += s.durationBuckets[WorkerMetrics.durationBounds.count]
        line(&text, name + "_bucket", prefix + "le=\"+Inf\"", String(cumulative))
        line(&text, name + "_sum", labels, seconds(s.durationNanos))
        line(&text, name + "_count", labels, String(cumulative))
    }

    /// Nanoseconds as seconds with nine decimals (exact, no floating point).
    static func seconds(_ nanos: Int) -> String {
        let whole = nanos / 1_000_000_000, frac = String(nanos % 1_000_000_000)
        return "\(whole)." + String(repeating: "0", count: 9 - frac.count) + frac
    }
}
