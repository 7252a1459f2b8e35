import CLinux
import Glibc

/// The served folder. Turns a request target into a path beneath it and opens files so that no
/// byte from outside the root is ever served: the kernel's `openat2(RESOLVE_BENEATH)` refuses any
/// `..` or symlink that leaves the root; a symlink it cannot judge (an absolute one) is resolved
/// with realpath and checked against the root by prefix.
final class DocumentRoot: Sendable {
    let path: String
    /// The canonical root, with no trailing slash (except "/" itself).
    let realPath: String
    let fd: Int32

    init(path: String) throws {
        self.path = path
        guard let real = realpath(path, nil) else { throw SyscallError(call: "realpath", errno: errno) }
        let canonical = String(cString: real)
        free(real)
        realPath = canonical
        fd = try Sys.check("open") { Glibc.open(canonical, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
    }

    deinit { Sys.close(fd) }

    enum Failure: Error { case status(HTTPStatus) }

    static let indexName: [UInt8] = Array("index.html".utf8)

    /// A request target turned into a normalized path relative to the root.
    struct Path {
        /// Decoded, normalized, without a leading slash; empty for the root itself. NUL-terminated
        /// in `cString`.
        var bytes: [UInt8] = []
        var cString: [UInt8] = []
        /// The target's path ended in "/".
        var trailingSlash = false
        /// Bytes of the original (still encoded) path, for redirects.
        var encoded: ArraySlice<UInt8> = []

        init() { bytes.reserveCapacity(256); cString.reserveCapacity(257) }

        var isDynamic: Bool { firstSegmentIs("dynamic") }

        /// Makes this the path of `dir`'s index.html.
        mutating func setIndex(of dir: Path) {
            bytes.removeAll(keepingCapacity: true)
            bytes.append(contentsOf: dir.bytes)
            if !bytes.isEmpty { bytes.append(47) }
            bytes.append(contentsOf: DocumentRoot.indexName)
            trailingSlash = false
            encoded = dir.encoded
        }

        func firstSegmentIs(_ name: StaticString) -> Bool {
            let n = name.utf8CodeUnitCount
            guard bytes.count >= n, bytes.count == n || bytes[n] == 47 else { return false }
            return name.withUTF8Buffer { name in
                for i in 0..<n where bytes[i] != name[i] { return false }
                return true
            }
        }
    }

    /// Decodes and normalizes a target (origin-form or absolute-form; query and fragment dropped).
    /// 400 for a malformed target, 403 for a NUL byte or a path that climbs above the root.
    static func resolve(target: ArraySlice<UInt8>, into path: inout Path) -> HTTPStatus? {
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
        path.encoded = t
        path.bytes.removeAll(keepingCapacity: true)
        path.trailingSlash = t.last == 47

        // Decode into `bytes`, then normalize segments in place.
        var i = t.startIndex
        while i < t.endIndex {
            var c = t[i]
            if c == 37 {
                guard i + 2 < t.endIndex, let hi = ASCII.hexValue(t[i + 1]), let lo = ASCII.hexValue(t[i + 2]) else { return .badRequest }
                c = hi << 4 | lo
                i += 3
            } else {
                i += 1
            }
            if c == 0 { return .forbidden }
            path.bytes.append(c)
        }
        return normalize(&path.bytes) ? nil : .forbidden
    }

    /// Collapses "//", "/./" and "/../" in an absolute path, leaving it relative (no leading slash).
    /// False when ".." would climb above the root.
    private static func normalize(_ p: inout [UInt8]) -> Bool {
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
                if out == 0 { return false }
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
        p.removeLast(n - out)
        return true
    }

    /// An open file and what fstat said of it.
    struct OpenFile {
        var fd: Int32
        var info: stat
        var isDirectory: Bool { (info.st_mode & S_IFMT) == S_IFDIR }
        var isRegular: Bool { (info.st_mode & S_IFMT) == S_IFREG }
    }

    /// Opens `path` beneath the root. `direct` asks for O_DIRECT (falling back to buffered I/O
    /// where the filesystem refuses it).
    func open(_ path: inout Path, direct: Bool = false) -> Result<OpenFile, Failure> {
        path.cString.removeAll(keepingCapacity: true)
        if path.bytes.isEmpty { path.cString.append(46) } else { path.cString.append(contentsOf: path.bytes) }
        path.cString.append(0)
        var fd: Int32 = path.cString.withUnsafeBufferPointer { p in
            p.withMemoryRebound(to: CChar.self) { openBeneath($0.baseAddress!, direct: direct) }
        }
        if fd < 0 && (errno == EXDEV || errno == ENOSYS) {
            fd = path.cString.withUnsafeBufferPointer { p in
                p.withMemoryRebound(to: CChar.self) { openChecked($0.baseAddress!, direct: direct) }
            }
        }
        if fd < 0 {
            switch errno {
            case ENOENT, ENOTDIR, ENAMETOOLONG: return .failure(.status(.notFound))
            // Out of descriptors or kernel memory says nothing about the file: the trouble is the
            // server's and passes, so the client is told to come back (503), not that it may not.
            case _ where DocumentRoot.isTemporary(errno): return .failure(.status(.serviceUnavailable))
            default: return .failure(.status(.forbidden))  // EACCES, EPERM, ELOOP, EXDEV ...
            }
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else { Sys.close(fd); return .failure(.status(.internalServerError)) }
        return .success(OpenFile(fd: fd, info: st))
    }

    private func openBeneath(_ rel: UnsafePointer<CChar>, direct: Bool) -> Int32 {
        if direct {
            let fd = aws_open_beneath(self.fd, rel, aws_o_direct())
            if fd >= 0 || errno != EINVAL { return fd }
        }
        return aws_open_beneath(self.fd, rel, 0)
    }

    /// The slow path for absolute symlinks: canonicalize and require the result to stay inside.
    private func openChecked(_ rel: UnsafePointer<CChar>, direct: Bool) -> Int32 {
        let full = realPath == "/" ? "/" + String(cString: rel) : realPath + "/" + String(cString: rel)
        guard let resolved = realpath(full, nil) else { return -1 }
        defer { free(resolved) }
        let canonical = String(cString: resolved)
        guard canonical == realPath || canonical.hasPrefix(realPath == "/" ? "/" : realPath + "/") else {
            errno = EXDEV
            return -1
        }
        let flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC
        if direct {
            let fd = Glibc.open(resolved, flags | aws_o_direct())
            if fd >= 0 || errno != EINVAL { return fd }
        }
        return Glibc.open(resolved, flags)
    }

    /// Opens `name` inside an already-open directory (index.html lookups): nil when there is no
    /// such regular file to open, a 503 failure when descriptors or memory ran out (the file may
    /// well be there).
    func open(_ name: String, in dir: Int32) -> Result<OpenFile?, Failure> {
        let fd = name.withCString { aws_open_beneath(dir, $0, 0) }
        guard fd >= 0 else { return DocumentRoot.isTemporary(errno) ? .failure(.status(.serviceUnavailable)) : .success(nil) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { Sys.close(fd); return .success(nil) }
        return .success(OpenFile(fd: fd, info: st))
    }

    /// An errno that is the server's own, passing shortage rather than anything about the file.
    static func isTemporary(_ error: Int32) -> Bool { error == EMFILE || error == ENFILE || error == ENOMEM }
}
