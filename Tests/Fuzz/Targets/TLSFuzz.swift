import COpenSSL
import CTLS
import Glibc

/// The TLS record path a connection's first bytes take: a server session made the way the server
/// makes one (aws_tls_context_new's settings, an SNI table with an exact and a wildcard name, the
/// ALPN and session-ticket callbacks of Sources/CTLS), fed the input as the client's bytes through
/// memory BIOs, the handshake driven until it wants more. OpenSSL parses the records; the callbacks
/// are ours. Any input must end in an answer or an alert, never a crash, a memory error or a
/// leak (AddressSanitizer and LeakSanitizer). The certificate
/// under Tests/Fuzz/tls is a throwaway made for this (AWS_FUZZ_TLS_DIR to use another folder).
enum TLSFuzz {
    nonisolated(unsafe) static var table: OpaquePointer?

    static func setUp() {
        let dir = getenv("AWS_FUZZ_TLS_DIR").map { String(cString: $0) } ?? "Tests/Fuzz/tls"
        var error = [CChar](repeating: 0, count: 256)
        guard let context = aws_tls_context_new(dir + "/cert.pem", dir + "/key.pem", 0, &error, error.count),
              let sni = aws_tls_sni_new(context),
              aws_tls_sni_add(sni, "fuzz.test", context) == 0,
              aws_tls_sni_add(sni, "*.wild.test", context) == 0 else {
            report("tls: cannot set up the context from \(dir): \(String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))")
            exit(2)
        }
        SSL_CTX_free(context)  // the table holds its own references
        table = sni
    }

    static func run(_ input: UnsafeRawBufferPointer) {
        if table == nil { setUp() }
        guard let ssl = aws_tls_session_new(table, -1) else { check(false, "no session"); return }
        defer { SSL_free(ssl) }
        let incoming = BIO_new(BIO_s_mem())!
        let outgoing = BIO_new(BIO_s_mem())!
        SSL_set_bio(ssl, incoming, outgoing)  // the session owns both from here
        if input.count > 0 { _ = BIO_write(incoming, input.baseAddress, Int32(input.count)) }
        var scratch = [UInt8](repeating: 0, count: 16 * 1024)
        for _ in 0..<8 {
            let result = SSL_do_handshake(ssl)
            if result == 1 {
                // A handshake completed from these bytes alone: read what application data came.
                _ = scratch.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
            }
            // Drain what the server wrote (ServerHello..., or an alert).
            while BIO_ctrl_pending(outgoing) > 0 {
                _ = scratch.withUnsafeMutableBytes { BIO_read(outgoing, $0.baseAddress, Int32($0.count)) }
            }
            let error = SSL_get_error(ssl, result)
            if result == 1 || error != SSL_ERROR_WANT_READ { break }
            if BIO_ctrl_pending(incoming) == 0 { break }
        }
        var text = [CChar](repeating: 0, count: 256)
        _ = aws_tls_take_error(&text, text.count)  // clears this thread's error queue
    }
}
