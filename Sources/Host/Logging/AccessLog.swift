import AWSParsing
import Glibc
import Logging

/// The sink of the access log: lines are appended to a per-worker buffer and written in batches
/// (when it fills, on every loop tick, and at exit) so logging costs no syscall per request.
/// Lines look like the swift-log lines on stderr: `<time> info aws.access: <fields>`.
final class AccessLog {
    private let fd: Int32
    private let ownsFD: Bool
    private var buffer: [UInt8] = []
    private var stamp: [UInt8] = []
    private var stampSecond = -1

    /// `path` nil means standard error.
    init(path: String?) throws {
        if let path {
            fd = try Sys.check("open") { Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644) }
            ownsFD = true
        } else {
            fd = 2
            ownsFD = false
        }
        buffer.reserveCapacity(32 * 1024)
    }

    deinit {
        flush()
        if ownsFD { Sys.close(fd) }
    }

    /// Starts a line; the caller appends fields with `line` then calls `endLine`.
    func beginLine() {
        refreshStamp()
        buffer.append(contentsOf: stamp)
        buffer.append(ascii: " info aws.access: ")
    }

    func append(_ bytes: some Collection<UInt8>) { buffer.append(contentsOf: bytes) }
    func append(ascii s: StaticString) { buffer.append(ascii: s) }
    func append(decimal v: Int) { buffer.append(decimal: v) }
    func append(byte b: UInt8) { buffer.append(b) }

    func endLine() {
        buffer.append(10)
        if buffer.count >= 16 * 1024 { flush() }
    }

    /// Writes the buffered lines. Every worker writes to the same descriptor: a write of at most
    /// PIPE_BUF (4 KiB) bytes to a pipe is atomic, so each write is cut after a whole line within
    /// that size, so lines of different workers never interleave (a line is at most about 1 KiB).
    func flush() {
        var sent = 0
        let atomicWrite = 4096
        while sent < buffer.count {
            var end = min(buffer.count, sent + atomicWrite)
            if end < buffer.count {
                var cut = end
                while cut > sent && buffer[cut - 1] != 10 { cut -= 1 }
                if cut > sent { end = cut }
            }
            let n = buffer.withUnsafeBytes { write(fd, $0.baseAddress! + sent, end - sent) }
            if n <= 0 { break }  // a full or broken log must not stall the loop
            sent += n
        }
        buffer.removeAll(keepingCapacity: true)
    }

    private func refreshStamp() {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &ts)
        let s = Int(ts.tv_sec)
        guard s != stampSecond else { return }
        stampSecond = s
        var t = time_t(s)
        var tm = Glibc.tm()
        gmtime_r(&t, &tm)
        stamp.removeAll(keepingCapacity: true)
        func pad(_ v: Int32, _ width: Int) {
            var digits = [UInt8](); var n = Int(v)
            for _ in 0..<width { digits.append(UInt8(48 + n % 10)); n /= 10 }
            stamp.append(contentsOf: digits.reversed())
        }
        pad(tm.tm_year + 1900, 4); stamp.append(45); pad(tm.tm_mon + 1, 2); stamp.append(45); pad(tm.tm_mday, 2)
        stamp.append(84); pad(tm.tm_hour, 2); stamp.append(58); pad(tm.tm_min, 2); stamp.append(58); pad(tm.tm_sec, 2)
        stamp.append(contentsOf: Array("+0000".utf8))
    }
}

/// swift-log's handler for the `aws.access` logger: writes into one worker's `AccessLog`. Each
/// worker has its own logger and sink and uses them only on its loop thread.
struct AccessLogHandler: LogHandler, @unchecked Sendable {
    let sink: AccessLog
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        sink.beginLine()
        sink.append(event.message.description.utf8)
        sink.endLine()
    }
}
