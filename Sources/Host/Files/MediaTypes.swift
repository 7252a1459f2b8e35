import AWSParsing

/// Content-Type by file extension: the generated table (Debian's mime.types and the web's own
/// choices, MediaTypeTable.swift) with `--mime-type` on top, rendered once at start with the
/// charset where one belongs. Immutable; each worker holds one. A lookup is a binary search
/// over stored byte arrays: no allocation, and it runs once per file opened (the open-file
/// cache keeps the result).
final class MediaTypes: Sendable {
    static let fallback: [UInt8] = Array("application/octet-stream".utf8)

    /// Types whose files are text for which UTF-8 is the sensible default (the web's documents,
    /// styles, scripts and data): they get "; charset=utf-8". Others go out bare, since a
    /// label that may be wrong (a Latin-1 .csv, a .tex in KOI8-R) is worse than none.
    static let utf8Types: Set<String> = [
        "text/html", "text/css", "text/javascript", "text/plain", "text/xml",
        "application/json", "application/manifest+json", "application/ld+json",
        "application/xml", "application/xhtml+xml", "application/atom+xml", "application/rss+xml",
        "image/svg+xml",
    ]

    /// Lowercase extensions in byte order, and their rendered values at the same index.
    private let extensions: [[UInt8]]
    private let values: [[UInt8]]

    /// `overrides`: `--mime-type` pairs (extension without the dot, any case; the value as it
    /// is sent, charset included or not), later ones winning.
    init(overrides: [(ext: String, type: String)] = []) {
        var table: [String: String] = [:]
        for line in MediaTypes.generated.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2 { table[String(parts[0])] = MediaTypes.rendered(String(parts[1])) }
        }
        for (ext, type) in overrides { table[ext.lowercased()] = type }
        let sorted = table.keys.map { Array($0.utf8) }.sorted { $0.lexicographicallyPrecedes($1) }
        extensions = sorted
        values = sorted.map { Array(table[String(decoding: $0, as: UTF8.self)]!.utf8) }
    }

    /// `type` with the charset parameter it gets by default.
    static func rendered(_ type: String) -> String {
        utf8Types.contains(type) ? type + "; charset=utf-8" : type
    }

    /// The type for the file name at the end of `path` (bytes of a decoded path).
    func type(forPath path: ArraySlice<UInt8>) -> [UInt8] {
        var dot = path.endIndex
        var i = path.endIndex
        while i > path.startIndex {
            i -= 1
            if path[i] == 46 { dot = i; break }
            if path[i] == 47 { break }
        }
        guard dot < path.endIndex else { return MediaTypes.fallback }
        let ext = path[(dot + 1)...]
        var low = 0, high = extensions.count
        while low < high {
            let mid = (low + high) / 2
            switch MediaTypes.compare(extensions[mid], ext) {
            case 0: return values[mid]
            case ..<0: low = mid + 1
            default: high = mid
            }
        }
        return MediaTypes.fallback
    }

    /// Byte order of a stored (lowercase) extension against one from a path, ASCII case ignored.
    private static func compare(_ stored: [UInt8], _ ext: ArraySlice<UInt8>) -> Int {
        var j = ext.startIndex
        for c in stored {
            guard j < ext.endIndex else { return 1 }
            let e = ASCII.lower(ext[j])
            if c != e { return c < e ? -1 : 1 }
            j += 1
        }
        return j < ext.endIndex ? -1 : 0
    }
}
