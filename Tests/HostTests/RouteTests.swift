import CHTTPParser
@testable import AWSParsing
@testable import Host
import Testing

private var handler: PluginHandler { PluginHandler(user: nil, onRequest: { _, _, _ in 0 }, onBody: nil, onProceed: nil, onAbort: nil, onEnd: nil) }

/// A plugin owning routes written as `displayPath` shows them ("/a" exact, "/a*" prefix), each
/// path decoded by the document root's resolver as registration does.
private func plugin(_ name: String, _ routes: [(String?, String)]) -> LoadedPlugin {
    LoadedPlugin(name: name) { p in
        routes.map { method, written in
            let prefix = written.hasSuffix("*")
            var path = TargetPath()
            let refused = TargetPath.resolve(target: bytes(String(written.dropLast(prefix ? 1 : 0))), into: &path)
            precondition(refused == nil, "bad test route \(written)")
            return Route(method: method, path: path.bytes, prefix: prefix, buffersBody: false, target: .handler(handler), plugin: p)
        }
    }
}

private func describe(_ r: (route: Route?, pathOwned: Bool)) -> String {
    guard let route = r.route else { return r.pathOwned ? "405" : "none" }
    return "\(route.plugin.name) \(route.displayMethod) \(route.displayPath)"
}

@Suite struct RouteTableTests {
    let table = RouteTable(plugins: [
        plugin("api", [("GET", "/api/users"), ("POST", "/api/users"), ("DELETE", "/api/users/*")]),
        plugin("any", [(nil, "/any"), ("GET", "/api/*")]),
        plugin("files", [("PUT", "/upload*")]),
    ])

    private func match(_ path: String, _ method: http_method) -> String {
        describe(table.match(path: Array(path.utf8), method: method))
    }

    @Test func exactRoutes() {
        #expect(match("api/users", HTTP_GET) == "api GET /api/users")
        #expect(match("api/users", HTTP_POST) == "api POST /api/users")
        #expect(match("any", HTTP_PATCH) == "any * /any")
        #expect(match("any", HTTP_HEAD) == "any * /any")
    }

    // RFC 9110 §9.3.2: HEAD is GET without the body.
    @Test func headIsAnsweredByGet() {
        #expect(match("api/users", HTTP_HEAD) == "api GET /api/users")
        #expect(match("api/other", HTTP_HEAD) == "any GET /api*")
    }

    @Test func getIsNotAnsweredByHead() {
        let t = RouteTable(plugins: [plugin("h", [("HEAD", "/h")])])
        #expect(describe(t.match(path: Array("h".utf8), method: HTTP_HEAD)) == "h HEAD /h")
        #expect(describe(t.match(path: Array("h".utf8), method: HTTP_GET)) == "405")
    }

    @Test func prefixRoutes() {
        #expect(match("api/other", HTTP_GET) == "any GET /api*")
        #expect(match("api", HTTP_GET) == "any GET /api*")
        #expect(match("apix", HTTP_GET) == "none")
        #expect(match("upload/a/b", HTTP_PUT) == "files PUT /upload*")
    }

    // The exact route is tried first; for another method the prefix routes still get their turn.
    @Test func exactBeforePrefix() {
        #expect(match("api/users/7", HTTP_DELETE) == "api DELETE /api/users*")
        #expect(match("api/users/7", HTTP_GET) == "any GET /api*")
        #expect(match("api/users", HTTP_PUT) == "405")
        #expect(match("api/users", HTTP_DELETE) == "api DELETE /api/users*")
    }

    @Test func longestPrefixFirst() {
        let t = RouteTable(plugins: [
            plugin("short", [("GET", "/a*")]),
            plugin("long", [("GET", "/a/b/c*")]),
            plugin("mid", [("GET", "/a/b/*")]),
        ])
        func m(_ path: String) -> String { describe(t.match(path: Array(path.utf8), method: HTTP_GET)) }
        #expect(m("a/b/c/d") == "long GET /a/b/c*")
        #expect(m("a/b/x") == "mid GET /a/b*")
        #expect(m("a/bx") == "short GET /a*")
        #expect(m("a") == "short GET /a*")
    }

    @Test func ownedPathForAnotherMethodIs405() {
        #expect(match("upload/x", HTTP_GET) == "405")
        #expect(match("api/users", HTTP_OPTIONS) == "405")
        #expect(match("nothing", HTTP_GET) == "none")
        #expect(match("", HTTP_GET) == "none")
    }

    @Test func methodsForAPath() {
        #expect(table.methods(forPath: Array("api/users".utf8)) == ["GET", "POST", "DELETE"])
        #expect(table.methods(forPath: Array("api/users/1".utf8)) == ["DELETE", "GET"])
        #expect(table.methods(forPath: Array("upload/f".utf8)) == ["PUT"])
        #expect(table.methods(forPath: Array("any".utf8)) == [])   // any method: no list to give
        #expect(table.methods(forPath: Array("nothing".utf8)) == [])
    }

    @Test func emptyTable() {
        let t = RouteTable(plugins: [plugin("none", [])])
        #expect(t.isEmpty)
        #expect(!table.isEmpty)
        #expect(describe(t.match(path: [], method: HTTP_GET)) == "none")
    }
}

@Suite struct RouteTests {
    // Registered paths never end in "/" (the resolver drops it); "a/" is checked all the same.
    @Test(arguments: [
        ("", "", true), ("", "a/b", true),
        ("a", "a", true), ("a", "a/", true), ("a", "a/b", true), ("a", "ab", false), ("a", "", false),
        ("a/", "a/", true), ("a/", "a/b", true), ("a/", "a", false), ("a/", "ab", false),
        ("a/b", "a/b/c", true), ("a/b", "a/bc", false), ("a/b", "a", false), ("a/b", "b/a/b", false),
    ])
    func prefixMatches(_ prefix: String, _ path: String, _ expected: Bool) {
        #expect(Route.prefixMatches(Array(prefix.utf8), Array(path.utf8)) == expected)
    }

    @Test func methodCodes() {
        #expect(Route.methodCode("GET") == HTTP_GET.rawValue)
        #expect(Route.methodCode("DELETE") == HTTP_DELETE.rawValue)
        #expect(Route.methodCode("PATCH") == HTTP_PATCH.rawValue)
        #expect(Route.methodCode("get") == nil)
        #expect(Route.methodCode("BREW") == nil)
    }

    @Test func matchesMethod() {
        let routes = plugin("p", [("GET", "/a"), ("POST", "/a"), (nil, "/a"), ("BREW", "/a")]).routes
        #expect(routes.map { $0.matches(method: HTTP_GET) } == [true, false, true, false])
        #expect(routes.map { $0.matches(method: HTTP_HEAD) } == [true, false, true, false])
        #expect(routes.map { $0.matches(method: HTTP_POST) } == [false, true, true, false])
    }
}
