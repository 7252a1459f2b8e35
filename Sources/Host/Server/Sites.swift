import AWSParsing

/// A virtual host: the document root, plugins, CGI and per-path settings that answer requests
/// whose `Host` names it. Immutable, shared by every worker; a reload (SIGHUP with `--config`)
/// builds new ones and publishes a new `SiteTable`.
final class Site: Sendable {
    /// The names as configured ("example.test", "*.example.test"), for log lines.
    let names: [String]
    /// Lowercased exact names, and the suffixes (".example.test") of one-label wildcards.
    let exactNames: [[UInt8]]
    let wildcardSuffixes: [[UInt8]]
    let root: DocumentRoot
    /// Which of a worker's open-file caches holds this root's files (one cache per distinct
    /// root, so two hosts never see each other's `/index.html`).
    let rootID: Int
    /// Which of a worker's plugin route tables serves this site (one per plugins folder); nil:
    /// no plugins.
    let pluginTable: Int?
    let cgi: CGISettings?
    let autoindex: Bool
    /// The access-log destination (`AccessLogWriter` file index); nil: not logged.
    let accessLog: Int?
    /// Longest prefix first.
    let paths: [PathRule]

    init(names: [String], root: DocumentRoot, rootID: Int, pluginTable: Int?, cgi: CGISettings?, autoindex: Bool,
         accessLog: Int? = nil, paths: [PathRule]) {
        self.names = names
        var exact: [[UInt8]] = [], wild: [[UInt8]] = []
        for name in names {
            let lower = Array(name.utf8).map(ASCII.lower)
            if lower.starts(with: Array("*.".utf8)) { wild.append(Array(lower.dropFirst())) } else { exact.append(lower) }
        }
        exactNames = exact
        wildcardSuffixes = wild
        self.root = root
        self.rootID = rootID
        self.pluginTable = pluginTable
        self.cgi = cgi
        self.autoindex = autoindex
        self.accessLog = accessLog
        self.paths = paths.sorted { $0.prefix.count > $1.prefix.count }
    }

    /// The settings of the longest path prefix `path` (decoded, without its leading "/"; a
    /// trailing "/" is `trailingSlash`) starts with.
    func rule(for path: [UInt8], trailingSlash: Bool) -> PathRule? {
        for rule in paths {
            if path.starts(with: rule.prefix) { return rule }
            if trailingSlash && rule.prefix.count == path.count + 1 && rule.prefix.last == 47 && rule.prefix.starts(with: path) { return rule }
        }
        return nil
    }

    var description: String { names.isEmpty ? "default" : names.joined(separator: " ") }
}

/// Settings for the paths under a prefix of one site (`[[server.path]]`).
final class PathRule: Sendable {
    /// Decoded, without the leading "/": matched against `TargetPath.bytes`, like nginx's
    /// prefix locations (plain prefix: "/img" also covers "/imgs/").
    let prefix: [UInt8]
    /// "Name: value\r\n" lines added to responses under the prefix with a status below 400
    /// (like nginx's add_header): the extra headers, then Cache-Control.
    let fields: [UInt8]
    /// Overrides the site's autoindex under the prefix.
    let autoindex: Bool?
    /// The prefix sets Cache-Control: `--cache-control` rules do not apply under it.
    let hasCacheControl: Bool

    init(prefix: String, headers: [(String, String)], cacheControl: String?, autoindex: Bool?) {
        var p = Array(prefix.utf8)
        if p.first == 47 { p.removeFirst() }
        self.prefix = p
        var f: [UInt8] = []
        for (name, value) in headers + (cacheControl.map { [("Cache-Control", $0)] } ?? []) {
            f.append(contentsOf: name.utf8)
            f.append(contentsOf: ": ".utf8)
            f.append(contentsOf: value.utf8)
            f.append(contentsOf: "\r\n".utf8)
        }
        fields = f
        self.autoindex = autoindex
        hasCacheControl = cacheControl != nil
    }
}

/// Every site, and the one that answers a host no site names. Immutable: workers hold a
/// snapshot, replaced whole on reload.
final class SiteTable: Sendable {
    let sites: [Site]
    let fallback: Site

    init(sites: [Site], fallback: Site) {
        self.sites = sites
        self.fallback = fallback
    }

    /// The site for a `Host` value (or a TLS server name): exact names first, then one-label
    /// wildcards (the longest suffix wins), else the fallback. A port, a trailing dot and the
    /// case are ignored.
    func select(host: ArraySlice<UInt8>?) -> Site {
        guard sites.count > 1, var name = host else { return fallback }
        if name.first == 91 { return fallback }  // an IP literal names no site
        if let colon = name.firstIndex(of: 58) { name = name[..<colon] }
        if name.last == 46 { name = name.dropLast() }
        guard !name.isEmpty else { return fallback }
        for site in sites {
            for exact in site.exactNames where exact.count == name.count {
                if zip(exact, name).allSatisfy({ $0 == ASCII.lower($1) }) { return site }
            }
        }
        var best: Site?, bestLength = 0
        for site in sites {
            for suffix in site.wildcardSuffixes where suffix.count < name.count && suffix.count > bestLength {
                let head = name[..<(name.endIndex - suffix.count)]
                guard !head.contains(46), zip(suffix, name[(name.endIndex - suffix.count)...]).allSatisfy({ $0 == ASCII.lower($1) }) else { continue }
                best = site
                bestLength = suffix.count
            }
        }
        return best ?? fallback
    }
}
