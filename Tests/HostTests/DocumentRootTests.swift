@testable import AWSParsing
@testable import Host
import Testing

/// What `TargetPath.resolve` makes of a request target.
enum Resolution: Equatable, CustomStringConvertible {
    case path(String, trailingSlash: Bool)
    case refused(HTTPStatus)

    init(_ target: String) {
        var path = TargetPath()
        if let status = TargetPath.resolve(target: embedded(target), into: &path) {
            self = .refused(status)
        } else {
            self = .path(text(path.bytes), trailingSlash: path.trailingSlash)
        }
    }

    var description: String {
        switch self {
        case let .path(p, slash): "path(\"\(p)\", trailingSlash: \(slash))"
        case let .refused(s): "refused(\(s.rawValue))"
        }
    }
}

@Suite struct ResolveTests {
    @Test(arguments: [
        ("/", Resolution.path("", trailingSlash: true)),
        ("/index.html", .path("index.html", trailingSlash: false)),
        ("/a/b/c.txt", .path("a/b/c.txt", trailingSlash: false)),
        ("/a/b/", .path("a/b", trailingSlash: true)),
        ("//a///b//", .path("a/b", trailingSlash: true)),
        ("/./a/./b/.", .path("a/b", trailingSlash: false)),
        ("/.../..a/a..", .path(".../..a/a..", trailingSlash: false)),
    ])
    func normalizes(_ target: String, _ expected: Resolution) {
        #expect(Resolution(target) == expected)
    }

    @Test(arguments: [
        ("/a/../b", Resolution.path("b", trailingSlash: false)),
        ("/a/b/../../c/", .path("c", trailingSlash: true)),
        ("/a/b/..", .path("a", trailingSlash: false)),
        ("/a/..", .path("", trailingSlash: false)),
        ("/a/../", .path("", trailingSlash: true)),
        ("/..", .refused(.forbidden)),
        ("/../etc/passwd", .refused(.forbidden)),
        ("/a/../../etc/passwd", .refused(.forbidden)),
        ("//../a", .refused(.forbidden)),
        // Climbing out and back in is still refused: the check is made segment by segment.
        ("/../www/index.html", .refused(.forbidden)),
    ])
    func dotDot(_ target: String, _ expected: Resolution) {
        #expect(Resolution(target) == expected)
    }

    @Test(arguments: [
        ("/%2e%2e/etc/passwd", Resolution.refused(.forbidden)),
        ("/%2E%2e", .refused(.forbidden)),
        ("/a/%2e%2e/%2e%2e/x", .refused(.forbidden)),
        ("/a/%2e%2e/b", .path("b", trailingSlash: false)),
        ("/a/%2e/b", .path("a/b", trailingSlash: false)),
        // An encoded slash is decoded before normalization, so it separates segments too.
        ("/a%2fb", .path("a/b", trailingSlash: false)),
        ("/a%2f..%2f..%2fetc", .refused(.forbidden)),
        // trailingSlash looks at the encoded target.
        ("/a%2f", .path("a", trailingSlash: false)),
    ])
    func encodedDotsAndSlashes(_ target: String, _ expected: Resolution) {
        #expect(Resolution(target) == expected)
    }

    @Test(arguments: [
        ("/a%20b", Resolution.path("a b", trailingSlash: false)),
        ("/%41%42c", .path("ABc", trailingSlash: false)),
        ("/caf%C3%a9", .path("café", trailingSlash: false)),
        ("/100%25", .path("100%", trailingSlash: false)),
        ("/a%3Fb", .path("a?b", trailingSlash: false)),
        ("/a%23b", .path("a#b", trailingSlash: false)),
        ("/a+b", .path("a+b", trailingSlash: false)),
        ("/a%", .refused(.badRequest)),
        ("/a%4", .refused(.badRequest)),
        ("/a%4g", .refused(.badRequest)),
        ("/a%g4", .refused(.badRequest)),
        ("/%%41", .refused(.badRequest)),
    ])
    func percentDecoding(_ target: String, _ expected: Resolution) {
        #expect(Resolution(target) == expected)
    }

    @Test(arguments: [
        ("/a%00b", Resolution.refused(.forbidden)),
        ("/%00", .refused(.forbidden)),
        ("/a/b%00.html", .refused(.forbidden)),
    ])
    func nul(_ target: String, _ expected: Resolution) {
        #expect(Resolution(target) == expected)
    }

    @Test func rawNulByte() {
        var path = TargetPath()
        #expect(TargetPath.resolve(target: [47, 97, 0, 98][...], into: &path) == .forbidden)
    }

    @Test(arguments: [
        ("/a?x=1", Resolution.path("a", trailingSlash: false)),
        ("/a/?x=1", .path("a", trailingSlash: true)),
        ("/a#frag", .path("a", trailingSlash: false)),
        ("/a?x=/../../etc", .path("a", trailingSlash: false)),
        ("/a?", .path("a", trailingSlash: false)),
        ("/?x", .path("", trailingSlash: true)),
        ("/a%2e%2e?x", .path("a..", trailingSlash: false)),
        ("/a#x?y", .path("a", trailingSlash: false)),
    ])
    func queryAndFragment(_ target: String, _ expected: Resolution) {
        #expect(Resolution(target) == expected)
    }

    @Test(arguments: [
        ("http://example.com/a/b", Resolution.path("a/b", trailingSlash: false)),
        ("HTTPS://example.com:8443/a/?q", .path("a", trailingSlash: true)),
        ("http://example.com", .path("", trailingSlash: true)),
        ("http://example.com?x/y", .path("", trailingSlash: true)),
        ("http://example.com#x/y", .path("", trailingSlash: true)),
        ("http://user@example.com/%2e%2e", .refused(.forbidden)),
        ("http://example.com//../a", .refused(.forbidden)),
        ("x-y+z.1://h/a", .path("a", trailingSlash: false)),
        ("ht tp://h/a", .refused(.badRequest)),
        ("http:/h/a", .refused(.badRequest)),
        ("http//h/a", .refused(.badRequest)),
        ("a:b", .refused(.badRequest)),
        ("*", .refused(.badRequest)),
        ("a", .refused(.badRequest)),
        ("", .refused(.badRequest)),
        ("?x", .refused(.badRequest)),
    ])
    func absoluteAndOtherForms(_ target: String, _ expected: Resolution) {
        #expect(Resolution(target) == expected)
    }

    @Test func keepsTheEncodedPathWithoutQuery() {
        var path = TargetPath()
        #expect(TargetPath.resolve(target: embedded("http://h/a%20b/?q=1"), into: &path) == nil)
        #expect(text(path.encoded) == "/a%20b/")
    }

    @Test func reusedPathStartsAfresh() {
        var path = TargetPath()
        #expect(TargetPath.resolve(target: bytes("/long/first/path/"), into: &path) == nil)
        #expect(TargetPath.resolve(target: bytes("/b"), into: &path) == nil)
        #expect(text(path.bytes) == "b")
        #expect(path.trailingSlash == false)
    }

    @Test(arguments: [("dynamic", true), ("dynamic/a.bin", true), ("dynamicx", false),
                      ("dynami", false), ("x/dynamic", false), ("", false)])
    func isDynamic(_ p: String, _ expected: Bool) {
        var path = TargetPath()
        path.bytes = Array(p.utf8)
        #expect(path.isDynamic == expected)
    }

    @Test(arguments: [("", "index.html"), ("a", "a/index.html"), ("a/b", "a/b/index.html")])
    func setIndex(_ dir: String, _ expected: String) {
        var d = TargetPath()
        d.bytes = Array(dir.utf8)
        d.trailingSlash = true
        var index = TargetPath()
        index.bytes = Array("stale".utf8)
        index.setIndex(of: d)
        #expect(text(index.bytes) == expected)
        #expect(index.trailingSlash == false)
    }
}
