import CLinux
import Glibc
import Logging
import Synchronization

/// A plugin callback the host makes on a loop thread.
enum PluginCallback: UInt {
    case onRequest, onBody, onProceed, onAbort, onEnd, function, posted, release

    var name: String {
        switch self {
        case .onRequest: "on_request"
        case .onBody: "on_body"
        case .onProceed: "on_proceed"
        case .onAbort: "on_abort"
        case .onEnd: "on_end"
        case .function: "function"
        case .posted: "posted function"
        case .release: "part release"
        }
    }
}

/// A worker's watch over the plugin code it runs. A callback blocks its whole loop (every
/// connection of the worker waits), so one that runs longer than `--plugin-slow-ms` is logged
/// when it returns, with the plugin, the route and the time, and counted; one still running
/// after a second is reported by the control thread while it runs (`stuck`).
///
/// Cost on the hot path: two monotonic clock reads (vDSO) and two plain stores per callback; the
/// log line is built only for a slow one.
///
/// `@unchecked Sendable`: `startedAt` and `running` are atomics written by the worker's loop
/// thread and read by the control thread; everything else is the loop thread's.
final class CallbackWatch: @unchecked Sendable {
    /// Nanoseconds; 0: the watch is off.
    let slowNanos: UInt64
    private let worker: Int
    private let logger: Logger
    /// Slow callbacks on this worker so far. Loop thread.
    private(set) var slowCount = 0
    /// When the running callback began (monotonic ns), 0 while none runs.
    private let startedAt = Atomic<UInt64>(0)
    /// What runs: the route's object address with the callback kind in its low bits (Swift
    /// objects are 16-byte aligned), or the kind alone when the route is not known.
    private let running = Atomic<UInt>(0)

    /// Slow callbacks are counted here too (`--metrics`).
    private let metrics: WorkerMetrics

    init(worker: Int, slowMillis: Int, logger: Logger, metrics: WorkerMetrics) {
        self.worker = worker
        self.metrics = metrics
        slowNanos = UInt64(max(slowMillis, 0)) * 1_000_000
        self.logger = logger
    }

    /// Runs `body`, a call into a plugin for `route`; `code` is the plugin function called, to
    /// name the plugin when there is no route (a function posted for a request that has ended).
    @inline(__always)
    func measure<R>(_ kind: PluginCallback, _ route: Route?, code: UnsafeRawPointer? = nil, _ body: () -> R) -> R {
        guard slowNanos != 0 else { return body() }
        let start = Sys.monotonicNanos()
        let routeBits = route.map { UInt(bitPattern: Unmanaged.passUnretained($0).toOpaque()) } ?? 0
        // `running` first: whoever sees this start (acquire) sees what it belongs to.
        running.store(routeBits | kind.rawValue, ordering: .releasing)
        startedAt.store(start, ordering: .releasing)
        let result = body()
        let elapsed = Sys.monotonicNanos() &- start
        startedAt.store(0, ordering: .releasing)
        if elapsed >= slowNanos { reportSlow(kind, route, code: code, nanos: elapsed) }
        return result
    }

    @inline(never)
    private func reportSlow(_ kind: PluginCallback, _ route: Route?, code: UnsafeRawPointer?, nanos: UInt64) {
        slowCount += 1
        metrics.pluginSlowCallbacks.add()
        let what = CallbackWatch.describe(kind, route, code: code)
        logger.warning("\(what) took \(CallbackWatch.millis(nanos)) ms (limit \(slowNanos / 1_000_000) ms): worker \(worker) served nothing else meanwhile (\(slowCount) slow callback\(slowCount == 1 ? "" : "s") so far)")
    }

    /// Control thread, once a second: a callback running for at least `atLeast` ns now, as a
    /// log line. The route it names is alive: the callback's request held its plugin when the
    /// callback was seen running, and a plugin is shut down (its routes dropped) only on the
    /// control thread, which is busy here.
    func stuck(now: UInt64, atLeast: UInt64) -> String? {
        let start = startedAt.load(ordering: .acquiring)
        guard start != 0, now > start, now - start >= atLeast else { return nil }
        let bits = running.load(ordering: .acquiring)
        // A new callback stores `running` (release) after clearing `startedAt`: the same start
        // read again means `bits` belongs to the callback that began at `start`.
        guard startedAt.load(ordering: .acquiring) == start, let kind = PluginCallback(rawValue: bits & 15) else { return nil }
        let routeAddress = bits & ~15
        let route = routeAddress == 0 ? nil
            : Unmanaged<Route>.fromOpaque(UnsafeRawPointer(bitPattern: routeAddress)!).takeUnretainedValue()
        let what = CallbackWatch.describe(kind, route, code: nil)
        return "\(what) still running after \(CallbackWatch.millis(now - start)) ms: every connection of worker \(worker) waits for it"
    }

    /// "plugin NAME: KIND for METHOD /route" — the plugin's name from the route, or from the
    /// library that holds `code`.
    private static func describe(_ kind: PluginCallback, _ route: Route?, code: UnsafeRawPointer?) -> String {
        if let route { return "plugin \(route.plugin.name): \(kind.name) for \(route.displayMethod) \(route.displayPath)" }
        if let code, let file = aws_dl_file_of(code) {
            // Loaded from a copy named <name>-<hash>-<n>.so.
            var name = PluginLoader.pluginName(String(cString: file))
            for _ in 0..<2 { if let dash = name.lastIndex(of: "-") { name = String(name[..<dash]) } }
            return "plugin \(name): \(kind.name) (its request had ended)"
        }
        return "a plugin's \(kind.name)"
    }

    /// "301.2": milliseconds with one decimal.
    private static func millis(_ nanos: UInt64) -> String {
        let tenths = nanos / 100_000
        return "\(tenths / 10).\(tenths % 10)"
    }
}
