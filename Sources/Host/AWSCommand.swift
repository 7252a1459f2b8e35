import ArgumentParser
import CLinux
import Logging

extension Logger.Level: @retroactive ExpressibleByArgument {}

@main
struct AWSCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aws",
        abstract: "An asynchronous, plugin-extensible web server.",
        discussion: """
            Serves the document root (default: the current directory): files under static/ with \
            sendfile(2), files under dynamic/ with libaio, anything else like static/.
            """,
        version: AWSVersion.string
    )

    @Option(help: "Document root.") var root: String = "."
    @Option(help: "TCP port to listen on.") var port: UInt16 = 8888
    @Option(help: "Address to listen on (IPv4 or IPv6).") var address: String = "0.0.0.0"
    @Option(help: "Folder of plugin shared libraries to load.") var plugins: String?
    @Option(name: .customLong("plugin-config"), help: ArgumentHelp("A plugin setting, NAME.KEY=VALUE (repeatable).", valueName: "NAME.KEY=VALUE"))
    var pluginConfig: [String] = []
    @Flag(help: "Refuse to start if any plugin fails to load.") var strictPlugins = false
    @Option(help: "trace, debug, info, notice, warning, error or critical. Request lines are logged at info.")
    var logLevel: Logger.Level = .info
    @Option(help: "Write request lines to this file instead of standard error.") var accessLog: String?
    @Option(help: "After binding, switch to this user (when started as root).") var user: String?
    @Flag(help: "Answer HTTP/1.1 requests without a Host header with 400.") var strictHost = false
    @Flag(help: "List directories that have no index.html.") var autoindex = false
    @Option(help: ArgumentHelp("Worker threads, each with its own event loop and listening socket; auto: one per usable CPU.", valueName: "N|auto"))
    var workers: WorkerCount = .auto
    @Flag(help: "Hand a connection to the server only once it has sent data (TCP_DEFER_ACCEPT).") var deferAccept = false

    @Option(help: "Longest request target, in bytes (414 past it).") var maxRequestLine = 8 * 1024
    @Option(help: "Most header bytes in a request (431 past it).") var maxHeaderBytes = 32 * 1024
    @Option(help: "Most header fields in a request (431 past it).") var maxHeaders = 100
    @Option(help: "Largest request body, in bytes (413 past it).") var maxBody = 16 * 1024 * 1024
    @Option(help: "Most open connections (503 past it).") var maxConnections = 10_000
    @Option(help: "Most requests on one connection before it is closed.") var maxRequestsPerConnection = 100_000

    @Option(help: "Seconds to receive a request head (408 then close).") var headerTimeout = 10.0
    @Option(help: "Seconds an idle keep-alive connection stays open.") var keepaliveTimeout = 5.0
    @Option(help: "Seconds a response may make no progress before the connection is closed.") var sendTimeout = 30.0
    @Option(help: "Seconds between two parts of a request body before the connection is closed.") var bodyTimeout = 30.0
    @Option(help: "Seconds in-flight responses get to finish after SIGTERM/SIGINT.") var shutdownGrace = 10.0

    func validate() throws {
        for (name, v) in [("header-timeout", headerTimeout), ("keepalive-timeout", keepaliveTimeout), ("send-timeout", sendTimeout),
                          ("body-timeout", bodyTimeout), ("shutdown-grace", shutdownGrace)] where !(v > 0 && v <= 86_400) {
            throw ValidationError("--\(name) must be between 0 and 86400 seconds")
        }
        for (name, v) in [("max-request-line", maxRequestLine), ("max-header-bytes", maxHeaderBytes), ("max-headers", maxHeaders),
                          ("max-connections", maxConnections), ("max-requests-per-connection", maxRequestsPerConnection)] where v < 1 {
            throw ValidationError("--\(name) must be at least 1")
        }
        if maxBody < 0 { throw ValidationError("--max-body must not be negative") }
        for item in pluginConfig {
            guard let eq = item.firstIndex(of: "="), let dot = item[..<eq].firstIndex(of: "."),
                  dot != item.startIndex, item.index(after: dot) < eq else {
                throw ValidationError("--plugin-config wants NAME.KEY=VALUE, got \(item)")
            }
        }
    }

    func run() throws {
        var config = Config()
        config.root = root
        config.port = port
        config.address = address
        config.pluginsDirectory = plugins
        config.strictPlugins = strictPlugins
        for item in pluginConfig {
            let eq = item.firstIndex(of: "=")!, dot = item[..<eq].firstIndex(of: ".")!
            config.pluginConfig[String(item[..<dot]), default: [:]][String(item[item.index(after: dot)..<eq])] = String(item[item.index(after: eq)...])
        }
        config.logLevel = logLevel
        config.accessLogPath = accessLog
        config.user = user
        config.strictHost = strictHost
        config.autoindex = autoindex
        config.workers = workers.resolved
        config.deferAccept = deferAccept
        config.maxRequestLine = maxRequestLine
        config.maxHeaderBytes = maxHeaderBytes
        config.maxHeaderCount = maxHeaders
        config.maxBodyBytes = maxBody
        config.maxConnections = maxConnections
        config.maxRequestsPerConnection = maxRequestsPerConnection
        config.headerTimeout = Int64(headerTimeout * 1000)
        config.keepAliveTimeout = Int64(keepaliveTimeout * 1000)
        config.sendTimeout = Int64(sendTimeout * 1000)
        config.bodyTimeout = Int64(bodyTimeout * 1000)
        config.shutdownGrace = Int64(shutdownGrace * 1000)

        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "aws")
        logger.logLevel = logLevel
        do {
            try Server(config: config, logger: logger).run()
        } catch {
            logger.critical("\(error)")
            throw ExitCode.failure
        }
    }
}

/// `--workers N|auto`.
enum WorkerCount: ExpressibleByArgument {
    case auto
    case fixed(Int)

    init?(argument: String) {
        if argument == "auto" { self = .auto; return }
        // Plugin handles carry the worker index in 8 bits.
        guard let n = Int(argument), (1...WorkerCount.maximum).contains(n) else { return nil }
        self = .fixed(n)
    }

    var resolved: Int {
        switch self {
        case .auto: min(Int(aws_cpu_count()), WorkerCount.maximum)
        case .fixed(let n): n
        }
    }

    var defaultValueDescription: String { "auto" }

    static let maximum = 256
}
