import CLinux
import Glibc
import Logging

/// `--metrics ADDR:PORT`: an IPv4 address, or an IPv6 one in brackets, and a port.
struct MetricsEndpoint: Sendable, Equatable, CustomStringConvertible {
    let address: String
    let port: UInt16

    init?(_ argument: String) {
        let host: Substring, portText: Substring
        if argument.hasPrefix("[") {
            guard let close = argument.firstIndex(of: "]"), argument[argument.index(after: close)...].hasPrefix(":") else { return nil }
            host = argument[argument.index(after: argument.startIndex)..<close]
            portText = argument[argument.index(close, offsetBy: 2)...]
            var v6 = in6_addr()
            guard inet_pton(AF_INET6, String(host), &v6) == 1 else { return nil }
        } else {
            guard let colon = argument.lastIndex(of: ":") else { return nil }
            host = argument[..<colon]
            portText = argument[argument.index(after: colon)...]
            var v4 = in_addr()
            guard inet_pton(AF_INET, String(host), &v4) == 1 else { return nil }
        }
        guard portText.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let port = UInt16(portText), port > 0 else { return nil }
        address = String(host)
        self.port = port
    }

    var isIPv6: Bool { address.contains(":") }
    var description: String { isIPv6 ? "[\(address)]:\(port)" : "\(address):\(port)" }
}

/// The `/metrics` listener: its own socket and its own thread, apart from the workers, so a
/// busy worker never delays a scrape and a scrape never touches a worker's loop (it only reads
/// the workers' counters, see `WorkerMetrics`). One scrape at a time, each connection closed
/// after its response; a client gets `clientMillis` to send its request and take the answer.
final class MetricsListener: @unchecked Sendable {
    let endpoint: MetricsEndpoint
    private let fd: Int32
    /// Written by `stop` (control thread) to end the serving thread's poll.
    private let stopFD: Int32
    private let logger: Logger
    private var thread: pthread_t?
    static let clientMillis: Int32 = 2000

    /// Binds and listens now (before privileges are dropped); serving starts with `start`.
    init(endpoint: MetricsEndpoint, logger: Logger) throws {
        self.endpoint = endpoint
        self.logger = logger
        let family = endpoint.isIPv6 ? AF_INET6 : AF_INET
        let fd = try Sys.socket(family: family)
        do {
            try Sys.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, 1)
            var v4 = sockaddr_in(), v6 = sockaddr_in6()
            if endpoint.isIPv6 {
                v6.sin6_family = sa_family_t(AF_INET6)
                v6.sin6_port = endpoint.port.bigEndian
                _ = inet_pton(AF_INET6, endpoint.address, &v6.sin6_addr)
            } else {
                v4.sin_family = sa_family_t(AF_INET)
                v4.sin_port = endpoint.port.bigEndian
                _ = inet_pton(AF_INET, endpoint.address, &v4.sin_addr)
            }
            _ = try Sys.check("bind") {
                endpoint.isIPv6
                    ? withUnsafePointer(to: &v6) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
                    : withUnsafePointer(to: &v4) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            }
            try Sys.listen(fd, backlog: 64)
            stopFD = try Sys.eventfd()
        } catch {
            Sys.close(fd)
            throw ConfigError("--metrics \(endpoint): \(error)")
        }
        self.fd = fd
    }

    /// Starts the serving thread over these workers' counters.
    func start(_ workers: [WorkerMetrics]) throws {
        thread = try WorkerThread.spawn(name: "aws-metrics") { [self] in serve(workers) }
        logger.info("metrics on http://\(endpoint)/metrics")
    }

    /// Ends the serving thread (after the scrape in progress, if any) and closes the socket.
    func stop() {
        if let thread {
            Sys.signalEventfd(stopFD)
            WorkerThread.join(thread)
        }
        thread = nil
        Sys.close(fd)
        Sys.close(stopFD)
    }

    private func serve(_ workers: [WorkerMetrics]) {
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: stopFD, events: Int16(POLLIN), revents: 0)]
        var peer = sockaddr_storage()
        var failures = LogThrottle()
        while true {
            let r = poll(&fds, 2, -1)
            if r < 0 && errno == EINTR { continue }
            if fds[1].revents != 0 { return }
            guard r > 0 else { continue }
            let client: Int32
            do {
                guard let accepted = try Sys.accept(fd, peer: &peer) else { continue }
                client = accepted
            } catch {
                // Out of descriptors: the workers log it too; wait rather than spin.
                if let n = failures.note(now: Sys.monotonicMillis()) { logger.error("metrics: \(error) (\(n) time(s))") }
                usleep(100_000)
                continue
            }
            answer(client, workers)
            Sys.close(client)
        }
    }

    /// Reads one request head and answers it; the caller closes the socket.
    private func answer(_ client: Int32, _ workers: [WorkerMetrics]) {
        let deadline = Sys.monotonicMillis() + Int64(MetricsListener.clientMillis)
        var head: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !head.containsHeadEnd {
            guard head.count < 8192, wait(client, Int16(POLLIN), until: deadline) else { return }
            let n = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            guard n > 0 else { return }
            head.append(contentsOf: buffer[..<n])
        }
        let response = MetricsListener.response(to: head) { MetricsText.render(workers.map(MetricsSnapshot.init)) }
        var sent = 0
        while sent < response.count {
            let n = response.withUnsafeBytes { send(client, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n < 0 && (errno == EINTR || errno == EAGAIN) {
                guard wait(client, Int16(POLLOUT), until: deadline) else { return }
                continue
            }
            guard n > 0 else { return }
            sent += n
        }
        // A request body left unread would turn the close into a reset that can destroy the
        // response in the client's receive queue.
        Sys.shutdownWrite(client)
        while recv(client, &buffer, buffer.count, Int32(MSG_DONTWAIT)) > 0 {}
    }

    private func wait(_ fd: Int32, _ events: Int16, until deadline: Int64) -> Bool {
        while true {
            let left = deadline - Sys.monotonicMillis()
            guard left > 0 else { return false }
            var p = pollfd(fd: fd, events: events, revents: 0)
            let r = poll(&p, 1, Int32(left))
            if r < 0 && errno == EINTR { continue }
            return r > 0
        }
    }

    /// The whole response to a request head: GET or HEAD /metrics (a query is ignored) gets the
    /// text from `body`; another path 404, another method 405, a malformed line 400.
    static func response(to head: [UInt8], body: () -> String) -> [UInt8] {
        let line = head.prefix { $0 != 13 && $0 != 10 }
        let parts = line.split(separator: 32, omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[2].starts(with: Array("HTTP/1.".utf8)) else {
            return compose("400 Bad Request", type: "text/plain; charset=utf-8", body: "bad request\n", head: false)
        }
        let method = String(decoding: parts[0], as: UTF8.self)
        let path = parts[1].prefix { $0 != 63 }
        guard path.elementsEqual("/metrics".utf8) else {
            return compose("404 Not Found", type: "text/plain; charset=utf-8", body: "not found: the metrics are at /metrics\n", head: method == "HEAD")
        }
        guard method == "GET" || method == "HEAD" else {
            return compose("405 Method Not Allowed", type: "text/plain; charset=utf-8", body: "method not allowed\n",
                           head: false, extra: "Allow: GET, HEAD\r\n")
        }
        return compose("200 OK", type: MetricsText.contentType, body: body(), head: method == "HEAD")
    }

    private static func compose(_ status: String, type: String, body: String, head: Bool, extra: String = "") -> [UInt8] {
        let bytes = Array(body.utf8)
        var out = Array("HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(bytes.count)\r\n\(extra)Connection: close\r\n\r\n".utf8)
        if !head { out += bytes }
        return out
    }
}

private extension Array where Element == UInt8 {
    /// The blank line that ends a head (CRLF CRLF, or bare LF LF).
    var containsHeadEnd: Bool {
        guard count >= 2 else { return false }
        for i in 1..<count where self[i] == 10 {
            if self[i - 1] == 10 || (i >= 3 && self[i - 1] == 13 && self[i - 2] == 10 && self[i - 3] == 13) { return true }
        }
        return false
    }
}
