import CLinux
import Glibc

/// The only place threads are made: a named pthread running a Swift closure. Workers are
/// threads of their own (not Dispatch or tasks) because each blocks in `epoll_wait`.
enum WorkerThread {
    private final class Start {
        let name: String
        let body: () -> Void
        init(name: String, body: @escaping () -> Void) { self.name = name; self.body = body }
    }

    /// Starts `body` on a new thread named `name` (at most 15 bytes are kept by the kernel).
    static func spawn(name: String, _ body: @escaping () -> Void) throws(SyscallError) -> pthread_t {
        let start = Unmanaged.passRetained(Start(name: name, body: body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            let start = Unmanaged<Start>.fromOpaque(raw!).takeRetainedValue()
            start.name.withCString { aws_set_thread_name($0) }
            start.body()
            return nil
        }, start)
        if rc != 0 {
            Unmanaged<Start>.fromOpaque(start).release()
            throw SyscallError(call: "pthread_create", errno: rc)
        }
        return thread
    }

    static func join(_ thread: pthread_t) { _ = pthread_join(thread, nil) }

    static var current: UInt { UInt(pthread_self()) }
}
