import Glibc
import Logging
import PluginAPI
import Synchronization

/// One loaded plugin library.
///
/// Shared by every worker: its routes are read on all loop threads, so everything a worker
/// reads is immutable after loading; `users` and `retired` are atomics; `library` and
/// `shutdownFn` are touched only on the control thread (load, shutdown, unload).
///
/// A library whose `init` has been called is never unmapped (no `dlclose`), and its context is
/// never freed: a plugin thread that outlives its version (a plugin bug: it should have been
/// joined in `shutdown`) keeps running code, globals and the `host`/`ctx` pointers of that
/// version, so the bug costs memory, never the server (aws_plugin.h, UNLOADING).
final class LoadedPlugin: @unchecked Sendable {
    let name: String
    let version: String
    let file: String
    let contentHash: UInt64
    let abiMinor: UInt16
    fileprivate(set) var routes: [Route] = []
    /// The `aws_plugin_ctx *` the plugin sees.
    let context: PluginContext
    fileprivate var library: UnsafeMutableRawPointer?
    fileprivate var shutdownFn: (@convention(c) (OpaquePointer?) -> Void)?
    private var shutDown = false
    /// Holders of this version: every worker whose route table contains it, plus every request
    /// using it. A retired version is unloaded when this reaches 0.
    private let users = Atomic<Int>(0)
    private let retiredFlag = Atomic<Bool>(false)

    fileprivate init(name: String, version: String, file: String, hash: UInt64, abiMinor: UInt16, context: PluginContext) {
        self.name = name
        self.version = version
        self.file = file
        self.contentHash = hash
        self.abiMinor = abiMinor
        self.context = context
    }

    /// A plugin with no library behind it: route tables need a plugin only as their routes'
    /// owner, and the unit tests build them without loading a file.
    convenience init(name: String, routes makeRoutes: (LoadedPlugin) -> [Route]) {
        self.init(name: name, version: "0", file: name, hash: 0, abiMinor: 0,
                  context: PluginContext(name: name, config: [:], root: "/", logger: Logger(label: "aws.plugin")))
        routes = makeRoutes(self)
    }

    var isLoaded: Bool { library != nil }

    func addUses(_ count: Int) { users.wrappingAdd(count, ordering: .relaxed) }

    /// Drops one use; true when that was the last use of a retired version (the caller then has
    /// it unloaded). Any thread.
    func dropUse() -> Bool {
        users.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 && retiredFlag.load(ordering: .acquiring)
    }

    /// Marks a replaced version; set before any worker can drop its table's hold, so whoever
    /// drops the last use sees it. True when nothing uses it any more.
    func retire() -> Bool {
        retiredFlag.store(true, ordering: .releasing)
        return users.load(ordering: .acquiring) == 0
    }

    /// The plugin's shutdown, once; its routes are forgotten (breaking the cycle with them).
    /// Control thread.
    func shutdown() {
        guard library != nil, !shutDown else { return }
        shutDown = true
        shutdownFn?(context.opaque)
        routes = []
    }

    /// The end of this version, once, after `shutdown` and after every function the plugin
    /// posted has run: the host forgets it. The library is NOT closed and the context not freed
    /// (a thread the plugin failed to stop may still run its code and use its `ctx`): the image
    /// stays mapped until the process exits. Control thread.
    func unload(logger: Logger) {
        guard library != nil else { return }
        shutdown()
        library = nil  // the handle is dropped, never dlclose'd
        logger.info("plugin \(name) \(version) unloaded (its code stays mapped until exit)")
    }
}

/// What `aws_plugin_ctx *` points at: the plugin's name, configuration and, during init, the
/// routes it registers.
final class PluginContext {
    let name: String
    let config: [String: UnsafeMutablePointer<CChar>]
    let nameCString: UnsafeMutablePointer<CChar>
    let rootCString: UnsafeMutablePointer<CChar>
    let logger: Logger
    var registering = false
    var pending: [(method: String?, path: [UInt8], prefix: Bool, buffers: Bool, target: RouteTarget)] = []
    var registrationError: String?
    var registrationConflict = false
    /// The other plugins' routes, to refuse overlaps while registering.
    var existingRoutes: [Route] = []

    init(name: String, config: [String: String], root: String, logger: Logger) {
        self.name = name
        self.config = config.mapValues { strdup($0)! }
        nameCString = strdup(name)!
        rootCString = strdup(root)!
        var l = logger
        l[metadataKey: "plugin"] = "\(name)"
        self.logger = l
    }

    var opaque: OpaquePointer { OpaquePointer(Unmanaged.passUnretained(self).toOpaque()) }

    static func from(_ p: OpaquePointer?) -> PluginContext? {
        guard let p else { return nil }
        return Unmanaged<PluginContext>.fromOpaque(UnsafeRawPointer(p)).takeUnretainedValue()
    }

    /// Keeps the context alive for good: once init has it, the plugin may use it for as long as
    /// its code runs, which (with a thread it failed to stop) may be until the process exits.
    func retain() { _ = Unmanaged.passRetained(self) }

    deinit {
        for p in config.values { free(p) }
        free(nameCString)
        free(rootCString)
    }
}

struct PluginLoadError: Error, CustomStringConvertible {
    let description: String
    /// Two plugins claim the same route: fatal at start-up whatever `--strict-plugins` says.
    var isConflict = false
}

/// Finds, checks and loads plugin libraries, and reloads them on SIGHUP.
///
/// Each load is from a copy of its own (`<cache>/<name>-<hash>-<n>.so`): dlopen of a file already
/// loaded (by path, or by device and inode) returns the old image, and an image whose `init` ran
/// is never closed, so new code needs a new file. An unchanged file is not loaded again: it keeps
/// its loaded instance.
final class PluginLoader {
    let directory: String
    let config: [String: [String: String]]
    let strict: Bool
    let root: String
    let logger: Logger
    private let cacheDirectory: String
    /// Copies made so far: numbers each copy's name. Control thread.
    private var copies = 0

    init(directory: String, config: [String: [String: String]], strict: Bool, root: String, logger: Logger) {
        self.directory = directory
        self.config = config
        self.strict = strict
        self.root = root
        self.logger = logger
        let tmp = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        cacheDirectory = "\(tmp)/aws-plugins-\(getpid())"
    }

    deinit { removeCopies() }

    /// At exit: the copies are only needed to load; the mapped images survive their removal.
    func removeCopies() {
        if let dir = opendir(cacheDirectory) {
            while let e = readdir(dir) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                if name != "." && name != ".." { unlink("\(cacheDirectory)/\(name)") }
            }
            closedir(dir)
        }
        rmdir(cacheDirectory)
    }

    /// Loads every `*.so` in the folder. A file that fails is logged and skipped (fatal with
    /// `strict`); overlapping routes between plugins are always fatal at start-up.
    func loadAll() throws -> RouteTable {
        var loaded: [LoadedPlugin] = []
        for file in try soFiles() {
            do {
                let plugin = try load(file, alongside: loaded.flatMap(\.routes))
                loaded.append(plugin)
            } catch let error as PluginLoadError {
                if error.isConflict {
                    for p in loaded { p.unload(logger: logger) }
                    throw error
                }
                logger.error("plugin \(file): \(error.description)")
                if strict {
                    for p in loaded { p.unload(logger: logger) }
                    throw error
                }
            }
        }
        return RouteTable(plugins: loaded)
    }

    /// Re-scans the folder: unchanged files keep their loaded plugin, changed and new ones are
    /// loaded, removed ones are dropped. A file that fails to load leaves its old version
    /// serving. The caller retires what is no longer in the new table. Control thread.
    func reload(current: RouteTable) -> RouteTable {
        var next: [LoadedPlugin] = []
        let files: [String]
        do { files = try soFiles() } catch {
            logger.error("plugin reload: \(error)")
            return current
        }
        let byName = Dictionary(current.plugins.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var candidates: [(String, LoadedPlugin?)] = []
        for file in files {
            let name = PluginLoader.pluginName(file)
            let old = byName[name]
            if let old, let hash = try? PluginLoader.hashFile(file), hash == old.contentHash {
                next.append(old)
            } else {
                candidates.append((file, old))
            }
        }
        for (file, old) in candidates {
            // Overlaps are judged against what will serve next: plugins already decided, and the
            // old versions of the files still to be reloaded.
            let undecided = candidates.filter { $0.0 != file }.compactMap(\.1).filter { p in !next.contains { $0 === p } }
            let others = next.flatMap(\.routes) + undecided.flatMap(\.routes)
            do {
                let plugin = try load(file, alongside: others)
                next.append(plugin)
                logger.notice("plugin \(plugin.name) \(plugin.version) loaded from \(file)\(old == nil ? "" : " (replacing \(old!.version))")")
            } catch {
                logger.error("plugin \(file) not reloaded: \(error); \(old == nil ? "skipped" : "the old version keeps serving")")
                if let old { next.append(old) }
            }
        }
        return RouteTable(plugins: next)
    }

    private func soFiles() throws -> [String] {
        guard let dir = opendir(directory) else { throw PluginLoadError(description: "cannot open plugins folder \(directory): \(String(cString: strerror(errno)))") }
        defer { closedir(dir) }
        var files: [String] = []
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name.hasSuffix(".so") && !name.hasPrefix(".") { files.append("\(directory)/\(name)") }
        }
        return files.sorted()
    }

    static func pluginName(_ file: String) -> String {
        var base = file.split(separator: "/").last.map(String.init) ?? file
        if base.hasSuffix(".so") { base.removeLast(3) }
        if base.hasPrefix("lib") && base.count > 3 { base.removeFirst(3) }
        return base
    }

    /// FNV-1a: enough to tell versions of one file apart.
    struct ContentHash {
        private(set) var value: UInt64 = 0xcbf29ce484222325
        mutating func add(_ bytes: UnsafeRawBufferPointer) {
            for b in bytes { value = (value ^ UInt64(b)) &* 0x100000001b3 }
        }
    }

    static func hashFile(_ path: String) throws -> UInt64 {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw PluginLoadError(description: "cannot read: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var hash = ContentHash()
        do {
            try forEachChunk(of: fd) { hash.add($0) }
        } catch let error as IOFailure {
            throw PluginLoadError(description: "cannot read: \(String(cString: strerror(error.errno)))")
        }
        return hash.value
    }

    /// A failed read or write while hashing or copying a plugin file.
    private struct IOFailure: Error {
        let call: String
        let errno: Int32
    }

    /// Reads `fd` to its end in 64 KiB pieces, handing each to `body`.
    /// Throws `IOFailure`, or what `body` throws.
    private static func forEachChunk(of fd: Int32, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw IOFailure(call: "read", errno: errno) }
            if n == 0 { return }
            try buffer.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
    }

    /// Copies the file into the private cache folder, named by the hash of the bytes actually
    /// written: a file replaced while it is copied can never give a copy a name it does not
    /// match, and a copy that fails half-way is removed, never renamed into place. Every call
    /// makes a new file (a new inode), even for bytes copied before: an image loaded from an
    /// earlier copy may still be mapped (with its globals), and dlopen would return it.
    private func copyToCache(_ file: String) throws -> (path: String, hash: UInt64) {
        // The folder's name is predictable, so it is trusted only if it is ours and private:
        // then nobody else can have planted a library in it.
        if mkdir(cacheDirectory, 0o700) != 0 {
            var st = stat()
            guard errno == EEXIST, lstat(cacheDirectory, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR,
                  st.st_uid == geteuid(), (st.st_mode & 0o077) == 0 else {
                throw PluginLoadError(description: "\(cacheDirectory) exists and is not a private folder of this user")
            }
        }
        let name = PluginLoader.pluginName(file)
        let src = open(file, O_RDONLY | O_CLOEXEC)
        guard src >= 0 else { throw PluginLoadError(description: "cannot read: \(String(cString: strerror(errno)))") }
        defer { close(src) }
        let tmp = "\(cacheDirectory)/.\(name)-\(getpid())-\(UInt(pthread_self())).tmp"
        unlink(tmp)
        let dst = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o700)
        guard dst >= 0 else { throw PluginLoadError(description: "cannot copy to \(tmp): \(String(cString: strerror(errno)))") }
        func fail(_ what: String, _ code: Int32) -> PluginLoadError {
            unlink(tmp)
            return PluginLoadError(description: "cannot copy to \(tmp): \(what): \(String(cString: strerror(code)))")
        }
        var hash = ContentHash()
        do {
            try PluginLoader.forEachChunk(of: src) { chunk in
                var written = 0
                while written < chunk.count {
                    let w = write(dst, chunk.baseAddress! + written, chunk.count - written)
                    if w < 0 && errno == EINTR { continue }
                    if w <= 0 { throw IOFailure(call: "write", errno: w < 0 ? errno : ENOSPC) }
                    written += w
                }
                hash.add(chunk)
            }
        } catch let error as IOFailure {
            close(dst)
            throw fail(error.call, error.errno)
        }
        if close(dst) != 0 { throw fail("close", errno) }
        copies += 1
        let target = "\(cacheDirectory)/\(name)-\(String(hash.value, radix: 16))-\(copies).so"
        if rename(tmp, target) != 0 { throw fail("rename", errno) }
        return (target, hash.value)
    }

    /// dlopen, version check, init, route collection.
    private func load(_ file: String, alongside others: [Route]) throws -> LoadedPlugin {
        let (copy, hash) = try copyToCache(file)
        guard let lib = dlopen(copy, RTLD_NOW | RTLD_LOCAL) else {
            let reason = String(cString: dlerror())
            unlink(copy)
            throw PluginLoadError(description: "dlopen failed: \(reason)")
        }
        // Closed (and its copy removed, so a file refused on every SIGHUP leaves nothing behind)
        // only if refused before its init runs: from then on the plugin may have started
        // threads (even when init fails), and its image stays mapped for them.
        var initCalled = false
        defer {
            if !initCalled {
                dlclose(lib)
                unlink(copy)
            }
        }
        guard let sym = dlsym(lib, AWS_PLUGIN_ENTRY_SYMBOL) else {
            throw PluginLoadError(description: "no \(AWS_PLUGIN_ENTRY_SYMBOL) symbol: not an aws plugin")
        }
        let entry = unsafeBitCast(sym, to: aws_plugin_entry_fn.self)
        guard let descriptor = entry() else { throw PluginLoadError(description: "\(AWS_PLUGIN_ENTRY_SYMBOL) returned NULL") }
        let header = descriptor.pointee.header
        guard header.magic == AWS_PLUGIN_MAGIC else {
            throw PluginLoadError(description: "bad magic 0x\(String(header.magic, radix: 16)): not an aws plugin descriptor")
        }
        guard header.abi_major == AWS_PLUGIN_ABI_MAJOR else {
            throw PluginLoadError(description: "plugin ABI \(header.abi_major).\(header.abi_minor) is incompatible with the host's ABI \(AWS_PLUGIN_ABI_MAJOR).\(AWS_PLUGIN_ABI_MINOR) (major versions differ)")
        }
        // Copy what we need out of the descriptor now: after dlclose it is gone.
        let size = Int(header.struct_size)
        func has(_ offset: Int, _ width: Int = 8) -> Bool { size >= offset + width }
        let d = descriptor.pointee
        let name = has(MemoryLayout<aws_plugin_descriptor>.offset(of: \.name)!) && d.name != nil ? String(cString: d.name) : PluginLoader.pluginName(file)
        let version = has(MemoryLayout<aws_plugin_descriptor>.offset(of: \.version)!) && d.version != nil ? String(cString: d.version) : "?"
        guard has(MemoryLayout<aws_plugin_descriptor>.offset(of: \.`init`)!), let initFn = d.`init` else {
            throw PluginLoadError(description: "descriptor has no init function")
        }
        let shutdownFn = has(MemoryLayout<aws_plugin_descriptor>.offset(of: \.shutdown)!) ? d.shutdown : nil

        let fileName = PluginLoader.pluginName(file)
        let context = PluginContext(name: fileName, config: config[fileName] ?? config[name] ?? [:], root: root, logger: logger)
        let plugin = LoadedPlugin(name: fileName, version: version, file: file, hash: hash, abiMinor: header.abi_minor, context: context)
        context.registering = true
        context.existingRoutes = others
        // The plugin may keep `ctx` for as long as its code runs, which may be until exit.
        context.retain()
        initCalled = true
        let rc = initFn(HostAPI.table, context.opaque)
        context.registering = false
        if let error = context.registrationError {
            // init succeeded (or not): either way the plugin may have started things that its
            // shutdown stops, and it must run before the library goes.
            if rc == 0 { shutdownFn?(context.opaque) }
            throw PluginLoadError(description: error, isConflict: context.registrationConflict)
        }
        guard rc == 0 else { throw PluginLoadError(description: "init returned \(rc): the plugin refused to load") }
        plugin.routes = context.pending.map {
            Route(method: $0.method, path: $0.path, prefix: $0.prefix, buffersBody: $0.buffers, target: $0.target, plugin: plugin)
        }
        context.pending = []
        context.existingRoutes = []
        plugin.library = lib
        plugin.shutdownFn = shutdownFn
        let routeList = plugin.routes.map { "\($0.displayMethod) \($0.displayPath)" }.joined(separator: ", ")
        logger.info("plugin \(fileName) \(version) (ABI \(header.abi_major).\(header.abi_minor)\(name != fileName ? ", calls itself \(name)" : "")): \(routeList.isEmpty ? "no routes" : routeList)")
        return plugin
    }
}
