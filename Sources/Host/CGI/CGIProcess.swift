import CLinux
import Glibc

/// A running CGI program and the three pipes to it, in its worker's event loop. The worker owns
/// the process from spawn until it is reaped (through a pidfd in epoll) and every pipe is
/// closed; the exchange serving the request uses it meanwhile and lets go at the response's end.
/// A script whose client left is ended with SIGTERM to its process group, and SIGKILL two
/// seconds later if it is still there.
///
/// Every descriptor here has this one owner and is closed exactly once (`closePipe`, `reaped`).
/// Loop thread only.
final class CGIProcess {
    enum Pipe { case stdin, stdout, stderr }

    unowned(unsafe) let worker: Worker
    /// The program's file name, for log lines.
    let name: String
    let pid: Int32
    private var pidfd: Int32
    private(set) var stdinFD: Int32
    private(set) var stdoutFD: Int32
    private(set) var stderrFD: Int32
    private var watched: Set<Int32> = []
    /// The exchange reading the output, while it does (and its generation then). Weak: a worker
    /// frees idle spare exchanges (`Worker.trimPools`), and a process that outlived its request
    /// must find nil there, never freed memory.
    private(set) weak var exchange: Exchange?
    private var exchangeGeneration: UInt32 = 0
    private(set) var exited = false
    /// When SIGKILL follows the SIGTERM of `terminate`.
    private(set) var killAt: Int64 = .max
    private var stderrLine: [UInt8] = []
    private var ports: [Port] = []

    var isFinished: Bool { exited && stdinFD < 0 && stdoutFD < 0 && stderrFD < 0 }

    /// Starts `program` in `directory` with `environment`. `input`: a descriptor to give the
    /// program as its stdin (the worker's /dev/null for a request without a body) instead of a
    /// pipe. Throws with the reason it could not.
    init(worker: Worker, name: String, program: String, directory: String, environment: [[UInt8]], input: Int32?,
         exchange: Exchange) throws(SyscallError) {
        self.worker = worker
        self.name = name
        var fds: [Int32] = []
        func pipe(parentEnd: Int32) throws(SyscallError) -> (Int32, Int32) {
            var p: [Int32] = [-1, -1]
            guard aws_cgi_pipe(&p, parentEnd) == 0 else {
                let e = errno
                for fd in fds { Sys.close(fd) }
                throw SyscallError(call: "pipe2", errno: e)
            }
            fds += p
            return (p[0], p[1])
        }
        let (inRead, inWrite): (Int32, Int32)
        if let input { (inRead, inWrite) = (input, -1) } else { (inRead, inWrite) = try pipe(parentEnd: 1) }
        let (outRead, outWrite) = try pipe(parentEnd: 0)
        let (errRead, errWrite) = try pipe(parentEnd: 0)
        // Environment strings as one NUL-separated block with a pointer array into it.
        var block: [CChar] = []
        var offsets: [Int] = []
        for v in environment {
            offsets.append(block.count)
            block.append(contentsOf: v.map { CChar(bitPattern: $0) })
            block.append(0)
        }
        let spawned: Int32 = block.withUnsafeBufferPointer { base in
            var envp: [UnsafeMutablePointer<CChar>?] = offsets.map { UnsafeMutablePointer(mutating: base.baseAddress! + $0) }
            envp.append(nil)
            return aws_spawn_cgi(program, envp, directory, inRead, outWrite, errWrite)
        }
        // The child's ends live on in the child only.
        for fd in [input == nil ? inRead : -1, outWrite, errWrite] where fd >= 0 { Sys.close(fd) }
        guard spawned > 0 else {
            for fd in [inWrite, outRead, errRead] where fd >= 0 { Sys.close(fd) }
            throw SyscallError(call: "posix_spawn", errno: -spawned)
        }
        pid = spawned
        stdinFD = inWrite
        stdoutFD = outRead
        stderrFD = errRead
        pidfd = aws_pidfd_open(spawned)
        self.exchange = exchange
        exchangeGeneration = exchange.generation
        if pidfd < 0 {
            // Without a pidfd the child could not be reaped from the loop: end it now.
            let e = errno
            _ = kill(-spawned, SIGKILL)
            var status: Int32 = 0
            _ = waitpid(spawned, &status, 0)
            exited = true
            for fd in [inWrite, outRead, errRead] where fd >= 0 { Sys.close(fd) }
            stdinFD = -1; stdoutFD = -1; stderrFD = -1
            throw SyscallError(call: "pidfd_open", errno: e)
        }
        ports = [Port(self, .stdin), Port(self, .stdout), Port(self, .stderr), Port(self, nil)]
    }

    /// Puts the process in the worker's loop (its exit and its stderr); when that fails it is
    /// killed and reaped at once.
    func startWatching() throws(SyscallError) {
        do {
            try worker.loop.register(pidfd, ports[3], .readable)
            try worker.loop.register(stderrFD, ports[2], .readable)
            watched.insert(stderrFD)
        } catch {
            reapNow()
            throw error
        }
    }

    /// Kills the program and waits for it (blocking: only where the loop cannot do it — a failed
    /// start, the server's exit), then closes everything.
    func reapNow() {
        if !exited {
            _ = kill(-pid, SIGKILL)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            exited = true
        }
        if pidfd >= 0 {
            worker.loop.unregister(pidfd)
            Sys.close(pidfd)
            pidfd = -1
        }
        exchange = nil
        for pipe in [Pipe.stdin, .stdout, .stderr] { closePipe(pipe) }
    }

    // MARK: the exchange's side

    /// Reads the program's output: bytes, 0 at its end, nil when none is there yet.
    func readOutput(_ buffer: UnsafeMutableRawPointer, _ count: Int) throws(SyscallError) -> Int? {
        guard stdoutFD >= 0 else { return 0 }
        while true {
            let n = Glibc.read(stdoutFD, buffer, count)
            if n >= 0 { return n }
            switch errno {
            case EINTR: continue
            case EAGAIN: return nil
            default: throw SyscallError(call: "read", errno: errno)
            }
        }
    }

    /// Writes request-body bytes: how many the pipe took, nil when it is full. Throws when the
    /// program no longer reads its input (EPIPE).
    func writeInput(_ bytes: UnsafeRawPointer, _ count: Int) throws(SyscallError) -> Int? {
        guard stdinFD >= 0 else { throw SyscallError(call: "write", errno: EPIPE) }
        while true {
            let n = Glibc.write(stdinFD, bytes, count)
            if n >= 0 { return n }
            switch errno {
            case EINTR: continue
            case EAGAIN: return nil
            default: throw SyscallError(call: "write", errno: errno)
            }
        }
    }

    /// Whether the loop reports output (or room for input) to the exchange. A pipe not watched
    /// is out of epoll altogether: a hang-up would otherwise be reported again and again.
    func watch(_ pipe: Pipe, _ on: Bool) {
        let fd = pipe == .stdin ? stdinFD : stdoutFD
        guard fd >= 0, on != watched.contains(fd) else { return }
        if on {
            do {
                try worker.loop.register(fd, ports[pipe == .stdin ? 0 : 1], pipe == .stdin ? .writable : .readable)
                watched.insert(fd)
            } catch {
                worker.logger.error("cgi \(name): cannot watch its \(pipe): \(error)")
            }
        } else {
            worker.loop.unregister(fd)
            watched.remove(fd)
        }
    }

    /// The request body is all written (or no longer wanted): the program reads end of file.
    func closeInput() { closePipe(.stdin) }

    /// The exchange is done with the program. `abandon`: its output is no longer wanted while it
    /// may still run (the client left, a timeout, a bad head): it is terminated.
    func release(abandon: Bool) {
        exchange = nil
        closePipe(.stdin)
        closePipe(.stdout)
        if abandon && !exited { terminate() }
        worker.cgiChanged(self)
    }

    /// SIGTERM to the program's process group now, SIGKILL in two seconds (`worker` checks).
    func terminate() {
        guard !exited else { return }
        _ = kill(-pid, SIGTERM)
        if killAt == .max { killAt = worker.loop.now + 2_000 }
    }

    /// Called by the worker's timer: the program outlived its SIGTERM.
    func killIfDue(now: Int64) {
        guard !exited, now >= killAt else { return }
        worker.logger.warning("cgi \(name): still running 2 s after SIGTERM, killing it", metadata: ["pid": "\(pid)"])
        _ = kill(-pid, SIGKILL)
        killAt = .max - 1
    }

    // MARK: events

    fileprivate func event(_ pipe: Pipe?, _ events: Epoll.Interest) {
        switch pipe {
        case .stdout?, .stdin?:
            if let x = exchange, x.generation == exchangeGeneration {
                if pipe == .stdout { x.cgiOutputReady() } else { x.cgiInputReady() }
            } else {
                watch(pipe!, false)
            }
        case .stderr?:
            drainStderr()
        case nil:
            reap()
        }
    }

    /// stderr, a line at a time into the log, tagged with the program's name.
    private func drainStderr() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while stderrFD >= 0 {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(stderrFD, $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN { return }
            if n <= 0 {
                if !stderrLine.isEmpty { logStderr() }
                closePipe(.stderr)
                worker.cgiChanged(self)
                return
            }
            for b in buffer[0..<n] {
                if b == 10 {
                    logStderr()
                } else if stderrLine.count < 4096 {
                    stderrLine.append(b)
                }
            }
        }
    }

    private func logStderr() {
        if stderrLine.last == 13 { stderrLine.removeLast() }
        worker.logger.warning("cgi \(name): \(String(decoding: stderrLine, as: UTF8.self))")
        stderrLine.removeAll(keepingCapacity: true)
    }

    private func reap() {
        var status: Int32 = 0
        let r = aws_pidfd_reap(pidfd, &status)
        guard r != 0 else { return }
        exited = true
        worker.loop.unregister(pidfd)
        worker.loop.closeAfterBatch(pidfd)
        pidfd = -1
        if r == 1 && status != 0 {
            worker.logger.info("cgi \(name) exited with \(status > 128 ? "signal \(status - 128)" : "status \(status)")", metadata: ["pid": "\(pid)"])
        }
        worker.cgiExited(self)
    }

    private func closePipe(_ pipe: Pipe) {
        let fd: Int32
        switch pipe {
        case .stdin: fd = stdinFD; stdinFD = -1
        case .stdout: fd = stdoutFD; stdoutFD = -1
        case .stderr: fd = stderrFD; stderrFD = -1
        }
        guard fd >= 0 else { return }
        if watched.remove(fd) != nil { worker.loop.unregister(fd) }
        worker.loop.closeAfterBatch(fd)
    }

    private final class Port: EventHandler {
        unowned(unsafe) let process: CGIProcess
        let pipe: Pipe?
        init(_ process: CGIProcess, _ pipe: Pipe?) {
            self.process = process
            self.pipe = pipe
        }
        func handleEvents(_ events: Epoll.Interest) { process.event(pipe, events) }
    }
}
