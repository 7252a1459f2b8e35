/// How a connection's bytes cross the socket. Every read and write of the HTTP layer goes
/// through here, so a connection can become TLS without the state machine knowing: a TLS
/// transport (OpenSSL) will put the session between these calls and the socket, and with kernel
/// TLS (kTLS) it keeps `sendFile` zero-copy. Today only the plain transport exists.
struct Transport {
    enum Kind { case plain }

    private(set) var fd: Int32 = -1
    private(set) var kind: Kind = .plain

    init() {}

    init(plain fd: Int32) {
        self.fd = fd
        kind = .plain
    }

    /// Bytes read, 0 at end of stream, nil when nothing is available now.
    @inline(__always)
    func receive(_ buffer: UnsafeMutableRawPointer, _ count: Int) throws(SyscallError) -> Int? {
        try Sys.recv(fd, buffer, count)
    }

    /// Bytes sent, nil when the socket is full. `more`: further bytes follow at once (MSG_MORE).
    @inline(__always)
    func send(_ bytes: UnsafeRawPointer, _ count: Int, more: Bool = false) throws(SyscallError) -> Int? {
        try Sys.send(fd, bytes, count, more: more)
    }

    /// Sends a file region without copying it through user space, advancing `offset`.
    @inline(__always)
    func sendFile(_ file: Int32, offset: inout Int, count: Int) throws(SyscallError) -> Int? {
        try Sys.sendfile(to: fd, from: file, offset: &offset, count: count)
    }

    /// Ends our sending side (a TLS transport sends close_notify first).
    func shutdownWrite() { Sys.shutdownWrite(fd) }

    /// Whether the peer sent bytes we have not read (closing now would send a reset that can
    /// destroy the response still in flight).
    func hasUnreadInput() -> Bool { Sys.hasUnreadInput(fd) }
}
