/// An IPv4 or IPv6 address as one 128-bit number: IPv4 is kept IPv4-mapped (::ffff:a.b.c.d), so
/// a client that reached a dual-stack listener over IPv4 matches an IPv4 `--trusted-proxy` range.
public struct IPAddress: Hashable, Sendable {
    /// The first and last 64 bits, most significant first.
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    public init(ipv4: UInt32) {
        high = 0
        low = 0xffff_0000_0000 | UInt64(ipv4)
    }

    /// From the 16 bytes of an `in6_addr` (network order).
    public init(ipv6Bytes b: some Collection<UInt8>) {
        var h: UInt64 = 0, l: UInt64 = 0
        for (i, byte) in b.prefix(16).enumerated() {
            if i < 8 { h = h << 8 | UInt64(byte) } else { l = l << 8 | UInt64(byte) }
        }
        high = h
        low = l
    }

    public var isIPv4: Bool { high == 0 && low >> 32 == 0xffff }
    public var ipv4: UInt32 { UInt32(truncatingIfNeeded: low) }

    /// Dotted IPv4 or IPv6 text (no brackets, no zone).
    public init?(parsing text: some Collection<UInt8>) {
        if let v4 = IPAddress.parseIPv4(text) { self.init(ipv4: v4); return }
        guard let v6 = IPAddress.parseIPv6(text) else { return nil }
        self = v6
    }

    static func parseIPv4(_ text: some Collection<UInt8>) -> UInt32? {
        var value: UInt32 = 0, part: UInt32 = 0, digits = 0, parts = 0
        for c in text {
            if c >= 48 && c <= 57 {
                // No leading zeros: "010" is octal to inet_aton and means something else.
                if digits == 1 && part == 0 { return nil }
                part = part * 10 + UInt32(c - 48)
                digits += 1
                if part > 255 { return nil }
            } else if c == 46 {
                guard digits > 0, parts < 3 else { return nil }
                value = value << 8 | part
                part = 0; digits = 0; parts += 1
            } else {
                return nil
            }
        }
        guard digits > 0, parts == 3 else { return nil }
        return value << 8 | part
    }

    /// Without allocating: it runs per request on X-Forwarded-For entries from trusted proxies.
    static func parseIPv6<C: Collection<UInt8>>(_ text: C) -> IPAddress? {
        // The groups before "::" and those after it, each as parsed.
        var head = (UInt64(0), UInt64(0)), tail = (UInt64(0), UInt64(0))
        var headCount = 0, tailCount = 0
        var sawGap = false
        func push(_ v: UInt16) {
            if sawGap {
                // Shifts the tail left by one group: 128-bit value = tail.0 << 64 | tail.1.
                tail.0 = tail.0 << 16 | tail.1 >> 48
                tail.1 = tail.1 << 16 | UInt64(v)
                tailCount += 1
            } else {
                let i = headCount
                if i < 4 { head.0 |= UInt64(v) << UInt64(48 - 16 * i) } else { head.1 |= UInt64(v) << UInt64(48 - 16 * (i - 4)) }
                headCount += 1
            }
        }
        guard !text.isEmpty, text.count <= 45 else { return nil }
        var i = text.startIndex
        let end = text.endIndex
        if text[i] == 58 {
            let next = text.index(after: i)
            guard next < end, text[next] == 58 else { return nil }
            sawGap = true
            i = text.index(after: next)
            if i == end { return IPAddress(high: 0, low: 0) }
        }
        while i < end {
            var j = i, value: UInt32 = 0, digits = 0
            while j < end, let d = IPAddress.hexDigit(text[j]) {
                value = value << 4 | UInt32(d)
                digits += 1
                j = text.index(after: j)
                if digits > 4 { return nil }
            }
            if j < end && text[j] == 46 {
                // A dotted IPv4 tail takes the last two groups.
                guard headCount + tailCount <= 6, let v4 = IPAddress.parseIPv4(text[i...]) else { return nil }
                push(UInt16(v4 >> 16)); push(UInt16(v4 & 0xffff))
                break
            }
            guard digits > 0, headCount + tailCount < 8 else { return nil }
            push(UInt16(value))
            i = j
            if i == end { break }
            guard text[i] == 58 else { return nil }
            i = text.index(after: i)
            if i < end && text[i] == 58 {
                guard !sawGap else { return nil }
                sawGap = true
                i = text.index(after: i)
                if i == end { break }
            } else if i == end {
                return nil  // a trailing single colon
            }
        }
        let count = headCount + tailCount
        if sawGap ? count > 7 : count != 8 { return nil }
        return IPAddress(high: head.0 | tail.0, low: head.1 | tail.1)
    }

    static func hexDigit(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: c - 48
        case 65...70: c - 55
        case 97...102: c - 87
        default: nil
        }
    }
}

/// A `--trusted-proxy` range: an address and a prefix length (a single address: all bits).
public struct CIDR: Hashable, Sendable {
    public let network: IPAddress
    /// Over the 128-bit form (an IPv4 /24 is /120 here).
    public let prefixLength: Int

    /// "10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "::1"; nil when not one of those.
    public init?(_ text: String) {
        let bytes = Array(text.utf8)
        let slash = bytes.firstIndex(of: 47)
        guard let address = IPAddress(parsing: bytes[..<(slash ?? bytes.count)]) else { return nil }
        let width = address.isIPv4 && !text.contains(":") ? 32 : 128
        var length = width
        if let slash {
            let digits = bytes[(slash + 1)...]
            guard !digits.isEmpty, digits.count <= 3, digits.allSatisfy({ $0 >= 48 && $0 <= 57 }),
                  let n = Int(String(decoding: digits, as: UTF8.self)), n <= width else { return nil }
            length = n
        }
        prefixLength = length + (128 - width)
        network = CIDR.masked(address, prefixLength)
    }

    public func contains(_ address: IPAddress) -> Bool { CIDR.masked(address, prefixLength) == network }

    static func masked(_ a: IPAddress, _ length: Int) -> IPAddress {
        let highMask: UInt64 = length >= 64 ? .max : length == 0 ? 0 : ~(UInt64.max >> UInt64(length))
        let lowMask: UInt64 = length <= 64 ? 0 : length >= 128 ? .max : ~(UInt64.max >> UInt64(length - 64))
        return IPAddress(high: a.high & highMask, low: a.low & lowMask)
    }
}

/// The address a PROXY header or a forwarding header names, with its port (0: not given).
public struct ClientEndpoint: Equatable, Sendable {
    public var address: IPAddress
    public var port: UInt16
    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }
}

// MARK: PROXY protocol

/// The PROXY protocol header a load balancer sends before the connection's own bytes (HAProxy's
/// doc/proxy-protocol.txt), versions 1 (text) and 2 (binary).
public enum ProxyProtocol {
    public enum Outcome: Equatable {
        /// The bytes so far are a valid beginning: read more.
        case needMore
        case invalid(String)
        /// `length`: the whole header's size, which for version 2 may exceed the bytes given (its
        /// TLVs, skipped unread). `source`: the client; nil for LOCAL, UNKNOWN or a family
        /// without addresses (the connection's own peer stands).
        case complete(length: Int, source: ClientEndpoint?)
    }

    /// Longest version 1 header, CRLF included.
    public static let v1MaxLength = 107
    /// The bytes version 2 needs before its TLVs at most (header and Unix addresses).
    public static let v2MaxAddressed = 16 + 216
    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    static let v1Prefix = Array("PROXY ".utf8)

    /// Parses the header at the start of `bytes` (the connection's first bytes).
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        guard let first = bytes.first else { return .needMore }
        if first == 0x0D { return parseV2(bytes) }
        if first == 0x50 { return parseV1(bytes) }
        return .invalid("no PROXY protocol header")
    }

    private static func parseV1(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        let prefix = min(bytes.count, v1Prefix.count)
        guard bytes[0..<prefix].elementsEqual(v1Prefix[0..<prefix]) else { return .invalid("no PROXY protocol header") }
        guard let lf = bytes.prefix(v1MaxLength).firstIndex(of: 10) else {
            return bytes.count >= v1MaxLength ? .invalid("version 1 header longer than 107 bytes") : .needMore
        }
        guard lf >= 1, bytes[lf - 1] == 13 else { return .invalid("version 1 header without CRLF") }
        let line = UnsafeRawBufferPointer(rebasing: bytes[v1Prefix.count..<(lf - 1)])
        let fields = line.split(separator: 32, omittingEmptySubsequences: false)
        guard let family = fields.first else { return .invalid("version 1 header without a family") }
        if family.elementsEqual("UNKNOWN".utf8) { return .complete(length: lf + 1, source: nil) }
        let isV4 = family.elementsEqual("TCP4".utf8)
        guard isV4 || family.elementsEqual("TCP6".utf8) else { return .invalid("version 1 family is not TCP4, TCP6 or UNKNOWN") }
        guard fields.count == 5 else { return .invalid("version 1 header needs two addresses and two ports") }
        let source: IPAddress?, destination: IPAddress?
        if isV4 {
            source = IPAddress.parseIPv4(fields[1]).map(IPAddress.init(ipv4:))
            destination = IPAddress.parseIPv4(fields[2]).map(IPAddress.init(ipv4:))
        } else {
            source = fields[1].contains(58) ? IPAddress.parseIPv6(fields[1]) : nil
            destination = fields[2].contains(58) ? IPAddress.parseIPv6(fields[2]) : nil
        }
        guard let source, destination != nil else { return .invalid("version 1 address does not match its family") }
        guard let port = parsePort(fields[3]), parsePort(fields[4]) != nil else { return .invalid("version 1 port is not 0-65535") }
        return .complete(length: lf + 1, source: ClientEndpoint(address: source, port: port))
    }

    private static func parsePort(_ text: some Collection<UInt8>) -> UInt16? {
        guard !text.isEmpty, text.count <= 5, text.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        if text.count > 1 && text.first == 48 { return nil }
        let value = text.reduce(0) { $0 * 10 + Int($1 - 48) }
        return value <= 65535 ? UInt16(value) : nil
    }

    private static func parseV2(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        let prefix = min(bytes.count, v2Signature.count)
        guard bytes[0..<prefix].elementsEqual(v2Signature[0..<prefix]) else { return .invalid("no PROXY protocol header") }
        guard bytes.count >= 16 else { return .needMore }
        let versionCommand = bytes[12], family = bytes[13]
        guard versionCommand >> 4 == 2 else { return .invalid("version 2 header with version \(versionCommand >> 4)") }
        let command = versionCommand & 0x0F
        guard command <= 1 else { return .invalid("version 2 command \(command)") }
        let length = Int(bytes[14]) << 8 | Int(bytes[15])
        let total = 16 + length
        let addressLength: Int
        switch family >> 4 {
        case 0: addressLength = 0
        case 1: addressLength = 12
        case 2: addressLength = 36
        case 3: addressLength = 216
        default: return .invalid("version 2 address family \(family >> 4)")
        }
        guard family & 0x0F <= 2 else { return .invalid("version 2 transport \(family & 0x0F)") }
        // LOCAL: the proxy's own connection (a health check); its addresses, if any, are ignored.
        if command == 0 { return .complete(length: total, source: nil) }
        guard length >= addressLength else { return .invalid("version 2 header too short for its addresses") }
        guard bytes.count >= 16 + addressLength else { return .needMore }
        switch family >> 4 {
        case 1:
            let a = UInt32(bytes[16]) << 24 | UInt32(bytes[17]) << 16 | UInt32(bytes[18]) << 8 | UInt32(bytes[19])
            let port = UInt16(bytes[24]) << 8 | UInt16(bytes[25])
            return .complete(length: total, source: ClientEndpoint(address: IPAddress(ipv4: a), port: port))
        case 2:
            let port = UInt16(bytes[48]) << 8 | UInt16(bytes[49])
            return .complete(length: total, source: ClientEndpoint(address: IPAddress(ipv6Bytes: bytes[16..<32]), port: port))
        default:
            // UNSPEC or Unix sockets: no address to use.
            return .complete(length: total, source: nil)
        }
    }
}

// MARK: X-Forwarded-For and Forwarded

/// Who the client is behind trusted proxies: starting from the connection's peer, each trusted
/// hop's word is taken for the one before it, right to left through `X-Forwarded-For` (or,
/// when a request has none, `Forwarded: for=`), until an address that is not trusted — the
/// client — or the list's start (like nginx's `real_ip_recursive on`). An entry that is not an
/// address (`unknown`, an obfuscated name) ends the walk: the last address reached stands.
public enum ForwardedClient {
    /// Hops looked at, from the right; a longer chain is cut there (its left part is whatever a
    /// client wrote).
    public static let maxHops = 32
    static let xffName = Array("x-forwarded-for".utf8)
    static let forwardedName = Array("forwarded".utf8)

    /// nil when the peer is not trusted or no header names anyone else.
    public static func resolve(_ head: RequestHead, peer: IPAddress, isTrusted: (IPAddress) -> Bool) -> ClientEndpoint? {
        guard isTrusted(peer) else { return nil }
        let xff = ForwardedClient.xffName, forwarded = ForwardedClient.forwardedName
        var useForwarded = true
        for h in head.headers where head.equalsIgnoringCase(h.name, xff) { useForwarded = false; break }
        let name = useForwarded ? forwarded : xff
        return withUnsafeTemporaryAllocation(of: ClientEndpoint?.self, capacity: maxHops) { ring in
            // The last `maxHops` entries, in order (nil: not an address).
            var count = 0
            head.storage.withUnsafeBytes { storage in
                for h in head.headers where head.equalsIgnoringCase(h.name, name) {
                    let value = UnsafeRawBufferPointer(rebasing: storage[h.value])
                    forEachEntry(value, forwarded: useForwarded) { entry in
                        ring[count % maxHops] = entry
                        count += 1
                    }
                }
            }
            var current: ClientEndpoint?
            var trusted = true
            var k = count - 1
            while k >= 0 && k >= count - maxHops && trusted {
                guard let entry = ring[k % maxHops] else { break }
                current = entry
                trusted = isTrusted(entry.address)
                k -= 1
            }
            return current
        }
    }

    /// Calls `body` for each comma-separated entry of one header value, left to right.
    static func forEachEntry(_ value: UnsafeRawBufferPointer, forwarded: Bool, _ body: (ClientEndpoint?) -> Void) {
        var i = 0
        while i <= value.count {
            var inQuotes = false
            var j = i
            while j < value.count {
                let c = value[j]
                if c == 34 { inQuotes.toggle() } else if c == 92 && inQuotes { j += 1 } else if c == 44 && !inQuotes { break }
                j += 1
            }
            let element = UnsafeRawBufferPointer(rebasing: value[i..<min(j, value.count)])
            let trimmed = trim(element)
            if !trimmed.isEmpty {
                body(forwarded ? forParameter(trimmed).flatMap(node) : node(trimmed))
            }
            i = j + 1
        }
    }

    /// The value of `for=` in one Forwarded element (`for=192.0.2.1;proto=http`), unquoted.
    static func forParameter(_ element: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        var start = 0
        while start < element.count {
            var end = start
            var inQuotes = false
            while end < element.count && (inQuotes || element[end] != 59) {
                if element[end] == 34 { inQuotes.toggle() }
                end += 1
            }
            let p = trim(UnsafeRawBufferPointer(rebasing: element[start..<end]))
            start = end + 1
            guard p.count > 4, p[3] == 61, ASCII.lower(p[0]) == 102, ASCII.lower(p[1]) == 111,
                  ASCII.lower(p[2]) == 114 else { continue }
            var v = UnsafeRawBufferPointer(rebasing: p[4...])
            if v.count >= 2 && v.first == 34 && v.last == 34 { v = UnsafeRawBufferPointer(rebasing: v[1..<(v.count - 1)]) }
            return v
        }
        return nil
    }

    /// "192.0.2.1", "192.0.2.1:4711", "2001:db8::1", "[2001:db8::1]", "[2001:db8::1]:4711".
    static func node(_ text: UnsafeRawBufferPointer) -> ClientEndpoint? {
        if text.first == 91 {
            guard let close = text.firstIndex(of: 93), let a = IPAddress.parseIPv6(text[1..<close]) else { return nil }
            let rest = text[(close + 1)...]
            if rest.isEmpty { return ClientEndpoint(address: a, port: 0) }
            guard rest.first == 58, let port = parsePort(rest.dropFirst()) else { return nil }
            return ClientEndpoint(address: a, port: port)
        }
        let colons = text.reduce(0) { $0 + ($1 == 58 ? 1 : 0) }
        if colons == 1, let colon = text.firstIndex(of: 58) {
            guard let v4 = IPAddress.parseIPv4(text[..<colon]), let port = parsePort(text[(colon + 1)...]) else { return nil }
            return ClientEndpoint(address: IPAddress(ipv4: v4), port: port)
        }
        return IPAddress(parsing: text).map { ClientEndpoint(address: $0, port: 0) }
    }

    private static func parsePort(_ text: some Collection<UInt8>) -> UInt16? {
        guard !text.isEmpty, text.count <= 5, text.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        let value = text.reduce(0) { $0 * 10 + Int($1 - 48) }
        return value <= 65535 ? UInt16(value) : nil
    }

    private static func trim(_ b: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        var s = 0, e = b.count
        while s < e && (b[s] == 32 || b[s] == 9) { s += 1 }
        while e > s && (b[e - 1] == 32 || b[e - 1] == 9) { e -= 1 }
        return UnsafeRawBufferPointer(rebasing: b[s..<e])
    }
}
