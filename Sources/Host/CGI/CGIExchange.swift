import AWSParsing
import CHTTPParser
import Glibc

/// The CGI side of an exchange: which program, its process, the request body on its way to the
/// program's stdin, and its output until the header block is complete.
struct CGIExchange {
    var isActive = false
    /// The program's file name (log lines).
    var name = ""
    var process: CGIProcess?
    /// Holds one of the server's `--cgi-max` slots before the process does (a chunked body is
    /// collected before the program starts); the process gives it back when it is reaped.
    var holdsSlot = false
    /// Started when the body is complete (chunked request bodies are collected first).
    var program = ""
    var directory = ""
    var environment = CGIEnvironment()
    var collecting = false
    /// Request-body bytes not yet taken by the pipe.
    var input: [UInt8] = []
    var inputSent = 0
    /// The body is complete: stdin closes once `input` is written.
    var inputEnded = false
    /// The program stopped reading its input: the rest of the body is dropped.
    var inputRefused = false
    /// Output before the end of the header block.
    var head: [UInt8] = []
    var headSent = false

    static let inputLimit = 64 * 1024
    static let headLimit = 32 * 1024
    /// Body bytes read together with the head before it is sent (more are streamed).
    static let earlyLimit = 64 * 1024

    var inputIsFull: Bool { isActive && !collecting && input.count - inputSent >= Self.inputLimit }
}

extension Exchange {
    // MARK: dispatch

    /// Runs the request as CGI when its path is under /cgi/ and CGI is on. Answers 404 / 403 /
    /// 503 itself; false when the request is not for CGI.
    func dispatchToCGI() -> Bool {
        // The settings last: they are copied (a struct of strings), for CGI requests only.
        guard resolvePath() == nil, path.firstSegmentIs("cgi"), let settings = site.cgi else { return false }
        let peer = connection.peerDescription
        guard let target = locateProgram(settings) else { return true }
        guard worker.cgiSlots?.take() ?? true else {
            worker.logger.warning("cgi: --cgi-max (\(settings.maxRunning)) programs running: 503", metadata: ["peer": "\(peer)"])
            respondWithError(.serviceUnavailable, close: request.hasBody && !messageComplete)
            return true
        }
        cgi = CGIExchange()
        cgi.isActive = true
        cgi.holdsSlot = true
        cgi.name = target.name
        cgi.program = target.program
        cgi.directory = String(target.program[..<target.program.lastIndex(of: "/")!])
        cgi.environment = environment(scriptName: target.scriptName, filename: target.program, pathInfo: target.pathInfo, settings: settings)
        phase = .handler
        connection.setDeadline(settings.timeout)
        if request.hasBody && !messageComplete {
            cgi.collecting = decoder.isChunked
            sendContinueIfExpected()
            if cgi.collecting { return true }
        }
        if !request.hasBody { cgi.inputEnded = true }
        startProgram()
        return true
    }

    /// The program for this request and how the path splits around it; nil after answering
    /// 404 or 403.
    private func locateProgram(_ settings: CGISettings) -> (program: String, name: String, scriptName: [UInt8], pathInfo: [UInt8])? {
        var rest = path.bytes.dropFirst(3)  // "cgi"
        var pathInfoSuffix: [UInt8] = path.trailingSlash && !rest.isEmpty ? [47] : []
        if let script = settings.script {
            let name = String(script[script.index(after: script.lastIndex(of: "/")!)...])
            return (script, name, Array("/cgi".utf8), Array(rest) + pathInfoSuffix)
        }
        rest = rest.drop { $0 == 47 }
        let nameBytes = rest.prefix { $0 != 47 }
        let pathInfo = Array(rest.dropFirst(nameBytes.count))
        if pathInfo.isEmpty && path.trailingSlash { pathInfoSuffix = [47] }
        guard !nameBytes.isEmpty, nameBytes.first != 46 else {
            respondWithError(.notFound)
            return nil
        }
        let name = String(decoding: nameBytes, as: UTF8.self)
        let candidate = settings.directory + "/" + name
        guard let resolved = realpath(candidate, nil) else {
            respondWithError(errno == ENOENT || errno == ENOTDIR ? .notFound : .forbidden)
            return nil
        }
        let program = String(cString: resolved)
        free(resolved)
        var st = stat()
        guard program.hasPrefix(settings.directory + "/"), stat(program, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG,
              access(program, X_OK) == 0 else {
            worker.logger.info("cgi: \(name) is not an executable file inside the CGI folder: 403", metadata: ["peer": "\(connection.peerDescription)"])
            respondWithError(.forbidden)
            return nil
        }
        return (program, name, Array("/cgi/".utf8) + nameBytes, pathInfo + pathInfoSuffix)
    }

    private func environment(scriptName: [UInt8], filename: String, pathInfo: [UInt8], settings: CGISettings) -> CGIEnvironment {
        var env = CGIEnvironment()
        env.method = request.methodName
        let target = request.storage[request.target]
        env.requestURI = Array(target)
        if let q = target.firstIndex(of: 63) {
            env.query = Array(target[(q + 1)...].prefix { $0 != 35 })
        }
        env.protocolMinor = Int(request.versionMinor)
        env.headers = request.headers.map { (Array(request.storage[$0.name]), Array(request.storage[request.trimmed($0.value)])) }
        if request.hasBody && !decoder.isChunked { env.contentLength = Int(request.contentLength) }
        if let type = request.value(.contentType) { env.contentType = Array(request.storage[type]) }
        env.scriptName = scriptName
        env.scriptFilename = filename
        env.pathInfo = pathInfo
        env.documentRoot = site.root.realPath
        if let host = request.value(.host).map({ request.storage[$0] }), let name = Exchange.hostWithoutPort(host) {
            env.serverName = Array(name)
        } else {
            env.serverName = Array(worker.config.address.utf8)
        }
        env.https = connection.transport.isTLS
        env.serverPort = Int(env.https ? worker.config.tls?.port ?? 0 : worker.config.port)
        let (address, port) = client.hostAndPort
        env.remoteAddress = address
        env.remotePort = port
        env.path = settings.path
        env.extra = settings.environment
        return env
    }

    /// Starts the program (with the whole body, when it was collected).
    private func startProgram() {
        if cgi.collecting {
            cgi.collecting = false
            cgi.environment.contentLength = cgi.input.count
        }
        let process: CGIProcess
        do {
            // Without a body the program reads /dev/null: no pipe to make, fill and close.
            let input: Int32? = request.hasBody || worker.devNull < 0 ? nil : worker.devNull
            process = try CGIProcess(worker: worker, name: cgi.name, program: cgi.program, directory: cgi.directory,
                                     environment: cgi.environment.variables(), input: input, exchange: self)
            try process.startWatching()
        } catch {
            worker.logger.error("cgi \(cgi.name): cannot start \(cgi.program): \(error)")
            endCGIRequest(abandon: true)
            respondWithError(.internalServerError, close: !messageComplete)
            phase = .responding
            return
        }
        cgi.holdsSlot = false  // the process holds it now
        cgi.process = process
        worker.adopt(process)
        writeInput()
        process.watch(.stdout, true)
    }

    // MARK: request body → stdin

    func cgiRequestBody(_ bytes: UnsafeRawBufferPointer) {
        guard !cgi.inputRefused, bytes.count > 0 else { return }
        cgiMadeProgress()
        cgi.input.append(contentsOf: bytes)
        if !cgi.collecting { writeInput() }
    }

    func cgiMessageComplete() {
        cgi.inputEnded = true
        if cgi.collecting {
            startProgram()
            if isAttached && connection.isOpen && phase == .handler { drive() }
        } else {
            writeInput()
        }
    }

    /// The stdin pipe has room again.
    func cgiInputReady() {
        writeInput()
        // Reading the socket may resume (backpressure released): `drive` sets the interest.
        if isAttached && connection.isOpen && phase == .handler {
            drive()
            if isAttached && phase == .handler { connection.inputResumed() }
        }
    }

    /// Writes what the pipe takes; closes stdin at the end of the body.
    private func writeInput() {
        guard let process = cgi.process else { return }
        while cgi.inputSent < cgi.input.count {
            do {
                let sent = try cgi.input.withUnsafeBytes { try process.writeInput($0.baseAddress! + cgi.inputSent, $0.count - cgi.inputSent) }
                guard let sent else {
                    process.watch(.stdin, true)
                    return
                }
                cgi.inputSent += sent
                cgiMadeProgress()
            } catch {
                // The program does not read (all of) its input: the rest of the body is dropped.
                cgi.inputRefused = true
                cgi.inputEnded = true
                break
            }
        }
        cgi.input.removeAll(keepingCapacity: true)
        cgi.inputSent = 0
        process.watch(.stdin, false)
        if cgi.inputEnded { process.closeInput() }
    }

    // MARK: stdout → response

    /// Output is there: the header block while it is incomplete, then the body (through `drive`).
    func cgiOutputReady() {
        guard isAttached, connection.isOpen, phase == .handler, cgi.isActive else { return }
        if cgi.headSent {
            drive()
            return
        }
        guard let process = cgi.process else { return }
        let buffer = worker.readBuffer
        while true {
            let n: Int
            do {
                guard let got = try process.readOutput(buffer.baseAddress!, buffer.count) else { return }
                n = got
            } catch {
                cgiFailed("cannot read its output: \(error)")
                return
            }
            if n == 0 {
                cgiFailed(cgi.head.isEmpty ? "exited without any output" : "output ended inside its header block")
                return
            }
            cgiMadeProgress()
            cgi.head.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            switch CGIResponseHead.parse(cgi.head[...], limit: CGIExchange.headLimit) {
            case .needMore:
                continue
            case .invalid(let problem):
                cgiFailed("bad header block: \(problem)")
                return
            case .complete(let head, let bodyStart):
                if head.isLocalRedirect {
                    internalRedirect(to: head.location!)
                    return
                }
                // Read on while output is there: a program that has already finished (most
                // small ones) is answered in one send, with a Content-Length.
                var ended = false
                while cgi.head.count - bodyStart < CGIExchange.earlyLimit, let got = try? process.readOutput(buffer.baseAddress!, buffer.count) {
                    if got == 0 {
                        ended = true
                        break
                    }
                    cgi.head.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[0..<got]))
                }
                renderCGIHead(head, early: cgi.head[bodyStart...], complete: ended)
                drive()
                return
            }
        }
    }

    /// The flush of a CGI exchange: nothing until the head is rendered, then the pump; the pipe
    /// is watched only while the body waits for output.
    func cgiFlush() -> Progress {
        guard cgi.headSent else { return flushInterim() }
        let progress = pump.run()
        cgi.process?.watch(.stdout, progress == .waiting && cgiBody.waitingForOutput)
        if progress == .waiting { connection.setDeadline(worker.config.cgiTimeout) }
        return progress
    }

    /// `complete`: `early` is the whole body (the program's output ended).
    private func renderCGIHead(_ head: CGIResponseHead, early: ArraySlice<UInt8>, complete: Bool) {
        let status = head.status ?? (head.location != nil ? 302 : 200)
        beginResponse(code: status)
        if let type = head.contentType { addHeader("Content-Type", type) }
        if let location = head.location { addHeader("Location", location) }
        for field in head.fields {
            pump.out.append(contentsOf: field.name)
            pump.out.append(ascii: ": ")
            pump.out.append(contentsOf: field.value)
            pump.out.append(ascii: "\r\n")
        }
        let framing: CGIBody.Framing
        if HTTPStatus.forbidsBody(status) {
            framing = .discard
        } else {
            if let length = head.contentLength {
                addHeader("Content-Length", decimal: length)
                framing = isHead ? .discard : .length(length)
            } else if complete {
                addHeader("Content-Length", decimal: early.count)
                framing = .discard
            } else if request.versionMinor >= 1 {
                addHeader("Transfer-Encoding", ascii: "chunked")
                framing = isHead ? .discard : .chunked
            } else {
                closeAfterResponse = true  // HTTP/1.0 without a length: the close ends the body
                framing = isHead ? .discard : .untilClose
            }
        }
        if !messageComplete && !cgi.inputRefused && request.versionMinor == 0 { closeAfterResponse = true }
        endHead()
        if complete && head.contentLength == nil && !HTTPStatus.forbidsBody(status) {
            if !isHead { pump.out.append(contentsOf: early) }
        } else {
            cgiBody.begin(framing: framing, early: early)
            pump.start(cgiBody)
        }
        cgi.headSent = true
        cgi.head = []
    }

    /// RFC 3875 §6.2.2: a local path in Location and no Status — answered as if the client had
    /// asked for that path (GET; HEAD stays HEAD). The program's body is not wanted.
    private func internalRedirect(to location: [UInt8]) {
        internalRedirects += 1
        endCGIRequest(abandon: false)
        guard internalRedirects <= 10 else {
            worker.logger.error("cgi: more than 10 internal redirects, last to \(String(decoding: location, as: UTF8.self))")
            respondWithError(.internalServerError, close: !messageComplete)
            phase = .responding
            drive()
            return
        }
        request.replaceTarget(location)
        if !isHead { request.method = HTTP_GET }
        resetPath()
        phase = .responding
        respond()
        guard isAttached else { return }
        if phase == .handler { return }  // a plugin or another program took it
        phase = .responding
        drive()
    }

    /// The program cannot give a response: 502 when nothing was sent yet, else the connection
    /// ends (the response is cut short).
    private func cgiFailed(_ reason: String) {
        worker.logger.error("cgi \(cgi.name): \(reason)", metadata: ["peer": "\(connection.peerDescription)"])
        endCGIRequest(abandon: true)
        respondWithError(.badGateway, close: !messageComplete)
        phase = .responding
        drive()
    }

    func cgiDeadlineExpired() {
        let seconds = Double(worker.config.cgiTimeout) / 1000
        if !cgi.headSent {
            worker.logger.error("cgi \(cgi.name): no response within \(seconds) s, ending it: 504", metadata: ["peer": "\(connection.peerDescription)"])
            endCGIRequest(abandon: true)
            respondWithError(.gatewayTimeout, close: !messageComplete)
            phase = .responding
            drive()
        } else if cgiBody.waitingForOutput {
            worker.logger.error("cgi \(cgi.name): no output for \(seconds) s, ending it and the response", metadata: ["peer": "\(connection.peerDescription)"])
            connection.close()
        } else {
            worker.logger.info("send stalled, closing", metadata: ["peer": "\(connection.peerDescription)"])
            connection.close()
        }
    }

    /// Input read, input written or output read: the program's timeout starts again.
    func cgiMadeProgress() {
        connection.setDeadline(worker.config.cgiTimeout)
    }

    /// Lets go of the program: at the response's end, or cut short (`abandon`: it is ended).
    func endCGIRequest(abandon: Bool) {
        guard cgi.isActive else { return }
        if let process = cgi.process {
            process.release(abandon: abandon)
        } else if cgi.holdsSlot {
            worker.cgiSlots?.give()
        }
        if pump.producer === cgiBody { pump.release() }
        cgi = CGIExchange()
    }
}
