import Logging

/// Everything a worker needs to know, fixed at start-up and shared read-only between workers.
struct Config: Sendable {
    var root = "."
    var address = "0.0.0.0"
    var port: UInt16 = 8888
    var pluginsDirectory: String?
    /// --plugin-config NAME.KEY=VALUE, by plugin name.
    var pluginConfig: [String: [String: String]] = [:]
    var strictPlugins = false
    var logLevel: Logger.Level = .info
    var accessLogPath: String?
    var user: String?
    var strictHost = false
    var autoindex = false

    // Limits (each answered with its status and a log line).
    var maxRequestLine = 8 * 1024          // 414
    var maxHeaderBytes = 32 * 1024         // 431
    var maxHeaderCount = 100               // 431
    var maxBodyBytes = 16 * 1024 * 1024    // 413
    var maxConnections = 10_000            // 503
    var maxRequestsPerConnection = 100_000

    // Timeouts, in milliseconds.
    var headerTimeout: Int64 = 10_000
    var keepAliveTimeout: Int64 = 5_000
    var sendTimeout: Int64 = 30_000
    var bodyTimeout: Int64 = 30_000
    var shutdownGrace: Int64 = 10_000

    var accessLogEnabled: Bool { logLevel <= .info }
}
