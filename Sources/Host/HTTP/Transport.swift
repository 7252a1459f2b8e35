/// How a connection's bytes cross the socket. Every read and write of the HTTP layer goes
/// through here, so the state machine is the same over plain TCP and over TLS: with a
/// `TLSSession` the calls go through OpenSSL (and, with kernel TLS, `sendFile` stays zero copy).
struct Transport {
    private(set) var fd: Int32 = -1
    /// nil: plain TCP.
    private(set) var tls: TLSSession?

    init() {}

    init(plain fd: Int32) {
        self.fd = fd
    }

    init(fd: Int32, tls: TLSSession) {
        self.fd = fd
        self.tls = tls
    }

    var isTLS: Bool { tls != nil }

    /// Bytes read, 0 at end of stream, nil when nothing is available now.
    @inline(__always)
    func receive(_ buffer: UnsafeMutableRawPointer, _ count: Int) throws(SyscallError) -> Int? {
        if let tls { return try tls.read(buffer, count) }
        return try Sys.recv(fd, buffer, count)
    }

    /// Bytes sent, nil when the socket is full. `more`: further bytes follow at once (MSG_MORE;
    /// over TLS every write is a record of its own).
    @inline(__always)
    func send(_ bytes: UnsafeRawPointer, _ count: Int, more: Bool = false) throws(SyscallError) -> Int? {
        if let tls { return try tls.write(bytes, count) }
        return try Sys.send(fd, bytes, count, more: more)
    }

    /// Sends a file region (zero copy where the transport allows), advancing `offset`.
    @inline(__always)
    func sendFile(_ file: Int32, offset: inout Int, count: Int) throws(SyscallError) -> Int? {
        if let tls { return try tls.sendFile(file, offset: &offset, count: count) }
        return try Sys.sendfile(to: fd, from: file, offset: &offset, count: count)
    }

    /// Ends our sending side (over TLS: close_notify first).
    func shutdownWrite() {
        tls?.shutdown()
        Sys.shutdownWrite(fd)
    }

    /// Input that epoll will not report: already read from the socket into OpenSSL.
    var hasBufferedInput: Bool { tls?.hasBufferedInput ?? false }

    /// The socket is about to close: a TLS session says close_notify when it ended cleanly, and
    /// is released.
    mutating func end() {
        tls?.shutdown()
        tls = nil
    }

    /// Speaks plain TCP from now on (to answer a plain HTTP request sent to the TLS port).
    mutating func dropTLS() { tls = nil }
}
