import Logging
import Synchronization

/// The plugins' side of the control thread: it owns the current route table, reloads on SIGHUP,
/// publishes each new table to every worker and unloads versions nobody uses any more.
///
/// Loading, `init` and `shutdown` all run on the control thread, never on a serving thread. A
/// library is never closed once its `init` ran (PluginLoader): an unloaded version's code stays
/// mapped for any thread of it that is still running. Workers only ever see immutable `RouteTable` snapshots, installed by a function posted
/// to their loop; `release` is the one method called from worker threads.
final class PluginHost: @unchecked Sendable {
    /// This folder's route table in every worker (`Worker.routeTables`, `Site.pluginTable`).
    let index: Int
    private let control: EventLoop
    private let loader: PluginLoader?
    private let logger: Logger
    /// Set once, before any worker thread starts; read-only afterwards.
    private var workers: [Worker] = []
    /// The table most recently published. Control thread only.
    private(set) var table: RouteTable
    /// Retired versions still loaded (their last users are finishing). Control thread only.
    private var retired: [LoadedPlugin] = []

    init(index: Int, control: EventLoop, loader: PluginLoader?, table: RouteTable, logger: Logger) {
        self.index = index
        self.control = control
        self.loader = loader
        self.table = table
        self.logger = logger
    }

    /// Each worker starts holding `table`: one use per worker for every plugin in it. With
    /// plugins, the control loop's tick (1 s) looks for a callback stuck in plugin code.
    func attach(_ workers: [Worker]) {
        self.workers = workers
        for p in table.plugins { p.addUses(workers.count) }
        if loader != nil, let slow = workers.first?.callbackWatch.slowNanos, slow != 0 {
            // Shorter stalls are reported by the worker itself when the callback returns; this
            // is for the callback that does not return.
            let atLeast = max(slow, 1_000_000_000)
            control.onTick { [unowned self] in reportStuckCallbacks(atLeast: atLeast) }
        }
    }

    /// Control thread: a line for every worker whose loop is inside a plugin callback that has
    /// run for `atLeast` ns, each second while it lasts.
    private func reportStuckCallbacks(atLeast: UInt64) {
        let now = Sys.monotonicNanos()
        for worker in workers {
            if let line = worker.callbackWatch.stuck(now: now, atLeast: atLeast) { logger.warning("\(line)") }
        }
    }

    /// A worker or a request let go of a version. Any thread.
    func release(_ plugin: LoadedPlugin) {
        guard plugin.dropUse() else { return }
        let host = self
        control.post { host.unload(plugin) }
    }

    /// SIGHUP: re-scan the folder and publish the new table. Control thread.
    func reload() {
        guard let loader else {
            logger.notice("SIGHUP: no plugins folder to reload")
            return
        }
        logger.notice("SIGHUP: reloading plugins from \(loader.directory)")
        let next = loader.reload(current: table)
        for p in next.plugins { p.addUses(workers.count) }
        let gone = table.plugins.filter { old in !next.plugins.contains { $0 === old } }
        table = next
        // Retire before publishing: a worker's drop of its hold can then find the flag set.
        for p in gone {
            retired.append(p)
            if p.retire() { unload(p) }
        }
        for worker in workers {
            let index = self.index
            worker.loop.post { worker.install(next, at: index) }
        }
    }

    /// Shutdown now; forgotten once every loop has run what was posted to it before, so the
    /// "unloaded" line means nothing of the version is queued any more (its code stays mapped
    /// anyway, for any thread it failed to stop). Control thread.
    private func unload(_ plugin: LoadedPlugin) {
        guard plugin.isLoaded else { return }
        plugin.shutdown()
        let pending = Barrier(count: workers.count)
        let host = self
        for worker in workers {
            worker.loop.post {
                if pending.arrive() { host.control.post { host.finishUnload(plugin) } }
            }
        }
    }

    private func finishUnload(_ plugin: LoadedPlugin) {
        plugin.unload(logger: logger)
        retired.removeAll { $0 === plugin }
    }

    /// At exit, after every worker thread has ended: work still posted runs (with alive = 0),
    /// then every plugin's shutdown, then what those shutdowns posted. Nothing is dlclose'd: a
    /// plugin thread still running keeps its code until the process is gone.
    func unloadAllAtExit() {
        drainEverything()
        let all = table.plugins + retired
        for p in all { p.shutdown() }
        drainEverything()
        for p in all { p.unload(logger: logger) }
        retired = []
        loader?.removeCopies()
    }

    private func drainEverything() {
        for _ in 0..<100 {
            var ran = false
            for worker in workers { ran = worker.loop.runRemainingPosted() || ran }
            ran = control.runRemainingPosted() || ran
            if !ran { return }
        }
    }
}

/// Counts arrivals from several threads; `arrive` is true for the last one.
private final class Barrier: Sendable {
    private let remaining: Atomic<Int>
    init(count: Int) { remaining = Atomic(count) }
    func arrive() -> Bool { remaining.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 }
}
