import AWSParsing

/// The meta-variables of one CGI request (RFC 3875 §4.1), and nothing of the server's own
/// environment but `PATH`. A pure function of the request, so it is unit-tested.
struct CGIEnvironment {
    var method = ""
    /// The request target as sent.
    var requestURI: [UInt8] = []
    var query: [UInt8] = []
    var protocolMinor = 1
    var headers: [(name: [UInt8], value: [UInt8])] = []
    /// Set only for a request with a body.
    var contentLength: Int?
    var contentType: [UInt8]?
    var scriptName: [UInt8] = []
    var scriptFilename = ""
    /// Decoded; empty: no path-info.
    var pathInfo: [UInt8] = []
    var documentRoot = ""
    var serverName: [UInt8] = []
    var serverPort = 0
    var remoteAddress = ""
    var remotePort = 0
    var https = false
    /// The server's PATH.
    var path = "/usr/local/bin:/usr/bin:/bin"
    /// `--cgi-env NAME=VALUE`.
    var extra: [(String, String)] = []

    /// "NAME=VALUE" byte strings (no NUL inside: a value with one is cut there).
    func variables() -> [[UInt8]] {
        var out: [[UInt8]] = []
        func add(_ name: String, _ value: some Sequence<UInt8>) {
            var v = Array(name.utf8)
            v.append(61)
            v.append(contentsOf: value.prefix { $0 != 0 })
            out.append(v)
        }
        add("GATEWAY_INTERFACE", "CGI/1.1".utf8)
        add("SERVER_SOFTWARE", "aws/\(AWSVersion.string)".utf8)
        add("SERVER_NAME", serverName)
        add("SERVER_PORT", String(serverPort).utf8)
        add("SERVER_PROTOCOL", "HTTP/1.\(protocolMinor)".utf8)
        add("REQUEST_METHOD", method.utf8)
        add("REQUEST_URI", requestURI)
        add("QUERY_STRING", query)
        if let contentLength { add("CONTENT_LENGTH", String(contentLength).utf8) }
        if let contentType { add("CONTENT_TYPE", contentType) }
        add("SCRIPT_NAME", scriptName)
        add("SCRIPT_FILENAME", scriptFilename.utf8)
        if !pathInfo.isEmpty {
            add("PATH_INFO", pathInfo)
            add("PATH_TRANSLATED", Array(documentRoot.utf8) + pathInfo)
        }
        add("REMOTE_ADDR", remoteAddress.utf8)
        add("REMOTE_PORT", String(remotePort).utf8)
        if https { add("HTTPS", "on".utf8) }
        add("PATH", path.utf8)
        for (name, values) in httpVariables() { add(name, values) }
        for (name, value) in extra { add(name, value.utf8) }
        return out
    }

    /// HTTP_<NAME> for the request's header fields: upper case, '-' → '_', repeated fields
    /// joined with ", ". Left out: Content-Length and Content-Type (they have their own
    /// variables), Proxy (HTTP_PROXY would reach HTTP clients as a proxy setting: "httpoxy"), and
    /// names with characters other than letters, digits and '-' (so "X_A" cannot pose as "X-A").
    private func httpVariables() -> [(String, [UInt8])] {
        var order: [String] = []
        var values: [String: [UInt8]] = [:]
        for (name, value) in headers {
            guard !name.isEmpty, name.allSatisfy({ ASCII.isAlphanumeric($0) || $0 == 45 }) else { continue }
            let upper = String(decoding: name.map { $0 == 45 ? 95 : ($0 >= 97 && $0 <= 122 ? $0 - 32 : $0) }, as: UTF8.self)
            if upper == "CONTENT_LENGTH" || upper == "CONTENT_TYPE" || upper == "PROXY" { continue }
            let key = "HTTP_" + upper
            if var existing = values[key] {
                existing.append(contentsOf: [44, 32])
                existing.append(contentsOf: value)
                values[key] = existing
            } else {
                values[key] = value
                order.append(key)
            }
        }
        return order.map { ($0, values[$0]!) }
    }
}
