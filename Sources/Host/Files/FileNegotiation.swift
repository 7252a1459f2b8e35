import AWSParsing
import CHTTPParser
import Glibc

/// Content negotiation for files (RFC 9110 §12.5.3): a precompressed variant beside the file
/// (FILE.br, FILE.zst, FILE.gz — like nginx's gzip_static and Caddy's precompressed), or a body
/// compressed on the fly and kept in the worker's `CompressionCache`.
///
/// A variant is a real file: it is served like any other (sendfile or libaio, ranges, its own
/// validators), only with the original's type and a Content-Encoding. On-the-fly compression is
/// for static files only (never /dynamic/, whose bytes go through libaio) and never for a Range
/// request: those get the identity representation, whose ranges are real.
extension Exchange {
    /// Whether the response varies with Accept-Encoding, and what to send instead of `identity`
    /// as it is: a precompressed variant (with its coding) or a compressed body.
    func negotiate(_ identity: FileSource, index: Bool)
        -> (vary: Bool, coding: ContentCoding?, compressed: CompressedRepresentation?, variant: FileSource?) {
        let entry = identity.entry
        refreshVariants(entry, index: index)
        let size = Int(entry.info.st_size)
        // Read in place: a copy of the settings would be made on every file response.
        let onTheFly = worker.config.compression.enabled && !entry.dynamic && entry.compressible
            && size >= CompressionSettings.minimumSize && size <= worker.config.compression.maximumSize
        let vary = onTheFly || !entry.variants.isEmpty
        guard vary, let accept = request.value(.acceptEncoding) else { return (vary, nil, nil, nil) }
        let ranged = request.method == HTTP_GET && request.has(.range)
        guard let choice = AcceptEncoding.choose(request.storage[accept], precompressed: entry.variants,
                                                 onTheFly: onTheFly && !ranged ? .all : CodingSet()) else {
            return (vary, nil, nil, nil)
        }
        if choice.precompressed {
            if let variant = openVariant(choice.coding, of: entry, index: index) { return (vary, choice.coding, nil, variant) }
            return (vary, nil, nil, nil)  // gone since the last look: identity this time
        }
        return (vary, nil, compressedBody(entry, choice.coding), nil)
    }

    /// A variant counts only when it is at least as new as the file: an older one was made from
    /// an earlier version.
    private static func isCurrent(_ variant: stat, for file: stat) -> Bool {
        variant.st_mtim.tv_sec > file.st_mtim.tv_sec
            || (variant.st_mtim.tv_sec == file.st_mtim.tv_sec && variant.st_mtim.tv_nsec >= file.st_mtim.tv_nsec)
    }

    private func setVariantPath(_ coding: ContentCoding, index: Bool) {
        variantPath.bytes.removeAll(keepingCapacity: true)
        variantPath.bytes.append(contentsOf: index ? indexPath.bytes : path.bytes)
        variantPath.bytes.append(ascii: coding.suffix)
        variantPath.trailingSlash = false
    }

    /// Looks for the variants beside the file once a second (three opens beneath the root that
    /// mostly fail at once), so a request costs none.
    private func refreshVariants(_ entry: OpenFileCache.Entry, index: Bool) {
        let now = worker.loop.now
        guard now - entry.variantsCheckedAt >= 1000 else { return }
        entry.variantsCheckedAt = now
        var found = CodingSet()
        for coding in ContentCoding.allCases {
            setVariantPath(coding, index: index)
            if case .success(let file) = site.root.open(&variantPath) {
                if file.isRegular && Exchange.isCurrent(file.info, for: entry.info) { found.insert(coding) }
                Sys.close(file.fd)
            }
        }
        entry.variants = found
    }

    /// The variant's open file, through the open-file cache under its own name (its descriptor
    /// and validators are its own); nil when it is gone or older than the file.
    private func openVariant(_ coding: ContentCoding, of identity: OpenFileCache.Entry, index: Bool) -> FileSource? {
        setVariantPath(coding, index: index)
        let cache = worker.fileCache(site.rootID)
        let now = worker.loop.now
        var entry = cache.lookup(&variantPath, dynamic: identity.dynamic, root: site.root, now: now)
        if entry == nil {
            guard case .success(let file) = site.root.open(&variantPath) else { return nil }
            guard file.isRegular else { Sys.close(file.fd); return nil }
            // Cached with the type of its own name: a request for FILE.br itself finds it too.
            entry = cache.insert(variantPath.bytes, file: file, dynamic: identity.dynamic,
                                 contentType: worker.mediaTypes.type(forPath: variantPath.bytes[...]), now: now)
        }
        guard let entry, Exchange.isCurrent(entry.info, for: identity.info) else { return nil }
        return FileSource(entry: entry, original: identity)
    }

    /// The file compressed with `coding`: from the cache, or compressed now when its bytes are in
    /// memory already (a small file), or nil while the compression thread makes it (the identity
    /// body goes out meanwhile) or when compressing does not make it smaller.
    private func compressedBody(_ entry: OpenFileCache.Entry, _ coding: ContentCoding) -> CompressedRepresentation? {
        let key = CompressionCache.Key(entry.info, coding)
        let cache = worker.compressionCache
        let size = Int(entry.info.st_size)
        if let found = cache.lookup(key) { return found.bytes.count < size ? found : nil }
        let level = worker.config.compression.level(coding)
        if let contents = entry.contents, contents.count == size {
            guard let out = contents.withUnsafeBytes({ Compressor.compress($0, coding, level: level) }) else { return nil }
            let made = CompressedRepresentation(bytes: out, coding: coding, identity: entry.validators)
            cache.insert(key, made)
            return made.bytes.count < size ? made : nil
        }
        guard cache.beginPending(key) else { return nil }
        let fd = fcntl(entry.fd, F_DUPFD_CLOEXEC, 0)
        guard fd >= 0 else { cache.endPending(key); return nil }
        let worker = self.worker
        let job = CompressionThread.Job(fd: fd, size: size, coding: coding, level: level, identity: entry.validators) { made in
            worker.loop.post {
                if let made { worker.compressionCache.insert(key, made) } else { worker.compressionCache.endPending(key) }
            }
        }
        if !CompressionThread.shared.submit(job) { cache.endPending(key) }
        return nil
    }

    /// A compressed body from memory, whole (a Range request never gets here): its own ETag for
    /// preconditions, and HEAD gets the same head as GET.
    func respondCompressed(_ body: CompressedRepresentation, contentType: [UInt8]) {
        let validators = body.validators
        switch Preconditions.evaluate(request, validators) {
        case .proceed: break
        case .notModified:
            respondNotModified(validators, vary: true)
            return
        case .failed:
            respondWithError(.preconditionFailed, varyEncoding: true)
            return
        }
        beginResponse(.ok)
        addHeader("Content-Type", contentType)
        addHeader("Content-Encoding", ascii: body.coding.token)
        addHeader("Vary", ascii: "Accept-Encoding")
        addHeader("Content-Length", decimal: body.bytes.count)
        addHeader("ETag", validators.etag)
        addHeader("Last-Modified", validators.lastModified)
        addFileCacheFields()
        endHead()
        if isHead || body.bytes.isEmpty { return }
        if body.bytes.count <= OpenFileCache.smallFileLimit {
            pump.out.append(contentsOf: UnsafeRawBufferPointer(body.bytes))  // with the head, one send
        } else {
            memoryBody.set(UnsafeRawPointer(body.bytes.baseAddress!), count: body.bytes.count, owner: body)
            pump.start(memoryBody)
        }
    }
}
