import AWSParsing
import CHTTPParser
import CLinux
import Glibc
import Logging
import Synchronization

/// `--log-format`: the access-log line layout.
enum AccessLogFormat: String, CaseIterable, Sendable {
    /// Apache/nginx combined: `%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"`.
    case combined
    /// Apache common: `%h %l %u %t "%r" %>s %b`.
    case common
    /// One JSON object per line.
    case json
}

/// One access-log destination: a file (reopened on SIGUSR1) or standard error (`path` nil).
/// Workers name it by `index`; its descriptor is the writer thread's once that thread runs
/// (only it writes, reopens and closes it).
final class LogFile: @unchecked Sendable {
    let path: String?
    let index: Int
    fileprivate var fd: Int32

    fileprivate init(path: String?, index: Int) throws {
        self.path = path
        self.index = index
        fd = try path.map(LogFile.open) ?? 2
    }

    fileprivate static func open(_ path: String) throws(SyscallError) -> Int32 {
        try Sys.check("open") { Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644) }
    }
}

/// The one thread that writes access logs, for every worker and every file. Workers fill
/// buffers of whole lines and hand them over (`submit`); a write that blocks (a slow disk, a
/// pipe nobody reads) stalls only this thread. The queue between them is bounded: when it is
/// full the worker drops its buffer's lines and counts them instead of waiting. Buffers go back
/// to the workers once written, so the steady state allocates nothing.
final class AccessLogWriter: @unchecked Sendable {
    /// Lines lost because the queue was full or a write failed, since start. Read from any
    /// thread (the control loop's warning, metrics).
    static let droppedLineCount = Atomic<Int>(0)
    static var droppedLines: Int { droppedLineCount.load(ordering: .relaxed) }

    /// A worker hands a buffer over once it holds this many bytes (or on its tick). A line is
    /// at most about 20 KiB (three fields of at most 1 KiB, escaped up to six times), so a
    /// buffer of `bufferCapacity` never grows.
    static let handOverBytes = 32 * 1024
    static let bufferCapacity = 64 * 1024

    private struct Batch {
        var file: Int
        var bytes: [UInt8]
        var lines: Int
    }

    /// Guarded by `lock`: buffers waiting to be written, written ones waiting for a worker,
    /// and the requests to the thread.
    private struct State {
        var queue: [Batch] = []
        var spare: [[UInt8]] = []
        var reopen = false
        var stopping = false
        /// Every destination, by index; appended to (a reload may add a virtual host's file
        /// while the thread runs), and cut back only by `dropFiles`.
        var files: [LogFile] = []
        /// Destinations a failed reload opened: the thread closes them (it owns descriptors).
        var closing: [LogFile] = []
    }

    let format: AccessLogFormat
    /// Every destination now (a snapshot: the list grows, and shrinks only by `dropFiles`).
    var files: [LogFile] { locked { $0.files } }
    /// A pthread mutex rather than `Synchronization.Mutex`, like the loop's posted-work queue:
    /// ThreadSanitizer sees pthread locks (it did not see `Mutex`, and reported races inside it).
    private let lock: UnsafeMutablePointer<pthread_mutex_t>
    private var state = State()
    private let queueLimit: Int
    /// Wakes the thread: a first buffer queued, a reopen, the stop.
    private let wakeFD: Int32
    private var thread: pthread_t?
    private let ended = Atomic<Bool>(false)
    private let logger: Logger
    private var lastWriteErrorLog: Int64?

    init(format: AccessLogFormat, workers: Int, logger: Logger) throws {
        self.format = format
        self.logger = logger
        // Room for a few seconds of one-per-tick hand-overs of every worker, and for bursts.
        queueLimit = max(16, 8 * workers)
        wakeFD = try Sys.eventfd()
        lock = .allocate(capacity: 1)
        pthread_mutex_init(lock, nil)
        state.queue.reserveCapacity(queueLimit)
        state.spare.reserveCapacity(2 * queueLimit)
    }

    private func locked<R>(_ body: (inout State) -> R) -> R {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return body(&state)
    }

    /// The destination for `path` (nil: standard error), opened now; one per distinct path.
    /// Control thread (at start, and when a reload names a new file).
    func file(path: String?) throws -> LogFile {
        if let known = files.first(where: { $0.path == path }) { return known }
        let file = try LogFile(path: path, index: files.count)
        // Published under the lock: the writer thread reads the list under it too, and a
        // worker hands over lines for a file only after a reload that named it was posted.
        locked { $0.files.append(file) }
        return file
    }

    /// How many destinations there are now: a reload notes it before it opens new ones.
    var fileCount: Int { locked { $0.files.count } }

    /// Forgets the destinations opened since there were `count`: a reload that named new files
    /// and then failed. No worker was told of them (the sites that name them were never
    /// published), so no line is queued for them; the writer thread closes their descriptors.
    func dropFiles(from count: Int) {
        let dropped = locked { s -> Bool in
            guard s.files.count > count else { return false }
            s.closing.append(contentsOf: s.files[count...])
            s.files.removeSubrange(count...)
            return true
        }
        if dropped { Sys.signalEventfd(wakeFD) }
    }

    func start() throws {
        thread = try WorkerThread.spawn(name: "aws-access-log") { [self] in run() }
    }

    /// From a worker: queues `buffer` (whole lines for `file`) and leaves an empty buffer in its
    /// place; when the queue is full, drops the lines. Takes only the mutex, never waits on I/O.
    func submit(file: Int, buffer: inout [UInt8], lines: Int) {
        guard lines > 0 else { return }
        var wake = false
        let queued = locked { s -> Bool in
            guard s.queue.count < queueLimit else { return false }
            wake = s.queue.isEmpty
            // Swapped rather than copied, here under the lock: the queued buffer stays uniquely
            // referenced, so the writer empties it for reuse without a new allocation.
            s.queue.append(Batch(file: file, bytes: [], lines: lines))
            swap(&s.queue[s.queue.count - 1].bytes, &buffer)
            if let spare = s.spare.popLast() { buffer = spare }
            return true
        }
        if queued {
            if buffer.capacity < AccessLogWriter.bufferCapacity { buffer.reserveCapacity(AccessLogWriter.bufferCapacity) }
            if wake { Sys.signalEventfd(wakeFD) }
        } else {
            buffer.removeAll(keepingCapacity: true)
            AccessLogWriter.droppedLineCount.add(lines, ordering: .relaxed)
        }
    }

    /// SIGUSR1, from the control thread: the writer reopens every file by its path (after
    /// writing what it holds), so a file renamed by logrotate is left and a new one started.
    func reopen() {
        locked { $0.reopen = true }
        Sys.signalEventfd(wakeFD)
    }

    /// At exit, after the workers handed over their last lines: the writer writes everything
    /// queued and ends. A destination that stays blocked is given up after `graceMillis`.
    func finish(graceMillis: Int64) {
        locked { $0.stopping = true }
        Sys.signalEventfd(wakeFD)
        guard let thread else { return }
        let deadline = Sys.monotonicMillis() + graceMillis
        while !ended.load(ordering: .acquiring) && Sys.monotonicMillis() < deadline { usleep(10_000) }
        if ended.load(ordering: .acquiring) {
            WorkerThread.join(thread)
            for file in files where file.path != nil { Sys.close(file.fd) }
            Sys.close(wakeFD)
        } else {
            // The thread is stuck in a write: what it holds and what is queued is not written.
            let queued = locked { s in s.queue.reduce(0) { $0 + $1.lines } }
            AccessLogWriter.droppedLineCount.add(queued, ordering: .relaxed)
            logger.warning("access log: the destination takes no bytes; \(queued) queued line(s) and the batch being written are lost at exit")
        }
    }

    // MARK: the writer thread

    private func run() {
        var batch: [Batch] = []
        batch.reserveCapacity(queueLimit)
        while true {
            var pfd = pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, -1)
            _ = Sys.drainEventfd(wakeFD)
            var reopen = false, stopping = false
            var files: [LogFile] = [], closing: [LogFile] = []
            locked { s in
                files = s.files
                swap(&s.closing, &closing)
                swap(&s.queue, &batch)
                reopen = s.reopen
                s.reopen = false
                stopping = s.stopping
            }
            for i in batch.indices {
                write(files[batch[i].file], batch[i].bytes)
                batch[i].bytes.removeAll(keepingCapacity: true)
            }
            locked { s in
                for i in batch.indices {
                    s.spare.append([])
                    swap(&s.spare[s.spare.count - 1], &batch[i].bytes)
                }
            }
            batch.removeAll(keepingCapacity: true)
            if reopen { reopenFiles(files) }
            for file in closing where file.path != nil { Sys.close(file.fd) }
            if stopping { break }
        }
        ended.store(true, ordering: .releasing)
    }

    /// Writes whole lines, at most 4 KiB (PIPE_BUF) at a time: on a pipe shared with the
    /// server's other log lines (standard error) such a write is atomic, so lines never mix.
    private func write(_ file: LogFile, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { raw in
            var sent = 0
            while sent < raw.count {
                var end = min(raw.count, sent + 4096)
                if end < raw.count {
                    var cut = end
                    while cut > sent && raw[cut - 1] != 10 { cut -= 1 }
                    if cut > sent { end = cut }
                }
                let n = Glibc.write(file.fd, raw.baseAddress! + sent, end - sent)
                if n > 0 { sent += n; continue }
                let error = n < 0 ? errno : EIO
                if error == EINTR { continue }
                if error == EAGAIN {
                    // An inherited non-blocking descriptor (standard error): wait here, off the workers.
                    var pfd = pollfd(fd: file.fd, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&pfd, 1, -1)
                    continue
                }
                var lost = 0
                for b in raw[sent...] where b == 10 { lost += 1 }
                AccessLogWriter.droppedLineCount.add(lost, ordering: .relaxed)
                let now = Sys.monotonicMillis()
                if lastWriteErrorLog.map({ now - $0 >= 10_000 }) ?? true {
                    lastWriteErrorLog = now
                    logger.error("access log \(file.path ?? "(standard error)"): write failed: \(String(cString: strerror(error))); \(lost) line(s) dropped")
                }
                return
            }
        }
    }

    private func reopenFiles(_ files: [LogFile]) {
        var reopened = 0
        for file in files {
            guard let path = file.path else { continue }
            do {
                let fd = try LogFile.open(path)
                Sys.close(file.fd)
                file.fd = fd
                reopened += 1
            } catch {
                logger.error("access log \(path): reopen failed (\(error)); still writing to the file open before")
            }
        }
        if reopened > 0 {
            logger.notice("access log: reopened \(reopened) file(s)")
        } else if files.allSatisfy({ $0.path == nil }) {
            logger.notice("access log: standard error is not reopened")
        }
    }
}

/// Warns about dropped lines on the control loop's tick, at most once per `interval`.
final class DroppedLinesReporter {
    private var reported = 0
    private var lastReport: Int64?
    private let interval: Int64
    init(intervalMillis: Int64 = 10_000) { interval = intervalMillis }

    /// `force`: at exit, whatever the interval.
    func tick(now: Int64, logger: Logger, force: Bool = false) {
        let total = AccessLogWriter.droppedLines
        guard total > reported else { return }
        if !force, let last = lastReport, now - last < interval { return }
        logger.warning("access log: \(total - reported) line(s) dropped (the destination is not keeping up or failing; \(total) since start)")
        reported = total
        lastReport = now
    }
}

/// What one access-log line says, gathered by the exchange when its request ends.
struct AccessRecord {
    var client: PeerAddress
    /// The request head arrived: method, target and version are known.
    var hasHead: Bool
    var status: Int
    var bodyBytes: Int
    var micros: Int
    var worker: Int
    /// The TLS protocol version (e.g. "TLSv1.3"), nil over plain TCP.
    var tlsVersion: UnsafeRawBufferPointer?
    var plugin: String?
}

/// One worker's side of the access log: a buffer per destination file, filled with whole
/// lines on the loop thread and handed to the writer thread. Used only on its worker's thread.
final class AccessLog {
    /// Lines dropped since start (queue full or write failed), for metrics.
    static var droppedLines: Int { AccessLogWriter.droppedLines }

    let writer: AccessLogWriter
    let format: AccessLogFormat
    private var buffers: [[UInt8]]
    private var lineCounts: [Int]
    /// `10/Oct/2000:13:55:36 +0000` and `2000-10-10T13:55:36Z`, formatted once a second.
    private var apacheTime = [UInt8](repeating: 0, count: 26)
    private var isoTime = [UInt8](repeating: 0, count: 20)
    private var timeSecond = -1

    init(writer: AccessLogWriter) {
        self.writer = writer
        format = writer.format
        buffers = writer.files.map { _ in
            var b: [UInt8] = []
            b.reserveCapacity(AccessLogWriter.bufferCapacity)
            return b
        }
        lineCounts = writer.files.map { _ in 0 }
    }

    deinit { flush() }

    /// A file a reload registered after this worker started.
    private func addBuffers(upTo file: Int) {
        while buffers.count <= file {
            var b: [UInt8] = []
            b.reserveCapacity(AccessLogWriter.bufferCapacity)
            buffers.append(b)
            lineCounts.append(0)
        }
    }

    /// Hands every non-empty buffer to the writer (each tick, and at exit).
    func flush() {
        for file in buffers.indices where lineCounts[file] > 0 { handOver(file) }
    }

    private func handOver(_ file: Int) {
        writer.submit(file: file, buffer: &buffers[file], lines: lineCounts[file])
        lineCounts[file] = 0
    }

    /// Appends one line for `record` to `file`'s buffer. `request` is read only if `record.hasHead`.
    func log(_ record: AccessRecord, request: RequestHead, file: Int = 0) {
        if file >= buffers.count { addBuffers(upTo: file) }
        refreshTime()
        switch format {
        case .combined: apacheLine(record, request, &buffers[file], combined: true)
        case .common: apacheLine(record, request, &buffers[file], combined: false)
        case .json: jsonLine(record, request, &buffers[file])
        }
        lineCounts[file] += 1
        if buffers[file].count >= AccessLogWriter.handOverBytes { handOver(file) }
    }

    // MARK: formats

    /// Each logged field of the request is cut at this many bytes (before escaping).
    private static let fieldLimit = 1024

    private func apacheLine(_ r: AccessRecord, _ request: RequestHead, _ out: inout [UInt8], combined: Bool) {
        r.client.appendHost(to: &out)
        out.append(ascii: " - - [")
        out.append(contentsOf: apacheTime)
        out.append(ascii: "] \"")
        if r.hasHead {
            let method = http_method_str(request.method)!
            out.append(contentsOf: UnsafeRawBufferPointer(start: method, count: strlen(method)))
            out.append(32)
            request.storage.withUnsafeBytes { raw in
                Self.apacheEscape(UnsafeRawBufferPointer(rebasing: raw[request.target].prefix(Self.fieldLimit)), into: &out)
            }
            out.append(32)
            appendProtocol(request, &out)
        } else {
            out.append(45)
        }
        out.append(ascii: "\" ")
        out.append(decimal: r.status)
        out.append(32)
        if r.bodyBytes > 0 { out.append(decimal: r.bodyBytes) } else { out.append(45) }
        if combined {
            out.append(ascii: " \"")
            apacheHeader(request, r.hasHead ? Self.referer : nil, &out)
            out.append(ascii: "\" \"")
            apacheHeader(request, r.hasHead ? Self.userAgent : nil, &out)
            out.append(34)
        }
        out.append(10)
    }

    private func apacheHeader(_ request: RequestHead, _ name: [UInt8]?, _ out: inout [UInt8]) {
        guard let name, let value = Self.header(request, name) else { out.append(45); return }
        request.storage.withUnsafeBytes { raw in
            Self.apacheEscape(UnsafeRawBufferPointer(rebasing: raw[value].prefix(Self.fieldLimit)), into: &out)
        }
    }

    private func jsonLine(_ r: AccessRecord, _ request: RequestHead, _ out: inout [UInt8]) {
        out.append(ascii: "{\"time\":\"")
        out.append(contentsOf: isoTime)
        out.append(ascii: "\",\"client\":\"")
        r.client.appendHost(to: &out)
        out.append(ascii: "\",\"method\":")
        if r.hasHead {
            out.append(34)
            let method = http_method_str(request.method)!
            out.append(contentsOf: UnsafeRawBufferPointer(start: method, count: strlen(method)))
            out.append(ascii: "\",\"target\":\"")
            request.storage.withUnsafeBytes { raw in
                Self.jsonEscape(UnsafeRawBufferPointer(rebasing: raw[request.target].prefix(Self.fieldLimit)), into: &out)
            }
            out.append(ascii: "\",\"protocol\":\"")
            appendProtocol(request, &out)
            out.append(34)
        } else {
            out.append(ascii: "null,\"target\":null,\"protocol\":null")
        }
        out.append(ascii: ",\"status\":")
        out.append(decimal: r.status)
        out.append(ascii: ",\"bytes\":")
        out.append(decimal: r.bodyBytes)
        out.append(ascii: ",\"referer\":")
        jsonHeader(request, r.hasHead ? Self.referer : nil, &out)
        out.append(ascii: ",\"user_agent\":")
        jsonHeader(request, r.hasHead ? Self.userAgent : nil, &out)
        out.append(ascii: ",\"duration_ms\":")
        out.append(decimal: r.micros / 1000)
        out.append(46)
        let frac = r.micros % 1000
        if frac < 100 { out.append(48) }
        if frac < 10 { out.append(48) }
        out.append(decimal: frac)
        out.append(ascii: ",\"worker\":")
        out.append(decimal: r.worker)
        out.append(ascii: ",\"tls\":")
        if let tls = r.tlsVersion {
            out.append(34)
            Self.jsonEscape(tls, into: &out)
            out.append(34)
        } else {
            out.append(ascii: "null")
        }
        out.append(ascii: ",\"plugin\":")
        if let plugin = r.plugin {
            out.append(34)
            var name = plugin
            name.withUTF8 { Self.jsonEscape(UnsafeRawBufferPointer($0), into: &out) }
            out.append(34)
        } else {
            out.append(ascii: "null")
        }
        out.append(ascii: "}\n")
    }

    private func jsonHeader(_ request: RequestHead, _ name: [UInt8]?, _ out: inout [UInt8]) {
        guard let name, let value = Self.header(request, name) else { out.append(ascii: "null"); return }
        out.append(34)
        request.storage.withUnsafeBytes { raw in
            Self.jsonEscape(UnsafeRawBufferPointer(rebasing: raw[value].prefix(Self.fieldLimit)), into: &out)
        }
        out.append(34)
    }

    private func appendProtocol(_ request: RequestHead, _ out: inout [UInt8]) {
        out.append(ascii: "HTTP/")
        out.append(decimal: Int(request.versionMajor))
        out.append(46)
        out.append(decimal: Int(request.versionMinor))
    }

    private static let referer = Array("referer".utf8)
    private static let userAgent = Array("user-agent".utf8)

    /// The first field named `name` (lowercase), trimmed. A scan of the fields: they are few,
    /// and it happens once per logged request.
    private static func header(_ request: RequestHead, _ name: [UInt8]) -> Range<Int>? {
        for field in request.headers where field.name.count == name.count && request.equalsIgnoringCase(field.name, name) {
            return request.trimmed(field.value)
        }
        return nil
    }

    // MARK: escaping

    private static let hexDigits: StaticString = "0123456789abcdef"

    /// Like Apache's `ap_escape_logitem`: `"` and `\` get a backslash, control and non-ASCII
    /// bytes become `\xhh`, so a field never ends early or forges a line.
    static func apacheEscape(_ bytes: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        for b in bytes {
            if b == 34 || b == 92 {
                out.append(92); out.append(b)
            } else if b < 0x20 || b >= 0x7f {
                out.append(92); out.append(120)
                out.append(hexDigits.utf8Start[Int(b >> 4)]); out.append(hexDigits.utf8Start[Int(b & 15)])
            } else {
                out.append(b)
            }
        }
    }

    /// A JSON string's content: `"` `\` and control bytes escaped; valid UTF-8 sequences kept,
    /// any other byte written as `\u00hh` (its Latin-1 reading), so the line is always valid JSON.
    static func jsonEscape(_ bytes: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            if b == 34 || b == 92 {
                out.append(92); out.append(b); i += 1
            } else if b < 0x20 || b == 0x7f {
                appendUnicodeEscape(b, &out); i += 1
            } else if b < 0x80 {
                out.append(b); i += 1
            } else {
                let n = utf8SequenceLength(bytes, at: i)
                if n == 0 {
                    appendUnicodeEscape(b, &out); i += 1
                } else {
                    for k in i..<(i + n) { out.append(bytes[k]) }
                    i += n
                }
            }
        }
    }

    private static func appendUnicodeEscape(_ b: UInt8, _ out: inout [UInt8]) {
        out.append(ascii: "\\u00")
        out.append(hexDigits.utf8Start[Int(b >> 4)]); out.append(hexDigits.utf8Start[Int(b & 15)])
    }

    /// The length of the well-formed UTF-8 sequence (RFC 3629: no overlong forms, no
    /// surrogates, nothing past U+10FFFF) starting at `i` with a byte ≥ 0x80; 0 if there is none.
    static func utf8SequenceLength(_ bytes: UnsafeRawBufferPointer, at i: Int) -> Int {
        let b0 = bytes[i]
        let length: Int
        var low: UInt8 = 0x80, high: UInt8 = 0xbf
        switch b0 {
        case 0xc2...0xdf: length = 2
        case 0xe0: length = 3; low = 0xa0
        case 0xe1...0xec, 0xee...0xef: length = 3
        case 0xed: length = 3; high = 0x9f
        case 0xf0: length = 4; low = 0x90
        case 0xf1...0xf3: length = 4
        case 0xf4: length = 4; high = 0x8f
        default: return 0
        }
        guard i + length <= bytes.count else { return 0 }
        let b1 = bytes[i + 1]
        guard b1 >= low && b1 <= high else { return 0 }
        for k in 2..<length where bytes[i + k] & 0xc0 != 0x80 { return 0 }
        return length
    }

    // MARK: time

    private static let months: StaticString = "JanFebMarAprMayJunJulAugSepOctNovDec"

    private func refreshTime() {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &ts)
        let s = Int(ts.tv_sec)
        guard s != timeSecond else { return }
        timeSecond = s
        var t = time_t(s)
        var tm = Glibc.tm()
        gmtime_r(&t, &tm)
        let year = Int(tm.tm_year) + 1900, month = Int(tm.tm_mon), day = Int(tm.tm_mday)
        let hour = Int(tm.tm_hour), minute = Int(tm.tm_min), second = Int(tm.tm_sec)
        apacheTime.withUnsafeMutableBufferPointer { a in
            Self.digits(day, 2, a, at: 0); a[2] = 47
            for k in 0..<3 { a[3 + k] = Self.months.utf8Start[3 * month + k] }
            a[6] = 47; Self.digits(year, 4, a, at: 7); a[11] = 58
            Self.digits(hour, 2, a, at: 12); a[14] = 58; Self.digits(minute, 2, a, at: 15); a[17] = 58
            Self.digits(second, 2, a, at: 18)
            a[20] = 32; a[21] = 43; a[22] = 48; a[23] = 48; a[24] = 48; a[25] = 48   // " +0000"
        }
        isoTime.withUnsafeMutableBufferPointer { a in
            Self.digits(year, 4, a, at: 0); a[4] = 45; Self.digits(month + 1, 2, a, at: 5); a[7] = 45
            Self.digits(day, 2, a, at: 8); a[10] = 84
            Self.digits(hour, 2, a, at: 11); a[13] = 58; Self.digits(minute, 2, a, at: 14); a[16] = 58
            Self.digits(second, 2, a, at: 17); a[19] = 90
        }
    }

    private static func digits(_ value: Int, _ width: Int, _ a: UnsafeMutableBufferPointer<UInt8>, at start: Int) {
        var v = value
        for k in stride(from: start + width - 1, through: start, by: -1) {
            a[k] = UInt8(48 + v % 10)
            v /= 10
        }
    }
}
