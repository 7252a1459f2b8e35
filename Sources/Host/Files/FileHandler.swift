import AWSParsing
import CHTTPParser
import Glibc

/// GET and HEAD on files under the document root, top to bottom: resolve the target, open the
/// file beneath the root, handle directories, evaluate preconditions and ranges, write the head,
/// then hand the body to sendfile (static) or libaio (`/dynamic/`).
extension Exchange {
    func serveFile() {
        let worker = self.worker
        if let failure = resolvePath() {
            respondWithError(failure)
            return
        }
        let dynamic = path.isDynamic
        let root = site.root
        let cache = worker.fileCache(site.rootID)
        if let entry = cache.lookup(&path, dynamic: dynamic, root: root, now: worker.loop.now) {
            if path.trailingSlash {  // "/file.txt/" names a directory that is not there
                respondWithError(.notFound)
                return
            }
            respondWithFile(FileSource(entry: entry))
            return
        }
        let isDirectoryTarget = path.trailingSlash || path.bytes.isEmpty
        if isDirectoryTarget {
            // "/dir/" is answered by dir/index.html, cached under that name.
            indexPath.setIndex(of: path)
            if let entry = cache.lookup(&indexPath, dynamic: false, root: root, now: worker.loop.now) {
                respondWithFile(FileSource(entry: entry), index: true)
                return
            }
        }
        let file: DocumentRoot.OpenFile
        switch root.open(&path) {
        case .failure(.status(let status)):
            if status == .serviceUnavailable { worker.noteOpenShortage() }
            respondWithError(status)
            return
        case .success(let opened):
            file = opened
        }
        if file.isRegular && path.trailingSlash {
            Sys.close(file.fd)
            respondWithError(.notFound)
            return
        }
        if file.isRegular {
            let contentType = worker.mediaTypes.type(forPath: path.bytes[...])
            let entry = cache.insert(path.bytes, file: file, dynamic: path.isDynamic, contentType: contentType, now: worker.loop.now)
            respondWithFile(FileSource(entry: entry))
            return
        }
        if file.isDirectory {
            guard path.trailingSlash || path.bytes.isEmpty else {
                Sys.close(file.fd)
                redirectToDirectory()
                return
            }
            let lookup = root.open("index.html", in: file.fd)
            if case .failure(.status(let status)) = lookup {
                Sys.close(file.fd)
                worker.noteOpenShortage()
                respondWithError(status)
                return
            }
            guard case .success(let found) = lookup, let index = found else {
                if pathRule?.autoindex ?? site.autoindex {
                    serveDirectoryListing(file.fd)
                } else {
                    Sys.close(file.fd)
                    respondWithError(.forbidden)
                }
                return
            }
            Sys.close(file.fd)
            let html = worker.mediaTypes.type(forPath: indexPath.bytes[...])
            if index.isRegular {
                let entry = cache.insert(indexPath.bytes, file: index, dynamic: false, contentType: html, now: worker.loop.now)
                respondWithFile(FileSource(entry: entry), index: true)
                return
            }
            Sys.close(index.fd)
            respondWithError(.forbidden)
            return
        }
        // Neither a regular file nor a directory (a FIFO, a socket, a device).
        Sys.close(file.fd)
        respondWithError(.forbidden)
    }

    /// The file to answer from: an open-file cache entry, whose descriptor the response borrows
    /// (every file served is in the cache). For a precompressed variant, `original` is the file
    /// it was made from, whose type it is sent as.
    struct FileSource {
        let entry: OpenFileCache.Entry
        var original: OpenFileCache.Entry? = nil
    }

    /// `index`: the file is the directory's index.html (`indexPath`), not `path`.
    private func respondWithFile(_ identity: FileSource, index: Bool = false) {
        let negotiated = negotiate(identity, index: index)
        if let compressed = negotiated.compressed {
            respondCompressed(compressed, contentType: identity.entry.contentType)
        } else if let variant = negotiated.variant {
            respondWithRepresentation(variant, coding: negotiated.coding, vary: negotiated.vary)
        } else {
            respondWithRepresentation(identity, coding: nil, vary: negotiated.vary)
        }
    }

    /// One representation of the file as it is on disk: preconditions, then the range, then the
    /// head, then the body (from memory, sendfile or libaio).
    private func respondWithRepresentation(_ file: FileSource, coding: ContentCoding?, vary: Bool) {
        let entry = file.entry
        let size = Int(entry.info.st_size)
        // Tested first: the validators are read (and copied) only for a conditional request.
        if request.hasPreconditions {
            switch Preconditions.evaluate(request, entry.validators) {
            case .proceed: break
            case .notModified:
                respondNotModified(entry.validators, vary: vary)
                return
            case .failed:
                // A negotiated representation's validators depended on Accept-Encoding.
                respondWithError(.preconditionFailed, varyEncoding: vary)
                return
            }
        }

        var range = 0..<size
        var status = HTTPStatus.ok
        if request.has(.range) {
            switch Preconditions.selectRange(request, size: size, validators: entry.validators) {
            case .whole: break
            case .partial(let r):
                range = r
                status = .partialContent
            case .unsatisfiable:
                beginResponse(.rangeNotSatisfiable)
                // The size is the chosen representation's: it depends on Accept-Encoding too.
                if vary { addHeader("Vary", ascii: "Accept-Encoding") }
                pump.out.append(ascii: "Content-Range: bytes */")
                pump.out.append(decimal: size)
                pump.out.append(ascii: "\r\n")
                endHead(body: StatusTable.shared.errorPage(.rangeNotSatisfiable), type: "text/html; charset=utf-8")
                return
            }
        }

        beginResponse(status)
        if status == .ok && coding == nil && !vary && file.original == nil {
            // The common case: the fields the cache entry rendered, in one copy.
            pump.out.append(contentsOf: entry.okFields)
        } else {
            addHeader("Content-Type", (file.original ?? entry).contentType)
            if let coding { addHeader("Content-Encoding", ascii: coding.token) }
            if vary { addHeader("Vary", ascii: "Accept-Encoding") }
            addHeader("Content-Length", decimal: range.count)
            if status == .partialContent { ResponseHead.contentRange(&pump.out, range, of: size) }
            addHeader("Accept-Ranges", ascii: "bytes")
            addValidatorHeaders(entry.validators)
        }
        addFileCacheFields()
        endHead()

        if isHead || range.isEmpty { return }
        if !entry.dynamic, let contents = entry.contents, contents.count == size {
            pump.out.append(contentsOf: contents[range])
            return
        }
        OpenFileCache.retain(entry)
        let region = FileRegion(fd: entry.fd, ownsFD: false, cacheEntry: entry,
                                offset: range.lowerBound, end: range.upperBound)
        if entry.dynamic {
            aioBody.region = region
            aioBody.prepare(withHead: range.count <= OpenFileCache.smallFileLimit)
            pump.start(aioBody)
        } else {
            sendfileBody.region = region
            pump.start(sendfileBody)
        }
    }

    private func redirectToDirectory() {
        beginResponse(.movedPermanently)
        // Built from the normalized path, never the raw target: "//host/../dir" must not become
        // a redirect to another host.
        pump.out.append(ascii: "Location: /")
        URLEncoding.appendPercentEncoded(path.bytes, to: &pump.out)
        pump.out.append(47)
        // Keep the query: /dir?x → /dir/?x
        let target = request.storage[request.target]
        if let q = target.firstIndex(of: 63) { pump.out.append(contentsOf: target[q...]) }
        pump.out.append(ascii: "\r\n")
        endHead(body: StatusTable.shared.errorPage(.movedPermanently), type: "text/html; charset=utf-8")
    }

    // MARK: validators (RFC 9110 §8.8)

    private func addValidatorHeaders(_ v: Validators) {
        addHeader("ETag", v.etag)
        addHeader("Last-Modified", v.lastModified)
    }

    /// 304 for a file or a compressed body: its validators and the caching fields a 200 would
    /// carry (RFC 9110 §15.4.5), and Vary when the representation was negotiated.
    func respondNotModified(_ v: Validators, vary: Bool) {
        beginResponse(.notModified)
        addValidatorHeaders(v)
        if vary { addHeader("Vary", ascii: "Accept-Encoding") }
        addFileCacheFields()
        endHead()
    }
}
