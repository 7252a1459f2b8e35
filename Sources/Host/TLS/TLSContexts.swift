import COpenSSL
import CTLS

/// What `--tls-cert`, `--tls-key` and `--tls-cert-for` name: read again on every reload.
struct TLSSettings: Sendable {
    struct NamedCertificate: Sendable {
        /// "host.example" or "*.example" (one label).
        var host: String
        var chain: String
        var key: String
    }

    var port: UInt16 = 8443
    var chain = ""
    var key = ""
    var named: [NamedCertificate] = []
}

struct TLSSetupError: Error, CustomStringConvertible {
    let description: String
}

/// The certificates in use: the default context (clients without SNI, or with a name nothing
/// else matches) and the SNI table, built together and replaced whole when a reload succeeds.
///
/// An immutable snapshot shared by every worker (`@unchecked Sendable`: OpenSSL contexts are safe
/// to share once configured, and nothing changes them after `init`). Each TLS connection holds
/// the snapshot it started with, so a reload never pulls certificates from under a handshake;
/// the last connection to let go frees them.
final class TLSContexts: @unchecked Sendable {
    /// aws_tls_sni*: owns a reference to every context in it.
    let table: OpaquePointer
    /// Kernel TLS was asked of OpenSSL (the kernel offers the `tls` ULP).
    let kernelTLS: Bool

    init(_ settings: TLSSettings, kernelTLS: Bool) throws(TLSSetupError) {
        self.kernelTLS = kernelTLS
        let defaultContext = try Self.context(chain: settings.chain, key: settings.key, kernelTLS: kernelTLS)
        defer { SSL_CTX_free(defaultContext) }
        guard let table = aws_tls_sni_new(defaultContext) else { throw TLSSetupError(description: "out of memory") }
        for named in settings.named {
            let context: OpaquePointer
            do {
                context = try Self.context(chain: named.chain, key: named.key, kernelTLS: kernelTLS)
            } catch {
                aws_tls_sni_free(table)
                throw TLSSetupError(description: "\(named.host): \(error)")
            }
            let added = aws_tls_sni_add(table, named.host, context)
            SSL_CTX_free(context)
            if added != 0 {
                aws_tls_sni_free(table)
                throw TLSSetupError(description: "out of memory")
            }
        }
        self.table = table
    }

    deinit { aws_tls_sni_free(table) }

    /// Whether a server name selects one of the `--tls-cert-for` certificates.
    func hasCertificate(for serverName: String) -> Bool { aws_tls_sni_lookup(table, serverName) != nil }

    private static func context(chain: String, key: String, kernelTLS: Bool) throws(TLSSetupError) -> OpaquePointer {
        var error = [CChar](repeating: 0, count: 512)
        guard let context = aws_tls_context_new(chain, key, kernelTLS ? 1 : 0, &error, error.count) else {
            throw TLSSetupError(description: cText(error))
        }
        return context
    }

    /// Whether this kernel can do TLS itself (the `tls` upper-layer protocol), and the list it
    /// offers, for the start-up log.
    static func kernelOffersTLS() -> (Bool, String) {
        var ulps = [CChar](repeating: 0, count: 256)
        let has = aws_tls_kernel_has_tls_ulp(&ulps, ulps.count) != 0
        return (has, cText(ulps))
    }
}

/// The text of a NUL-terminated C buffer OpenSSL filled in.
func cText(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
