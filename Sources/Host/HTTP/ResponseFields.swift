import AWSParsing

/// The response headers configuration adds: fields for every response (`X-Content-Type-Options:
/// nosniff`, `--header`), `--cache-control` rules for files, `--mime-type` overrides. Checked
/// and rendered once at start; immutable afterwards.
struct HeaderSettings: Sendable {
    /// "Name: value\r\n" lines appended to every response head, errors included.
    private(set) var siteFields: [UInt8] = []
    /// In the order given: the first that matches a file's path wins.
    private(set) var cacheRules: [CacheRule] = []
    /// `, immutable` for fingerprinted file names (`--no-immutable` turns it off).
    private(set) var immutable = true
    private(set) var mimeTypes: [(ext: String, type: String)] = []

    struct Invalid: Error, CustomStringConvertible { let description: String }

    /// Fields aws sends itself, or that another flag owns: refused in `--header`.
    static let reservedNames: [String: String] = [
        "date": "", "server": "", "content-length": "", "content-type": " (use --mime-type)",
        "content-range": "", "content-encoding": "", "transfer-encoding": "", "connection": "",
        "keep-alive": "", "upgrade": "", "trailer": "", "etag": "", "last-modified": "",
        "location": "", "accept-ranges": "", "vary": "",
        "cache-control": " (use --cache-control)", "expires": " (use --cache-control with max-age)",
        "strict-transport-security": " (use --hsts)", "x-content-type-options": " (sent by default; --no-nosniff turns it off)",
    ]

    init() { siteFields = Array("X-Content-Type-Options: nosniff\r\n".utf8) }

    init(nosniff: Bool, headers: [String], cacheControl: [String], immutable: Bool, mimeTypes: [String]) throws(Invalid) {
        if nosniff { siteFields = Array("X-Content-Type-Options: nosniff\r\n".utf8) }
        for item in headers {
            guard let (name, value) = HeaderSettings.split(item), !name.isEmpty, name.utf8.allSatisfy(ASCII.isTokenChar) else {
                throw Invalid(description: "--header wants NAME=VALUE with NAME a header name, got \(item)")
            }
            if let hint = HeaderSettings.reservedNames[name.lowercased()] {
                throw Invalid(description: "--header \(name): this field is set by the server itself\(hint)")
            }
            guard HeaderSettings.isFieldValue(value), !value.isEmpty else {
                throw Invalid(description: "--header \(name): the value must be non-empty, without control characters")
            }
            siteFields.append(contentsOf: "\(name): \(value)\r\n".utf8)
        }
        for item in cacheControl {
            guard let (pattern, value) = HeaderSettings.split(item), !pattern.isEmpty else {
                throw Invalid(description: "--cache-control wants PATTERN=VALUE (like *.css=max-age=3600 or /static/=no-cache), got \(item)")
            }
            // "max-age=60" or "public, max-age=60" alone would split into a pattern that names
            // nothing: a name pattern has a wildcard or a dot, no pattern a space or a comma.
            guard !pattern.contains(where: { $0 == " " || $0 == "," || $0 == "\t" }),
                  pattern.hasPrefix("/") || pattern.contains(where: { $0 == "*" || $0 == "?" || $0 == "." }) else {
                throw Invalid(description: "--cache-control wants PATTERN=VALUE, the pattern first (/prefix/, /path/*.css or a file-name glob like *.css), got \(item)")
            }
            guard HeaderSettings.isFieldValue(value), !value.isEmpty else {
                throw Invalid(description: "--cache-control \(pattern): the value must be non-empty, without control characters")
            }
            cacheRules.append(CacheRule(pattern: pattern, value: value))
        }
        self.immutable = immutable
        for item in mimeTypes {
            guard let (rawExt, type) = HeaderSettings.split(item) else {
                throw Invalid(description: "--mime-type wants EXT=TYPE (like webmanifest=application/manifest+json), got \(item)")
            }
            let ext = rawExt.hasPrefix(".") ? String(rawExt.dropFirst()) : rawExt
            guard !ext.isEmpty, ext.utf8.allSatisfy({ ASCII.isAlphanumeric($0) || $0 == 45 || $0 == 95 || $0 == 43 }) else {
                throw Invalid(description: "--mime-type: '\(rawExt)' is not a file extension (letters, digits, - _ +)")
            }
            let slash = type.firstIndex(of: "/")
            guard HeaderSettings.isFieldValue(type), let slash, slash != type.startIndex,
                  type[type.startIndex..<slash].utf8.allSatisfy(ASCII.isTokenChar) else {
                throw Invalid(description: "--mime-type \(ext): '\(type)' is not a media type (TYPE/SUBTYPE, parameters allowed)")
            }
            self.mimeTypes.append((ext, type))
        }
    }

    private static func split(_ item: String) -> (String, String)? {
        guard let eq = item.firstIndex(of: "=") else { return nil }
        return (String(item[..<eq]), String(item[item.index(after: eq)...]))
    }

    /// Visible ASCII, spaces and tabs (RFC 9110 §5.5 without obs-text), not starting or ending
    /// with white space.
    private static func isFieldValue(_ value: String) -> Bool {
        value.utf8.allSatisfy { ($0 >= 32 && $0 < 127) || $0 == 9 }
            && value.utf8.first != 32 && value.utf8.last != 32
    }
}

/// One `--cache-control PATTERN=VALUE`. PATTERN with a leading "/" is matched against the whole
/// path: a prefix when it has no wildcard (like `[[server.path]]`), else a glob; without a
/// leading "/" it is a glob on the file name alone. In a glob `*` is any run of bytes ("/"
/// included, for a whole path) and `?` any one byte; the match is case-sensitive.
struct CacheRule: Sendable {
    enum Kind: Sendable { case prefix, pathGlob, nameGlob }
    let kind: Kind
    /// Without the leading "/": paths are matched decoded, without theirs.
    let pattern: [UInt8]
    /// "Cache-Control: VALUE\r\n"
    let field: [UInt8]
    /// The same with ", immutable", for a fingerprinted file name; nil when the value does not
    /// call for it (no positive max-age, already immutable, or no-cache / no-store).
    let immutableField: [UInt8]?
    /// The max-age directive's seconds: `Expires` is Date + this.
    let maxAge: Int?

    init(pattern: String, value: String) {
        var p = Array(pattern.utf8)
        let wild = p.contains(42) || p.contains(63)
        if p.first == 47 {
            p.removeFirst()
            kind = wild ? .pathGlob : .prefix
        } else {
            kind = .nameGlob
        }
        self.pattern = p
        field = Array("Cache-Control: \(value)\r\n".utf8)
        maxAge = CacheRule.maxAge(in: value)
        let lower = value.lowercased()
        if let age = maxAge, age > 0, !lower.contains("immutable"), !lower.contains("no-cache"), !lower.contains("no-store") {
            immutableField = Array("Cache-Control: \(value), immutable\r\n".utf8)
        } else {
            immutableField = nil
        }
    }

    /// The `max-age=N` directive (not `s-maxage`), if any.
    static func maxAge(in value: String) -> Int? {
        for directive in value.lowercased().split(separator: ",") {
            let d = directive.trimmingPrefix(while: { $0 == " " || $0 == "\t" })
            guard d.hasPrefix("max-age=") else { continue }
            var digits = d.dropFirst(8)
            if digits.hasPrefix("\""), digits.hasSuffix("\""), digits.count >= 2 { digits = digits.dropFirst().dropLast() }
            return Int(digits.filter { $0 != " " && $0 != "\t" })
        }
        return nil
    }

    func matches(_ path: ArraySlice<UInt8>) -> Bool {
        switch kind {
        case .prefix: return path.starts(with: pattern)
        case .pathGlob: return CacheRule.glob(pattern[...], path)
        case .nameGlob:
            let name = path.lastIndex(of: 47).map { path[($0 + 1)...] } ?? path
            return CacheRule.glob(pattern[...], name)
        }
    }

    /// `*` and `?` globbing with one backtrack point (the last `*`): linear, no allocation.
    static func glob(_ pattern: ArraySlice<UInt8>, _ text: ArraySlice<UInt8>) -> Bool {
        var p = pattern.startIndex, t = text.startIndex
        var star: Int?, resume = text.startIndex
        while t < text.endIndex {
            if p < pattern.endIndex && (pattern[p] == 63 || pattern[p] == text[t]) {
                p += 1; t += 1
            } else if p < pattern.endIndex && pattern[p] == 42 {
                star = p; p += 1; resume = t
            } else if let s = star {
                p = s + 1; resume += 1; t = resume
            } else {
                return false
            }
        }
        while p < pattern.endIndex && pattern[p] == 42 { p += 1 }
        return p == pattern.endIndex
    }

    /// A build's content hash in the file name: a dot-separated part between the name and the
    /// extension of 8 or more lowercase hex digits, with at least one digit and one letter (so
    /// `report.20240101.pdf`, a date, is not taken for one): `app.3f2a9c1b.js`.
    static func isFingerprinted(_ path: ArraySlice<UInt8>) -> Bool {
        let name = path.lastIndex(of: 47).map { path[($0 + 1)...] } ?? path
        guard let first = name.firstIndex(of: 46), let last = name.lastIndex(of: 46), first < last else { return false }
        var start = first + 1
        while start < last {
            var end = start, digits = 0, letters = 0
            while end < last && name[end] != 46 {
                let c = name[end]
                if c >= 48 && c <= 57 { digits += 1 } else if c >= 97 && c <= 102 { letters += 1 } else { digits = -1_000_000 }
                end += 1
            }
            if end - start >= 8 && digits > 0 && letters > 0 { return true }
            start = end + 1
        }
        return false
    }
}

extension Exchange {
    /// Cache-Control (and Expires) from the first `--cache-control` rule matching the file
    /// served, on its 200, 206 and 304 (RFC 9110 §15.4.5 wants the same caching fields on a 304).
    /// A `[[server.path]]` with its own cache-control wins for its prefix.
    func addFileCacheFields() {
        // Checked in place first: a copy of the settings retains its arrays, on every file response.
        guard !worker.config.headerSettings.cacheRules.isEmpty, !(pathRule?.hasCacheControl ?? false) else { return }
        let settings = worker.config.headerSettings
        // A directory target is answered by its index.html: that is the name the rules see.
        let served = (path.trailingSlash || path.bytes.isEmpty) ? indexPath.bytes[...] : path.bytes[...]
        for rule in settings.cacheRules where rule.matches(served) {
            if settings.immutable, let field = rule.immutableField, CacheRule.isFingerprinted(served) {
                pump.out.append(contentsOf: field)
            } else {
                pump.out.append(contentsOf: rule.field)
            }
            if let age = rule.maxAge {
                // For HTTP/1.0 caches, which know no Cache-Control; a 1.1 cache prefers max-age.
                pump.out.append(ascii: "Expires: ")
                // Capped as RFC 9111 §1.2.2 says of delta-seconds, so a huge max-age cannot wrap.
                HTTPDate.append(worker.date.second + min(age, 2_147_483_648), to: &pump.out)
                pump.out.append(ascii: "\r\n")
            }
            return
        }
    }
}
