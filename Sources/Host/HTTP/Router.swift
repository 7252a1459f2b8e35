import CHTTPParser

/// What answers a request whose head is complete: checks that apply to every request, then
/// plugins (when one owns the route), then files.
extension Exchange {
    func respond() {
        let config = worker.config
        guard request.versionMajor == 1 else {
            worker.logger.info("unsupported HTTP version", metadata: ["peer": "\(connection.peerDescription)", "version": "\(request.versionMajor).\(request.versionMinor)"])
            respondWithError(.versionNotSupported, close: true)
            return
        }
        if request.hasMalformedName || !transferEncodingIsValid {
            worker.logger.info("malformed header field or Transfer-Encoding", metadata: ["peer": "\(connection.peerDescription)"])
            respondWithError(.badRequest, close: true)
            return
        }
        if request.hostCount > 1 || (config.strictHost && request.versionMinor >= 1 && request.hostCount == 0) {
            worker.logger.info("bad Host header", metadata: ["peer": "\(connection.peerDescription)", "count": "\(request.hostCount)"])
            respondWithError(.badRequest, close: true)
            return
        }
        if decoder.contentLength != UInt64.max && decoder.contentLength > UInt64(config.maxBodyBytes) {
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
        if dispatchToPlugin() { return }
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

    /// RFC 9112 §6.1: in a request, chunked must be the final transfer coding and appear once;
    /// anything else cannot be framed and is refused (a classic request-smuggling vector).
    private var transferEncodingIsValid: Bool {
        guard request.has(.transferEncoding) else { return true }
        var codings: [ArraySlice<UInt8>] = []
        for h in request.headers where request.equalsIgnoringCase(h.name, Array("transfer-encoding".utf8)) {
            for part in request.storage[h.value].split(separator: 44) {
                let t = request.trimmed(part.startIndex..<part.endIndex)
                if !t.isEmpty { codings.append(request.storage[t]) }
            }
        }
        let chunked = Array("chunked".utf8)
        func isChunked(_ c: ArraySlice<UInt8>) -> Bool { c.count == 7 && zip(c, chunked).allSatisfy { ASCII.lower($0) == $1 } }
        guard let last = codings.last, isChunked(last) else { return false }
        return codings.filter(isChunked).count == 1 && decoder.isChunked
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
