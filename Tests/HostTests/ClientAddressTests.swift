@testable import AWSParsing
@testable import Host
import Testing

private func ip(_ s: String) -> IPAddress? { IPAddress(parsing: Array(s.utf8)) }

private func v4(_ s: String) -> IPAddress { IPAddress(ipv4: IPAddress.parseIPv4(Array(s.utf8))!) }

private func parse(_ bytes: [UInt8]) -> ProxyProtocol.Outcome {
    bytes.withUnsafeBytes { ProxyProtocol.parse($0) }
}

private func parse(_ s: String) -> ProxyProtocol.Outcome { parse(Array(s.utf8)) }

private let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

private func endpoint(_ address: String, _ port: UInt16) -> ClientEndpoint { ClientEndpoint(address: ip(address)!, port: port) }

/// A request head with these header lines, as the decoder would fill it.
private func head(_ fields: [(String, String)]) -> RequestHead {
    var h = RequestHead()
    for (name, value) in fields {
        Array(name.utf8).withUnsafeBytes { h.appendHeaderName($0) }
        Array(value.utf8).withUnsafeBytes { h.appendHeaderValue($0) }
    }
    h.finishHeaders()
    return h
}

@Suite struct IPAddressTests {
    @Test(arguments: ["0.0.0.0", "127.0.0.1", "255.255.255.255", "192.0.2.1"])
    func ipv4(_ s: String) {
        let a = ip(s)
        #expect(a != nil && a!.isIPv4)
    }

    @Test(arguments: ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1..2.3", "1.2.3.", " 1.2.3.4", "1.2.3.4a"])
    func invalid4(_ s: String) {
        #expect(IPAddress.parseIPv4(Array(s.utf8)) == nil)
    }

    @Test(arguments: [
        ("::", IPAddress(high: 0, low: 0)),
        ("::1", IPAddress(high: 0, low: 1)),
        ("2001:db8::1", IPAddress(high: 0x2001_0db8_0000_0000, low: 1)),
        ("2001:db8:0:0:1:0:0:1", IPAddress(high: 0x2001_0db8_0000_0000, low: 0x0001_0000_0000_0001)),
        ("fe80::", IPAddress(high: 0xfe80_0000_0000_0000, low: 0)),
        ("1:2:3:4:5:6:7:8", IPAddress(high: 0x0001_0002_0003_0004, low: 0x0005_0006_0007_0008)),
        ("::ffff:192.0.2.1", IPAddress(high: 0, low: 0xffff_c000_0201)),
        ("1::2:3", IPAddress(high: 0x0001_0000_0000_0000, low: 0x0000_0000_0002_0003)),
        ("ABCD::EF", IPAddress(high: 0xabcd_0000_0000_0000, low: 0xef)),
    ])
    func ipv6(_ s: String, _ expected: IPAddress) {
        #expect(IPAddress.parseIPv6(Array(s.utf8)) == expected)
    }

    @Test(arguments: [":", ":::", "1:::2", "1::2::3", "12345::", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", ":1::", "1:",
                      "1::2:", "g::", "::1.2.3", "1:2:3:4:5:6:7:1.2.3.4", "[::1]", "::1%eth0"])
    func invalid6(_ s: String) {
        #expect(IPAddress.parseIPv6(Array(s.utf8)) == nil)
    }

    @Test func ipv4MappedIsIPv4() {
        #expect(ip("::ffff:10.1.2.3") == v4("10.1.2.3"))
    }
}

@Suite struct CIDRTests {
    @Test(arguments: [
        ("10.0.0.0/8", "10.255.1.2", true), ("10.0.0.0/8", "11.0.0.0", false),
        ("192.0.2.7", "192.0.2.7", true), ("192.0.2.7", "192.0.2.8", false),
        ("0.0.0.0/0", "203.0.113.1", true), ("0.0.0.0/0", "2001:db8::1", false),
        ("2001:db8::/32", "2001:db8:ffff::1", true), ("2001:db8::/32", "2001:db9::1", false),
        ("::/0", "2001:db8::1", true), ("::1", "::1", true), ("::1", "::2", false),
        // An IPv4 client of a dual-stack listener matches IPv4 ranges.
        ("127.0.0.0/8", "::ffff:127.0.0.3", true),
        ("172.16.0.0/12", "172.31.255.255", true), ("172.16.0.0/12", "172.32.0.0", false),
        ("10.1.2.3/31", "10.1.2.2", true),
    ])
    func contains(_ range: String, _ address: String, _ expected: Bool) {
        #expect(CIDR(range)!.contains(ip(address)!) == expected)
    }

    @Test(arguments: ["", "10.0.0.0/33", "10.0.0.0/", "/8", "10.0.0.0/8/8", "::/129", "10.0.0.0/-1", "10.0.0.0/ 8", "host.example", "10.0.0.0/0008"])
    func invalid(_ s: String) {
        #expect(CIDR(s) == nil)
    }
}

@Suite struct ProxyProtocolTests {
    @Test func v1TCP4() {
        let header = "PROXY TCP4 203.0.113.7 127.0.0.1 51000 80\r\n"
        #expect(parse(header + "GET / HTTP/1.1\r\n") == .complete(length: header.utf8.count, source: endpoint("203.0.113.7", 51000)))
    }

    @Test func v1TCP6AndUnknown() {
        let header = "PROXY TCP6 2001:db8::7 ::1 4000 443\r\n"
        #expect(parse(header) == .complete(length: header.utf8.count, source: endpoint("2001:db8::7", 4000)))
        #expect(parse("PROXY UNKNOWN\r\n") == .complete(length: 15, source: nil))
        #expect(parse("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n") == .complete(length: 35, source: nil))
    }

    @Test func v1EveryPrefixNeedsMore() {
        let header = Array("PROXY TCP4 203.0.113.7 127.0.0.1 51000 80\r\n".utf8)
        for n in 0..<header.count { #expect(parse(Array(header[0..<n])) == .needMore) }
    }

    @Test(arguments: [
        "GET / HTTP/1.1\r\n", "PROXX TCP4", "PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", "PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
        "PROXY TCP4 ::1 1.2.3.4 1 2\r\n", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n",
        "PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n", "PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n", "PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n",
        "PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n", "PROXY \r\n",
    ])
    func v1Invalid(_ s: String) {
        guard case .invalid = parse(s) else { Issue.record("accepted \(s.debugDescription)"); return }
    }

    @Test func v1TooLong() {
        let long = "PROXY UNKNOWN " + String(repeating: "x", count: 100)
        guard case .invalid = parse(long) else { Issue.record("no limit at 107 bytes"); return }
        // 107 bytes with the CRLF: the longest allowed.
        let longest = "PROXY UNKNOWN " + String(repeating: "x", count: 107 - 16) + "\r\n"
        #expect(parse(longest) == .complete(length: 107, source: nil))
    }

    private func v2(command: UInt8 = 0x21, family: UInt8, body: [UInt8]) -> [UInt8] {
        signature + [command, family, UInt8(body.count >> 8), UInt8(body.count & 255)] + body
    }

    @Test func v2IPv4WithTLVs() {
        let tlv: [UInt8] = [0x04, 0x00, 0x02, 0xAA, 0xBB]
        let header = v2(family: 0x11, body: [198, 51, 100, 1, 127, 0, 0, 1, 0x11, 0x5C, 0, 80] + tlv)
        #expect(parse(header + Array("GET".utf8)) == .complete(length: header.count, source: endpoint("198.51.100.1", 4444)))
        // The addresses are enough: the TLVs are skipped, not needed.
        #expect(parse(Array(header[0..<28])) == .complete(length: header.count, source: endpoint("198.51.100.1", 4444)))
        for n in 0..<28 { #expect(parse(Array(header[0..<n])) == .needMore) }
    }

    @Test func v2IPv6() {
        let src: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [7]
        let header = v2(family: 0x21, body: src + [UInt8](repeating: 0, count: 15) + [1] + [0x12, 0x67, 0x01, 0xBB])
        #expect(parse(header) == .complete(length: 52, source: endpoint("2001:db8::7", 4711)))
    }

    @Test func v2LocalUnspecAndUnix() {
        #expect(parse(v2(command: 0x20, family: 0x00, body: [])) == .complete(length: 16, source: nil))
        // LOCAL with addresses: ignored.
        #expect(parse(v2(command: 0x20, family: 0x11, body: [UInt8](repeating: 1, count: 12))) == .complete(length: 28, source: nil))
        #expect(parse(v2(family: 0x00, body: [])) == .complete(length: 16, source: nil))
        #expect(parse(v2(family: 0x31, body: [UInt8](repeating: 0, count: 216))) == .complete(length: 232, source: nil))
    }

    @Test func v2Invalid() {
        for header in [
            v2(command: 0x11, family: 0x11, body: [UInt8](repeating: 0, count: 12)),   // version 1 in binary
            v2(command: 0x22, family: 0x11, body: [UInt8](repeating: 0, count: 12)),   // command 2
            v2(family: 0x41, body: [UInt8](repeating: 0, count: 12)),                  // family 4
            v2(family: 0x13, body: [UInt8](repeating: 0, count: 12)),                  // transport 3
            v2(family: 0x11, body: [UInt8](repeating: 0, count: 11)),                  // short for TCP4
            v2(family: 0x21, body: [UInt8](repeating: 0, count: 12)),                  // short for TCP6
            [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0B],   // signature
        ] {
            guard case .invalid = parse(header) else { Issue.record("accepted \(header)"); continue }
        }
    }
}

@Suite struct ForwardedClientTests {
    private let trusted = [CIDR("10.0.0.0/8")!, CIDR("2001:db8:1::/48")!]
    private func isTrusted(_ a: IPAddress) -> Bool { trusted.contains { $0.contains(a) } }
    private func resolve(_ fields: [(String, String)], peer: String = "10.0.0.1") -> ClientEndpoint? {
        ForwardedClient.resolve(head(fields), peer: ip(peer)!, isTrusted: isTrusted)
    }

    @Test func untrustedPeerIsNeverOverridden() {
        #expect(resolve([("X-Forwarded-For", "198.51.100.1")], peer: "192.0.2.1") == nil)
        #expect(resolve([("Forwarded", "for=198.51.100.1")], peer: "192.0.2.1") == nil)
    }

    @Test func rightmostUntrusted() {
        #expect(resolve([("X-Forwarded-For", "203.0.113.1, 198.51.100.1, 10.2.3.4")]) == endpoint("198.51.100.1", 0))
        #expect(resolve([("x-forwarded-for", " 198.51.100.1 ")]) == endpoint("198.51.100.1", 0))
        #expect(resolve([("X-Forwarded-For", "203.0.113.1"), ("X-Forwarded-For", "10.0.0.9")]) == endpoint("203.0.113.1", 0))
        // Every hop trusted: the leftmost.
        #expect(resolve([("X-Forwarded-For", "10.0.0.3, 10.0.0.2")]) == endpoint("10.0.0.3", 0))
        #expect(resolve([("X-Forwarded-For", "2001:db8:2::1, 2001:db8:1::5")]) == endpoint("2001:db8:2::1", 0))
        #expect(resolve([("X-Forwarded-For", "198.51.100.1:5555")]) == endpoint("198.51.100.1", 5555))
        #expect(resolve([("X-Forwarded-For", "[2001:db8::9]:80")]) == endpoint("2001:db8::9", 80))
    }

    @Test func notAnAddressEndsTheWalk() {
        #expect(resolve([("X-Forwarded-For", "198.51.100.1, garbage, 10.0.0.7")]) == endpoint("10.0.0.7", 0))
        #expect(resolve([("X-Forwarded-For", "garbage")]) == nil)
        #expect(resolve([("X-Forwarded-For", "")]) == nil)
        #expect(resolve([]) == nil)
    }

    @Test func forwarded() {
        #expect(resolve([("Forwarded", "for=198.51.100.20;proto=https;by=10.0.0.1")]) == endpoint("198.51.100.20", 0))
        #expect(resolve([("Forwarded", "for=192.0.2.60, for=\"[2001:db8:cafe::17]:4711\"")]) == endpoint("2001:db8:cafe::17", 4711))
        #expect(resolve([("Forwarded", "FOR=192.0.2.60 ; proto=http, For=10.1.1.1")]) == endpoint("192.0.2.60", 0))
        // A comma inside a quoted value does not split the element.
        #expect(resolve([("Forwarded", "for=192.0.2.60;host=\"a,b\"")]) == endpoint("192.0.2.60", 0))
        #expect(resolve([("Forwarded", "for=unknown")]) == nil)
        #expect(resolve([("Forwarded", "for=_hidden, for=198.51.100.2")]) == endpoint("198.51.100.2", 0))
        // X-Forwarded-For wins when both are there.
        #expect(resolve([("Forwarded", "for=192.0.2.1"), ("X-Forwarded-For", "198.51.100.3")]) == endpoint("198.51.100.3", 0))
    }

    @Test func longChainsAreCut() {
        let chain = (0..<100).map { "10.0.0.\($0 % 250)" }.joined(separator: ",")
        // All trusted and longer than maxHops: the walk stops at the last hop it looked at.
        let got = resolve([("X-Forwarded-For", "198.51.100.1," + chain)])
        #expect(got == endpoint("10.0.0.\((100 - ForwardedClient.maxHops) % 250)", 0))
    }
}

@Suite struct PeerAddressTests {
    @Test func rendering() {
        #expect(PeerAddress(endpoint("203.0.113.7", 51000)).description == "203.0.113.7:51000")
        #expect(PeerAddress(endpoint("203.0.113.7", 0)).description == "203.0.113.7")
        #expect(PeerAddress(endpoint("2001:db8::7", 443)).description == "[2001:db8::7]:443")
        #expect(PeerAddress(endpoint("2001:db8::7", 0)).description == "[2001:db8::7]")
        #expect(PeerAddress(endpoint("2001:db8::7", 0)).hostAndPort == ("2001:db8::7", 0))
        #expect(PeerAddress(endpoint("203.0.113.7", 9)).hostAndPort == ("203.0.113.7", 9))
        #expect(PeerAddress(endpoint("2001:db8::7", 9)).ip == ip("2001:db8::7"))
        #expect(PeerAddress(endpoint("192.0.2.1", 9)).ip == ip("192.0.2.1"))
    }
}
