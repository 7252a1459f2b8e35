import AWSParsing
import Glibc

/// `--autoindex`: an HTML listing of a directory without index.html, names escaped and sorted,
/// with sizes and modification dates. Built in memory; directories are small and rare.
extension Exchange {
    func serveDirectoryListing(_ dirFD: Int32) {
        guard let dir = fdopendir(dirFD) else {
            let shortage = DocumentRoot.isTemporary(errno)
            Sys.close(dirFD)
            if shortage { worker.noteOpenShortage() }
            respondWithError(shortage ? .serviceUnavailable : .forbidden)
            return
        }
        defer { closedir(dir) }  // closes dirFD too
        var entries: [(name: String, isDir: Bool, size: Int, mtime: Int)] = []
        while let ent = readdir(dir) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name == "." || name == ".." { continue }
            var st = stat()
            guard fstatat(dirFD, name, &st, 0) == 0 else { continue }
            entries.append((name, (st.st_mode & S_IFMT) == S_IFDIR, Int(st.st_size), Int(st.st_mtim.tv_sec)))
        }
        entries.sort { $0.name < $1.name }
        let title = escapeHTML(String(decoding: path.encoded, as: UTF8.self))
        var html: [UInt8] = Array("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of \(title)</title></head><body><h1>Index of \(title)</h1><table>\n<tr><th>Name</th><th>Size</th><th>Modified</th></tr>\n".utf8)
        if !path.bytes.isEmpty { html.append(contentsOf: Array("<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n".utf8)) }
        for e in entries {
            let display = escapeHTML(e.name) + (e.isDir ? "/" : "")
            let href = percentEncode(e.name) + (e.isDir ? "/" : "")
            html.append(contentsOf: Array("<tr><td><a href=\"\(href)\">\(display)</a></td><td>\(e.isDir ? "-" : String(e.size))</td><td>".utf8))
            HTTPDate.append(e.mtime, to: &html)
            html.append(contentsOf: Array("</td></tr>\n".utf8))
        }
        html.append(contentsOf: Array("</table></body></html>\n".utf8))
        beginResponse(.ok)
        endHead(body: html, type: "text/html; charset=utf-8")
    }

    private func escapeHTML(_ s: String) -> String {
        var r = ""
        for c in s {
            switch c {
            case "&": r += "&amp;"
            case "<": r += "&lt;"
            case ">": r += "&gt;"
            case "\"": r += "&quot;"
            case "'": r += "&#39;"
            default: r.append(c)
            }
        }
        return r
    }

    private func percentEncode(_ s: String) -> String {
        var bytes: [UInt8] = []
        URLEncoding.appendPercentEncoded(s.utf8, to: &bytes, strict: true)
        return String(decoding: bytes, as: UTF8.self)
    }
}
