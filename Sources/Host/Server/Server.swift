import CLinux
import Glibc
import Logging

/// Start-up and shutdown: binds the listening socket, drops privileges, starts the worker and
/// turns signals into loop events.
final class Server {
    let config: Config
    let logger: Logger

    init(config: Config, logger: Logger) {
        self.config = config
        self.logger = logger
    }

    func run() throws {
        Sys.ignoreSIGPIPE()
        // Block the signals before any other thread exists, so they arrive only via signalfd.
        let signals: [Int32] = [SIGTERM, SIGINT, SIGHUP]
        let signalFD = signals.withUnsafeBufferPointer { aws_signalfd_for($0.baseAddress, Int32($0.count)) }
        guard signalFD >= 0 else { throw SyscallError(call: "signalfd", errno: errno) }

        raiseDescriptorLimit()
        let root = try DocumentRoot(path: config.root)
        let listenFD = try bindListener()
        if let user = config.user { try dropPrivileges(to: user) }

        logger.info("aws \(AWSVersion.string) listening on \(config.address):\(config.port)")
        logger.info("document root: \(root.realPath)")
        logger.info("plugins: \(config.pluginsDirectory ?? "none")")

        var loader: PluginLoader?
        var routes = RouteTable(plugins: [])
        if let dir = config.pluginsDirectory {
            let l = PluginLoader(directory: dir, config: config.pluginConfig, strict: config.strictPlugins, root: root.realPath, logger: logger)
            routes = try l.loadAll()
            loader = l
            logger.info("\(routes.plugins.count) plugin(s) loaded")
        }

        let worker = try Worker(index: 0, config: config, root: root, listenFD: listenFD, routes: routes, logger: logger)
        HostAPI.workers = [worker]
        let signalHandler = SignalHandler(fd: signalFD) { [logger] signal in
            switch signal {
            case SIGTERM, SIGINT:
                logger.notice("signal \(signal): shutting down gracefully")
                worker.beginShutdown()
            case SIGHUP:
                guard let loader else {
                    logger.notice("SIGHUP: no plugins folder to reload")
                    return
                }
                logger.notice("SIGHUP: reloading plugins from \(loader.directory)")
                worker.routes = loader.reload(current: worker.routes, loop: worker.loop)
            default: break
            }
        }
        try worker.loop.register(signalFD, signalHandler, Epoll.Interest.readable)
        try worker.run()
        for plugin in worker.routes.plugins where plugin.inFlight == 0 { plugin.unload(logger: logger) }
        loader?.removeCopies()
        logger.info("stopped")
    }

    private func bindListener() throws -> Int32 {
        var v4 = sockaddr_in()
        var v6 = sockaddr_in6()
        let family: Int32
        if inet_pton(AF_INET, config.address, &v4.sin_addr) == 1 {
            family = AF_INET
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = config.port.bigEndian
        } else if inet_pton(AF_INET6, config.address, &v6.sin6_addr) == 1 {
            family = AF_INET6
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = config.port.bigEndian
        } else {
            throw ConfigError("not an IPv4 or IPv6 address: \(config.address)")
        }
        let fd = try Sys.socket(family: family)
        do {
            try Sys.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, 1)
            try Sys.setsockopt(fd, Int32(IPPROTO_TCP), aws_tcp_defer_accept(), 1)
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
        let needed = rlim_t(config.maxConnections) + 1024 + 64
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
