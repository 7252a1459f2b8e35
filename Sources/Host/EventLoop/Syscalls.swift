import CLinux
import Glibc

/// A failed system call: which call, and the errno it left.
struct SyscallError: Error, CustomStringConvertible {
    let call: StaticString
    let errno: Int32

    var description: String { "\(call): \(String(cString: strerror(errno))) (errno \(errno))" }
    var wouldBlock: Bool { errno == EAGAIN || errno == EWOULDBLOCK }
}

/// Thin, typed wrappers over the calls the loop makes. Each throws `SyscallError` naming the call;
/// `EINTR` is retried here so callers never see it. Calls that commonly end in `EAGAIN` return
/// `nil` for it instead of throwing: on non-blocking sockets that is the normal case.
enum Sys {
    @inline(__always)
    static func check(_ call: StaticString, _ body: () -> Int32) throws(SyscallError) -> Int32 {
        while true {
            let r = body()
            if r >= 0 { return r }
            if errno != EINTR { throw SyscallError(call: call, errno: errno) }
        }
    }

    static func close(_ fd: Int32) { _ = Glibc.close(fd) }  // errors from close are not actionable

    static func socket(family: Int32) throws(SyscallError) -> Int32 {
        try check("socket") { Glibc.socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
    }

    static func setsockopt(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) throws(SyscallError) {
        var v = value
        _ = try check("setsockopt") { Glibc.setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) }
    }

    static func listen(_ fd: Int32, backlog: Int32) throws(SyscallError) {
        _ = try check("listen") { Glibc.listen(fd, backlog) }
    }

    /// Accepts one connection (non-blocking, close-on-exec); nil when the queue is empty.
    static func accept(_ fd: Int32, peer: UnsafeMutablePointer<sockaddr_storage>) throws(SyscallError) -> Int32? {
        while true {
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let r = peer.withMemoryRebound(to: sockaddr.self, capacity: 1) { aws_accept4(fd, $0, &len) }
            if r >= 0 { return r }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return nil
            default: throw SyscallError(call: "accept4", errno: errno)
            }
        }
    }

    /// Bytes read, 0 at end of stream, nil when nothing is available now.
    static func recv(_ fd: Int32, _ buf: UnsafeMutableRawPointer, _ count: Int) throws(SyscallError) -> Int? {
        while true {
            let r = Glibc.recv(fd, buf, count, 0)
            if r >= 0 { return r }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return nil
            default: throw SyscallError(call: "recv", errno: errno)
            }
        }
    }

    /// Bytes sent (possibly fewer than asked), nil when the socket buffer is full.
    static func send(_ fd: Int32, _ buf: UnsafeRawPointer, _ count: Int, more: Bool = false) throws(SyscallError) -> Int? {
        let flags = Int32(MSG_NOSIGNAL) | (more ? aws_msg_more() : 0)
        while true {
            let r = Glibc.send(fd, buf, count, flags)
            if r >= 0 { return r }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return nil
            default: throw SyscallError(call: "send", errno: errno)
            }
        }
    }

    /// sendfile(2) from `offset`, advancing it; bytes sent, nil when the socket buffer is full.
    static func sendfile(to sock: Int32, from file: Int32, offset: inout Int, count: Int) throws(SyscallError) -> Int? {
        while true {
            var off = off_t(offset)
            let r = CLinux.sendfile(sock, file, &off, count)
            if r >= 0 { offset = Int(off); return r }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return nil
            default: throw SyscallError(call: "sendfile", errno: errno)
            }
        }
    }

    static func shutdownWrite(_ fd: Int32) { _ = Glibc.shutdown(fd, Int32(SHUT_WR)) }

    /// Whether bytes the peer sent are waiting unread (closing then would send a reset that can
    /// destroy the response still in flight).
    static func hasUnreadInput(_ fd: Int32) -> Bool {
        var byte: UInt8 = 0
        return Glibc.recv(fd, &byte, 1, Int32(MSG_PEEK) | Int32(MSG_DONTWAIT)) > 0
    }

    static func fstat(_ fd: Int32) throws(SyscallError) -> stat {
        var st = stat()
        _ = try check("fstat") { Glibc.fstat(fd, &st) }
        return st
    }

    static func eventfd() throws(SyscallError) -> Int32 {
        try check("eventfd") { CLinux.eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC)) }
    }

    /// Reads and clears an eventfd counter; 0 when it was not signalled.
    static func drainEventfd(_ fd: Int32) -> UInt64 {
        var value: UInt64 = 0
        let r = Glibc.read(fd, &value, 8)
        return r == 8 ? value : 0
    }

    static func signalEventfd(_ fd: Int32) {
        var one: UInt64 = 1
        _ = Glibc.write(fd, &one, 8)
    }

    static func monotonicMillis() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    static func ignoreSIGPIPE() { _ = signal(SIGPIPE, SIG_IGN) }
}

extension Sys {
    /// The local port a socket is bound to (host byte order); 0 if it cannot be read.
    static func localPort(_ fd: Int32) -> UInt16 {
        var addr = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        guard r == 0 else { return 0 }
        return withUnsafeBytes(of: addr) { raw in
            addr.ss_family == sa_family_t(AF_INET6)
                ? UInt16(bigEndian: raw.load(as: sockaddr_in6.self).sin6_port)
                : UInt16(bigEndian: raw.load(as: sockaddr_in.self).sin_port)
        }
    }
}
