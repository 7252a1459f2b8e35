import CHTTPParser
import PluginAPI

/// A plugin's callbacks, copied out of its `aws_handler` once at registration (fields beyond the
/// struct size the plugin was compiled with are absent).
struct PluginHandler {
    var user: UnsafeMutableRawPointer?
    var onRequest: (@convention(c) (aws_request, UnsafePointer<aws_request_view>?, UnsafeMutableRawPointer?) -> Int32)
    var onBody: (@convention(c) (aws_request, UnsafeRawPointer?, Int, Int32, UnsafeMutableRawPointer?) -> Void)?
    var onProceed: (@convention(c) (aws_request, UnsafeMutableRawPointer?) -> Void)?
    var onAbort: (@convention(c) (aws_request, UnsafeMutableRawPointer?) -> Void)?
    var onEnd: (@convention(c) (aws_request, UnsafeMutableRawPointer?) -> Void)?
}

/// What answers a matched route.
enum RouteTarget {
    case handler(PluginHandler)
    case function(FFIFunction)
}

/// One registered route. Paths are kept decoded and without their leading slash, the form the
/// document root's resolver produces, so matching needs no conversion.
final class Route: @unchecked Sendable {
    let method: String?   // nil: any method
    /// `method` as http-parser's enum value, so matching compares integers.
    let methodCode: UInt32?
    let path: [UInt8]
    let prefix: Bool
    let buffersBody: Bool
    let target: RouteTarget
    /// Strong: a request in flight keeps its plugin (and so its code) alive across a reload.
    /// The cycle with `LoadedPlugin.routes` is broken when the plugin is unloaded.
    let plugin: LoadedPlugin

    init(method: String?, path: [UInt8], prefix: Bool, buffersBody: Bool, target: RouteTarget, plugin: LoadedPlugin) {
        self.method = method
        methodCode = method.flatMap(Route.methodCode)
        self.path = path
        self.prefix = prefix
        self.buffersBody = buffersBody
        self.target = target
        self.plugin = plugin
    }

    var displayPath: String { "/" + String(decoding: path, as: UTF8.self) + (prefix ? "*" : "") }
    var displayMethod: String { method ?? "*" }

    /// HEAD is answered by a GET route (the host drops the body), as RFC 9110 §9.3.2 expects.
    func matches(method m: http_method) -> Bool {
        method == nil || methodCode == m.rawValue || (m == HTTP_HEAD && methodCode == HTTP_GET.rawValue)
    }

    /// http-parser's code for a method name; nil for names it cannot parse (never requested).
    static func methodCode(_ name: String) -> UInt32? {
        var code: UInt32 = 0
        while true {
            let known = String(cString: http_method_str(http_method(rawValue: code)))
            if known == "<unknown>" { return nil }
            if known == name { return code }
            code += 1
        }
    }
}

/// The routes of every loaded plugin, immutable once built: a reload builds a new table and
/// swaps it in, so requests in flight keep the routes (and plugins) they started with. Shared by
/// every worker: nothing in it changes after `init`.
final class RouteTable: @unchecked Sendable {
    private let exact: [[UInt8]: [Route]]
    private let prefixes: [Route]   // longest first
    let plugins: [LoadedPlugin]
    var isEmpty: Bool { exact.isEmpty && prefixes.isEmpty }

    init(plugins: [LoadedPlugin]) {
        self.plugins = plugins
        var exact: [[UInt8]: [Route]] = [:]
        var prefixes: [Route] = []
        for plugin in plugins {
            for route in plugin.routes {
                if route.prefix { prefixes.append(route) } else { exact[route.path, default: []].append(route) }
            }
        }
        self.exact = exact
        self.prefixes = prefixes.sorted { $0.path.count > $1.path.count }
    }


    /// The route for a decoded path (no leading slash). A path a plugin owns for other methods
    /// only is reported through `methodMismatch`, so the caller can answer 405.
    func match(path: [UInt8], method: http_method) -> (route: Route?, pathOwned: Bool) {
        var owned = false
        if let candidates = exact[path] {
            owned = true
            for r in candidates where r.matches(method: method) { return (r, true) }
        }
        for r in prefixes where Route.prefixMatches(r.path, path) {
            owned = true
            if r.matches(method: method) { return (r, true) }
        }
        return (nil, owned)
    }

    /// Allowed methods on a path owned by plugins, for the Allow header of a 405.
    func methods(forPath path: [UInt8]) -> [String] {
        var result: [String] = []
        for r in (exact[path] ?? []) + prefixes.filter({ Route.prefixMatches($0.path, path) }) {
            if let m = r.method, !result.contains(m) { result.append(m) }
        }
        return result
    }
}

extension Route {
    /// "/a" owns "/a" and "/a/…"; "/a/" owns "/a/…".
    static func prefixMatches(_ prefix: [UInt8], _ path: [UInt8]) -> Bool {
        if prefix.isEmpty { return true }
        guard path.count >= prefix.count, path.starts(with: prefix) else { return false }
        return path.count == prefix.count || prefix.last == 47 || path[prefix.count] == 47
    }
}
