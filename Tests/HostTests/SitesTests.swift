@testable import Host
import Testing

@Suite struct SitesTests {
    private func site(_ names: [String]) throws -> Site {
        Site(names: names, root: try DocumentRoot(path: "/"), rootID: 0, pluginTable: nil, cgi: nil, autoindex: false, paths: [])
    }

    private func pick(_ table: SiteTable, _ host: String?) -> String {
        table.select(host: host.map { Array($0.utf8)[...] }).description
    }

    @Test func exactThenOneLabelWildcardThenFallback() throws {
        let a = try site(["a.test", "*.a.test"]), deep = try site(["*.x.a.test"]), d = try site(["d.test"])
        let table = SiteTable(sites: [a, deep, d], fallback: d)
        #expect(pick(table, "a.test") == a.description)
        #expect(pick(table, "WWW.A.TEST:8443") == a.description)
        #expect(pick(table, "www.a.test.") == a.description)
        #expect(pick(table, "y.x.a.test") == deep.description)   // the longest suffix wins
        #expect(pick(table, "z.y.x.a.test") == d.description)    // one label only
        #expect(pick(table, ".a.test") == d.description)
        #expect(pick(table, "a.test.evil") == d.description)
        #expect(pick(table, "[::1]:80") == d.description)
        #expect(pick(table, "") == d.description)
        #expect(pick(table, nil) == d.description)
    }

    @Test func pathRulesLongestPrefixFirstAndTrailingSlash() throws {
        let rules = [PathRule(prefix: "/static/", headers: [("X-A", "1")], cacheControl: nil, autoindex: nil),
                     PathRule(prefix: "/static/list/", headers: [], cacheControl: "no-store", autoindex: true)]
        let s = Site(names: [], root: try DocumentRoot(path: "/"), rootID: 0, pluginTable: nil, cgi: nil, autoindex: false, paths: rules)
        #expect(s.rule(for: Array("static/list/x".utf8), trailingSlash: false)?.autoindex == true)
        #expect(s.rule(for: Array("static/list".utf8), trailingSlash: true)?.autoindex == true)
        #expect(s.rule(for: Array("static/list".utf8), trailingSlash: false)?.autoindex == nil)
        #expect(s.rule(for: Array("static/x".utf8), trailingSlash: false).map { String(decoding: $0.fields, as: UTF8.self) } == "X-A: 1\r\n")
        #expect(s.rule(for: Array("dynamic/x".utf8), trailingSlash: false) == nil)
        #expect(String(decoding: rules[1].fields, as: UTF8.self) == "Cache-Control: no-store\r\n")
    }
}
