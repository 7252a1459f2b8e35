import CLinux
import Glibc
import Logging

/// One event loop and everything it owns: its listening socket, its connections, its libaio
/// context, its timers and its log buffer. Workers share nothing but the read-only `Config` and
/// `DocumentRoot`, so N of them can run on N threads.
final class Worker {
    let index: Int
    let config: Config
    let loop: EventLoop
    let root: DocumentRoot
    let aio: AIOEngine
    let fileCache = OpenFileCache()
    let wheel: TimerWheel<Connection>
    /// Request lines go through swift-log (`aws.access`, info) into this worker's buffered sink.
    let accessLog: AccessLog?
    let accessLogger: Logger?
    let logger: Logger
    /// Every recv lands here first; a connection copies out only bytes it must keep.
    let readBuffer: UnsafeMutableRawBufferPointer
    private(set) var date = DateCache()
    private(set) var isShuttingDown = false

    private let listenFD: Int32
    private var listener: Listener?
    private var connections: [Connection?] = []
    /// Every connection object this worker made, by `Connection.slot`; plugin handles name them.
    private var slots: [Connection] = []
    private var pool: [Connection] = []
    /// The plugin routes; replaced whole on reload.
    var routes: RouteTable
    private let thread = pthread_self()
    var isLoopThread: Bool { pthread_equal(thread, pthread_self()) != 0 }
    private(set) var openConnections = 0
    private var acceptPausedUntil: Int64 = 0
    private var shutdownDeadline: Int64 = .max

    init(index: Int, config: Config, root: DocumentRoot, listenFD: Int32, routes: RouteTable, logger: Logger) throws {
        self.index = index
        self.routes = routes
        self.config = config
        self.root = root
        self.listenFD = listenFD
        self.logger = logger
        loop = try EventLoop(tickMillis: 100)
        aio = try AIOEngine()
        wheel = TimerWheel(resolutionMillis: 100, now: loop.now)
        let sink = config.accessLogEnabled ? try AccessLog(path: config.accessLogPath) : nil
        accessLog = sink
        accessLogger = sink.map { sink in Logger(label: "aws.access") { _ in AccessLogHandler(sink: sink) } }
        readBuffer = .allocate(byteCount: 64 * 1024, alignment: 16)
        date.refresh()

        let listener = Listener(fd: listenFD)
        self.listener = listener
        listener.worker = self
        try loop.register(listenFD, listener, .readable)
        try loop.register(aio.eventFD, aio, .readable)
        loop.afterEachBatch { [unowned self] in aio.wakeWaiters() }
        loop.onTick { [unowned self] in tick() }
    }

    deinit {
        readBuffer.deallocate()
    }

    func run() throws {
        try loop.run()
        loop.runRemainingPosted()
        accessLog?.flush()
    }

    private func tick() {
        date.refresh()
        wheel.advance(to: loop.now)
        accessLog?.flush()
        if acceptPausedUntil != 0 && loop.now >= acceptPausedUntil && !isShuttingDown {
            acceptPausedUntil = 0
            if let listener { try? loop.register(listenFD, listener, .readable) }
        }
        if isShuttingDown && loop.now >= shutdownDeadline {
            logger.notice("grace period over, closing \(openConnections) connection(s)")
            for case let c? in connections where c.isOpen { c.close() }
            loop.stop()
        }
    }

    // MARK: connections

    fileprivate func acceptAll() {
        var peer = sockaddr_storage()
        while !isShuttingDown {
            let fd: Int32
            do {
                guard let accepted = try Sys.accept(listenFD, peer: &peer) else { return }
                fd = accepted
            } catch {
                // Out of descriptors (EMFILE/ENFILE) or memory: stop accepting for a moment
                // rather than spin on a listener that stays readable.
                logger.error("accept failed: \(error); pausing accepts for 100 ms")
                loop.unregister(listenFD)
                acceptPausedUntil = loop.now + 100
                return
            }
            if openConnections >= config.maxConnections {
                refuseOverLimit(fd)
                continue
            }
            let connection = pool.popLast() ?? makeConnection()
            connection.open(fd: fd, peer: peer)
            if Int(fd) >= connections.count {
                connections.append(contentsOf: repeatElement(nil, count: Int(fd) + 1 - connections.count))
            }
            connections[Int(fd)] = connection
            openConnections += 1
            // With TCP_DEFER_ACCEPT the request is usually here already: answer it before the
            // socket ever enters epoll; only a connection that stays open is registered.
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

    private static let overLimitResponse: [UInt8] = Array((
        "HTTP/1.1 503 Service Unavailable\r\nServer: aws/\(AWSVersion.string)\r\nRetry-After: 1\r\n"
        + "Content-Type: text/html; charset=utf-8\r\nContent-Length: \(StatusTable.shared.errorPage(.serviceUnavailable).count)\r\n"
        + "Connection: close\r\n\r\n").utf8) + StatusTable.shared.errorPage(.serviceUnavailable)

    /// Over the connection limit: a best-effort 503 on the fresh socket, then close.
    private func refuseOverLimit(_ fd: Int32) {
        logger.warning("connection limit (\(config.maxConnections)) reached: 503")
        _ = Worker.overLimitResponse.withUnsafeBytes { try? Sys.send(fd, $0.baseAddress!, $0.count) }
        Sys.shutdownWrite(fd)
        Sys.close(fd)
    }

    private func makeConnection() -> Connection {
        let c = Connection(worker: self, slot: slots.count)
        slots.append(c)
        return c
    }

    func connection(slot: Int) -> Connection? { slot < slots.count ? slots[slot] : nil }

    func connectionClosed(_ connection: Connection) {
        openConnections -= 1
        pool.append(connection)
        if isShuttingDown && openConnections == 0 { loop.stop() }
    }

    // MARK: shutdown

    /// Stops accepting, lets responses in flight finish within the grace period, closes idle
    /// keep-alive connections now, and stops the loop when none is left.
    func beginShutdown() {
        guard !isShuttingDown else { return }
        isShuttingDown = true
        shutdownDeadline = loop.now + config.shutdownGrace
        if let listener {
            loop.unregister(listener.fd)
            Sys.close(listener.fd)
            self.listener = nil
        }
        for case let c? in connections where c.isOpen && c.phase != .responding && c.phase != .plugin { c.close() }
        if openConnections == 0 { loop.stop() }
    }
}

private final class Listener: EventHandler {
    let fd: Int32
    unowned(unsafe) var worker: Worker?
    init(fd: Int32) { self.fd = fd }
    func handleEvents(_ events: Epoll.Interest) { worker?.acceptAll() }
}
