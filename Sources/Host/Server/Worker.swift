import CLinux
import Glibc
import Logging
import Synchronization

/// One event loop and everything it owns: its listening socket, its connections, its libaio
/// context, its open-file cache, its timers and its log buffer. Each worker runs on a thread of
/// its own; workers share only the read-only `Config`, immutable snapshots (the sites and their
/// document roots, the route tables) and the connection budget (an atomic); the metrics thread
/// reads its counters (`WorkerMetrics`: single-writer atomics).
///
/// `@unchecked Sendable`: other threads touch a worker only through `loop.post` (thread-safe)
/// and `isLoopThread`; everything else is used on the worker's own loop thread.
final class Worker: @unchecked Sendable {
    let index: Int
    /// Replaced by `installSettings` when SIGHUP re-reads the configuration file; read only on
    /// this worker's loop.
    private(set) var config: Config
    let loop: EventLoop
    let aio: AIOEngine
    /// One open-file cache per distinct document root (`Site.rootID`), made at first use.
    private var fileCaches: [OpenFileCache] = []
    /// This worker's counters, read by the metrics thread (`--metrics`).
    let metrics = WorkerMetrics()
    /// Requests are timed and counted (`--metrics` is on): a clock read per request otherwise saved.
    let countsRequests: Bool
    let wheel: TimerWheel<Connection>
    /// This worker's access-log buffers (nil: no access log), handed to the writer thread.
    let accessLog: AccessLog?
    let logger: Logger
    /// Every recv lands here first; a connection copies out only bytes it must keep.
    let readBuffer: UnsafeMutableRawBufferPointer
    /// File bytes on their way into SSL_write, four TLS records at a time (used within one call).
    let tlsFileScratch: UnsafeMutableRawBufferPointer
    /// The certificates new TLS connections get: an immutable snapshot, replaced by `installTLS`
    /// when a reload succeeds.
    private(set) var tls: TLSContexts?
    /// "Strict-Transport-Security: max-age=N\r\n" for HTTPS responses (`--hsts`).
    let hstsField: [UInt8]?
    /// Content-Type by extension, with `--mime-type` applied.
    let mediaTypes: MediaTypes
    /// Connections whose input sits inside OpenSSL, to be read after this batch of events.
    private var readsDue: [(Connection, UInt32)] = []
    private(set) var date = DateCache()
    /// The start of a 200 head: status line, Date, Server and the fields every response carries
    /// (`HeaderSettings.siteFields`). Rendered when the second or the settings change, so that
    /// most responses begin with one copy.
    private(set) var okHeadStart: [UInt8] = []
    private var okHeadSecond = -1
    private(set) var isShuttingDown = false

    /// Plain and TLS listening sockets (one of each at most).
    private var listeners: [Listener] = []
    /// Open connections by descriptor (an entry may still name a connection since closed), and
    /// closed ones kept for reuse.
    private var connections: [Connection?] = []
    private var connectionPool = SparePool<Connection>()
    /// Closed connections kept however long the worker idles.
    private let warmConnections = 64
    /// Every exchange slot this worker made, by `Exchange.slot` (plugin handles name slots), and
    /// the exchanges free for a new request. A slot is empty (nil) once `trimPools` freed its
    /// exchange; a new exchange takes the slot later.
    private var exchanges: [Exchange?] = []
    private var exchangePool = SparePool<Exchange>()
    /// Spare exchanges kept however idle: spares the load did not need for a whole trim interval
    /// are freed (shrunk first) down to this many.
    private let warmExchanges = 64
    /// Slots emptied by `trimPools`, each with the plugin generation its exchange had reached: the
    /// next exchange in the slot counts on from there, so a handle of an earlier request on the
    /// slot never names a later one.
    private var vacantSlots: [(slot: Int, pluginGeneration: UInt32)] = []
    private var lastTrim: Int64 = 0
    /// Plugin handles that are live now, by exchange slot: readable from any thread.
    let liveHandles: HandleTable
    /// The virtual hosts new connections get: an immutable snapshot, replaced whole by
    /// `installSites` when SIGHUP re-reads the configuration file.
    private(set) var sites: SiteTable
    /// The plugin routes of each plugins folder (`Site.pluginTable`): immutable snapshots, each
    /// replaced whole by `install` on reload; a folder first named by a reload is appended.
    private(set) var routeTables: [RouteTable]
    private(set) var pluginHosts: [PluginHost]
    /// Times every call into plugin code (`--plugin-slow-ms`).
    let callbackWatch: CallbackWatch
    /// Open connections of the whole server, against `--max-connections`.
    private let budget: SharedLimit
    /// Programs running in the whole server, against `--cgi-max` (nil without CGI).
    let cgiSlots: SharedLimit?
    /// CGI programs this worker started and has not yet reaped (or whose pipes are still open).
    private var cgiProcesses: [ObjectIdentifier: CGIProcess] = [:]
    /// /dev/null, the stdin of CGI programs serving requests without a body (opened once).
    private(set) lazy var devNull: Int32 = Glibc.open("/dev/null", O_RDONLY | O_CLOEXEC)
    var isLoopThread: Bool { loop.isOnLoop }
    private(set) var openConnections = 0
    private var acceptPausedUntil: Int64 = 0
    /// Connections refused over `--max-connections` and files that could not be opened for want
    /// of descriptors come by the thousand when they come: each is logged at most once a second,
    /// with a count, so the log stays readable and its writes cost nothing under the flood.
    private var refusalLog = LogThrottle()
    private var openShortageLog = LogThrottle()
    /// PROXY protocol refusals (malformed or missing headers, untrusted peers, timeouts): each
    /// costs whoever connects nothing, so they are logged at most once a second, the last one's
    /// reason and peer with the count since the previous line.
    private var proxyRefusalLog = LogThrottle()
    private var lastProxyRefusal = (reason: "", peer: "")
    private var acceptFailureLog = LogThrottle()
    private var lastAcceptError: (any Error)?
    private var shutdownDeadline: Int64 = .max

    init(index: Int, config: Config, sites: SiteTable, listeners sockets: [ListeningSocket], tls: TLSContexts?,
         plugins: [PluginHost], budget: SharedLimit, cgiSlots: SharedLimit?, accessLogWriter: AccessLogWriter?, logger: Logger) throws {
        self.cgiSlots = cgiSlots
        self.index = index
        self.sites = sites
        self.routeTables = plugins.map(\.table)
        self.pluginHosts = plugins
        callbackWatch = CallbackWatch(worker: index, slowMillis: config.pluginSlowMillis, logger: logger, metrics: metrics)
        countsRequests = config.metrics != nil
        self.budget = budget
        self.config = config
        self.logger = logger
        loop = try EventLoop(tickMillis: 100)
        aio = try AIOEngine(metrics: metrics)
        wheel = TimerWheel(resolutionMillis: 100, now: loop.now)
        accessLog = accessLogWriter.map { AccessLog(writer: $0) }
        readBuffer = .allocate(byteCount: 64 * 1024, alignment: 16)
        tlsFileScratch = .allocate(byteCount: 64 * 1024, alignment: 16)
        self.tls = tls
        hstsField = config.hstsSeconds.map { Array("Strict-Transport-Security: max-age=\($0)\r\n".utf8) }
        mediaTypes = MediaTypes(overrides: config.headerSettings.mimeTypes)
        liveHandles = HandleTable(capacity: config.maxConnections + 64)
        date.refresh()
        renderOKHeadStart()

        for socket in sockets {
            let listener = Listener(socket)
            listener.worker = self
            listeners.append(listener)
            try listener.watch(in: loop)
        }
        try loop.register(aio.eventFD, aio, .readable)
        loop.afterEachBatch { [unowned self] in
            aio.wakeWaiters()
            readDueConnections()
            // Last: the page-cache reads every exchange of this pass asked for, in one io_submit.
            // Their exchanges may free slots or make connections due: once more for those.
            aio.submitDeferred()
            if aio.canWakeWaiters || !readsDue.isEmpty {
                aio.wakeWaiters()
                readDueConnections()
                aio.submitDeferred()
            }
        }
        loop.mustNotSleep = { [unowned self] in aio.hasDeferred || aio.canWakeWaiters || !readsDue.isEmpty }
        loop.onTick { [unowned self] in tick() }
    }

    deinit {
        readBuffer.deallocate()
        tlsFileScratch.deallocate()
        liveHandles.deallocate()
    }

    func run() throws {
        try loop.run()
        loop.runRemainingPosted()
        // No CGI program outlives the server.
        for process in cgiProcesses.values { process.reapNow() }
        accessLog?.flush()
    }

    /// New TLS connections get these certificates; open ones keep theirs.
    func installTLS(_ contexts: TLSContexts) { tls = contexts }

    /// Serves new requests of folder `index` from `table`; requests in flight keep the routes
    /// they started with.
    func install(_ table: RouteTable, at index: Int) {
        let old = routeTables[index]
        routeTables[index] = table
        for p in old.plugins { pluginHosts[index].release(p) }
    }

    /// A plugins folder a reloaded configuration names for the first time (`host.index` is the
    /// next table's).
    func addPluginHost(_ host: PluginHost) {
        precondition(host.index == pluginHosts.count)
        pluginHosts.append(host)
        routeTables.append(host.table)
    }

    /// The settings of a reloaded configuration file (the keys `Server.reloadableKeys` names
    /// take effect; the rest was fixed at start).
    func installSettings(_ next: Config) {
        config = next
        renderOKHeadStart()
    }

    private func renderOKHeadStart() {
        okHeadStart.removeAll(keepingCapacity: true)
        ResponseHead.begin(&okHeadStart, code: 200, date: date)
        okHeadStart.append(contentsOf: config.headerSettings.siteFields)
        okHeadSecond = date.second
    }

    /// New connections are served by `table`; open ones keep the sites they started with.
    func installSites(_ table: SiteTable) { sites = table }

    /// The open-file cache of the root with this id.
    /// Compressed bodies of static text files (`--compress`), made at first use.
    private(set) lazy var compressionCache = CompressionCache(budget: config.compression.cacheBytes)

    func fileCache(_ rootID: Int) -> OpenFileCache {
        while fileCaches.count <= rootID { fileCaches.append(OpenFileCache(metrics: metrics)) }
        return fileCaches[rootID]
    }

    private func tick() {
        date.refresh()
        if date.second != okHeadSecond { renderOKHeadStart() }
        for process in cgiProcesses.values { process.killIfDue(now: loop.now) }
        wheel.advance(to: loop.now)
        if loop.now - lastTrim >= Worker.trimMillis { trimPools() }
        // Counts a burst left behind once it stopped.
        if let count = refusalLog.due(now: loop.now) { logRefusals(count) }
        if let count = openShortageLog.due(now: loop.now) { logOpenShortage(count) }
        if let count = proxyRefusalLog.due(now: loop.now) { logProxyRefusals(count) }
        if let count = acceptFailureLog.due(now: loop.now) { logAcceptFailures(count) }
        accessLog?.flush()
        if acceptPausedUntil != 0 && loop.now >= acceptPausedUntil && !isShuttingDown {
            acceptPausedUntil = 0
            for listener in listeners { try? listener.watch(in: loop) }
        }
        if isShuttingDown && loop.now >= shutdownDeadline {
            logger.notice("grace period over, closing \(openConnections) connection(s)")
            for case let c? in connections where c.isOpen { c.close() }
            loop.stop()
        }
    }

    // MARK: connections

    fileprivate func acceptAll(_ listener: Listener) {
        var peer = sockaddr_storage()
        let secure = listener.socket.secure
        while !isShuttingDown && listener.isWatched {
            let fd: Int32
            do {
                guard let accepted = try Sys.accept(listener.socket.fd, peer: &peer) else { return }
                fd = accepted
            } catch {
                // Out of descriptors (EMFILE/ENFILE) or memory: stop accepting for a moment
                // rather than spin on a listener that stays readable.
                // While the table stays full this fails every 100 ms: logged once a second.
                lastAcceptError = error
                if let count = acceptFailureLog.note(now: loop.now) { logAcceptFailures(count) }
                for l in listeners { l.unwatch(in: loop) }
                acceptPausedUntil = loop.now + 100
                return
            }
            guard budget.take() else {
                refuseOverLimit(fd, secure: secure)
                continue
            }
            let connection = connectionPool.take() ?? Connection(worker: self)
            guard connection.open(fd: fd, peer: peer, tls: secure ? tls : nil) else {
                logger.error("cannot start a TLS session (out of memory?)")
                connectionPool.give(connection)
                budget.give()
                Sys.close(fd)
                continue
            }
            if Int(fd) >= connections.count {
                connections.append(contentsOf: repeatElement(nil, count: Int(fd) + 1 - connections.count))
            }
            connections[Int(fd)] = connection
            openConnections += 1
            metrics.connectionsAccepted.add()
            // The request is often here already (always with --defer-accept): answer it before
            // the socket ever enters epoll; only a connection that stays open is registered.
            connection.readAvailable()
            if connection.isOpen {
                do {
                    try connection.register()
                } catch {
                    logger.error("cannot watch connection: \(error)")
                    connection.close()
                }
            }
        }
    }

    /// Over the connection limit: a best-effort 503 on the fresh socket, then close. A TLS
    /// client cannot read a response before a handshake: it is only closed.
    private func refuseOverLimit(_ fd: Int32, secure: Bool) {
        metrics.connectionsRefused.add()
        if let count = refusalLog.note(now: loop.now) { logRefusals(count) }
        guard !secure else {
            Sys.close(fd)
            return
        }
        let response = ResponseHead.standalone(.serviceUnavailable, extra: "Retry-After: 1\r\n", fields: config.headerSettings.siteFields, date: date)
        _ = response.withUnsafeBytes { try? Sys.send(fd, $0.baseAddress!, $0.count) }
        Sys.shutdownWrite(fd)
        Sys.close(fd)
    }

    private func logAcceptFailures(_ count: Int) {
        logger.error("accept failed: \(lastAcceptError.map { "\($0)" } ?? "?"); accepts paused for 100 ms each time, \(count) time(s) since the last such line")
    }

    private func logRefusals(_ count: Int) {
        logger.warning("connection limit (\(config.maxConnections)) reached: refused \(count) connection(s) since the last such line (503, or closed for TLS)")
    }

    /// A file could not be opened for want of descriptors or kernel memory (answered 503).
    func noteOpenShortage() {
        if let count = openShortageLog.note(now: loop.now) { logOpenShortage(count) }
    }

    /// A connection closed for its PROXY protocol header (`reason`).
    func noteProxyRefusal(_ reason: String, peer: String) {
        lastProxyRefusal = (reason, peer)
        if let count = proxyRefusalLog.note(now: loop.now) { logProxyRefusals(count) }
    }

    private func logProxyRefusals(_ count: Int) {
        let more = count > 1 ? " (\(count) PROXY protocol refusals since the last such line)" : ""
        logger.info("\(lastProxyRefusal.reason), closing\(more)", metadata: ["peer": "\(lastProxyRefusal.peer)"])
    }

    private func logOpenShortage(_ count: Int) {
        logger.warning("out of descriptors or memory opening files (EMFILE/ENFILE/ENOMEM): answered 503 to \(count) request(s) since the last such line")
    }

    func connectionClosed(_ connection: Connection) {
        openConnections -= 1
        metrics.connectionsClosed.add()
        budget.give()
        connectionPool.give(connection)
        if isShuttingDown && openConnections == 0 { loop.stop() }
    }

    /// Closes this worker's listeners (a shared one only leaves this loop): the kernel then sends
    /// new connections to the other workers.
    func stopAccepting() {
        for listener in listeners {
            listener.unwatch(in: loop)
            listener.socket.closeIfOwned()
        }
        listeners = []
    }

    // MARK: input buffered inside OpenSSL

    /// Reads `connection` after this batch of events (see `Connection.inputResumed`).
    func readSoon(_ connection: Connection) {
        readsDue.append((connection, connection.generation))
    }

    private func readDueConnections() {
        // A read may make another connection due again; each round reads what is due now.
        while !readsDue.isEmpty {
            let due = readsDue
            readsDue.removeAll(keepingCapacity: true)
            for (c, generation) in due where c.isOpen && c.generation == generation && c.transport.hasBufferedInput
                && (c.exchange?.wantsInput ?? true) {
                c.readAvailable()
            }
        }
    }

    // MARK: exchanges

    /// An exchange for a connection that has a request to serve.
    func takeExchange() -> Exchange {
        if let x = exchangePool.take() { return x }
        if let vacant = vacantSlots.popLast() {
            let x = Exchange(worker: self, slot: vacant.slot)
            x.plugin.generation = vacant.pluginGeneration
            exchanges[vacant.slot] = x
            return x
        }
        let x = Exchange(worker: self, slot: exchanges.count)
        exchanges.append(x)
        return x
    }

    func returnExchange(_ x: Exchange) {
        x.detach()
        // Not shrunk here past `warmExchanges`: under a sustained load that keeps many exchanges
        // busy at once (a loop pass of /dynamic/ or plugin requests on 1000 connections), every
        // request would then grow a shrunk exchange's buffers again. The trim frees (and
        // shrinks) the ones the load stopped needing.
        exchangePool.give(x)
    }

    func exchange(slot: Int) -> Exchange? { slot < exchanges.count ? exchanges[slot] : nil }

    // MARK: memory after a burst

    /// How often the pools give back what the load did not use (issue 10, defect 8).
    static let trimMillis: Int64 = 1000

    /// Once a second, on the tick (never per request): the pools keep what the load of the last
    /// two seconds used and give back the rest (`IdleCount`), so the memory a burst took returns
    /// when it ends — a few thousand aborted downloads used to leave the server ~100 MiB larger
    /// for good.
    /// - Idle AIO buffers are unmapped (`AIOEngine.trimIdleBuffers`).
    /// - Idle spare exchanges are freed, those past `warmExchanges` (each is ~12 KiB once
    ///   shrunk: decoder, head storage, pending input, body producers). Exchanges in the pool
    ///   are detached (their plugin and CGI requests ended before they came back), so nothing
    ///   refers to them but the pool and their slot.
    /// - Spare connections past `warmConnections` too: small themselves, but made one per
    ///   accept between a burst's exchanges, each would pin a page of the freed memory around it.
    ///   Nothing holds a closed connection but the pool, the table (by its old descriptor) and
    ///   the timer wheel (until its slot comes round): all three let go.
    /// - Then, when either pool shrank, `malloc_trim`: what a burst freed (exchanges, TLS
    ///   sessions, connection buffers) lies between blocks still in use, where glibc keeps it
    ///   (it only returns the top of a heap by itself). malloc_trim walks and locks every arena
    ///   (4 ms after 3,000 connections here), so it runs only after a pool shrank: past its
    ///   warm size, after two seconds unused.
    /// malloc arenas are left at glibc's default (up to 8 per core): each worker thread takes
    /// its own, which keeps workers off each other's locks, and malloc_trim covers them all.
    private func trimPools() {
        lastTrim = loop.now
        let buffers = aio.trimIdleBuffers()
        let freedExchanges = freeIdleExchanges(), freedConnections = freeIdleConnections()
        if freedExchanges + freedConnections > 0 { _ = aws_malloc_trim() }
        if buffers + freedExchanges + freedConnections > 0 {
            logger.debug("idle memory given back: \(buffers) AIO buffer(s), \(freedExchanges) exchange(s), \(freedConnections) connection(s)")
        }
    }

    /// Frees the spare exchanges `trimPools` gives back (they are gone when this returns, before
    /// malloc_trim); how many. From the top of the pool (the last given back); the bottom
    /// `warmExchanges` stay, with their buffers.
    private func freeIdleExchanges() -> Int {
        let idle = exchangePool.trim(keeping: warmExchanges)
        for x in idle {
            x.shrink()
            vacantSlots.append((x.slot, x.plugin.generation))
            exchanges[x.slot] = nil
        }
        return idle.count
    }

    /// Frees the spare connections `trimPools` gives back, with the table entries that still
    /// name them by a descriptor they no longer have and the timer wheel's entries for them
    /// (they are gone when this returns, before malloc_trim); how many.
    private func freeIdleConnections() -> Int {
        let idle = connectionPool.trim(keeping: warmConnections)
        if !idle.isEmpty {
            for i in connections.indices where connections[i].map({ Int($0.fd) != i }) ?? false {
                connections[i] = nil
            }
            wheel.dropUnscheduled()
        }
        return idle.count
    }

    // MARK: CGI programs

    /// Takes charge of a started program until it is reaped and its pipes are closed.
    func adopt(_ process: CGIProcess) { cgiProcesses[ObjectIdentifier(process)] = process }

    /// The program was reaped: its `--cgi-max` slot is free.
    func cgiExited(_ process: CGIProcess) {
        cgiSlots?.give()
        cgiChanged(process)
    }

    /// Forgets a program once nothing of it is left.
    func cgiChanged(_ process: CGIProcess) {
        if process.isFinished { cgiProcesses[ObjectIdentifier(process)] = nil }
    }

    // MARK: shutdown

    /// Stops accepting, lets responses in flight finish within the grace period, closes idle
    /// keep-alive connections now, and stops the loop when none is left.
    func beginShutdown() {
        guard !isShuttingDown else { return }
        isShuttingDown = true
        shutdownDeadline = loop.now + config.shutdownGrace
        stopAccepting()
        for case let c? in connections where c.isOpen {
            if let x = c.exchange, x.phase == .responding || x.phase == .handler { continue }
            c.close()
        }
        if openConnections == 0 { loop.stop() }
    }
}

private final class Listener: EventHandler {
    let socket: ListeningSocket
    unowned(unsafe) var worker: Worker?
    private(set) var isWatched = false
    init(_ socket: ListeningSocket) { self.socket = socket }
    func handleEvents(_ events: Epoll.Interest) { worker?.acceptAll(self) }

    /// A listener shared by all workers is watched with EPOLLEXCLUSIVE, so one connection wakes
    /// one worker rather than all of them.
    func watch(in loop: EventLoop) throws(SyscallError) {
        guard !isWatched else { return }
        try loop.register(socket.fd, self, socket.shared ? [.readable, .exclusive] : .readable)
        isWatched = true
    }

    func unwatch(in loop: EventLoop) {
        guard isWatched else { return }
        loop.unregister(socket.fd)
        isWatched = false
    }
}

/// A bound, listening socket: one per worker with SO_REUSEPORT (the kernel spreads connections
/// over them), or one shared by every worker where the kernel refuses SO_REUSEPORT. A worker
/// closes its own at shutdown; a shared one is closed by the server once every worker is done.
struct ListeningSocket: Sendable {
    let fd: Int32
    let shared: Bool
    /// Connections accepted here speak TLS.
    let secure: Bool
    func closeIfOwned() { if !shared { Sys.close(fd) } }
}

/// A count shared by every worker against a limit: open connections (`--max-connections`),
/// running CGI programs (`--cgi-max`).
final class SharedLimit: Sendable {
    private let open = Atomic<Int>(0)
    private let limit: Int
    init(limit: Int) { self.limit = limit }

    /// Counts a new connection; false (and not counted) when the server is full.
    func take() -> Bool {
        if open.wrappingAdd(1, ordering: .relaxed).newValue <= limit { return true }
        open.wrappingSubtract(1, ordering: .relaxed)
        return false
    }

    func give() { open.wrappingSubtract(1, ordering: .relaxed) }
}

/// At most one log line a second for an event that comes in floods: `note` counts an event and
/// says when a line is due (with the count since the last line); `due`, called every tick,
/// reports what a burst left uncounted once a second has passed.
struct LogThrottle {
    private var count = 0
    private var lastLine: Int64?

    mutating func note(now: Int64) -> Int? {
        count += 1
        return due(now: now)
    }

    mutating func due(now: Int64) -> Int? {
        guard count > 0 else { return nil }
        if let last = lastLine, now - last < 1000 { return nil }
        lastLine = now
        defer { count = 0 }
        return count
    }
}
