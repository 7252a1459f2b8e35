import AWSParsing
import Glibc
import TOMLKit

/// `--config FILE`: a TOML file. Its top-level keys are the command-line flags by their long
/// names (`port = 8080`, `log-level = "warning"`, `strict-host = true`, a list for a repeatable
/// flag); flags given on the command line override them. `[[server]]` blocks are virtual hosts,
/// each with `[[server.path]]` blocks for per-path settings.
///
/// Read on the control thread only (at start, for `--check`, and on SIGHUP).
struct ConfigFile {
    /// Top-level keys as command-line arguments ("--port=8080", "--strict-host").
    var arguments: [String] = []
    /// The line of each top-level key, to name it in an error.
    var keyLines: [String: Int] = [:]
    var servers: [ServerBlock] = []
    let path: String

    struct ServerBlock {
        var line: Int
        var names: [String] = []
        var isDefault = false
        var root: String?
        var plugins: String?
        var cgiDir: String?
        var noCgi: Bool?
        var autoindex: Bool?
        var tlsCert: String?
        var tlsKey: String?
        var accessLog: String?
        var paths: [PathBlock] = []
        var keyLines: [String: Int] = [:]

        func line(of key: String) -> Int { keyLines[key] ?? line }
    }

    struct PathBlock {
        var line: Int
        var prefix = ""
        var headers: [(String, String)] = []
        var cacheControl: String?
        var autoindex: Bool?
    }

    /// Flags that make no sense in the file.
    static let commandLineOnly: Set<String> = ["config", "check", "help", "version"]

    /// Reads and checks the file's shape; values are checked where they are used (the flags by
    /// the argument parser, paths when the sites are built).
    init(path: String, options: [String: Bool]) throws(ConfigFileError) {
        self.path = path
        let text: String
        do {
            text = try ConfigFile.read(path)
        } catch {
            throw ConfigFileError("\(path): \(error)")
        }
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigFileError("\(path):\(error.source.begin.line): \(error.description)")
        } catch {
            throw ConfigFileError("\(path): \(error)")
        }
        let lines = KeyLines(text)
        for key in table.keys.sorted(by: { lines.topLevel[$0] ?? 0 < lines.topLevel[$1] ?? 0 }) {
            let line = lines.topLevel[key] ?? 1
            let value = table[key]!
            if key == "server" {
                guard let blocks = value.array, blocks.allSatisfy({ $0.table != nil }) else {
                    throw ConfigFileError("\(path):\(line): 'server' must be [[server]] blocks")
                }
                for (i, block) in blocks.enumerated() {
                    servers.append(try serverBlock(block.table!, lines: lines.servers.indices.contains(i) ? lines.servers[i] : .init(line: line)))
                }
                continue
            }
            guard !ConfigFile.commandLineOnly.contains(key), let takesValue = options[key] else {
                throw ConfigFileError("\(path):\(line): unknown key '\(key)'\(ConfigFile.commandLineOnly.contains(key) ? " (command line only)" : "")")
            }
            keyLines[key] = line
            if !takesValue {
                guard let on = value.bool else { throw ConfigFileError("\(path):\(line): '\(key)' must be true or false") }
                if on { arguments.append("--\(key)") }
            } else if let list = value.array {
                for item in list {
                    guard let s = ConfigFile.scalar(item) else { throw ConfigFileError("\(path):\(line): '\(key)' must be a list of strings or numbers") }
                    arguments.append("--\(key)=\(s)")
                }
            } else {
                guard let s = ConfigFile.scalar(value) else { throw ConfigFileError("\(path):\(line): '\(key)' must be a string or a number") }
                arguments.append("--\(key)=\(s)")
            }
        }
        if servers.filter(\.isDefault).count > 1 {
            let second = servers.filter(\.isDefault)[1]
            throw ConfigFileError("\(path):\(second.line(of: "default")): a second default server (only one may say default = true)")
        }
        var seen: [String: Int] = [:]
        for server in servers {
            for name in server.names {
                let lower = name.lowercased()
                if let first = seen[lower] {
                    throw ConfigFileError("\(path):\(server.line(of: "names")): '\(name)' is already a name of the server at line \(first)")
                }
                seen[lower] = server.line
            }
        }
    }

    private func serverBlock(_ t: TOMLTable, lines: KeyLines.Block) throws(ConfigFileError) -> ServerBlock {
        var s = ServerBlock(line: lines.line)
        s.keyLines = lines.keys
        func fail(_ key: String, _ message: String) -> ConfigFileError {
            ConfigFileError("\(path):\(s.line(of: key)): \(message)")
        }
        func string(_ key: String) throws(ConfigFileError) -> String? {
            guard let v = t[key] else { return nil }
            guard let s = v.string, !s.isEmpty else { throw fail(key, "'\(key)' must be a non-empty string") }
            return s
        }
        func bool(_ key: String) throws(ConfigFileError) -> Bool? {
            guard let v = t[key] else { return nil }
            guard let b = v.bool else { throw fail(key, "'\(key)' must be true or false") }
            return b
        }
        let known: Set<String> = ["names", "default", "root", "plugins", "cgi-dir", "no-cgi", "autoindex", "tls-cert", "tls-key", "access-log", "path"]
        for key in t.keys where !known.contains(key) {
            throw fail(key, "unknown key '\(key)' in [[server]] (known: \(known.sorted().joined(separator: ", ")))")
        }
        if let v = t["names"] {
            guard let list = v.array, !list.isEmpty, list.allSatisfy({ $0.string != nil }) else {
                throw fail("names", "'names' must be a non-empty list of host names")
            }
            s.names = list.map { $0.string! }
            for name in s.names where !TLSCertFor.isValidName(Substring(name)) {
                throw fail("names", "'\(name)' is not a host name (exact, or *.domain for one label)")
            }
        }
        s.isDefault = try bool("default") ?? false
        s.root = try string("root")
        s.plugins = try string("plugins")
        s.cgiDir = try string("cgi-dir")
        s.noCgi = try bool("no-cgi")
        s.autoindex = try bool("autoindex")
        s.tlsCert = try string("tls-cert")
        s.tlsKey = try string("tls-key")
        s.accessLog = try string("access-log")
        if (s.tlsCert == nil) != (s.tlsKey == nil) { throw fail(s.tlsCert == nil ? "tls-key" : "tls-cert", "tls-cert and tls-key go together") }
        if s.tlsCert != nil && s.names.isEmpty { throw fail("tls-cert", "a server's certificate needs its names (SNI chooses it by name)") }
        if s.names.isEmpty && !s.isDefault { throw ConfigFileError("\(path):\(s.line): a [[server]] needs names (or default = true)") }
        if let v = t["path"] {
            guard let list = v.array, list.allSatisfy({ $0.table != nil }) else { throw fail("path", "'path' must be [[server.path]] blocks") }
            for (i, item) in list.enumerated() {
                s.paths.append(try pathBlock(item.table!, line: lines.paths.indices.contains(i) ? lines.paths[i] : .init(line: s.line)))
            }
        }
        return s
    }

    private func pathBlock(_ t: TOMLTable, line block: KeyLines.Block) throws(ConfigFileError) -> PathBlock {
        var p = PathBlock(line: block.line)
        func fail(_ key: String, _ message: String) -> ConfigFileError {
            ConfigFileError("\(path):\(block.keys[key] ?? block.line): \(message)")
        }
        let known: Set<String> = ["prefix", "headers", "cache-control", "autoindex"]
        for key in t.keys where !known.contains(key) {
            throw fail(key, "unknown key '\(key)' in [[server.path]] (known: \(known.sorted().joined(separator: ", ")))")
        }
        guard let prefix = t["prefix"]?.string, prefix.hasPrefix("/") else {
            throw fail("prefix", "[[server.path]] needs prefix = \"/...\"")
        }
        p.prefix = prefix
        if let v = t["headers"] {
            guard let table = v.table else { throw fail("headers", "'headers' must be a table of NAME = \"value\"") }
            for name in table.keys.sorted() {
                guard let value = table[name]?.string else { throw fail("headers", "header '\(name)' must have a string value") }
                guard !name.isEmpty, name.utf8.allSatisfy(ASCII.isTokenChar) else { throw fail("headers", "'\(name)' is not a header name") }
                guard !value.utf8.contains(where: { $0 == 13 || $0 == 10 || $0 == 0 }) else { throw fail("headers", "the value of '\(name)' has a line break") }
                let reserved = ["date", "server", "content-length", "transfer-encoding", "connection", "content-type", "content-range"]
                guard !reserved.contains(name.lowercased()) else { throw fail("headers", "'\(name)' is set by the server itself") }
                p.headers.append((name, value))
            }
        }
        if let v = t["cache-control"] {
            guard let s = v.string, !s.isEmpty, !s.utf8.contains(where: { $0 == 13 || $0 == 10 || $0 == 0 }) else {
                throw fail("cache-control", "'cache-control' must be a one-line string")
            }
            p.cacheControl = s
        }
        if let v = t["autoindex"] {
            guard let b = v.bool else { throw fail("autoindex", "'autoindex' must be true or false") }
            p.autoindex = b
        }
        return p
    }

    private static func scalar(_ v: TOMLValueConvertible) -> String? {
        if let s = v.string { return s }
        if let i = v.int { return String(i) }
        if let d = v.double { return String(d) }
        return nil
    }

    private static func read(_ path: String) throws -> String {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SyscallError(call: "open", errno: errno) }
        defer { Glibc.close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SyscallError(call: "read", errno: errno)
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[..<n])
            if bytes.count > 16 * 1024 * 1024 { throw ConfigFileError("larger than 16 MiB") }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

struct ConfigFileError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Where each key is, for error messages: TOMLKit gives values, not their positions. A line
/// scan that knows the three kinds of header this file has (top level, `[[server]]`,
/// `[[server.path]]`) and `key =` lines.
struct KeyLines {
    struct Block {
        var line: Int
        var keys: [String: Int] = [:]
        var paths: [Block] = []
    }

    var topLevel: [String: Int] = [:]
    var servers: [Block] = []

    init(_ text: String) {
        var inTopLevel = true
        var inPath = false
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.drop(while: { $0 == " " || $0 == "\t" })
            let number = i + 1
            if line.hasPrefix("[") {
                let header = line.filter { $0 != " " && $0 != "\t" }
                if header.hasPrefix("[[server.path]]") {
                    if !servers.isEmpty { servers[servers.count - 1].paths.append(Block(line: number)) }
                    inTopLevel = false
                    inPath = true
                } else if header.hasPrefix("[[server]]") {
                    servers.append(Block(line: number))
                    topLevel["server"] = topLevel["server"] ?? number
                    inTopLevel = false
                    inPath = false
                } else {
                    // Another table: a key of the top level (an error the parser reports with it).
                    let name = header.trimmingBrackets
                    topLevel[name] = topLevel[name] ?? number
                    inTopLevel = false
                    inPath = false
                }
                continue
            }
            guard let eq = line.firstIndex(of: "="), !line.hasPrefix("#") else { continue }
            var key = line[..<eq].trimmingCharacters
            if key.hasPrefix("\"") && key.hasSuffix("\"") && key.count >= 2 { key = String(key.dropFirst().dropLast()) }
            if let dot = key.firstIndex(of: "."), !key.hasPrefix("\"") { key = String(key[..<dot]) }
            if inTopLevel {
                topLevel[key] = topLevel[key] ?? number
            } else if inPath, !servers.isEmpty, !servers[servers.count - 1].paths.isEmpty {
                let s = servers.count - 1, p = servers[s].paths.count - 1
                servers[s].paths[p].keys[key] = servers[s].paths[p].keys[key] ?? number
            } else if !servers.isEmpty {
                servers[servers.count - 1].keys[key] = servers[servers.count - 1].keys[key] ?? number
            }
        }
    }
}

private extension Substring {
    var trimmingCharacters: String {
        String(self.drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
    }
}

private extension String {
    var trimmingBrackets: String {
        String(self.drop(while: { $0 == "[" }).prefix(while: { $0 != "]" }).split(separator: ".").first ?? "")
    }
}
