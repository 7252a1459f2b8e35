import COpenSSL
import CTLS
import Glibc

/// One connection's TLS: an OpenSSL session on the socket, driven without ever blocking. The
/// handshake happens inside the first reads (OpenSSL's accept state); `SSL_ERROR_WANT_READ`
/// becomes "nothing yet, wait for readable" and `WANT_WRITE` "wait for writable", like EAGAIN
/// on a plain socket. The connection's `Transport` is the only caller.
///
/// This file and Sources/CTLS are the only places that touch OpenSSL pointers. Everything runs
/// on the worker thread that owns the connection; OpenSSL's per-thread error queue is drained
/// after every failure, so `SSL_get_error` always reads a clean queue.
final class TLSSession {
    enum Failure {
        /// The first bytes were a plain HTTP request, not a ClientHello.
        case plainHTTP
        /// A TLS protocol error (a bad or refused ClientHello, a bad record), with OpenSSL's text.
        case protocolError(String)
    }

    private let ssl: OpaquePointer
    /// The certificates the session started with: the SNI callback reads their table during the
    /// handshake, so it lives as long as the session (a reload does not pull it away).
    private let contexts: TLSContexts
    /// Plaintext of file bodies on their way into SSL_write: the worker's, borrowed for the
    /// length of one call (nothing is kept in it between calls).
    private let fileScratch: UnsafeMutableRawBufferPointer
    private(set) var handshakeDone = false
    /// Writes go through kernel TLS: file bodies leave with SSL_sendfile, zero copy.
    private(set) var kernelSend = false
    /// The last read stopped because OpenSSL must write first (a handshake on a full socket).
    private(set) var readWantsWrite = false
    private(set) var failure: Failure?
    private var closeNotifySent = false

    init?(fd: Int32, contexts: TLSContexts, fileScratch: UnsafeMutableRawBufferPointer) {
        guard let ssl = aws_tls_session_new(contexts.table, fd) else { return nil }
        self.ssl = ssl
        self.contexts = contexts
        self.fileScratch = fileScratch
    }

    deinit { SSL_free(ssl) }

    /// "TLSv1.3", "TLSv1.2": a static string of OpenSSL's.
    var version: UnsafeRawBufferPointer {
        let s = aws_tls_version(ssl)!
        return UnsafeRawBufferPointer(start: s, count: strlen(s))
    }

    /// The name the client asked for by SNI, if any (chooses the site of a request without Host).
    var serverName: [UInt8]? {
        guard let name = SSL_get_servername(ssl, Int32(TLSEXT_NAMETYPE_host_name)) else { return nil }
        return Array(UnsafeRawBufferPointer(start: name, count: strlen(name)))
    }

    /// Decrypted bytes (or bytes of a record already read) wait inside OpenSSL: the socket may
    /// be empty, so epoll will not report them.
    var hasBufferedInput: Bool { SSL_has_pending(ssl) == 1 }

    /// Plaintext read, 0 at the end of the stream (close_notify or the peer's FIN), nil when
    /// OpenSSL needs more from the socket (or, with `readWantsWrite`, room in it).
    func read(_ buffer: UnsafeMutableRawPointer, _ count: Int) throws(SyscallError) -> Int? {
        var n = 0
        if SSL_read_ex(ssl, buffer, count, &n) == 1 {
            readWantsWrite = false
            if !handshakeDone { handshakeFinished() }
            return n
        }
        switch SSL_get_error(ssl, 0) {
        case SSL_ERROR_WANT_READ:
            readWantsWrite = false
            return nil
        case SSL_ERROR_WANT_WRITE:
            readWantsWrite = true
            return nil
        case SSL_ERROR_ZERO_RETURN:
            return 0
        default:
            throw failed("SSL_read")
        }
    }

    /// Bytes taken, nil when the socket is full. After nil the next call must offer at least the
    /// same bytes again (the pump does: it only moves on by what was taken).
    func write(_ bytes: UnsafeRawPointer, _ count: Int) throws(SyscallError) -> Int? {
        guard count > 0 else { return 0 }
        var n = 0
        if SSL_write_ex(ssl, bytes, count, &n) == 1 { return n }
        // WANT_READ cannot happen with renegotiation off (TLS 1.3 writes never read): a failure.
        if SSL_get_error(ssl, 0) == SSL_ERROR_WANT_WRITE { return nil }
        throw failed("SSL_write")
    }

    /// Sends a file region: SSL_sendfile with kernel TLS; otherwise up to the scratch buffer's
    /// size read with one pread and encrypted by SSL_write, record after record. A full socket
    /// leaves the record it did not take in OpenSSL's buffer; the retry reads again from the
    /// first byte not yet counted as sent (the caller moves on only by what was sent), which is
    /// where that record begins, so no plaintext is kept between calls.
    func sendFile(_ file: Int32, offset: inout Int, count: Int) throws(SyscallError) -> Int? {
        if kernelSend {
            let n = SSL_sendfile(ssl, file, off_t(offset), count, 0)
            if n >= 0 {
                offset += n
                return n
            }
            if SSL_get_error(ssl, Int32(truncatingIfNeeded: n)) == SSL_ERROR_WANT_WRITE { return nil }
            throw failed("SSL_sendfile")
        }
        let want = min(count, fileScratch.count)
        var got: Int
        repeat { got = pread(file, fileScratch.baseAddress!, want, off_t(offset)) } while got < 0 && errno == EINTR
        if got < 0 { throw SyscallError(call: "pread", errno: errno) }
        if got == 0 { return 0 }  // the file shrank: the caller ends the body
        var sent = 0
        while sent < got, let n = try write(fileScratch.baseAddress! + sent, got - sent) { sent += n }
        if sent == 0 { return nil }
        offset += sent
        return sent
    }

    /// Sends close_notify (best effort: one try, never waits) before our side of the socket shuts.
    func shutdown() {
        guard handshakeDone && failure == nil && !closeNotifySent else { return }
        closeNotifySent = true
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
    }

    private func handshakeFinished() {
        handshakeDone = true
        kernelSend = aws_tls_ktls_send(ssl) != 0
    }

    /// Records why the session failed, drains the error queue, and makes the error the
    /// connection closes on.
    private func failed(_ call: StaticString) -> SyscallError {
        let savedErrno = errno
        var text = [CChar](repeating: 0, count: 256)
        let reason = aws_tls_take_error(&text, text.count)
        if reason == 0 {
            // SSL_ERROR_SYSCALL: the socket failed (a reset); errno says how.
            return SyscallError(call: call, errno: savedErrno != 0 ? savedErrno : ECONNRESET)
        }
        failure = reason == aws_tls_reason_http_request() ? .plainHTTP : .protocolError(cText(text))
        return SyscallError(call: call, errno: EPROTO)
    }
}
