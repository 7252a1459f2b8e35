import AWSParsing
import ArgumentParser
import Glibc
import CLinux
import Logging

extension Logger.Level: @retroactive ExpressibleByArgument {}
extension DynamicIO: ExpressibleByArgument {}
extension AccessLogFormat: ExpressibleByArgument {}

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

    @Option(help: ArgumentHelp("A TOML configuration file: every flag by its long name as a key, and [[server]] blocks for virtual hosts (README: Running in production). Flags given here override it; SIGHUP re-reads it.", valueName: "FILE"))
    var config: String?
    @Flag(help: "Check the configuration (the file, paths, certificates, plugins) and exit: 0 when it is good, else 1 with the reason.")
    var check = false
    /// Set on the parse that merges the file's keys: the flags alone are checked only then (a
    /// flag may need a key the file gives, e.g. --tls-port and tls-cert).
    @Flag(help: .hidden) var withFileKeys = false

    @Option(help: "Document root.") var root: String = "."
    @Option(help: "TCP port to listen on.") var port: UInt16 = 8888
    @Option(help: "Address to listen on (IPv4 or IPv6).") var address: String = "0.0.0.0"
    @Option(help: "Folder of plugin shared libraries to load.") var plugins: String?
    @Option(name: .customLong("plugin-config"), help: ArgumentHelp("A plugin setting, NAME.KEY=VALUE (repeatable).", valueName: "NAME.KEY=VALUE"))
    var pluginConfig: [String] = []
    @Flag(help: "Refuse to start if any plugin fails to load.") var strictPlugins = false
    @Option(name: .customLong("plugin-slow-ms"), help: ArgumentHelp("Log and count a plugin callback that runs longer than this (it stalls its whole worker); 0: off.", valueName: "N"))
    var pluginSlowMs = 100
    @Option(help: "trace, debug, info, notice, warning, error or critical. Request lines are logged at info.")
    var logLevel: Logger.Level = .info
    @Option(help: "Write request lines to this file instead of standard error (reopened on SIGUSR1).") var accessLog: String?
    @Option(help: ArgumentHelp("Access-log line format: combined (Apache/nginx combined), common (Apache common) or json (one object per line).", valueName: "combined|common|json"))
    var logFormat: AccessLogFormat = .combined
    @Option(help: "After binding, switch to this user (when started as root).") var user: String?
    @Flag(help: "Answer HTTP/1.1 requests without a Host header with 400.") var strictHost = false
    @Flag(help: "List directories that have no index.html.") var autoindex = false
    @Option(help: ArgumentHelp("How /dynamic/ files are read with libaio: auto (from the page cache when it holds them, RWF_NOWAIT, else O_DIRECT from the device) or direct (always O_DIRECT).", valueName: "auto|direct"))
    var dynamicIo: DynamicIO = .auto
    @Option(help: ArgumentHelp("Worker threads, each with its own event loop and listening socket; auto: one per usable CPU.", valueName: "N|auto"))
    var workers: WorkerCount = .auto
    @Flag(help: "Hand a connection to the server only once it has sent data (TCP_DEFER_ACCEPT).") var deferAccept = false
    @Option(help: ArgumentHelp("Serve Prometheus metrics at http://ADDR:PORT/metrics, on a listener of their own (off by default); IPv6 as [ADDR]:PORT.", valueName: "ADDR:PORT"))
    var metrics: String?

    @Flag(help: "Every connection starts with a PROXY protocol header (v1 or v2, as HAProxy's send-proxy / send-proxy-v2 sends) naming the client; without it, or malformed, the connection is closed. Only peers in --trusted-proxy may send it; with no --trusted-proxy, every peer may.")
    var proxyProtocol = false
    @Option(name: .customLong("trusted-proxy"), help: ArgumentHelp("A load balancer's address or range (CIDR, IPv4 or IPv6; repeatable): from such a peer, the client is taken from X-Forwarded-For (or Forwarded: for=), the rightmost address that is not itself trusted.", valueName: "CIDR"))
    var trustedProxy: [String] = []

    @Option(help: "HTTPS port (default 8443 when --tls-cert is given; the plain --port serves HTTP beside it).")
    var tlsPort: UInt16?
    @Option(help: ArgumentHelp("Default TLS certificate: PEM, the full chain (leaf first).", valueName: "FILE")) var tlsCert: String?
    @Option(help: ArgumentHelp("Private key of --tls-cert (PEM, unencrypted).", valueName: "FILE")) var tlsKey: String?
    @Option(name: .customLong("tls-cert-for"), help: ArgumentHelp("A certificate chosen by SNI for HOST (exact, or *.example.test for one label); repeatable.", valueName: "HOST=CERT,KEY"))
    var tlsCertFor: [String] = []
    @Flag(help: "Serve HTTPS only: no plain HTTP listener.") var noHttp = false
    @Option(help: ArgumentHelp("Send Strict-Transport-Security: max-age=SECONDS on HTTPS responses.", valueName: "SECONDS")) var hsts: Int?
    @Flag(help: "Answer every plain HTTP request with 308 to the same URL on the HTTPS port.") var redirectHttps = false

    @Option(name: .customLong("header"), help: ArgumentHelp("A header for every response, errors included (repeatable): a Content-Security-Policy, X-Frame-Options...", valueName: "NAME=VALUE"))
    var header: [String] = []
    @Flag(help: "No X-Content-Type-Options: nosniff (sent on every response by default).") var noNosniff = false
    @Option(name: .customLong("cache-control"), help: ArgumentHelp("Cache-Control for files whose path matches PATTERN (repeatable; the first match wins): /prefix/, a glob on the path (/static/*.css) or on the file name (*.woff2). With max-age, Expires too.", valueName: "PATTERN=VALUE"))
    var cacheControl: [String] = []
    @Flag(help: "Do not add ', immutable' to the Cache-Control (with max-age) of fingerprinted file names like app.3f2a9c1b.js.") var noImmutable = false
    @Option(name: .customLong("mime-type"), help: ArgumentHelp("The Content-Type for files ending in .EXT, sent as given (repeatable; adds to or overrides the built-in table).", valueName: "EXT=TYPE"))
    var mimeType: [String] = []

    @Option(help: ArgumentHelp("Folder of CGI programs run for /cgi/NAME (default: ROOT/cgi).", valueName: "DIR")) var cgiDir: String?
    @Option(help: ArgumentHelp("Run this one program for every /cgi/... request (the rest of the path becomes PATH_INFO).", valueName: "PATH"))
    var cgiScript: String?
    @Option(name: .customLong("cgi-env"), help: ArgumentHelp("A variable for every CGI program's environment (repeatable).", valueName: "NAME=VALUE"))
    var cgiEnv: [String] = []
    @Option(help: "Seconds a CGI program may go without input or output before it is ended (504 if nothing was sent).") var cgiTimeout = 30.0
    @Option(help: "CGI programs running at once in the whole server (503 past it).") var cgiMax = 64
    @Flag(help: "No CGI: /cgi/ is served like any other path.") var noCgi = false

    @Flag(help: "Do not compress text files on the fly; precompressed FILE.br/.zst/.gz variants are still sent.") var noCompress = false
    @Option(help: ArgumentHelp("gzip level for on-the-fly compression, 1-9.", valueName: "N")) var compressLevelGzip: Int32 = 6
    @Option(help: ArgumentHelp("Brotli level for on-the-fly compression, 0-11.", valueName: "N")) var compressLevelBr: Int32 = 5
    @Option(help: ArgumentHelp("zstd level for on-the-fly compression, 1-19.", valueName: "N")) var compressLevelZstd: Int32 = 6
    @Option(help: ArgumentHelp("Memory for compressed bodies, per worker, in MiB (a file larger than half of it is not compressed on the fly).", valueName: "MIB")) var compressCache = 32

    @Option(help: "Longest request line (method, target and version, without CRLF), in bytes (414 past it).") var maxRequestLine = 8 * 1024
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
        if config != nil && !withFileKeys { return }
        for (name, v) in [("header-timeout", headerTimeout), ("keepalive-timeout", keepaliveTimeout), ("send-timeout", sendTimeout),
                          ("body-timeout", bodyTimeout), ("shutdown-grace", shutdownGrace)] where !(v > 0 && v <= 86_400) {
            throw ValidationError("--\(name) must be between 0 and 86400 seconds")
        }
        for (name, v) in [("max-request-line", maxRequestLine), ("max-header-bytes", maxHeaderBytes), ("max-headers", maxHeaders),
                          ("max-connections", maxConnections), ("max-requests-per-connection", maxRequestsPerConnection)] where v < 1 {
            throw ValidationError("--\(name) must be at least 1")
        }
        if let metrics, MetricsEndpoint(metrics) == nil {
            throw ValidationError("--metrics wants ADDR:PORT (an IPv4 address, or an IPv6 one in brackets, and a port from 1 to 65535), got \(metrics)")
        }
        if !(1...9).contains(compressLevelGzip) { throw ValidationError("--compress-level-gzip must be between 1 and 9") }
        if !(0...11).contains(compressLevelBr) { throw ValidationError("--compress-level-br must be between 0 and 11") }
        if !(1...19).contains(compressLevelZstd) { throw ValidationError("--compress-level-zstd must be between 1 and 19") }
        if !(1...65_536).contains(compressCache) { throw ValidationError("--compress-cache must be between 1 and 65536 MiB") }
        if maxBody < 0 { throw ValidationError("--max-body must not be negative") }
        if !(0...86_400_000).contains(pluginSlowMs) { throw ValidationError("--plugin-slow-ms must be between 0 and 86400000") }
        if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
        if tlsCert == nil {
            for (flag, set) in [("--tls-port", tlsPort != nil), ("--tls-cert-for", !tlsCertFor.isEmpty), ("--no-http", noHttp),
                                ("--hsts", hsts != nil), ("--redirect-https", redirectHttps)] where set {
                throw ValidationError("\(flag) needs HTTPS: give --tls-cert and --tls-key")
            }
        }
        if noHttp && redirectHttps { throw ValidationError("--redirect-https needs the plain HTTP listener (drop --no-http)") }
        if let hsts, hsts < 0 { throw ValidationError("--hsts must not be negative") }
        if tlsPort == 0 { throw ValidationError("--tls-port must be a port number from 1 to 65535") }
        if let tlsPort, tlsPort == port && !noHttp { throw ValidationError("--tls-port and --port must differ") }
        if !(cgiTimeout > 0 && cgiTimeout <= 86_400) { throw ValidationError("--cgi-timeout must be between 0 and 86400 seconds") }
        if cgiMax < 1 { throw ValidationError("--cgi-max must be at least 1") }
        if noCgi && (cgiDir != nil || cgiScript != nil || !cgiEnv.isEmpty) {
            throw ValidationError("--no-cgi cannot go with --cgi-dir, --cgi-script or --cgi-env")
        }
        for item in cgiEnv {
            guard let eq = item.firstIndex(of: "="), eq != item.startIndex,
                  item[..<eq].utf8.allSatisfy({ ASCII.isAlphanumeric($0) || $0 == 95 }) else {
                throw ValidationError("--cgi-env wants NAME=VALUE (NAME of letters, digits and _), got \(item)")
            }
        }
        if let cgiScript {
            guard let real = realpath(cgiScript, nil) else { throw ValidationError("--cgi-script \(cgiScript): no such file") }
            defer { free(real) }
            var st = stat()
            guard stat(real, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, access(real, X_OK) == 0 else {
                throw ValidationError("--cgi-script \(cgiScript) is not an executable file")
            }
        }
        for item in tlsCertFor where TLSCertFor(item) == nil {
            throw ValidationError("--tls-cert-for wants HOST=CERT,KEY (HOST exact or *.domain), got \(item)")
        }
        for item in trustedProxy where CIDR(item) == nil {
            throw ValidationError("--trusted-proxy wants an IPv4 or IPv6 address or CIDR range (like 10.0.0.0/8 or 2001:db8::/32), got \(item)")
        }
        do {
            _ = try headerSettings()
        } catch {
            throw ValidationError(error.description)
        }
        for item in pluginConfig {
            guard let eq = item.firstIndex(of: "="), let dot = item[..<eq].firstIndex(of: "."),
                  dot != item.startIndex, item.index(after: dot) < eq else {
                throw ValidationError("--plugin-config wants NAME.KEY=VALUE, got \(item)")
            }
        }
    }

    func run() throws {
        let command: AWSCommand
        do {
            command = try Self.withConfigFile(self)
        } catch {
            FileHandleStderr.write("aws: \(error)\n")
            throw ExitCode.failure
        }
        try command.start(commandLine: self)
    }

    /// The configuration the flags and the file (if any) give: what `run` serves, and what
    /// SIGHUP reads again.
    func makeConfig() -> Config {
        var config = Config()
        config.root = root
        config.port = port
        config.address = address
        config.pluginsDirectory = plugins
        config.strictPlugins = strictPlugins
        config.pluginSlowMillis = pluginSlowMs
        for item in pluginConfig {
            let eq = item.firstIndex(of: "=")!, dot = item[..<eq].firstIndex(of: ".")!
            config.pluginConfig[String(item[..<dot]), default: [:]][String(item[item.index(after: dot)..<eq])] = String(item[item.index(after: eq)...])
        }
        config.logLevel = logLevel
        config.accessLogPath = accessLog
        config.accessLogFormat = logFormat
        config.user = user
        config.strictHost = strictHost
        config.autoindex = autoindex
        config.dynamicIO = dynamicIo
        config.workers = workers.resolved
        config.deferAccept = deferAccept
        config.metrics = metrics.flatMap(MetricsEndpoint.init)
        config.proxyProtocol = proxyProtocol
        config.trustedProxies = trustedProxy.compactMap(CIDR.init)
        if let tlsCert, let tlsKey {
            var tls = TLSSettings()
            tls.port = tlsPort ?? 8443
            tls.chain = tlsCert
            tls.key = tlsKey
            tls.named = tlsCertFor.compactMap { TLSCertFor($0)?.certificate }
            config.tls = tls
            config.plainHTTP = !noHttp
            config.hstsSeconds = hsts
            config.redirectHTTPS = redirectHttps
        }
        config.cgi = noCgi ? nil : cgiSettings()
        config.compression.enabled = !noCompress
        config.compression.gzipLevel = compressLevelGzip
        config.compression.brotliLevel = compressLevelBr
        config.compression.zstdLevel = compressLevelZstd
        config.compression.cacheBytes = compressCache * 1024 * 1024
        config.headerSettings = try! headerSettings()  // checked by validate()
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
        config.cgiTimeout = Int64(cgiTimeout * 1000)
        config.cgiMax = cgiMax
        return config
    }

    func headerSettings() throws(HeaderSettings.Invalid) -> HeaderSettings {
        try HeaderSettings(nosniff: !noNosniff, headers: header, cacheControl: cacheControl, immutable: !noImmutable, mimeTypes: mimeType)
    }

    /// The whole configuration: the flags, and the file's virtual hosts.
    func fullConfig() throws -> Config {
        var config = makeConfig()
        if let path = self.config {
            let file = try ConfigFile(path: path, options: Self.optionNames)
            config.servers = file.servers
            config.configFile = path
            let given = Self.commandLineKeys()
            for arg in file.arguments {
                let key = Self.key(of: arg)
                if !given.contains(key) {
                    config.fileKeys[key, default: []].append(arg)
                    config.keyLines[key] = file.keyLines[key]
                }
            }
        }
        return config
    }

    /// `commandLine`: the flags alone, which a reload merges with the file again.
    private func start(commandLine: AWSCommand) throws {
        let config: Config
        do {
            config = try fullConfig()
        } catch {
            FileHandleStderr.write("aws: \(error)\n")
            throw ExitCode.failure
        }
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "aws")
        logger.logLevel = logLevel
        do {
            // SIGHUP reads the file again, under the same command line.
            let server = Server(config: config, logger: logger,
                                reread: config.configFile == nil ? nil : { try AWSCommand.withConfigFile(commandLine).fullConfig() })
            if check {
                try server.check()
                FileHandleStderr.write("aws: configuration OK\(self.config.map { " (\($0))" } ?? "")\n")
                return
            }
            try server.run()
        } catch {
            logger.critical("\(error)")
            throw ExitCode.failure
        }
    }
}

extension AWSCommand {
    /// The CGI flags, with the folder and the single script as real paths.
    func cgiSettings() -> CGISettings {
        var cgi = CGISettings()
        let dir = cgiDir ?? (root.hasSuffix("/") ? root + "cgi" : root + "/cgi")
        cgi.directory = SiteBuilder.realPath(dir) ?? SiteBuilder.absolute(dir)
        cgi.script = cgiScript.flatMap(SiteBuilder.realPath)
        cgi.environment = cgiEnv.map { item in
            let eq = item.firstIndex(of: "=")!
            return (String(item[..<eq]), String(item[item.index(after: eq)...]))
        }
        cgi.timeout = Int64(cgiTimeout * 1000)
        cgi.maxRunning = cgiMax
        if let path = getenv("PATH") { cgi.path = String(cString: path) }
        return cgi
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

/// `--tls-cert-for HOST=CERT,KEY`.
struct TLSCertFor {
    let certificate: TLSSettings.NamedCertificate

    init?(_ argument: String) {
        guard let eq = argument.firstIndex(of: "=") else { return nil }
        let host = argument[..<eq]
        let files = argument[argument.index(after: eq)...].split(separator: ",", omittingEmptySubsequences: false)
        guard files.count == 2, !files[0].isEmpty, !files[1].isEmpty, TLSCertFor.isValidName(host) else { return nil }
        certificate = .init(host: String(host), chain: String(files[0]), key: String(files[1]))
    }

    /// A DNS name, or "*." and a name of at least two labels.
    static func isValidName(_ host: Substring) -> Bool {
        var name = host
        if name.hasPrefix("*.") { name = name.dropFirst(2) }
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        guard !name.isEmpty, name.count <= 253, !(host.hasPrefix("*.") && labels.count < 2) else { return false }
        return labels.allSatisfy { label in
            !label.isEmpty && label.count <= 63 && label.utf8.allSatisfy { c in
                (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 45 || c == 95
            }
        }
    }
}

// MARK: the configuration file

extension AWSCommand {
    /// Every long option, and whether it takes a value (a flag does not): the keys a
    /// configuration file may use, read from the parser's own help so a new flag is a new key.
    static let optionNames: [String: Bool] = {
        var names: [String: Bool] = [:]
        for line in helpMessage(columns: 10_000).split(separator: "\n") where line.hasPrefix("  --") {
            let words = line.dropFirst(2).split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
            names[String(words[0].dropFirst(2))] = words.count > 1 && words[1].hasPrefix("<")
        }
        return names
    }()

    /// The long options the command line gives (their values may follow as the next argument).
    static func commandLineKeys() -> Set<String> {
        Set(CommandLine.arguments.dropFirst().compactMap { arg in arg.hasPrefix("--") ? key(of: arg) : nil })
    }

    /// "--name=value" → "name".
    static func key(of argument: String) -> String { String(argument.dropFirst(2).prefix { $0 != "=" }) }

    /// `command` with the file's keys under its flags: the file's arguments first, minus the keys
    /// the command line gives again, so the command line wins. Errors name the file's line.
    static func withConfigFile(_ command: AWSCommand) throws -> AWSCommand {
        guard let path = command.config else { return command }
        let file = try ConfigFile(path: path, options: optionNames)
        let commandLine = Array(CommandLine.arguments.dropFirst())
        let given = commandLineKeys()
        let fromFile = file.arguments.filter { !given.contains(key(of: $0)) }
        do {
            return try AWSCommand.parse(fromFile + commandLine + ["--with-file-keys"])
        } catch {
            let message = AWSCommand.message(for: error)
            // The keys of the file the message names (a bad value, two flags that clash).
            let lines = file.keyLines.filter { key, _ in !given.contains(key) && names(message, flag: key) }.values.sorted()
            let at = lines.isEmpty ? path : "\(path):\(lines.map(String.init).joined(separator: ","))"
            throw ConfigFileError("\(at): \(message)")
        }
    }
}

/// `message` mentions `--flag` itself (not `--flag-for`).
private func names(_ message: String, flag: String) -> Bool {
    let m = Array(message.utf8), f = Array("--\(flag)".utf8)
    var i = 0
    while i + f.count <= m.count {
        if m[i..<(i + f.count)].elementsEqual(f) {
            let next = i + f.count < m.count ? m[i + f.count] : 32
            if !(ASCII.isAlphanumeric(next) || next == 45) { return true }
        }
        i += 1
    }
    return false
}

/// Messages before the logger exists (configuration errors, `--check`).
enum FileHandleStderr {
    static func write(_ s: String) {
        var bytes = Array(s.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}
