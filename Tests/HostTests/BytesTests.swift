@testable import AWSParsing
@testable import Host
import Testing

@Suite struct DecimalTests {
    private func decimal(_ v: Int) -> String {
        var out: [UInt8] = []
        out.append(decimal: v)
        return text(out)
    }

    @Test(arguments: [
        (0, "0"), (7, "7"), (9, "9"), (10, "10"), (99, "99"), (100, "100"), (1_000_000, "1000000"),
        (-1, "-1"), (-10, "-10"), (-1234567890, "-1234567890"),
        (Int.max, "9223372036854775807"), (-Int.max, "-9223372036854775807"),
    ])
    func formats(_ v: Int, _ expected: String) {
        #expect(decimal(v) == expected)
    }

    @Test func everyValueUpToTenThousandMatchesTheStandardLibrary() {
        for v in -10_000...10_000 where decimal(v) != String(v) {
            Issue.record("\(v) formatted as \(decimal(v))")
        }
    }

    @Test func appends() {
        var out = Array("Content-Length: ".utf8)
        out.append(decimal: 42)
        #expect(text(out) == "Content-Length: 42")
    }

    // Negating Int.min overflows, so it traps. Every caller passes a length, offset or status,
    // never Int.min; this pins the trap so that a change to it is a decision.
    @Test func intMinTraps() async {
        await #expect(processExitsWith: .failure) {
            var out: [UInt8] = []
            out.append(decimal: Int.min)
        }
    }
}

@Suite struct HexTests {
    @Test(arguments: [
        (UInt64(0), "0"), (1, "1"), (9, "9"), (10, "a"), (15, "f"), (16, "10"), (255, "ff"), (256, "100"),
        (0xdead_beef, "deadbeef"), (0x1000_0000_0000_0000, "1000000000000000"),
        (UInt64.max, "ffffffffffffffff"),
    ])
    func formats(_ v: UInt64, _ expected: String) {
        var out: [UInt8] = []
        out.append(hex: v)
        #expect(text(out) == expected)
    }
}

@Suite struct ASCIITests {
    @Test func hexValue() {
        #expect(Array("09afAF".utf8).map { ASCII.hexValue($0) } == [0, 9, 10, 15, 10, 15])
        #expect(Array("gG/:@`".utf8).map { ASCII.hexValue($0) } == [nil, nil, nil, nil, nil, nil])
    }

    @Test func lower() {
        #expect(text(Array("AZaz09@[`{".utf8).map(ASCII.lower)) == "azaz09@[`{")
    }

    @Test func tokenChars() {
        let tchar = Set("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)
        for c in UInt8.min...UInt8.max {
            #expect(ASCII.isTokenChar(c) == tchar.contains(c), "byte \(c)")
        }
    }
}

@Suite struct URLEncodingTests {
    private func encode(_ s: String, strict: Bool = false) -> String {
        var out: [UInt8] = []
        URLEncoding.appendPercentEncoded(Array(s.utf8), to: &out, strict: strict)
        return text(out)
    }

    @Test func unreservedAndSlashStay() {
        let kept = "abcxyzABCXYZ0189-._~/"
        #expect(encode(kept) == kept)
        #expect(encode(kept, strict: true) == kept)
    }

    @Test func subDelimsStayUnlessStrict() {
        #expect(encode("!$&'()*+,;=:@") == "!$&'()*+,;=:@")
        #expect(encode("!$&'()*+,;=:@", strict: true) == "%21%24%26%27%28%29%2A%2B%2C%3B%3D%3A%40")
    }

    // A directory listing's links are relative references: a file named "javascript:x" must not
    // become a link with a scheme.
    @Test func strictOutputHasNoScheme() {
        #expect(encode("javascript:alert(1)", strict: true) == "javascript%3Aalert%281%29")
        #expect(encode("a:b", strict: false) == "a:b")
    }

    @Test(arguments: [
        (" ", "%20"), ("%", "%25"), ("?", "%3F"), ("#", "%23"), ("\"", "%22"), ("<>", "%3C%3E"),
        ("\\", "%5C"), ("\u{0}\u{1}\u{7f}", "%00%01%7F"), ("é", "%C3%A9"), ("a b/c?d", "a%20b/c%3Fd"),
    ])
    func otherBytesAreEncoded(_ s: String, _ expected: String) {
        #expect(encode(s) == expected)
        #expect(encode(s, strict: true) == expected)
    }

    // What the resolver decodes, the encoder gives back: a redirect names the same file.
    @Test func roundTripsThroughTheResolver() {
        var all = (UInt8(1)...UInt8(255)).filter { $0 != 47 }
        all.append(contentsOf: Array("/dir/".utf8))
        for strict in [false, true] {
            var target = Array("/".utf8)
            URLEncoding.appendPercentEncoded(all, to: &target, strict: strict)
            var path = TargetPath()
            #expect(TargetPath.resolve(target: target[...], into: &path) == nil)
            #expect(path.bytes == Array(all.dropLast()))
        }
    }
}

@Suite struct MediaTypesTests {
    @Test(arguments: [
        ("index.html", "text/html; charset=utf-8"), ("a/b/INDEX.HTM", "text/html; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"), ("data.json", "application/json; charset=utf-8"),
        ("x.tar.gz", "application/gzip"), ("photo.JPEG", "image/jpeg"), ("font.woff2", "font/woff2"),
        (".html", "text/html; charset=utf-8"), ("dir.d/a.svg", "image/svg+xml; charset=utf-8"),
        ("notes.csv", "text/csv"), ("movie.swf", "application/vnd.adobe.flash.movie"), ("a.mjs", "text/javascript; charset=utf-8"),
        ("site.webmanifest", "application/manifest+json; charset=utf-8"), ("m.wasm", "application/wasm"),
        ("zzz.zmm", "application/vnd.handheld-entertainment+xml"), ("x.123", "application/vnd.lotus-1-2-3"),
    ])
    func byExtension(_ path: String, _ expected: String) {
        #expect(text(MediaTypes().type(forPath: embedded(path))) == expected)
    }

    @Test(arguments: ["", "README", "file.", "dir.html/file", "a.unknown", "a.htmlx", "a.ht", "a.html/"])
    func fallback(_ path: String) {
        #expect(text(MediaTypes().type(forPath: embedded(path))) == "application/octet-stream")
    }

    @Test func overridesTakeTheValueVerbatim() {
        let types = MediaTypes(overrides: [("TXT", "text/plain; charset=iso-8859-1"), ("html", "text/html"), ("new", "application/x-new")])
        #expect(text(types.type(forPath: embedded("a.txt"))) == "text/plain; charset=iso-8859-1")
        #expect(text(types.type(forPath: embedded("a.HTML"))) == "text/html")
        #expect(text(types.type(forPath: embedded("a.new"))) == "application/x-new")
        #expect(text(types.type(forPath: embedded("a.css"))) == "text/css; charset=utf-8")
    }
}

@Suite struct CacheRuleTests {
    @Test(arguments: [
        ("*.css", "static/a.css", true), ("*.css", "a.css", true), ("*.css", "a.css/b", false),
        ("*.css", "a.cssx", false), ("/static/", "static/x/y.png", true), ("/static/", "stat", false),
        ("/static/*.css", "static/x/y.css", true), ("/static/*.css", "other/static/y.css", false),
        ("app.????????.js", "js/app.3f2a9c1b.js", true), ("*", "anything/at/all", true),
        ("a*b*c", "aXbYbZc", true), ("a*b*c", "aXbYbZ", false), ("*.CSS", "a.css", false),
    ])
    func matching(_ pattern: String, _ path: String, _ expected: Bool) {
        #expect(CacheRule(pattern: pattern, value: "no-cache").matches(embedded(path)) == expected)
    }

    @Test(arguments: [
        ("app.3f2a9c1b.js", true), ("a/b/style.0123abcd.css", true), ("app.3F2A9C1B.js", false),
        ("report.20240101.pdf", false), ("app.deadbeef.js", false), ("app.3f2a9c1.js", false),
        ("3f2a9c1b4d.js", false), ("app.js.3f2a9c1b", false), ("v.1a2b3c4d5e.min.js", true),
    ])
    func fingerprints(_ path: String, _ expected: Bool) {
        #expect(CacheRule.isFingerprinted(embedded(path)) == expected)
    }

    @Test func maxAgeAndImmutable() {
        #expect(CacheRule.maxAge(in: "public, max-age=3600") == 3600)
        #expect(CacheRule.maxAge(in: "s-maxage=10, MAX-AGE=\"20\"") == 20)
        #expect(CacheRule.maxAge(in: "no-cache") == nil)
        #expect(CacheRule(pattern: "*", value: "max-age=60").immutableField.map(text) == "Cache-Control: max-age=60, immutable\r\n")
        #expect(CacheRule(pattern: "*", value: "max-age=0").immutableField == nil)
        #expect(CacheRule(pattern: "*", value: "no-store, max-age=60").immutableField == nil)
    }
}
