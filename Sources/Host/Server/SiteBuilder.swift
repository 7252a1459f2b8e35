import Glibc

/// Turns a configuration into sites, on the control thread (at start, for `--check`, on
/// SIGHUP). A server block inherits what it does not set from the top level (`root`,
/// `plugins`, `autoindex`, the CGI settings); with no blocks, the flags make one site that
/// answers every host. The ids it hands out (a cache per document root, a route table per
/// plugins folder) stay the same across reloads, so workers can keep what they index.
final class SiteBuilder {
    /// Real path of each document root → its open-file cache in every worker.
    private var rootIDs: [String: Int] = [:]
    /// Plugins folders by route-table index, with the document root their plugins are told.
    private(set) var pluginFolders: [(path: String, root: String, line: Int?)] = []

    /// The sites of `config`; errors name the file and the line of the server block. A failed
    /// build hands out no ids.
    /// What a failed reload puts back.
    var state: (rootIDs: [String: Int], pluginFolders: [(path: String, root: String, line: Int?)]) {
        get { (rootIDs, pluginFolders) }
        set { (rootIDs, pluginFolders) = newValue }
    }

    /// `logs`: the access-log writer, which opens a block's own `access-log` (nil for --check:
    /// no file is opened).
    func build(_ config: Config, logs: AccessLogWriter? = nil) throws(ConfigError) -> SiteTable {
        let saved = (rootIDs, pluginFolders)
        do {
            return try buildSites(config, logs: logs)
        } catch {
            (rootIDs, pluginFolders) = saved
            throw error
        }
    }

    private func buildSites(_ config: Config, logs: AccessLogWriter?) throws(ConfigError) -> SiteTable {
        // The top-level destination (`access-log`, else standard error) is the writer's first file.
        let mainLog: Int? = config.mainAccessLogEnabled && logs != nil ? 0 : nil
        if config.servers.isEmpty {
            let site = try makeSite(names: [], root: config.root, plugins: config.pluginsDirectory, pluginsLine: config.keyLines["plugins"], cgi: config.cgi,
                                    autoindex: config.autoindex, accessLog: mainLog, paths: [], at: nil)
            return SiteTable(sites: [site], fallback: site)
        }
        let file = config.configFile ?? "config"
        var sites: [Site] = []
        var fallback: Site?
        for block in config.servers {
            let root = block.root ?? config.root
            // CGI: off with no-cgi = true; off when the top level is off, unless the block asks
            // for it (cgi-dir, or no-cgi = false); else the top level's, in the block's root.
            var cgi: CGISettings?
            if block.noCgi != true && (config.cgi != nil || block.cgiDir != nil || block.noCgi == false) {
                var settings = config.cgi ?? CGISettings()
                settings.timeout = config.cgiTimeout
                settings.maxRunning = config.cgiMax
                if config.cgi == nil || block.cgiDir != nil || block.root != nil {
                    let dir = block.cgiDir ?? (root.hasSuffix("/") ? root + "cgi" : root + "/cgi")
                    settings.directory = SiteBuilder.realPath(dir) ?? SiteBuilder.absolute(dir)
                }
                cgi = settings
            }
            if block.tlsCert != nil && config.tls == nil {
                throw ConfigError("\(file):\(block.line(of: "tls-cert")): a server's tls-cert needs HTTPS on: give the top-level tls-cert and tls-key (the default certificate)")
            }
            let paths = block.paths.map { PathRule(prefix: $0.prefix, headers: $0.headers, cacheControl: $0.cacheControl, autoindex: $0.autoindex) }
            var accessLog = mainLog
            if let path = block.accessLog, let logs {
                do {
                    accessLog = try logs.file(path: path).index
                } catch {
                    throw ConfigError("\(file):\(block.line(of: "access-log")): access log \(path): \(error)")
                }
            }
            let site = try makeSite(names: block.names, root: root, plugins: block.plugins ?? config.pluginsDirectory,
                                    pluginsLine: block.plugins != nil ? block.line(of: "plugins") : config.keyLines["plugins"], cgi: cgi,
                                    autoindex: block.autoindex ?? config.autoindex, accessLog: accessLog, paths: paths,
                                    at: (file, block.line(of: block.root != nil ? "root" : "plugins")))
            sites.append(site)
            if block.isDefault { fallback = site }
        }
        // Without `default = true`, the first server answers unknown hosts (as in nginx).
        return SiteTable(sites: sites, fallback: fallback ?? sites[0])
    }

    /// `pluginsLine`: where the plugins folder was named, for --check's messages.
    private func makeSite(names: [String], root: String, plugins: String?, pluginsLine: Int? = nil, cgi: CGISettings?, autoindex: Bool,
                          accessLog: Int?, paths: [PathRule], at place: (String, Int)?) throws(ConfigError) -> Site {
        let where_ = place.map { "\($0.0):\($0.1): " } ?? ""
        let documentRoot: DocumentRoot
        do {
            documentRoot = try DocumentRoot(path: root)
        } catch {
            throw ConfigError("\(where_)document root \(root): \(error)")
        }
        let rootID = rootIDs[documentRoot.realPath] ?? rootIDs.count
        rootIDs[documentRoot.realPath] = rootID
        var table: Int?
        if let plugins {
            var st = stat()
            guard stat(plugins, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
                throw ConfigError("\(where_)plugins folder \(plugins): not a directory")
            }
            let key = SiteBuilder.realPath(plugins) ?? plugins
            if let i = pluginFolders.firstIndex(where: { $0.path == key }) {
                table = i
            } else {
                pluginFolders.append((key, documentRoot.realPath, pluginsLine))
                table = pluginFolders.count - 1
            }
        }
        return Site(names: names, root: documentRoot, rootID: rootID, pluginTable: table, cgi: cgi, autoindex: autoindex,
                    accessLog: accessLog, paths: paths)
    }

    /// The TLS settings with every server block's certificate added for each of its names (SNI).
    static func tlsSettings(_ config: Config) -> TLSSettings? {
        guard var tls = config.tls else { return nil }
        for block in config.servers {
            guard let chain = block.tlsCert, let key = block.tlsKey else { continue }
            for name in block.names { tls.named.append(.init(host: name, chain: chain, key: key)) }
        }
        return tls
    }

    static func realPath(_ path: String) -> String? {
        guard let real = realpath(path, nil) else { return nil }
        defer { free(real) }
        return String(cString: real)
    }

    static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
        guard getcwd(&buffer, buffer.count) != nil else { return path }
        return cText(buffer) + "/" + path
    }
}
