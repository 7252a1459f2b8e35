import AWSParsing
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

    /// An open file and what fstat said of it.
    struct OpenFile {
        var fd: Int32
        var info: stat
        var isDirectory: Bool { (info.st_mode & S_IFMT) == S_IFDIR }
        var isRegular: Bool { (info.st_mode & S_IFMT) == S_IFREG }
    }

    /// Opens `path` beneath the root (buffered: a /dynamic/ read that misses the page cache gets
    /// an O_DIRECT descriptor of its own, `AIOBody.reopenDirect`).
    func open(_ path: inout TargetPath) -> Result<OpenFile, Failure> {
        path.cString.removeAll(keepingCapacity: true)
        if path.bytes.isEmpty { path.cString.append(46) } else { path.cString.append(contentsOf: path.bytes) }
        path.cString.append(0)
        var fd: Int32 = path.cString.withUnsafeBufferPointer { p in
            p.withMemoryRebound(to: CChar.self) { aws_open_beneath(self.fd, $0.baseAddress!, 0) }
        }
        if fd < 0 && (errno == EXDEV || errno == ENOSYS) {
            fd = path.cString.withUnsafeBufferPointer { p in
                p.withMemoryRebound(to: CChar.self) { openChecked($0.baseAddress!) }
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

    /// The slow path for absolute symlinks: canonicalize and require the result to stay inside.
    private func openChecked(_ rel: UnsafePointer<CChar>) -> Int32 {
        let full = realPath == "/" ? "/" + String(cString: rel) : realPath + "/" + String(cString: rel)
        guard let resolved = realpath(full, nil) else { return -1 }
        defer { free(resolved) }
        let canonical = String(cString: resolved)
        guard canonical == realPath || canonical.hasPrefix(realPath == "/" ? "/" : realPath + "/") else {
            errno = EXDEV
            return -1
        }
        return Glibc.open(resolved, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
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
