import AWSParsing
import CHTTPParser
import Glibc

/// Answers a request for a typed function endpoint (`register_function`): parameters from the
/// query string and, for POST, an application/x-www-form-urlencoded body; the result as text, or
/// as JSON when the client asks for it.
extension Exchange {
    func respondWithFunction(_ function: FFIFunction) {
        plugin.stage = .settled  // answered by the host: the plugin's code sees no request
        guard request.method == HTTP_GET || request.method == HTTP_HEAD || request.method == HTTP_POST else {
            finishFunction { $0.respondWithError(.methodNotAllowed, allow: "GET, HEAD, POST") }
            return
        }
        var values: [String: String] = [:]
        let target = request.storage[request.target]
        var wantsJSON = false
        if let q = target.firstIndex(of: 63) {
            let end = target[q...].firstIndex(of: 35) ?? target.endIndex
            FormURLEncoded.parse(target[(q + 1)..<end], into: &values)
        }
        if request.method == HTTP_POST, !plugin.body.isEmpty {
            FormURLEncoded.parse(plugin.body[...], into: &values)
        }
        if values["format"] == "json" { wantsJSON = true }
        for h in request.headers where request.equalsIgnoringCase(h.name, Array("accept".utf8)) {
            if request.string(h.value).contains("application/json") { wantsJSON = true }
        }
        switch worker.callbackWatch.measure(.function, plugin.route, { function.call(values) }) {
        case .failure(let error):
            let message: String
            var status = HTTPStatus.badRequest
            switch error {
            case .missing(let name): message = "missing parameter: \(name)\n"
            case .invalid(let name, let type): message = "invalid parameter \(name): expected \(type.rawValue)\n"
            case .failed(let code):
                // Well-formed arguments the function has no result for (an overflow, a domain error).
                message = "\(function.name): \(String(cString: strerror(code)))\n"
                status = .unprocessableContent
            }
            worker.logger.info("function \(function.name): \(message.dropLast())", metadata: ["peer": "\(connection.peerDescription)"])
            finishFunction { $0.respondWithBody(status, type: "text/plain; charset=utf-8", Array(message.utf8)) }
        case .success(let result):
            if wantsJSON {
                finishFunction { $0.respondWithBody(.ok, type: "application/json", Array("{\"result\": \(result.json)}\n".utf8)) }
            } else {
                finishFunction { $0.respondWithBody(.ok, type: "text/plain; charset=utf-8", Array((result.text + "\n").utf8)) }
            }
        }
    }

    /// Function endpoints answer in one go: the response is a plain one, not a plugin stream.
    private func finishFunction(_ respond: (Exchange) -> Void) {
        respond(self)
        endPluginRequest(callEnd: false)
        phase = .responding
    }
}
