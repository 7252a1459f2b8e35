import COpenSSL
import CTLS
@testable import AWSParsing
@testable import Host
import Testing

@Suite struct TLSCertForTests {
    @Test func parsesHostCertAndKey() {
        let exact = TLSCertFor("b.test=/etc/b.pem,/etc/b.key")?.certificate
        #expect(exact?.host == "b.test")
        #expect(exact?.chain == "/etc/b.pem")
        #expect(exact?.key == "/etc/b.key")
        #expect(TLSCertFor("*.example.test=c.pem,k.pem")?.certificate.host == "*.example.test")
    }

    @Test func refusesMalformedArguments() {
        for bad in ["b.test", "b.test=c.pem", "b.test=c.pem,", "b.test=,k.pem", "b.test=c.pem,k.pem,x", "=c.pem,k.pem",
                    "*.test=c.pem,k.pem", "a.*.test=c.pem,k.pem", "*=c.pem,k.pem", "b..test=c.pem,k.pem", "b test=c.pem,k.pem"] {
            #expect(TLSCertFor(bad) == nil, "\(bad)")
        }
    }
}

@Suite struct RedirectHostTests {
    private func host(_ s: String) -> String? {
        Exchange.hostWithoutPort(Array(s.utf8)[...]).map { String(decoding: $0, as: UTF8.self) }
    }

    @Test func dropsThePort() {
        #expect(host("example.com") == "example.com")
        #expect(host("example.com:8080") == "example.com")
        #expect(host("127.0.0.1:80") == "127.0.0.1")
        #expect(host("[::1]:8080") == "[::1]")
        #expect(host("[::1]") == "[::1]")
    }

    @Test func refusesWhatCouldInjectIntoLocation() {
        for bad in ["", ":80", "a b", "evil.com/x", "a.com:80x", "a.com@b.com", "[::1", "[zz]", "[]", "[::1]x", "a\r\nSet-Cookie: x"] {
            #expect(host(bad) == nil, "\(bad)")
        }
    }
}

/// The SNI table's matching, on bare contexts (no certificates needed to test names).
@Suite struct SNITableTests {
    @Test func exactBeatsWildcardAndWildcardsMatchOneLabel() {
        let fallback = SSL_CTX_new(TLS_server_method())!
        let exact = SSL_CTX_new(TLS_server_method())!
        let wildcard = SSL_CTX_new(TLS_server_method())!
        let table = aws_tls_sni_new(fallback)!
        defer {
            aws_tls_sni_free(table)
            for c in [fallback, exact, wildcard] { SSL_CTX_free(c) }
        }
        #expect(aws_tls_sni_add(table, "*.Example.test", wildcard) == 0)
        #expect(aws_tls_sni_add(table, "www.example.test", exact) == 0)
        #expect(aws_tls_sni_lookup(table, "www.example.test") == exact)
        #expect(aws_tls_sni_lookup(table, "WWW.Example.TEST.") == exact)
        #expect(aws_tls_sni_lookup(table, "a.example.test") == wildcard)
        #expect(aws_tls_sni_lookup(table, "example.test") == nil)
        #expect(aws_tls_sni_lookup(table, "x.a.example.test") == nil)
        #expect(aws_tls_sni_lookup(table, ".example.test") == nil)
        #expect(aws_tls_sni_lookup(table, "other.test") == nil)
    }
}
