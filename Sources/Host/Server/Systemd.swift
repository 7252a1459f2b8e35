import CLinux
import Glibc

/// The two systemd protocols aws speaks without libsystemd: socket activation (the listening
/// sockets systemd passes as descriptors 3, 4, … with LISTEN_FDS and LISTEN_PID) and readiness
/// (datagrams to NOTIFY_SOCKET). Both are read once at start and taken out of the environment,
/// so CGI programs and anything else the server starts never see them.
enum Systemd {
    /// A listening socket systemd passed, and its name (`FileDescriptorName=` of the socket unit,
    /// `--fdname` of systemd-socket-activate; "" when none was given).
    struct PassedSocket {
        let fd: Int32
        let name: String
    }

    /// The sockets passed to this process (none when LISTEN_PID names another one: the variables
    /// were inherited, not meant for us). Each is made non-blocking and close-on-exec, and must
    /// be a listening stream socket.
    static func takeListeningSockets() throws -> [PassedSocket] {
        defer {
            unsetenv("LISTEN_FDS")
            unsetenv("LISTEN_PID")
            unsetenv("LISTEN_FDNAMES")
        }
        guard let pidText = environment("LISTEN_PID"), let pid = Int32(pidText), pid == getpid(),
              let countText = environment("LISTEN_FDS"), let count = Int32(countText), count > 0 else { return [] }
        let names = environment("LISTEN_FDNAMES")?.split(separator: ":", omittingEmptySubsequences: false).map(String.init) ?? []
        var sockets: [PassedSocket] = []
        for i in 0..<count {
            let fd = 3 + i
            var listening: Int32 = 0
            var type: Int32 = 0
            var size = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size) == 0, listening == 1,
                  getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size) == 0, type == Int32(SOCK_STREAM.rawValue) else {
                throw ConfigError("socket activation: descriptor \(fd) is not a listening stream socket")
            }
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            // Accepted sockets inherit TCP_NODELAY from the listener (not a TCP socket: ignored).
            try? Sys.setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            sockets.append(PassedSocket(fd: fd, name: Int(i) < names.count ? names[Int(i)] : ""))
        }
        return sockets
    }

    private static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }
}

/// sd_notify(3) without libsystemd: one datagram per state change to the Unix socket named by
/// NOTIFY_SOCKET (a path, or an abstract name written with a leading "@"). Used on the control
/// thread only, a few times in the server's life; without NOTIFY_SOCKET every call does nothing.
final class ReadinessNotifier {
    private var address = sockaddr_un()
    private var addressLength: socklen_t = 0
    private let fd: Int32

    init() {
        defer { unsetenv("NOTIFY_SOCKET") }
        guard let value = getenv("NOTIFY_SOCKET") else { fd = -1; return }
        var path = Array(String(cString: value).utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !path.isEmpty, path.count < capacity, path[0] == 47 || path[0] == 64 else { fd = -1; return }
        if path[0] == 64 { path[0] = 0 }
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path) }
        // An abstract name is exactly its bytes; a path ends at its NUL.
        addressLength = socklen_t(MemoryLayout<sa_family_t>.size + path.count + (path[0] == 0 ? 0 : 1))
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    }

    deinit { if fd >= 0 { Sys.close(fd) } }

    var isActive: Bool { fd >= 0 }

    /// "READY=1", "RELOADING=1", "STOPPING=1", "STATUS=…", several joined by newlines. Errors are
    /// not the server's business (systemd may be gone at shutdown): ignored.
    func notify(_ state: String) {
        guard fd >= 0 else { return }
        let bytes = Array(state.utf8)
        _ = bytes.withUnsafeBytes { data in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, data.baseAddress, data.count, Int32(MSG_NOSIGNAL), $0, addressLength)
                }
            }
        }
    }

    /// RELOADING=1 with the CLOCK_MONOTONIC time systemd's Type=notify-reload asks for.
    func reloading() {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        notify("RELOADING=1\nMONOTONIC_USEC=\(Int(now.tv_sec) * 1_000_000 + Int(now.tv_nsec) / 1000)")
    }
}
