import AWSParsing
import Glibc

/// Open descriptors and their metadata, kept per worker like nginx's open_file_cache: a hit
/// costs nothing instead of openat2 + fstat + close. A hit re-checks the descriptor with fstat
/// when its last check is older than 100 ms, so a file rewritten in place shows its new size,
/// date and ETag within a tick; every second an entry is re-opened through the root (the path may
/// now name another file, or have become a symlink that leaves the root) and dropped if it no
/// longer matches.
final class OpenFileCache {
    final class Entry {
        /// Buffered (never O_DIRECT): sendfile for static files, libaio reads with RWF_NOWAIT for
        /// /dynamic/ ones (served from the page cache when the pages are there).
        let fd: Int32
        /// A /dynamic/ file: no `contents` (every byte goes through libaio), and `directFD` for
        /// the reads the page cache cannot serve.
        let dynamic: Bool
        fileprivate(set) var info: stat
        fileprivate(set) var validators: Validators
        let contentType: [UInt8]
        /// Worth compressing on the fly (`CompressionSettings.isCompressible`), judged once.
        let compressible: Bool
        /// The precompressed variants beside the file (FILE.br, FILE.zst, FILE.gz, not older
        /// than it), looked for at the first request and again a second after the last look.
        var variants = CodingSet()
        var variantsCheckedAt: Int64 = .min / 2
        /// The bytes of a small static file: sent in the same send as the head, which saves a
        /// syscall per request (sendfile costs more than copying a few KiB).
        fileprivate(set) var contents: [UInt8]?
        /// The fields of a plain 200 of the whole file, rendered with its metadata: Content-Type,
        /// Content-Length, Accept-Ranges, ETag and Last-Modified, in the order a response that
        /// builds them one by one has them.
        fileprivate(set) var okFields: [UInt8] = []
        fileprivate var checkedAt: Int64
        fileprivate var statAt: Int64
        /// Responses sending from `fd` right now; an evicted entry closes it when this is 0.
        fileprivate var users = 0
        fileprivate var evicted = false
        /// The same file opened O_DIRECT, for a /dynamic/ read that missed the page cache: opened
        /// at the first miss, so a file that is always cached never costs a second descriptor.
        /// `unopened` until then; -1 when the filesystem has none (tmpfs).
        private var direct: Int32 = Entry.unopened
        private static let unopened: Int32 = -2

        fileprivate init(fd: Int32, dynamic: Bool, info: stat, contentType: [UInt8], now: Int64) {
            self.fd = fd
            self.dynamic = dynamic
            self.info = info
            self.validators = Validators(info)
            self.contentType = contentType
            self.compressible = CompressionSettings.isCompressible(contentType)
            self.checkedAt = now
            self.statAt = now
            loadContents()
            renderFields()
        }

        fileprivate func renderFields() {
            okFields.removeAll(keepingCapacity: true)
            ResponseHead.field(&okFields, "Content-Type", contentType)
            ResponseHead.field(&okFields, "Content-Length", decimal: Int(info.st_size))
            ResponseHead.field(&okFields, "Accept-Ranges", ascii: "bytes")
            ResponseHead.field(&okFields, "ETag", validators.etag)
            ResponseHead.field(&okFields, "Last-Modified", validators.lastModified)
        }

        /// The O_DIRECT descriptor of this file, or -1 when there is none: for good when the
        /// filesystem has no O_DIRECT (EINVAL), for now when the reopen failed otherwise (out of
        /// descriptors: the next miss tries again).
        var directFD: Int32 {
            if direct == Entry.unopened {
                let fd = AIOBody.reopenDirect(fd)
                if fd >= 0 || errno == EINVAL { direct = fd } else { return -1 }
            }
            return direct
        }

        fileprivate func close() {
            Sys.close(fd)
            if direct >= 0 { Sys.close(direct) }
            direct = Entry.unopened
        }

        fileprivate func loadContents() {
            let size = Int(info.st_size)
            guard !dynamic, size <= OpenFileCache.smallFileLimit else { contents = nil; return }
            var bytes = [UInt8](repeating: 0, count: size)
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, size, 0) }
            contents = n == size ? bytes : nil
        }
    }

    /// A path as a dictionary key, hashed as one block of bytes (an array of bytes is hashed
    /// byte by byte, several times slower on every lookup).
    struct Key: Hashable {
        let bytes: [UInt8]
        func hash(into hasher: inout Hasher) { bytes.withUnsafeBytes { hasher.combine(bytes: $0) } }
        static func == (a: Key, b: Key) -> Bool { a.bytes == b.bytes }
    }

    private var buffered: [Key: Entry] = [:]
    private var dynamic: [Key: Entry] = [:]
    private let capacity: Int
    private let revalidateMillis: Int64 = 1000
    /// Static files up to this size are answered from memory, head and body in one send.
    static let smallFileLimit = 16 * 1024
    /// How long a hit trusts the last fstat: one loop tick.
    private let statMillis: Int64 = 100

    /// Hits and misses are counted here.
    private let metrics: WorkerMetrics

    init(capacity: Int = 1024, metrics: WorkerMetrics) {
        self.capacity = capacity
        self.metrics = metrics
    }

    /// A still-valid entry for the path, or nil (then open the file and `insert` it).
    func lookup(_ path: inout TargetPath, dynamic wantsDynamic: Bool, root: DocumentRoot, now: Int64) -> Entry? {
        let entry = find(&path, dynamic: wantsDynamic, root: root, now: now)
        if entry != nil { metrics.fileCacheHits.add() } else { metrics.fileCacheMisses.add() }
        return entry
    }

    private func find(_ path: inout TargetPath, dynamic wantsDynamic: Bool, root: DocumentRoot, now: Int64) -> Entry? {
        let key = Key(bytes: path.bytes)
        guard let entry = wantsDynamic ? dynamic[key] : buffered[key] else { return nil }
        if now - entry.statAt < statMillis { return entry }
        entry.statAt = now
        var st = stat()
        guard fstat(entry.fd, &st) == 0, st.st_nlink > 0 else {
            evict(key, entry)
            return nil
        }
        if now - entry.checkedAt >= revalidateMillis {
            // The name may now lead elsewhere: re-resolve it beneath the root.
            switch root.open(&path) {
            case .success(let fresh):
                Sys.close(fresh.fd)
                guard fresh.info.st_ino == st.st_ino, fresh.info.st_dev == st.st_dev else {
                    evict(key, entry)
                    return nil
                }
                entry.checkedAt = now
            case .failure:
                evict(key, entry)
                return nil
            }
        }
        if st.st_size != entry.info.st_size || st.st_mtim.tv_sec != entry.info.st_mtim.tv_sec
            || st.st_mtim.tv_nsec != entry.info.st_mtim.tv_nsec {
            entry.info = st
            entry.validators = Validators(st)
            entry.loadContents()
            entry.renderFields()
        }
        return entry
    }

    /// Takes ownership of an opened regular file's descriptor.
    func insert(_ path: [UInt8], file: DocumentRoot.OpenFile, dynamic isDynamic: Bool, contentType: [UInt8], now: Int64) -> Entry {
        if buffered.count + dynamic.count >= capacity { evictIdle() }
        let entry = Entry(fd: file.fd, dynamic: isDynamic, info: file.info, contentType: contentType, now: now)
        if isDynamic { dynamic[Key(bytes: path)] = entry } else { buffered[Key(bytes: path)] = entry }
        return entry
    }

    static func retain(_ entry: Entry) { entry.users += 1 }

    static func release(_ entry: Entry) {
        entry.users -= 1
        if entry.evicted && entry.users == 0 { entry.close() }
    }

    private func evict(_ key: Key, _ entry: Entry) {
        if entry.dynamic { dynamic[key] = nil } else { buffered[key] = nil }
        entry.evicted = true
        if entry.users == 0 { entry.close() }
    }

    private func evictIdle() {
        for (key, entry) in buffered where entry.users == 0 { evict(key, entry) }
        for (key, entry) in dynamic where entry.users == 0 { evict(key, entry) }
    }

    deinit {
        for e in buffered.values where e.users == 0 { e.close() }
        for e in dynamic.values where e.users == 0 { e.close() }
    }
}
