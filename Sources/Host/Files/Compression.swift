import AWSParsing
import CCompress
import Glibc

/// `--compress` and its levels: which text files are compressed on the fly, and how hard.
struct CompressionSettings: Sendable {
    var enabled = true
    /// Levels per coding: compressed once and then served from the cache, so the levels lean to
    /// size; a file of up to `inlineLimit` bytes is compressed on the loop, which these keep far
    /// below a millisecond.
    var gzipLevel: Int32 = 6
    var brotliLevel: Int32 = 5
    var zstdLevel: Int32 = 6
    /// Compressed bodies kept per worker, in bytes (least recently used go first).
    var cacheBytes = 32 * 1024 * 1024
    /// Smaller files are sent as they are: a few hundred bytes gain less than the header costs.
    static let minimumSize = 1024
    /// Larger files are sent as they are: one body must fit the cache many times over.
    var maximumSize: Int { cacheBytes / 2 }
    /// Files up to this size are compressed on the worker's loop (their bytes are in memory
    /// already, `OpenFileCache.smallFileLimit`); larger ones on the compression thread.
    static let inlineLimit = OpenFileCache.smallFileLimit

    func level(_ coding: ContentCoding) -> Int32 {
        switch coding {
        case .br: brotliLevel
        case .zstd: zstdLevel
        case .gzip: gzipLevel
        }
    }

    /// Media types worth compressing: text, and the structured text formats that travel under
    /// application/ and image/. Images, audio, video, fonts (woff/woff2 are compressed inside)
    /// and archives are compressed already and never are.
    static func isCompressible(_ contentType: [UInt8]) -> Bool {
        var end = contentType.count
        if let semicolon = contentType.firstIndex(of: 59) { end = semicolon }
        let type = contentType[..<end]
        func starts(_ s: StaticString) -> Bool {
            let n = s.utf8CodeUnitCount
            guard type.count >= n else { return false }
            for i in 0..<n where ASCII.lower(type[i]) != s.utf8Start[i] { return false }
            return true
        }
        func ends(_ s: StaticString) -> Bool {
            let n = s.utf8CodeUnitCount
            guard type.count >= n else { return false }
            let base = type.count - n
            for i in 0..<n where ASCII.lower(type[base + i]) != s.utf8Start[i] { return false }
            return true
        }
        if starts("text/") { return true }
        for t: StaticString in ["application/json", "application/javascript", "application/xml", "application/wasm",
                                "image/svg+xml", "application/manifest+json", "application/x-javascript",
                                "image/x-icon", "image/bmp", "font/ttf", "font/otf"] where starts(t) && type.count == t.utf8CodeUnitCount {
            return true
        }
        return ends("+json") || ends("+xml")
    }
}

/// One file's bytes in one coding, compressed once: shared by every response that sends it (the
/// memory stays while any does, `MemoryBody.owner`). Made on any thread and handed to a worker's
/// loop whole, then only read: `@unchecked Sendable`.
final class CompressedRepresentation: @unchecked Sendable {
    let bytes: UnsafeMutableRawBufferPointer
    let coding: ContentCoding
    /// The identity file's validators with the coding in the entity tag: a compressed body is a
    /// different representation (RFC 9110 §8.8.3), with its own strong tag.
    var validators: Validators

    init(bytes: UnsafeMutableRawBufferPointer, coding: ContentCoding, identity: Validators) {
        self.bytes = bytes
        self.coding = coding
        validators = identity
        var tag = identity.etag
        tag.removeLast()  // the closing quote
        tag.append(45)
        tag.append(ascii: coding.token)
        tag.append(34)
        validators.etag = tag
    }

    deinit { free(bytes.baseAddress) }
}

/// The compressors, whole buffer in, whole buffer out (malloc'd; the caller frees it).
enum Compressor {
    static func compress(_ input: UnsafeRawBufferPointer, _ coding: ContentCoding, level: Int32) -> UnsafeMutableRawBufferPointer? {
        switch coding {
        case .gzip: gzip(input, level: level)
        case .br: brotli(input, level: level)
        case .zstd: zstd(input, level: level)
        }
    }

    private static func finish(_ out: UnsafeMutableRawPointer, _ count: Int) -> UnsafeMutableRawBufferPointer {
        let shrunk = realloc(out, max(count, 1)) ?? out
        return UnsafeMutableRawBufferPointer(start: shrunk, count: count)
    }

    private static func gzip(_ input: UnsafeRawBufferPointer, level: Int32) -> UnsafeMutableRawBufferPointer? {
        var stream = z_stream()
        guard aws_deflate_init_gzip(&stream, level) == Z_OK else { return nil }
        defer { deflateEnd(&stream) }
        // deflateBound counts zlib's own wrapper; the gzip one is 12 bytes longer.
        let capacity = Int(deflateBound(&stream, uLong(input.count))) + 32
        guard let out = malloc(capacity) else { return nil }
        stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.avail_in = uInt(input.count)
        stream.next_out = out.assumingMemoryBound(to: Bytef.self)
        stream.avail_out = uInt(capacity)
        guard deflate(&stream, Z_FINISH) == Z_STREAM_END else { free(out); return nil }
        return finish(out, Int(stream.total_out))
    }

    private static func brotli(_ input: UnsafeRawBufferPointer, level: Int32) -> UnsafeMutableRawBufferPointer? {
        var capacity = BrotliEncoderMaxCompressedSize(input.count)
        guard capacity > 0, let out = malloc(capacity) else { return nil }
        let ok = BrotliEncoderCompress(level, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_TEXT, input.count,
                                       input.baseAddress?.assumingMemoryBound(to: UInt8.self),
                                       &capacity, out.assumingMemoryBound(to: UInt8.self))
        guard ok != 0 else { free(out); return nil }
        return finish(out, capacity)
    }

    private static func zstd(_ input: UnsafeRawBufferPointer, level: Int32) -> UnsafeMutableRawBufferPointer? {
        let capacity = ZSTD_compressBound(input.count)
        guard let out = malloc(capacity) else { return nil }
        let n = ZSTD_compress(out, capacity, input.baseAddress, input.count, level)
        guard ZSTD_isError(n) == 0 else { free(out); return nil }
        return finish(out, n)
    }
}

/// A worker's compressed bodies, keyed by the file's identity (device, inode, size, mtime) and
/// the coding: a rewritten file is a new key, its old bodies age out. Bounded by bytes, least
/// recently used evicted first. Touched only on the worker's loop.
final class CompressionCache {
    struct Key: Hashable {
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var seconds: Int64
        var nanoseconds: Int64
        var coding: UInt8

        init(_ st: stat, _ coding: ContentCoding) {
            device = UInt64(st.st_dev)
            inode = UInt64(st.st_ino)
            size = Int64(st.st_size)
            seconds = Int64(st.st_mtim.tv_sec)
            nanoseconds = Int64(st.st_mtim.tv_nsec)
            self.coding = UInt8(coding.rawValue)
        }
    }

    private struct Slot {
        var representation: CompressedRepresentation
        var lastUse: UInt64
    }

    private var slots: [Key: Slot] = [:]
    /// Keys the compression thread is working on: one job per body however many ask.
    private var pending: Set<Key> = []
    private var bytes = 0
    private var clock: UInt64 = 0
    let budget: Int

    init(budget: Int) { self.budget = budget }

    func lookup(_ key: Key) -> CompressedRepresentation? {
        guard var slot = slots[key] else { return nil }
        clock &+= 1
        slot.lastUse = clock
        slots[key] = slot
        return slot.representation
    }

    func insert(_ key: Key, _ representation: CompressedRepresentation) {
        pending.remove(key)
        let size = representation.bytes.count
        guard size <= budget / 2 else { return }
        if let old = slots[key] { bytes -= old.representation.bytes.count }
        while bytes + size > budget, let victim = slots.min(by: { $0.value.lastUse < $1.value.lastUse }) {
            bytes -= victim.value.representation.bytes.count
            slots[victim.key] = nil
        }
        clock &+= 1
        slots[key] = Slot(representation: representation, lastUse: clock)
        bytes += size
    }

    /// True when a job for `key` should start now (none is under way).
    func beginPending(_ key: Key) -> Bool { pending.insert(key).inserted }
    func endPending(_ key: Key) { pending.remove(key) }
}

/// Compresses files too large to compress on a worker's loop, one at a time on a thread of its
/// own (shared by all workers, started at the first job); the result is posted to the worker
/// that asked. Meanwhile that worker answers with the identity body: no client waits for a
/// compression and none is stalled by one.
///
/// The queue is behind a pthread mutex, its only mutable state.
final class CompressionThread: @unchecked Sendable {
    static let shared = CompressionThread()

    struct Job {
        /// A duplicate of the file's descriptor, closed by the thread.
        var fd: Int32
        var size: Int
        var coding: ContentCoding
        var level: Int32
        var identity: Validators
        /// Runs on the compression thread with the result (nil: the file could not be read or
        /// compressed): posts it to the worker's loop.
        var done: @Sendable (CompressedRepresentation?) -> Void
    }

    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let ready = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var queue: [Job] = []
    private var started = false
    /// More jobs than this waiting: later ones are refused (their files go out uncompressed
    /// until a later request asks again).
    private let limit = 64

    private init() {
        pthread_mutex_init(lock, nil)
        pthread_cond_init(ready, nil)
    }

    /// False when the job was refused (the descriptor is then closed here).
    func submit(_ job: Job) -> Bool {
        pthread_mutex_lock(lock)
        if !started {
            started = (try? WorkerThread.spawn(name: "aws-compress") { [self] in run() }) != nil
        }
        let accepted = started && queue.count < limit
        if accepted {
            queue.append(job)
            pthread_cond_signal(ready)
        }
        pthread_mutex_unlock(lock)
        if !accepted { Sys.close(job.fd) }
        return accepted
    }

    private func run() {
        while true {
            pthread_mutex_lock(lock)
            while queue.isEmpty { pthread_cond_wait(ready, lock) }
            let job = queue.removeFirst()
            pthread_mutex_unlock(lock)
            job.done(Self.compress(job))
        }
    }

    private static func compress(_ job: Job) -> CompressedRepresentation? {
        defer { Sys.close(job.fd) }
        guard let input = malloc(max(job.size, 1)) else { return nil }
        defer { free(input) }
        var done = 0
        while done < job.size {
            let n = pread(job.fd, input + done, job.size - done, off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return nil }  // an error, or the file shrank: its key is stale
            done += n
        }
        guard let out = Compressor.compress(UnsafeRawBufferPointer(start: input, count: job.size), job.coding, level: job.level) else { return nil }
        return CompressedRepresentation(bytes: out, coding: job.coding, identity: job.identity)
    }
}

/// One response compressed as it streams (a plugin's `compress_response`): each part is
/// compressed and flushed at once, so a stream's events reach the client when they are sent, and
/// `finish` ends the coding's frame. Output lands in one buffer reused part after part.
final class StreamCompressor {
    let coding: ContentCoding
    private var zlib: UnsafeMutablePointer<z_stream>?
    private var brotli: OpaquePointer?
    private var zstd: OpaquePointer?
    /// The last `compress` output: valid until the next call.
    private(set) var output: UnsafeMutableRawPointer?
    private(set) var outputCount = 0
    private var capacity = 0

    /// log2 of the history a stream keeps (brotli and zstd; gzip's is 32 KiB anyway).
    static let windowLog: UInt32 = 18

    init?(_ coding: ContentCoding, level: Int32) {
        self.coding = coding
        switch coding {
        case .gzip:
            let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
            stream.initialize(to: z_stream())
            guard aws_deflate_init_gzip(stream, level) == Z_OK else { stream.deallocate(); return nil }
            zlib = stream
        case .br:
            guard let state = BrotliEncoderCreateInstance(nil, nil, nil) else { return nil }
            BrotliEncoderSetParameter(state, BROTLI_PARAM_QUALITY, UInt32(level))
            BrotliEncoderSetParameter(state, BROTLI_PARAM_MODE, BROTLI_MODE_TEXT.rawValue)
            // A stream lives as long as its response (an event stream: hours), one per request:
            // a 256 KiB window rather than the default 4 MiB keeps each at ~100 KiB.
            BrotliEncoderSetParameter(state, BROTLI_PARAM_LGWIN, StreamCompressor.windowLog)
            brotli = state
        case .zstd:
            guard let context = ZSTD_createCCtx() else { return nil }
            ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level)
            // The default window at level 6 (up to 8 MiB of tables and history) made each
            // stream cost ~3 MiB: the same 256 KiB window as brotli's.
            ZSTD_CCtx_setParameter(context, ZSTD_c_windowLog, Int32(StreamCompressor.windowLog))
            zstd = context
        }
    }

    deinit {
        if let zlib { deflateEnd(zlib); zlib.deallocate() }
        if let brotli { BrotliEncoderDestroyInstance(brotli) }
        if let zstd { ZSTD_freeCCtx(zstd) }
        free(output)
    }

    private func reserve(_ count: Int) -> Bool {
        guard capacity < count else { return true }
        guard let grown = realloc(output, count) else { return false }
        output = grown
        capacity = count
        return true
    }

    /// Compresses `input` and flushes (or, `last`, ends the stream): the bytes to send are
    /// `output[0..<outputCount]`. False when the coder failed (the response cannot go on).
    func compress(_ input: UnsafeRawBufferPointer, last: Bool) -> Bool {
        outputCount = 0
        var inPtr = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
        var inLeft = input.count
        guard reserve(max(16 * 1024, input.count + input.count / 8 + 1024)) else { return false }
        while true {
            if outputCount + 1024 > capacity, !reserve(capacity * 2) { return false }
            let room = capacity - outputCount
            let out = output!.advanced(by: outputCount).assumingMemoryBound(to: UInt8.self)
            var done: Bool
            switch coding {
            case .gzip:
                let z = zlib!
                z.pointee.next_in = inPtr
                z.pointee.avail_in = uInt(inLeft)
                z.pointee.next_out = out
                z.pointee.avail_out = uInt(room)
                let rc = deflate(z, last ? Z_FINISH : Z_SYNC_FLUSH)
                guard rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR else { return false }
                outputCount += room - Int(z.pointee.avail_out)
                inPtr = z.pointee.next_in
                inLeft = Int(z.pointee.avail_in)
                done = last ? rc == Z_STREAM_END : (inLeft == 0 && z.pointee.avail_out > 0)
            case .br:
                var availIn = inLeft
                var nextIn = UnsafePointer(inPtr)
                var availOut = room
                var nextOut: UnsafeMutablePointer<UInt8>? = out
                let op = last ? BROTLI_OPERATION_FINISH : BROTLI_OPERATION_FLUSH
                guard BrotliEncoderCompressStream(brotli, op, &availIn, &nextIn, &availOut, &nextOut, nil) != 0 else { return false }
                outputCount += room - availOut
                inPtr = UnsafeMutablePointer(mutating: nextIn)
                inLeft = availIn
                done = inLeft == 0 && BrotliEncoderHasMoreOutput(brotli) == 0
                    && (!last || BrotliEncoderIsFinished(brotli) != 0)
            case .zstd:
                var inBuffer = ZSTD_inBuffer(src: UnsafeRawPointer(inPtr), size: inLeft, pos: 0)
                var outBuffer = ZSTD_outBuffer(dst: UnsafeMutableRawPointer(out), size: room, pos: 0)
                let remaining = ZSTD_compressStream2(zstd, &outBuffer, &inBuffer, last ? ZSTD_e_end : ZSTD_e_flush)
                guard ZSTD_isError(remaining) == 0 else { return false }
                outputCount += outBuffer.pos
                inPtr = inPtr.map { $0 + inBuffer.pos }
                inLeft -= inBuffer.pos
                done = remaining == 0 && inLeft == 0
            }
            if done { return true }
        }
    }
}
