import AWSParsing
import CHTTPParser
import Glibc

/// GET and HEAD on files under the document root, top to bottom: resolve the target, open the
/// file beneath the root, handle directories, evaluate preconditions and ranges, write the head,
/// then hand the body to sendfile (static) or libaio (`/dynamic/`).
extension Exchange {
    func serveFile() {
        if let failure = resolvePath() {
            respondWithError(failure)
            return
        }
        var dynamic = path.isDynamic
        let root = site.root
        let cache = worker.fileCache(site.rootID)
        if let entry = cache.lookup(&path, dynamic: dynamic, root: root, now: worker.loop.now) {
            if path.trailingSlash {  // "/file.txt/" names a directory that is not there
                respondWithError(.notFound)
                return
            }
            respondWithFile(FileSource(fd: entry.fd, info: entry.info, validators: entry.validators,
                                       contentType: entry.contentType, dynamic: dynamic, cached: entry))
            return
        }
        let isDirectoryTarget = path.trailingSlash || path.bytes.isEmpty
        if isDirectoryTarget {
            // "/dir/" is answered by dir/index.html, cached under that name.
            indexPath.setIndex(of: path)
            if let entry = cache.lookup(&indexPath, dynamic: false, root: root, now: worker.loop.now) {
                respondWithFile(FileSource(fd: entry.fd, info: entry.info, validators: entry.validators,
                                           contentType: entry.contentType, dynamic: false, cached: entry), index: true)
                return
            }
        }
        var file: DocumentRoot.OpenFile
        switch root.open(&path) {
        case .failure(.status(let status)):
            if status == .serviceUnavailable { worker.noteOpenShortage() }
            respondWithError(status)
            return
        case .success(let opened):
            file = opened
        }
        var contentType = worker.mediaTypes.type(forPath: path.bytes[...])
        if file.isRegular && path.trailingSlash {
            Sys.close(file.fd)
            respondWithError(.notFound)
            return
        }
        if file.isRegular {
            let entry = cache.insert(path.bytes, file: file, dynamic: dynamic, contentType: contentType, now: worker.loop.now)
            respondWithFile(FileSource(fd: entry.fd, info: entry.info, validators: entry.validators,
                                       contentType: contentType, dynamic: dynamic, cached: entry))
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
                respondWithFile(FileSource(fd: entry.fd, info: entry.info, validators: entry.validators,
                                           contentType: html, dynamic: false, cached: entry), index: true)
                return
            }
            file = index
            dynamic = false
            contentType = html
        }
        guard file.isRegular else {
            Sys.close(file.fd)
            respondWithError(.forbidden)
            return
        }
        respondWithFile(FileSource(fd: file.fd, info: file.info, validators: Validators(file.info),
                                   contentType: contentType, dynamic: dynamic, cached: nil))
    }

    /// An open file to answer from: a cache entry (descriptor borrowed) or one opened for this
    /// request alone (descriptor owned, closed when the response no longer needs it).
    struct FileSource {
        var fd: Int32
        var info: stat
        var validators: Validators
        var contentType: [UInt8]
        var dynamic: Bool
        var cached: OpenFileCache.Entry?

        func done() { if cached == nil { Sys.close(fd) } }
    }

    /// `index`: the file is the directory's index.html (`indexPath`), not `path`.
    private func respondWithFile(_ identity: FileSource, index: Bool = false) {
        var file = identity
        var coding: ContentCoding?
        var compressed: CompressedRepresentation?
        var vary = false
        if let entry = identity.cached {
            (vary, coding, compressed, file) = negotiate(identity, entry, index: index)
        }
        if let compressed {
            respondCompressed(compressed, contentType: identity.contentType)
            return
        }
        let size = Int(file.info.st_size)
        let validators = file.validators
        let contentType = file.contentType
        let dynamic = file.dynamic

        switch Preconditions.evaluate(request, validators) {
        case .proceed: break
        case .notModified:
            file.done()
            beginResponse(.notModified)
            addValidatorHeaders(validators)
            if vary { addHeader("Vary", ascii: "Accept-Encoding") }
            addFileCacheFields()
            endHead()
            return
        case .failed:
            file.done()
            respondWithError(.preconditionFailed)
            return
        }

        var range = 0..<size
        var status = HTTPStatus.ok
        switch Preconditions.selectRange(request, size: size, validators: validators) {
        case .whole: break
        case .partial(let r):
            range = r
            status = .partialContent
        case .unsatisfiable:
            file.done()
            beginResponse(.rangeNotSatisfiable)
            pump.out.append(ascii: "Content-Range: bytes */")
            pump.out.append(decimal: size)
            pump.out.append(ascii: "\r\n")
            endHead(body: StatusTable.shared.errorPage(.rangeNotSatisfiable), type: "text/html; charset=utf-8")
            return
        }

        beginResponse(status)
        addHeader("Content-Type", contentType)
        if let coding { addHeader("Content-Encoding", ascii: coding.token) }
        if vary { addHeader("Vary", ascii: "Accept-Encoding") }
        addHeader("Content-Length", decimal: range.count)
        if status == .partialContent { ResponseHead.contentRange(&pump.out, range, of: size) }
        addHeader("Accept-Ranges", ascii: "bytes")
        addValidatorHeaders(validators)
        addFileCacheFields()
        endHead()

        if isHead || range.isEmpty {
            file.done()
            return
        }
        if !dynamic, let contents = file.cached?.contents, contents.count == size {
            pump.out.append(contentsOf: contents[range])
            return
        }
        if let entry = file.cached { OpenFileCache.retain(entry) }
        let region = FileRegion(fd: file.fd, ownsFD: file.cached == nil, cacheEntry: file.cached,
                                offset: range.lowerBound, end: range.upperBound)
        if dynamic {
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
}
