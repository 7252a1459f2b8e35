import AWSParsing

/// Content-Type by file extension: a built-in table of the common web types.
enum MediaTypes {
    static let fallback: [UInt8] = Array("application/octet-stream".utf8)

    private static let table: [(ext: [UInt8], type: [UInt8])] = [
        ("html", "text/html; charset=utf-8"), ("htm", "text/html; charset=utf-8"),
        ("css", "text/css; charset=utf-8"), ("js", "text/javascript; charset=utf-8"),
        ("mjs", "text/javascript; charset=utf-8"), ("json", "application/json"),
        ("txt", "text/plain; charset=utf-8"), ("md", "text/markdown; charset=utf-8"),
        ("csv", "text/csv; charset=utf-8"), ("xml", "application/xml"),
        ("png", "image/png"), ("jpg", "image/jpeg"), ("jpeg", "image/jpeg"), ("gif", "image/gif"),
        ("svg", "image/svg+xml"), ("ico", "image/x-icon"), ("webp", "image/webp"),
        ("avif", "image/avif"), ("bmp", "image/bmp"),
        ("wasm", "application/wasm"), ("pdf", "application/pdf"), ("zip", "application/zip"),
        ("gz", "application/gzip"), ("tar", "application/x-tar"),
        ("woff", "font/woff"), ("woff2", "font/woff2"), ("ttf", "font/ttf"), ("otf", "font/otf"),
        ("mp3", "audio/mpeg"), ("ogg", "audio/ogg"), ("wav", "audio/wav"),
        ("mp4", "video/mp4"), ("webm", "video/webm"),
    ].map { (Array($0.0.utf8), Array($0.1.utf8)) }

    /// The type for the file name at the end of `path` (bytes of a decoded path).
    static func type(forPath path: ArraySlice<UInt8>) -> [UInt8] {
        var dot = path.endIndex
        var i = path.endIndex
        while i > path.startIndex {
            i -= 1
            if path[i] == 46 { dot = i; break }
            if path[i] == 47 { break }
        }
        guard dot < path.endIndex else { return fallback }
        let ext = path[(dot + 1)...]
        outer: for entry in table where entry.ext.count == ext.count {
            var j = 0
            for c in ext {
                if ASCII.lower(c) != entry.ext[j] { continue outer }
                j += 1
            }
            return entry.type
        }
        return fallback
    }
}
