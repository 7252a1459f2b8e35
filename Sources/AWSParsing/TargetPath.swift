/// A request target turned into a normalized path relative to a document root: percent-decoded,
/// with query and fragment dropped and "//", "/./" and "/../" collapsed. It never climbs above the
/// root and never holds a NUL byte; opening it beneath the root is `DocumentRoot`'s job.
public struct TargetPath {
    /// Decoded, normalized, without a leading slash; empty for the root itself.
    public var bytes: [UInt8] = []
    /// `bytes` NUL-terminated, filled by whoever passes the path to the kernel.
    public var cString: [UInt8] = []
    /// The target's path ended in "/".
    public var trailingSlash = false
    /// Bytes of the original (still encoded) path, for directory listings. A copy in a buffer
    /// reused across requests, not a slice of the request's head: a slice kept here would share
    /// the head's storage, and the next request's reset would then allocate a new one.
    public var encoded: [UInt8] = []

    public static let indexName: [UInt8] = Array("index.html".utf8)

    public init() { bytes.reserveCapacity(256); cString.reserveCapacity(257); encoded.reserveCapacity(256) }

    @inlinable public var isDynamic: Bool { firstSegmentIs("dynamic") }

    /// Makes this the path of `dir`'s index.html.
    public mutating func setIndex(of dir: TargetPath) {
        bytes.removeAll(keepingCapacity: true)
        bytes.append(contentsOf: dir.bytes)
        if !bytes.isEmpty { bytes.append(47) }
        bytes.append(contentsOf: TargetPath.indexName)
        trailingSlash = false
        encoded.removeAll(keepingCapacity: true)
        encoded.append(contentsOf: dir.encoded)
    }

    @inlinable @inline(__always) public func firstSegmentIs(_ name: StaticString) -> Bool {
        let n = name.utf8CodeUnitCount
        guard bytes.count >= n, bytes.count == n || bytes[n] == 47 else { return false }
        return name.withUTF8Buffer { name in
            for i in 0..<n where bytes[i] != name[i] { return false }
            return true
        }
    }

    /// Decodes and normalizes a target (origin-form or absolute-form; query and fragment dropped)
    /// into `path`. 400 for a malformed target, 403 for a NUL byte or a path that climbs above
    /// the root.
    public static func resolve(target: ArraySlice<UInt8>, into path: inout TargetPath) -> HTTPStatus? {
        var t = target
        // absolute-form: scheme "://" authority path
        if let first = t.first, first != 47 {
            guard let colon = t.firstIndex(of: 58), t[colon...].starts(with: [58, 47, 47]) else { return .badRequest }
            for c in t[t.startIndex..<colon] where !(ASCII.isTokenChar(c)) { return .badRequest }
            let afterAuthority = t[(colon + 3)...]
            if let slash = afterAuthority.firstIndex(where: { $0 == 47 || $0 == 63 || $0 == 35 }), t[slash] == 47 {
                t = t[slash...]
            } else {
                t = [47][0...]
            }
        }
        if let cut = t.firstIndex(where: { $0 == 63 || $0 == 35 }) { t = t[t.startIndex..<cut] }
        guard t.first == 47 else { return .badRequest }
        path.encoded.removeAll(keepingCapacity: true)
        path.encoded.append(contentsOf: t)
        path.trailingSlash = t.last == 47
        // Decoded in place (a %XX takes 3 bytes and gives 1), then normalized in place, through
        // one buffer pointer: indexing the array byte by byte checks its uniqueness every time.
        path.bytes.removeAll(keepingCapacity: true)
        path.bytes.append(contentsOf: t)
        var failure: HTTPStatus?
        let length = path.bytes.withUnsafeMutableBufferPointer { p -> Int in
            var out = 0
            var i = 0
            while i < p.count {
                var c = p[i]
                if c == 37 {
                    guard i + 2 < p.count, let hi = ASCII.hexValue(p[i + 1]), let lo = ASCII.hexValue(p[i + 2]) else {
                        failure = .badRequest
                        return 0
                    }
                    c = hi << 4 | lo
                    i += 3
                } else {
                    i += 1
                }
                if c == 0 {
                    failure = .forbidden
                    return 0
                }
                p[out] = c
                out += 1
            }
            guard let normalized = normalize(UnsafeMutableBufferPointer(rebasing: p[..<out])) else {
                failure = .forbidden
                return 0
            }
            return normalized
        }
        path.bytes.removeLast(path.bytes.count - length)
        return failure
    }

    /// Collapses "//", "/./" and "/../" in an absolute path, leaving it relative (no leading slash):
    /// the length of the result, written from the start of `p`. Nil when ".." would climb above
    /// the root.
    private static func normalize(_ p: UnsafeMutableBufferPointer<UInt8>) -> Int? {
        var out = 0  // write index
        var i = 0
        let n = p.count
        while i < n {
            while i < n && p[i] == 47 { i += 1 }
            let start = i
            while i < n && p[i] != 47 { i += 1 }
            let len = i - start
            if len == 0 || (len == 1 && p[start] == 46) { continue }
            if len == 2 && p[start] == 46 && p[start + 1] == 46 {
                if out == 0 { return nil }
                // drop the last written segment
                var j = out - 1
                while j > 0 && p[j - 1] != 47 { j -= 1 }
                out = j > 0 ? j - 1 : 0
                continue
            }
            if out > 0 { p[out] = 47; out += 1 }
            for k in 0..<len { p[out + k] = p[start + k] }
            out += len
        }
        return out
    }
}
