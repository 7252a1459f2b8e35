import CLinux
import Glibc

/// The OS backend of the event loop: epoll, level-triggered, one 64-bit token per descriptor
/// (the descriptor number itself). Everything epoll-specific lives in this file.
struct Epoll: ~Copyable {
    struct Interest: OptionSet, Sendable {
        let rawValue: UInt32
        static let readable = Interest(rawValue: aws_epollin())
        static let writable = Interest(rawValue: aws_epollout())
        /// Reported in every wait whatever was asked; named so handlers can test for them.
        static let error = Interest(rawValue: aws_epollerr())
        static let hangup = Interest(rawValue: aws_epollhup())
        /// The peer shut its sending side (or closed).
        static let peerClosed = Interest(rawValue: aws_epollrdhup())
        /// Wake only one of the epoll sets watching this descriptor (a shared listener).
        static let exclusive = Interest(rawValue: aws_epollexclusive())
    }

    let fd: Int32
    private var buffer: UnsafeMutableBufferPointer<epoll_event>

    init(capacity: Int = 512) throws(SyscallError) {
        fd = try Sys.check("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        buffer = .allocate(capacity: capacity)
    }

    deinit {
        buffer.deallocate()
        Sys.close(fd)
    }

    func add(_ target: Int32, _ interest: Interest) throws(SyscallError) { try ctl(EPOLL_CTL_ADD, target, interest) }
    func modify(_ target: Int32, _ interest: Interest) throws(SyscallError) { try ctl(EPOLL_CTL_MOD, target, interest) }
    func remove(_ target: Int32) { _ = epoll_ctl(fd, EPOLL_CTL_DEL, target, nil) }

    private func ctl(_ op: Int32, _ target: Int32, _ interest: Interest) throws(SyscallError) {
        var ev = epoll_event()
        ev.events = interest.rawValue
        ev.data.u64 = UInt64(UInt32(bitPattern: target))
        _ = try Sys.check("epoll_ctl") { epoll_ctl(fd, op, target, &ev) }
    }

    /// Waits up to `timeoutMillis` (-1: forever) and calls `body(fd, events)` for each ready one.
    func wait(timeoutMillis: Int32, _ body: (Int32, Interest) -> Void) throws(SyscallError) {
        let n = epoll_wait(fd, buffer.baseAddress, Int32(buffer.count), timeoutMillis)
        if n < 0 {
            if errno == EINTR { return }
            throw SyscallError(call: "epoll_wait", errno: errno)
        }
        for i in 0..<Int(n) {
            let ev = buffer[i]
            body(Int32(truncatingIfNeeded: ev.data.u64), Interest(rawValue: ev.events))
        }
    }
}
