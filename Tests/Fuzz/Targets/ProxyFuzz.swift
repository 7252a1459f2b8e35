import AWSParsing

/// The PROXY protocol header, X-Forwarded-For / Forwarded and --trusted-proxy ranges: whatever
/// the bytes, no trap, and the header parser decides the same on every cut of the same bytes —
/// a header found complete in a prefix is the header of the whole input, and bytes that are
/// invalid never looked complete earlier.
enum ProxyFuzz {
    static func run(_ input: UnsafeRawBufferPointer) {
        let whole = ProxyProtocol.parse(input)
        if case .complete(let length, _) = whole {
            check(length >= 15 && length <= 16 + 65535, "header length \(length)")
            if input.first == 0x50 { check(length <= ProxyProtocol.v1MaxLength && length <= input.count, "v1 length \(length) of \(input.count)") }
        }
        for cut in 0..<min(input.count, ProxyProtocol.v2MaxAddressed + 8) {
            let part = ProxyProtocol.parse(UnsafeRawBufferPointer(rebasing: input[0..<cut]))
            switch part {
            case .complete: check(part == whole, "prefix of \(cut) bytes: \(part), whole: \(whole)")
            case .invalid: check(whole == part, "prefix of \(cut) bytes invalid (\(part)), whole: \(whole)")
            case .needMore: break
            }
        }
        // The same bytes as forwarding headers from a trusted peer, and as a range.
        let trusted = [CIDR("10.0.0.0/8")!, CIDR("2001:db8::/32")!]
        for name in ["X-Forwarded-For", "Forwarded"] {
            var head = RequestHead()
            Array(name.utf8).withUnsafeBytes { head.appendHeaderName($0) }
            head.appendHeaderValue(input)
            head.finishHeaders()
            _ = ForwardedClient.resolve(head, peer: IPAddress(ipv4: 0x0A00_0001)) { a in trusted.contains { $0.contains(a) } }
        }
        if let range = CIDR(String(decoding: input, as: UTF8.self)) {
            check(range.contains(range.network), "\(range) does not contain its own network")
        }
    }
}
