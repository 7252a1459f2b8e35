import CLinux
import Glibc
import Logging
import Synchronization

/// Start-up and shutdown: binds the listening sockets, drops privileges, loads plugins, starts
/// one thread per worker, and then runs the control loop on the main thread. The control loop
/// serves nothing: it turns signals into work for the workers (shutdown, plugin reload) or for
/// the access-log writer (reopen on SIGUSR1), and does the blocking plugin work (dlopen, init,
/// shutdown) off the serving threads.
final class Server {
    let config: Config
    let logger: Logger
    /// Reads the configuration again (the file under the same flags), for SIGHUP.
    private let reread: (() throws -> Config)?
    /// Control thread only, like everything below.
    private let sites = SiteBuilder()
    private var pluginHosts: [PluginHost] = []
    /// The certificates in use, with those of the current server blocks.
    private var tlsSettings: TLSSettings?
    /// The configuration in use (the last one SIGHUP read successfully).
    private var current: Config
    /// Opens the files of virtual hosts a reload names (nil: no access log at all).
    private var accessLogWriter: AccessLogWriter?

    init(config: Config, logger: Logger, reread: (() throws -> Config)? = nil) {
        self.config = config
        self.logger = logger
        self.reread = reread
        self.current = config
        self.tlsSettings = SiteBuilder.tlsSettings(config)
    }

    /// `--check`: everything start-up would read, read — the file, the document roots, the
    /// certificates, the plugins (loaded, initialized, shut down) — and nothing bound or served.
    /// Ports are checked for their range only, not bound (a running server holds them). A
    /// plugin that does not load fails the check even without strict-plugins (a start would
    /// skip it with an error line).
    func check() throws {
        let file = config.configFile ?? "command line"
        func at(_ line: Int?) -> String { line.map { "\(file):\($0): " } ?? "\(file): " }
        let table = try sites.build(config)
        if let user = config.user, getpwnam(user) == nil { throw ConfigError("\(at(config.keyLines["user"]))no such user: \(user)") }
        // Each certificate alone first, so an error names the key that gave it.
        if let tls = config.tls {
            do {
                _ = try TLSContexts(TLSSettings(port: tls.port, chain: tls.chain, key: tls.key, named: []), kernelTLS: false)
            } catch {
                throw ConfigError("\(at(config.keyLines["tls-cert"]))TLS: \(error)")
            }
            for block in config.servers {
                guard let chain = block.tlsCert, let key = block.tlsKey else { continue }
                do {
                    _ = try TLSContexts(TLSSettings(port: tls.port, chain: chain, key: key, named: []), kernelTLS: false)
                } catch {
                    throw ConfigError("\(at(block.line(of: "tls-cert")))TLS: \(error)")
                }
            }
        }
        if let settings = tlsSettings { _ = try loadTLS(settings) }
        // The log files start-up would open (opened for appending, as start-up does).
        var logs: [(String, Int?)] = config.accessLogPath.map { [($0, config.keyLines["access-log"])] } ?? []
        for block in config.servers { if let path = block.accessLog { logs.append((path, block.line(of: "access-log"))) } }
        for (path, line) in logs {
            let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw ConfigError("\(at(line))access log \(path): \(String(cString: strerror(errno)))") }
            Sys.close(fd)
        }
        let control = try EventLoop(tickMillis: 1000)
        for (i, folder) in sites.pluginFolders.enumerated() {
            let loader = PluginLoader(directory: folder.path, config: config.pluginConfig, strict: true, root: folder.root, logger: logger)
            let routes: RouteTable
            do {
                routes = try loader.loadAll()
            } catch {
                throw ConfigError("\(at(folder.line ?? config.keyLines["plugins"]))plugins folder \(folder.path): \(error)")
            }
            let host = PluginHost(index: i, control: control, loader: loader, table: routes, logger: logger)
            host.attach([])
            host.unloadAllAtExit()
        }
        for site in table.sites { logger.info("site \(site.description): root \(site.root.realPath)") }
    }

    /// A plugins folder's loader, route table and host (the folder at `index` of `sites`).
    private func loadPlugins(_ index: Int, config: Config, control: EventLoop) throws -> PluginHost {
        let folder = sites.pluginFolders[index]
        let loader = PluginLoader(directory: folder.path, config: config.pluginConfig, strict: config.strictPlugins, root: folder.root, logger: logger)
        let routes = try loader.loadAll()
        logger.info("plugins \(folder.path): \(routes.plugins.count) plugin(s) loaded")
        return PluginHost(index: index, control: control, loader: loader, table: routes, logger: logger)
    }

    func run() throws {
        Sys.ignoreSIGPIPE()
        // Block the signals before any other thread exists (threads inherit the mask), so they
        // arrive only via the control loop's signalfd.
        let signals: [Int32] = [SIGTERM, SIGINT, SIGHUP, SIGUSR1]
        let signalFD = signals.withUnsafeBufferPointer { aws_signalfd_for($0.baseAddress, Int32($0.count)) }
        guard signalFD >= 0 else { throw SyscallError(call: "signalfd", errno: errno) }

        raiseDescriptorLimit()
        // Certificates are read before privileges are dropped (keys are often readable by root only).
        let tls = try tlsSettings.map { settings in try loadTLS(settings) }
        // Bound first (a failure leaves nothing else to close), before privileges are dropped.
        let metrics = try config.metrics.map { try MetricsListener(endpoint: $0, logger: logger) }
        // Sockets systemd passed replace the ones aws would bind (socket activation).
        let passed = try Systemd.takeListeningSockets()
        let notifier = ReadinessNotifier()
        let passedSecure = passed.filter { Server.isTLSSocketName($0.name) }
        let passedPlain = passed.filter { !Server.isTLSSocketName($0.name) }
        guard passedPlain.count <= 1, passedSecure.count <= 1 else {
            throw ConfigError("socket activation: \(passed.count) sockets passed; aws takes at most one for HTTP and one named \"https\" for HTTPS")
        }
        if !passedSecure.isEmpty && config.tls == nil { throw ConfigError("socket activation: a socket named \"https\" was passed: give --tls-cert and --tls-key") }
        if !passedPlain.isEmpty && !config.plainHTTP { throw ConfigError("socket activation: a plain HTTP socket was passed, but --no-http is given") }
        // One passed socket per port, watched by every worker with EPOLLEXCLUSIVE.
        let plain = !config.plainHTTP ? []
            : try passedPlain.first.map { [ListeningSocket(fd: $0.fd, shared: true, secure: false)] }
                ?? bindListeners(count: config.workers, port: config.port, secure: false)
        let secure: [ListeningSocket]
        do {
            secure = try config.tls.map { settings in
                try passedSecure.first.map { [ListeningSocket(fd: $0.fd, shared: true, secure: true)] }
                    ?? bindListeners(count: config.workers, port: settings.port, secure: true)
            } ?? []
        } catch {
            for s in plain { Sys.close(s.fd) }
            throw error
        }
        let listeners = plain + secure
        if let user = config.user { try dropPrivileges(to: user) }

        let sharing = passed.isEmpty && (plain.count == 1 || secure.count == 1) && config.workers > 1 ? " (one shared listener per port: SO_REUSEPORT unavailable)" : ""
        var endpoints: [String] = []
        if config.plainHTTP {
            endpoints.append(passedPlain.first.map { "port \(Sys.localPort($0.fd)) (socket from systemd)" } ?? "\(config.address):\(config.port)")
        }
        if let settings = config.tls {
            endpoints.append(passedSecure.first.map { "port \(Sys.localPort($0.fd)) (TLS, socket from systemd)" } ?? "\(config.address):\(settings.port) (TLS)")
        }
        logger.info("aws \(AWSVersion.string) listening on \(endpoints.joined(separator: " and ")) with \(config.workers) worker(s)\(sharing)")

        // Log files are opened after privileges are dropped, so a reopen on SIGUSR1 (by the
        // same user) can do what the first open did; the top-level one is the first.
        let accessLogWriter = config.accessLogEnabled ? try AccessLogWriter(format: config.accessLogFormat, workers: config.workers, logger: logger) : nil
        self.accessLogWriter = accessLogWriter
        if let accessLogWriter {
            _ = try accessLogWriter.file(path: config.accessLogPath)
            try accessLogWriter.start()
        }
        // The sites (document roots, virtual hosts' own log files) as the served user.
        let siteTable = try sites.build(config, logs: accessLogWriter)
        logSites(siteTable)
        let control = try EventLoop(tickMillis: 1000)
        for i in sites.pluginFolders.indices { pluginHosts.append(try loadPlugins(i, config: config, control: control)) }
        let budget = SharedLimit(limit: config.maxConnections)
        let cgiSlots = SharedLimit(limit: config.cgiMax)
        var workers: [Worker] = []
        for i in 0..<config.workers {
            // Per port: this worker's own socket, or the one shared by all.
            let sockets = [plain, secure].compactMap { $0.isEmpty ? nil : $0[$0.count == 1 ? 0 : i] }
            workers.append(try Worker(index: i, config: config, sites: siteTable, listeners: sockets, tls: tls, plugins: pluginHosts,
                                      budget: budget, cgiSlots: cgiSlots, accessLogWriter: accessLogWriter, logger: logger))
        }
        // Plugin handles name their worker by index: the table is complete before any plugin runs.
        HostAPI.workers = workers
        for host in pluginHosts { host.attach(workers) }
        try metrics?.start(workers.map(\.metrics))

        let running = RunningWorkers(count: workers.count, control: control)
        var threads: [pthread_t] = []
        for worker in workers {
            let logger = self.logger
            threads.append(try WorkerThread.spawn(name: "aws-worker-\(worker.index)") {
                do { try worker.run() } catch {
                    logger.critical("worker \(worker.index): \(error)")
                    worker.stopAccepting()
                }
                running.workerEnded()
            })
        }

        let signalHandler = SignalHandler(fd: signalFD) { [logger, unowned control] signal in
            switch signal {
            case SIGTERM, SIGINT:
                logger.notice("signal \(signal): shutting down gracefully")
                notifier.notify("STOPPING=1")
                for worker in workers { worker.loop.post { worker.beginShutdown() } }
            case SIGUSR1:
                // logrotate's convention: the files are reopened by path, on the writer thread.
                if let accessLogWriter { accessLogWriter.reopen() } else { logger.info("signal SIGUSR1: no access log to reopen") }
            case SIGHUP:
                notifier.reloading()
                for host in self.pluginHosts { host.reload() }
                if self.reread != nil {
                    self.reloadConfiguration(workers: workers, control: control, kernelTLS: tls?.kernelTLS ?? false)
                } else if let settings = self.tlsSettings {
                    self.reloadTLS(settings, kernelTLS: tls?.kernelTLS ?? false, workers: workers)
                }
                notifier.notify("READY=1")
            default: break
            }
        }
        try control.register(signalFD, signalHandler, Epoll.Interest.readable)
        let drops = DroppedLinesReporter()
        control.onTick { [logger] in drops.tick(now: Sys.monotonicMillis(), logger: logger) }
        // The workers' listeners are registered: connections are accepted from here on.
        notifier.notify("READY=1")
        try control.run()
        for thread in threads { WorkerThread.join(thread) }
        metrics?.stop()
        // The workers handed over their last lines as they ended: written before exit.
        accessLogWriter?.finish(graceMillis: 2000)
        drops.tick(now: Sys.monotonicMillis(), logger: logger, force: true)
        for socket in listeners where socket.shared { Sys.close(socket.fd) }
        for host in pluginHosts { host.unloadAllAtExit() }
        // The control loop's signal handler refers to this server, which holds the plugin hosts
        // and through them the loop: let go, so the loop and the handler are freed.
        pluginHosts.removeAll()
        self.accessLogWriter = nil
        logger.info("stopped")
    }

    // MARK: configuration file

    private func logSites(_ table: SiteTable) {
        for site in table.sites {
            let folder = site.pluginTable.map { sites.pluginFolders[$0].path } ?? "none"
            logger.info("site \(site.description)\(site === table.fallback && table.sites.count > 1 ? " (default)" : ""): root \(site.root.realPath), plugins \(folder), cgi \(site.cgi?.directory ?? "off")")
        }
    }

    /// Top-level keys a reload applies: to new connections (the sites, certificates, PROXY
    /// header, trusted proxies) and new requests (limits, timeouts, Host checks). Any other key
    /// that changed is logged as taking effect at the next restart: what was bound or started
    /// with the server (listeners, workers, the log writer and format, metrics, the connection
    /// and CGI budgets, HSTS, the callback watch, the plugin settings of loaded folders).
    static let reloadableKeys: Set<String> = [
        "root", "plugins", "autoindex", "cgi-dir", "cgi-script", "cgi-env", "no-cgi", "cgi-timeout",
        "tls-cert", "tls-key", "tls-cert-for", "trusted-proxy", "proxy-protocol", "strict-host", "redirect-https",
        "max-request-line", "max-header-bytes", "max-headers", "max-body", "max-requests-per-connection",
        "header-timeout", "keepalive-timeout", "send-timeout", "body-timeout", "shutdown-grace", "dynamic-io",
    ]

    /// SIGHUP with `--config`: the file is read again, and applied only if all of it holds —
    /// the sites (document roots, their log files), the certificates, the plugins of folders
    /// named for the first time. Then new connections get the new sites and certificates and
    /// every worker the new settings. A broken file, a certificate that does not load or (with
    /// strict-plugins) a plugin that does not load is logged and changes nothing.
    private func reloadConfiguration(workers: [Worker], control: EventLoop, kernelTLS: Bool) {
        guard let reread else { return }
        let next: Config
        let table: SiteTable
        var contexts: TLSContexts?
        var newHosts: [PluginHost] = []
        let saved = sites.state
        let logFiles = accessLogWriter?.fileCount ?? 0
        do {
            next = try reread()
            if (next.tls == nil) != (tlsSettings == nil) { throw ConfigError("turning HTTPS on or off needs a restart") }
            if accessLogWriter == nil && next.servers.contains(where: { $0.accessLog != nil }) {
                throw ConfigError("an access-log needs a restart when the server started with none")
            }
            table = try sites.build(next, logs: accessLogWriter)
            if let settings = SiteBuilder.tlsSettings(next) {
                do {
                    contexts = try TLSContexts(settings, kernelTLS: kernelTLS)
                } catch {
                    throw ConfigError("TLS: \(error)")
                }
            }
            // Folders named for the first time, loaded last: nothing else can fail after them.
            for index in pluginHosts.count..<sites.pluginFolders.count {
                do {
                    newHosts.append(try loadPlugins(index, config: next, control: control))
                } catch {
                    for host in newHosts { host.attach([]); host.unloadAllAtExit() }
                    throw ConfigError("plugins \(sites.pluginFolders[index].path): \(error)")
                }
            }
        } catch {
            sites.state = saved
            // Log files the new sites named were opened: nothing will write to them.
            accessLogWriter?.dropFiles(from: logFiles)
            logger.error("SIGHUP: configuration not reloaded, the previous one stays: \(error)")
            return
        }
        // Against the file the server started with: such a key keeps its first value until a
        // restart, so it is named at every reload that still differs.
        let changed = Set(next.fileKeys.keys).union(config.fileKeys.keys).filter { next.fileKeys[$0] != config.fileKeys[$0] }
        for key in changed.sorted() where !Server.reloadableKeys.contains(key) {
            logger.warning("SIGHUP: '\(key)' changed; it takes effect at the next restart")
        }
        // What the workers get: the reloadable keys of the new file on the settings they
        // started with (a key logged above as needing a restart keeps its old value).
        current = current.reloaded(from: next)
        let settings = current
        tlsSettings = SiteBuilder.tlsSettings(next)
        for host in newHosts {
            pluginHosts.append(host)
            host.attach(workers)
        }
        // Posted in this order to every loop: the plugin tables before the sites that name them.
        let added = newHosts, certificates = contexts
        for worker in workers {
            worker.loop.post {
                for host in added { worker.addPluginHost(host) }
                worker.installSettings(settings)
                worker.installSites(table)
                if let certificates { worker.installTLS(certificates) }
            }
        }
        logSites(table)
        logger.notice("SIGHUP: configuration reloaded from \(next.configFile ?? "?")\(contexts != nil ? " (certificates too)" : "")")
    }

    /// A socket systemd passes for the HTTPS listener is named "https" (`FileDescriptorName=`).
    private static func isTLSSocketName(_ name: String) -> Bool { name == "https" || name == "tls" }

    // MARK: TLS

    /// The certificates, checked at start (a bad file stops the server with the reason), and
    /// which path file bodies take over TLS.
    private func loadTLS(_ settings: TLSSettings) throws -> TLSContexts {
        let (kernelTLS, ulps) = TLSContexts.kernelOffersTLS()
        let contexts: TLSContexts
        do {
            contexts = try TLSContexts(settings, kernelTLS: kernelTLS)
        } catch {
            throw ConfigError("TLS: \(error)")
        }
        let names = settings.named.map(\.host)
        logger.info("TLS certificate \(settings.chain)\(names.isEmpty ? "" : "; by SNI: \(names.joined(separator: ", "))")")
        if kernelTLS {
            logger.info("TLS on port \(settings.port): kTLS in use where OpenSSL enables it per connection (kernel offers the tls ULP); files over TLS go SSL_sendfile")
        } else {
            logger.info("TLS on port \(settings.port): kTLS unavailable (kernel tcp_available_ulp: \(ulps.isEmpty ? "none" : ulps)); files over TLS go pread + SSL_write")
        }
        return contexts
    }

    /// SIGHUP, on the control thread: certificates read again; the workers switch only when all
    /// of them loaded (new connections get them, open ones keep theirs).
    private func reloadTLS(_ settings: TLSSettings, kernelTLS: Bool, workers: [Worker]) {
        let contexts: TLSContexts
        do {
            contexts = try TLSContexts(settings, kernelTLS: kernelTLS)
        } catch {
            logger.error("TLS reload failed: \(error); the previous certificates stay in use")
            return
        }
        for worker in workers { worker.loop.post { worker.installTLS(contexts) } }
        logger.notice("TLS certificates reloaded")
    }

    // MARK: listening sockets

    /// One listening socket per worker with SO_REUSEPORT; a single shared one where the kernel
    /// refuses it. With port 0 the first socket's port is used for the others.
    private func bindListeners(count: Int, port: UInt16, secure: Bool) throws -> [ListeningSocket] {
        var sockets: [ListeningSocket] = []
        var port = port
        do {
            for _ in 0..<count {
                guard let fd = try bindListener(port: port, reusePort: count > 1) else {
                    // No SO_REUSEPORT: one listener, watched by every worker with EPOLLEXCLUSIVE.
                    for s in sockets { Sys.close(s.fd) }
                    sockets = [ListeningSocket(fd: try bindListener(port: port, reusePort: false)!, shared: true, secure: secure)]
                    return sockets
                }
                sockets.append(ListeningSocket(fd: fd, shared: false, secure: secure))
                if port == 0 { port = Sys.localPort(fd) }
            }
        } catch {
            for s in sockets { Sys.close(s.fd) }
            throw error
        }
        return sockets
    }

    /// nil when `reusePort` was asked for and the kernel does not offer it.
    private func bindListener(port: UInt16, reusePort: Bool) throws -> Int32? {
        var v4 = sockaddr_in()
        var v6 = sockaddr_in6()
        let family: Int32
        if inet_pton(AF_INET, config.address, &v4.sin_addr) == 1 {
            family = AF_INET
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = port.bigEndian
        } else if inet_pton(AF_INET6, config.address, &v6.sin6_addr) == 1 {
            family = AF_INET6
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = port.bigEndian
        } else {
            throw ConfigError("not an IPv4 or IPv6 address: \(config.address)")
        }
        let fd = try Sys.socket(family: family)
        do {
            try Sys.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, 1)
            if reusePort {
                do {
                    try Sys.setsockopt(fd, SOL_SOCKET, aws_so_reuseport(), 1)
                } catch where error.errno == ENOPROTOOPT || error.errno == EINVAL {
                    Sys.close(fd)
                    return nil
                }
            }
            // Off by default: with it, a client that connects and waits (nc, a pre-connecting
            // browser) is not accepted for about a second (`--defer-accept`, like nginx's
            // `listen ... deferred`).
            if config.deferAccept { try Sys.setsockopt(fd, Int32(IPPROTO_TCP), aws_tcp_defer_accept(), 1) }
            // Accepted sockets inherit TCP_NODELAY from the listener on Linux: one setsockopt
            // per server instead of one per connection (head + sendfile must not wait on Nagle).
            try Sys.setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            _ = try Sys.check("bind") {
                family == AF_INET
                    ? withUnsafePointer(to: &v4) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
                    : withUnsafePointer(to: &v6) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
            }
            try Sys.listen(fd, backlog: 4096)
        } catch {
            Sys.close(fd)
            throw error
        }
        return fd
    }

    /// Connections, cached files and plugin descriptors all need descriptors: take the hard limit,
    /// and say so when even that is below what --max-connections implies.
    private func raiseDescriptorLimit() {
        var limit = rlimit()
        guard getrlimit(RLIMIT_NOFILE_CONSTANT, &limit) == 0 else { return }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(RLIMIT_NOFILE_CONSTANT, &limit)
        }
        let needed = rlim_t(config.maxConnections) + rlim_t(config.workers) * (1024 + 64)
        if limit.rlim_cur < needed {
            logger.warning("descriptor limit \(limit.rlim_cur) is below --max-connections \(config.maxConnections) plus the file cache; accepts may fail with EMFILE (raise ulimit -n)")
        }
    }

    private func dropPrivileges(to name: String) throws {
        guard let pw = getpwnam(name) else { throw ConfigError("no such user: \(name)") }
        let uid = pw.pointee.pw_uid, gid = pw.pointee.pw_gid
        _ = try Sys.check("setgroups") { setgroups(0, nil) }
        _ = try Sys.check("setgid") { setgid(gid) }
        _ = try Sys.check("setuid") { setuid(uid) }
        logger.info("running as \(name) (uid \(uid))")
    }
}

struct ConfigError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Counts worker threads still running; the last one to end stops the control loop.
private final class RunningWorkers: @unchecked Sendable {
    private let remaining: Atomic<Int>
    private let control: EventLoop
    init(count: Int, control: EventLoop) {
        remaining = Atomic(count)
        self.control = control
    }
    func workerEnded() {
        guard remaining.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 else { return }
        let control = self.control
        control.post { control.stop() }
    }
}

private final class SignalHandler: EventHandler {
    let fd: Int32
    let onSignal: (Int32) -> Void
    init(fd: Int32, onSignal: @escaping (Int32) -> Void) { self.fd = fd; self.onSignal = onSignal }
    func handleEvents(_ events: Epoll.Interest) {
        while true {
            let s = aws_signalfd_read(fd)
            if s <= 0 { return }
            onSignal(s)
        }
    }
}

/// RLIMIT_NOFILE is an enum case in Glibc's module on some toolchains and an Int32 on others.
private let RLIMIT_NOFILE_CONSTANT = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
