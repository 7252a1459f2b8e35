import AWSParsing
import Logging

/// Everything a worker needs to know, fixed at start-up and shared read-only between workers.
struct Config: Sendable {
    var root = "."
    var address = "0.0.0.0"
    var port: UInt16 = 8888
    var pluginsDirectory: String?
    /// `--config FILE`, re-read on SIGHUP.
    var configFile: String?
    /// The file's `[[server]]` blocks: virtual hosts (none: one site from the flags).
    var servers: [ConfigFile.ServerBlock] = []
    /// The file's top-level keys the command line does not override, with their arguments: a
    /// reload compares them to say which changes need a restart.
    var fileKeys: [String: [String]] = [:]
    /// The line of each of those keys, for messages.
    var keyLines: [String: Int] = [:]
    /// --plugin-config NAME.KEY=VALUE, by plugin name.
    var pluginConfig: [String: [String: String]] = [:]
    var strictPlugins = false
    /// A plugin callback running longer than this is logged and counted (0: not watched).
    var pluginSlowMillis = 100
    var logLevel: Logger.Level = .info
    var accessLogPath: String?
    /// `--log-format`: combined (Apache/nginx), common or json.
    var accessLogFormat = AccessLogFormat.combined
    var user: String?
    var strictHost = false
    var autoindex = false
    /// How /dynamic/ files are read (`--dynamic-io`).
    var dynamicIO = DynamicIO.auto
    /// Worker threads, each with its own loop and listener (`--workers`, default: usable CPUs).
    var workers = 1
    /// TCP_DEFER_ACCEPT: a connection reaches accept only once it has sent data (or after ~1 s).
    var deferAccept = false
    /// The `/metrics` listener (`--metrics ADDR:PORT`); nil: none.
    var metrics: MetricsEndpoint?

    // Behind a load balancer
    /// Every connection starts with a PROXY protocol header (v1 or v2) naming the client.
    var proxyProtocol = false
    /// Peers whose PROXY header (when any list is given) and X-Forwarded-For / Forwarded are
    /// believed (`--trusted-proxy`).
    var trustedProxies: [CIDR] = []
    func isTrustedProxy(_ address: IPAddress) -> Bool { trustedProxies.contains { $0.contains(address) } }

    /// CGI under /cgi/ (nil: `--no-cgi`); a `[[server]]` may have its own folder or none.
    var cgi: CGISettings? = CGISettings()
    /// `--no-compress`, `--compress-level-*`, `--compress-cache`: on-the-fly compression.
    var compression = CompressionSettings()
    /// `--cgi-timeout` and `--cgi-max`, for every site's programs.
    var cgiTimeout: Int64 = 30_000
    var cgiMax = 64

    // HTTPS
    /// Certificates and the TLS port; nil: no TLS listener.
    var tls: TLSSettings?
    /// The plain HTTP listener on `port` (off with `--no-http`).
    var plainHTTP = true
    /// `Strict-Transport-Security: max-age=N` on HTTPS responses.
    var hstsSeconds: Int?

    /// Response headers: nosniff, `--header`, `--cache-control`, `--mime-type`.
    var headerSettings = HeaderSettings()
    /// The plain port answers 308 to the same URL on the TLS port.
    var redirectHTTPS = false

    // Limits (each answered with its status and a log line).
    var maxRequestLine = 8 * 1024          // 414: the whole request line, CRLF not counted
    var maxHeaderBytes = 32 * 1024         // 431
    var maxHeaderCount = 100               // 431
    var maxBodyBytes = 16 * 1024 * 1024    // 413
    var maxConnections = 10_000            // 503, counted across all workers
    var maxRequestsPerConnection = 100_000
    /// The head limits as the decoder takes them (header bytes also bound a chunked body's
    /// extensions and trailers).
    var headLimits: HTTP1Decoder.Limits {
        .init(requestLine: maxRequestLine, headerBytes: maxHeaderBytes, headerCount: maxHeaderCount)
    }

    // Timeouts, in milliseconds.
    var headerTimeout: Int64 = 10_000
    var keepAliveTimeout: Int64 = 5_000
    var sendTimeout: Int64 = 30_000
    var bodyTimeout: Int64 = 30_000
    var shutdownGrace: Int64 = 10_000

    /// Request lines are info-level lines: on with the default level, and always when a file is
    /// named for them (`--access-log FILE --log-level warning` keeps the file, quiets stderr).
    /// This configuration with what a reload may change taken from `next` (the keys
    /// `Server.reloadableKeys` names); everything else stays as the server started.
    func reloaded(from next: Config) -> Config {
        var c = self
        c.root = next.root
        c.pluginsDirectory = next.pluginsDirectory
        c.configFile = next.configFile
        c.servers = next.servers
        c.fileKeys = next.fileKeys
        c.keyLines = next.keyLines
        c.autoindex = next.autoindex
        c.cgi = next.cgi.map { cgi in
            var settings = cgi
            settings.maxRunning = cgiMax  // the budget of running programs was made at start
            return settings
        }
        c.cgiTimeout = next.cgiTimeout
        if var tls = next.tls, let started = self.tls {
            tls.port = started.port
            c.tls = tls
        }
        c.trustedProxies = next.trustedProxies
        c.proxyProtocol = next.proxyProtocol
        c.strictHost = next.strictHost
        c.redirectHTTPS = next.redirectHTTPS
        c.dynamicIO = next.dynamicIO
        c.maxRequestLine = next.maxRequestLine
        c.maxHeaderBytes = next.maxHeaderBytes
        c.maxHeaderCount = next.maxHeaderCount
        c.maxBodyBytes = next.maxBodyBytes
        c.maxRequestsPerConnection = next.maxRequestsPerConnection
        c.headerTimeout = next.headerTimeout
        c.keepAliveTimeout = next.keepAliveTimeout
        c.sendTimeout = next.sendTimeout
        c.bodyTimeout = next.bodyTimeout
        c.shutdownGrace = next.shutdownGrace
        return c
    }

    var mainAccessLogEnabled: Bool { accessLogPath != nil || logLevel <= .info }
    /// A `[[server]]` block's own `access-log` is written whatever the level.
    var accessLogEnabled: Bool { mainAccessLogEnabled || servers.contains { $0.accessLog != nil } }
}

/// `--dynamic-io`: every /dynamic/ byte is read with libaio either way.
enum DynamicIO: String, Sendable {
    /// From the page cache (buffered, `RWF_NOWAIT`) where it holds the data, else O_DIRECT.
    case auto
    /// Always O_DIRECT: every read goes to the device.
    case direct
}

/// `--cgi-dir`, `--cgi-script`, `--cgi-env`, `--cgi-timeout`, `--cgi-max`.
struct CGISettings: Sendable {
    /// The folder of programs, as a real path (resolved at start; `<root>/cgi` by default).
    var directory = ""
    /// One program for every /cgi/ request (absolute real path).
    var script: String?
    var environment: [(String, String)] = []
    /// No progress (input or output) for this long ends the program: 504 if nothing was sent.
    var timeout: Int64 = 30_000
    /// Programs running at once in the whole server.
    var maxRunning = 64
    /// The PATH programs get: the server's own.
    var path = "/usr/local/bin:/usr/bin:/bin"
}
