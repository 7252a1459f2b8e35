/// The part of an open file a body sends: the descriptor (owned, or borrowed from the open-file
/// cache, or borrowed from a plugin part) and the byte range still to go.
struct FileRegion {
    var fd: Int32 = -1
    /// Close `fd` when the body ends (a descriptor opened or duplicated for this body alone).
    var ownsFD = false
    /// The cache entry `fd` belongs to, held (retained) while the body is sent.
    var cacheEntry: OpenFileCache.Entry?
    /// Next byte to send, and the end of the range.
    var offset = 0
    var end = 0

    var remaining: Int { end - offset }

    mutating func release() {
        if fd >= 0 && ownsFD { Sys.close(fd) }
        fd = -1
        ownsFD = false
        if let entry = cacheEntry {
            OpenFileCache.release(entry)
            cacheEntry = nil
        }
    }
}

/// A static file body: sendfile(2) from the open descriptor, zero copy.
///
/// At most `chunk` bytes per call, like lighttpd: while the receiver keeps draining the socket, one
/// unbounded call can run for tens of milliseconds (39 MB in one call was seen on loopback),
/// holding the socket's lock while the ACKs that open the window queue up behind it. (The loop
/// below still sends until the socket is full before the worker turns to other connections.)
final class SendfileBody: BodyProducer {
    static let chunk = 256 * 1024
    /// Bodies from this size on send with a low unsent-bytes mark (`Connection.limitUnsentBytes`).
    static let bigBody = 256 * 1024

    unowned(unsafe) let worker: Worker
    var region = FileRegion()

    init(worker: Worker) { self.worker = worker }

    func produce(_ pump: BodyPump) -> Progress {
        if region.remaining >= SendfileBody.bigBody { pump.exchange.connection.limitUnsentBytes() }
        while region.offset < region.end {
            do {
                guard let n = try pump.sendFile(region.fd, offset: &region.offset, count: min(region.remaining, SendfileBody.chunk)) else { return .blocked }
                if n == 0 { return .failed }  // the file shrank under us
            } catch {
                return .failed
            }
        }
        return .done
    }

    func release() { region.release() }
}
