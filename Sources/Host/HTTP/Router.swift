import AWSParsing
import CHTTPParser

/// What answers a request whose head is complete: checks that apply to every request, then
/// plugins (when one owns the route), then files.
extension Exchange {
    func respond() {
        // Fields read from the worker's configuration in place: a copy of the whole struct (it
        // holds some twenty strings and arrays) would retain and release each of them per request.
        guard request.versionMajor == 1 else {
            worker.logger.info("unsupported HTTP version", metadata: ["peer": "\(connection.peerDescription)", "version": "\(request.versionMajor).\(request.versionMinor)"])
            respondWithError(.versionNotSupported, close: true)
            return
        }
        if request.hasMalformedName {
            worker.logger.info("malformed header field", metadata: ["peer": "\(connection.peerDescription)"])
            respondWithError(.badRequest, close: true)
            return
        }
        if let refusal = transferEncodingRefusal {
            worker.logger.info("Transfer-Encoding refused", metadata: ["peer": "\(connection.peerDescription)", "status": "\(refusal.rawValue)"])
            respondWithError(refusal, close: true)
            return
        }
        if request.hostCount > 1 || (worker.config.strictHost && request.versionMinor >= 1 && request.hostCount == 0) {
            worker.logger.info("bad Host header", metadata: ["peer": "\(connection.peerDescription)", "count": "\(request.hostCount)"])
            respondWithError(.badRequest, close: true)
            return
        }
        selectSite()
        if decoder.contentLength != UInt64.max && decoder.contentLength > UInt64(worker.config.maxBodyBytes) {
            worker.logger.info("request body over the limit", metadata: ["peer": "\(connection.peerDescription)", "length": "\(decoder.contentLength)"])
            respondWithError(.contentTooLarge, close: true)
            return
        }
        let hasBody = request.hasBody
        if request.versionMinor == 0 && !hasBody && request.contentLength < 0
            && [HTTP_POST, HTTP_PUT, HTTP_PATCH].contains(request.method) {
            // HTTP/1.0 has no chunked coding: a body without a length cannot be framed.
            respondWithError(.lengthRequired, close: true)
            return
        }
        if let expect = request.value(.expect), !request.equalsIgnoringCase(expect, Array("100-continue".utf8)) {
            respondWithError(.expectationFailed, close: hasBody)
            return
        }
        if worker.config.redirectHTTPS && !connection.transport.isTLS {
            redirectToHTTPS()
            return
        }
        if dispatchToPlugin() { return }
        if dispatchToCGI() { return }
        // Files never read a request body, so `Expect: 100-continue` is answered with the final
        // status straight away (RFC 9110 §10.1.1). The client may then withhold the body, so the
        // connection closes after the response rather than wait for content that may never come.
        if hasBody && request.has(.expect) { closeAfterResponse = true }
        switch request.method {
        case HTTP_GET, HTTP_HEAD:
            serveFile()
        case HTTP_OPTIONS:
            respondToOptions()
        case HTTP_POST, HTTP_PUT, HTTP_DELETE, HTTP_PATCH, HTTP_TRACE:
            respondWithError(.methodNotAllowed)
        default:
            // CONNECT, WebDAV and the other methods http-parser knows but aws does not implement.
            respondWithError(.notImplemented, close: request.method == HTTP_CONNECT)
        }
    }

    /// The virtual host by `Host` (over TLS without one: by the SNI name), and its settings for
    /// the path.
    private func selectSite() {
        let table = connection.sites
        if table.sites.count > 1 {
            let target = request.storage[request.target]
            if let authority = Self.absoluteFormAuthority(target) {
                // RFC 9112 §3.2.2: an absolute-form target's authority wins over Host.
                site = table.select(host: authority)
            } else if let host = request.value(.host) {
                site = table.select(host: request.storage[host])
            } else if let name = connection.transport.tls?.serverName {
                site = table.select(host: name[...])
            } else {
                site = table.fallback
            }
        } else {
            site = table.fallback
        }
        pathRule = nil
        if !site.paths.isEmpty, resolvePath() == nil { pathRule = site.rule(for: path.bytes, trailingSlash: path.trailingSlash) }
    }

    /// "http://host:port/path" → "host:port" (nil for an origin-form target).
    static func absoluteFormAuthority(_ target: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        guard target.first != 47, let scheme = target.firstRange(of: [58, 47, 47]) else { return nil }
        let rest = target[scheme.upperBound...]
        let end = rest.firstIndex { $0 == 47 || $0 == 63 || $0 == 35 } ?? rest.endIndex
        let authority = rest[..<end]
        // Userinfo is not allowed in an http(s) URI (RFC 9110 §4.2.4): such a target names no site.
        return authority.isEmpty || authority.contains(64) ? nil : authority
    }

    /// Transfer-Encoding (TransferCodingList): nil when absent or exactly chunked; 400 when the
    /// body cannot be framed (chunked not last or repeated, a malformed list, an HTTP/1.0
    /// request: RFC 9112 §6.1 says its framing is faulty), 501 for codings aws does not decode
    /// before chunked. Either way the connection closes: the body is not read.
    private var transferEncodingRefusal: HTTPStatus? {
        guard request.has(.transferEncoding) else { return nil }
        if request.versionMinor == 0 { return .badRequest }
        var codings = TransferCodingList()
        let name = KnownHeader.transferEncoding.lowercasedName
        for h in request.headers where request.equalsIgnoringCase(h.name, name) {
            codings.add(request.storage[h.value])
        }
        switch codings.verdict {
        // The parser must agree that the body is chunked (it reads the same fields).
        case .chunked: return decoder.isChunked ? nil : .badRequest
        case .notImplemented: return decoder.isChunked ? .notImplemented : .badRequest
        case .invalid: return .badRequest
        }
    }

    /// `--redirect-https`: 308 (method and body kept, RFC 9110 §15.4.9) to the same target on
    /// the TLS port of the host the client asked for.
    private func redirectToHTTPS() {
        guard let host = request.value(.host).map({ request.storage[$0] }), let name = Self.hostWithoutPort(host) else {
            worker.logger.info("redirect to HTTPS needs a valid Host header", metadata: ["peer": "\(connection.peerDescription)"])
            respondWithError(.badRequest, close: true)
            return
        }
        beginResponse(.permanentRedirect)
        pump.out.append(ascii: "Location: https://")
        pump.out.append(contentsOf: name)
        if let port = worker.config.tls?.port, port != 443 {
            pump.out.append(58)
            pump.out.append(decimal: Int(port))
        }
        // The target as sent (origin form); an absolute-form target keeps only its path and query.
        var target = request.storage[request.target]
        if target.first != 47 {
            if let scheme = target.firstRange(of: [58, 47, 47]), let slash = target[scheme.upperBound...].firstIndex(of: 47) {
                target = target[slash...]
            } else {
                target = [47][...]
            }
        }
        pump.out.append(contentsOf: target)
        pump.out.append(ascii: "\r\n")
        endHead(body: StatusTable.shared.errorPage(.permanentRedirect), type: "text/html; charset=utf-8")
        // The client goes elsewhere; a body it may send is not read.
        if request.hasBody { closeAfterResponse = true }
    }

    /// The host of a Host header without its port ("[::1]:8080" → "[::1]"); nil unless it is a
    /// plain registered name or IP literal (nothing that could inject into the Location field).
    static func hostWithoutPort(_ host: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        var name = host
        if name.first == 91 {  // "[" IPv6 literal
            guard let close = name.firstIndex(of: 93) else { return nil }
            let rest = name[(close + 1)...]
            guard rest.isEmpty || (rest.first == 58 && rest.dropFirst().allSatisfy { $0 >= 48 && $0 <= 57 }) else { return nil }
            name = name[...close]
            return name.dropFirst().dropLast().allSatisfy { ASCII.hexValue($0) != nil || $0 == 58 || $0 == 46 } && name.count > 2 ? name : nil
        }
        if let colon = name.firstIndex(of: 58) {
            guard name[(colon + 1)...].allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
            name = name[..<colon]
        }
        let valid = !name.isEmpty && name.allSatisfy { c in
            (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 45 || c == 46 || c == 95
        }
        return valid ? name : nil
    }

    private func respondToOptions() {
        let target = request.storage[request.target]
        guard target.elementsEqual([42]) || target.first == 47 || target.first == 104 || target.first == 72 else {
            respondWithError(.badRequest)
            return
        }
        beginResponse(.ok)
        addHeader("Allow", ascii: "GET, HEAD, OPTIONS")
        addHeader("Content-Length", ascii: "0")
        endHead()
    }
}
