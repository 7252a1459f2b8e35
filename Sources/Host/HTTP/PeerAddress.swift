import AWSParsing
import Glibc

/// A client's address, kept in 28 bytes (a `sockaddr_in6`, which also holds a `sockaddr_in`)
/// rather than a 128-byte `sockaddr_storage`: it lives in every connection, idle ones included.
struct PeerAddress: Equatable {
    private var address = sockaddr_in6()

    init() {}

    init(_ storage: sockaddr_storage) {
        withUnsafeBytes(of: storage) { raw in
            withUnsafeMutableBytes(of: &address) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[0..<$0.count])) }
        }
    }

    /// A client named by a PROXY header or a forwarding header (port 0: not given).
    init(_ endpoint: ClientEndpoint) {
        let ip = endpoint.address
        if ip.isIPv4 {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = endpoint.port.bigEndian
            sin.sin_addr.s_addr = ip.ipv4.bigEndian
            withUnsafeMutableBytes(of: &address) { raw in withUnsafeBytes(of: sin) { raw.copyMemory(from: $0) } }
            return
        }
        address.sin6_family = sa_family_t(AF_INET6)
        address.sin6_port = endpoint.port.bigEndian
        withUnsafeMutableBytes(of: &address.sin6_addr) { raw in
            for i in 0..<8 {
                raw[i] = UInt8(truncatingIfNeeded: ip.high >> UInt64(56 - 8 * i))
                raw[8 + i] = UInt8(truncatingIfNeeded: ip.low >> UInt64(56 - 8 * i))
            }
        }
    }

    static func == (a: PeerAddress, b: PeerAddress) -> Bool {
        withUnsafeBytes(of: a.address) { x in withUnsafeBytes(of: b.address) { y in memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 } }
    }

    private var isIPv6: Bool { address.sin6_family == sa_family_t(AF_INET6) }

    /// The address as `--trusted-proxy` ranges match it (IPv4 as IPv4-mapped).
    var ip: IPAddress {
        if isIPv6 { return withUnsafeBytes(of: address.sin6_addr) { IPAddress(ipv6Bytes: $0) } }
        return withUnsafeBytes(of: address) { raw in IPAddress(ipv4: UInt32(bigEndian: raw.load(as: sockaddr_in.self).sin_addr.s_addr)) }
    }

    private var port: Int { Int(UInt16(bigEndian: address.sin6_port)) }

    /// "a.b.c.d:port" or "[v6]:port", IPv4 without going through String; without ":port" when
    /// the port is unknown (a client named by X-Forwarded-For).
    func append(to out: inout [UInt8]) {
        if isIPv6 {
            var sin6 = address
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
            inet_ntop(AF_INET6, &sin6.sin6_addr, &text, socklen_t(text.count))
            out.append(91)
            out.append(contentsOf: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) })
            out.append(93)
            if port != 0 { out.append(58); out.append(decimal: port) }
            return
        }
        let (a, port) = withUnsafeBytes(of: address) { raw in
            let sin = raw.load(as: sockaddr_in.self)
            return (UInt32(bigEndian: sin.sin_addr.s_addr), Int(UInt16(bigEndian: sin.sin_port)))
        }
        PeerAddress.appendIPv4(a, port: port, to: &out)
    }

    /// The address alone, IPv6 without brackets (Apache's `%h`), without allocating: the
    /// access log writes it for every request.
    func appendHost(to out: inout [UInt8]) {
        if isIPv6 {
            var sin6 = address
            withUnsafeTemporaryAllocation(of: CChar.self, capacity: Int(INET6_ADDRSTRLEN) + 1) { text in
                guard inet_ntop(AF_INET6, &sin6.sin6_addr, text.baseAddress, socklen_t(text.count)) != nil else { return }
                for c in text { if c == 0 { break }; out.append(UInt8(bitPattern: c)) }
            }
            return
        }
        let a = withUnsafeBytes(of: address) { UInt32(bigEndian: $0.load(as: sockaddr_in.self).sin_addr.s_addr) }
        PeerAddress.appendIPv4(a, port: 0, to: &out)
    }

    /// "a.b.c.d", and ":port" unless `port` is 0. "255.255.255.255:65535" is 21 bytes: rendered
    /// on the stack and appended in one copy (a plugin's request view and the access log carry
    /// it on every request).
    private static func appendIPv4(_ a: UInt32, port: Int, to out: inout [UInt8]) {
        var text: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &text) { t in
            var n = 0
            func put(_ value: Int) {
                if value >= 10000 { t[n] = UInt8(48 + value / 10000); n += 1 }
                if value >= 1000 { t[n] = UInt8(48 + value / 1000 % 10); n += 1 }
                if value >= 100 { t[n] = UInt8(48 + value / 100 % 10); n += 1 }
                if value >= 10 { t[n] = UInt8(48 + value / 10 % 10); n += 1 }
                t[n] = UInt8(48 + value % 10); n += 1
            }
            put(Int(a >> 24)); t[n] = 46; n += 1
            put(Int((a >> 16) & 255)); t[n] = 46; n += 1
            put(Int((a >> 8) & 255)); t[n] = 46; n += 1
            put(Int(a & 255))
            if port != 0 { t[n] = 58; n += 1; put(port) }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: t[..<n]))
        }
    }

    /// The address without brackets, and the port: REMOTE_ADDR and REMOTE_PORT of CGI.
    var hostAndPort: (String, Int) {
        let text = description
        if port == 0 { return (isIPv6 ? String(text.dropFirst().dropLast()) : text, 0) }
        guard let colon = text.lastIndex(of: ":") else { return (text, 0) }
        var host = text[..<colon]
        if host.hasPrefix("[") { host = host.dropFirst().dropLast() }
        return (String(host), Int(text[text.index(after: colon)...]) ?? 0)
    }

    var description: String {
        var bytes: [UInt8] = []
        append(to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }
}
