@testable import AWSParsing
@testable import Host
import Testing

private func parse(_ s: String, limit: Int = 32 * 1024) -> CGIResponseHead.Parse {
    CGIResponseHead.parse(Array(s.utf8)[...], limit: limit)
}

@Suite struct CGIResponseHeadTests {
    @Test func contentTypeAndBodyStart() {
        guard case .complete(let head, let start) = parse("Content-Type: text/plain\n\nhello") else {
            Issue.record("not complete")
            return
        }
        #expect(head.contentType == Array("text/plain".utf8))
        #expect(head.status == nil)
        #expect(start == 26)
    }

    @Test func crlfStatusAndPassThrough() {
        guard case .complete(let head, let start) = parse("Status: 404 Not Here\r\nX-A:  1 \r\nServer: evil\r\nConnection: close\r\nContent-Length: 5\r\n\r\nabcde") else {
            Issue.record("not complete")
            return
        }
        #expect(head.status == 404)
        #expect(head.reason == Array("Not Here".utf8))
        #expect(head.contentLength == 5)
        #expect(head.fields == [.init(name: Array("X-A".utf8), value: Array("1".utf8))])
        #expect(start == 86)
    }

    @Test func locations() {
        guard case .complete(let local, _) = parse("Location: /static/x\n\n"), case .complete(let remote, _) = parse("Location: http://a/\n\n"),
              case .complete(let withStatus, _) = parse("Status: 301\nLocation: /x\n\n") else {
            Issue.record("not complete")
            return
        }
        #expect(local.isLocalRedirect)
        #expect(!remote.isLocalRedirect)
        #expect(!withStatus.isLocalRedirect)
    }

    @Test func needsMoreUntilTheBlankLine() {
        #expect(parse("Content-Type: text/plain\n") == .needMore)
        #expect(parse("Content-Ty") == .needMore)
        #expect(parse("") == .needMore)
    }

    @Test func refusesBadBlocks() {
        for bad in ["\n", "X-Only: 1\n\n", "no colon\n\n", "Bad Name: 1\nContent-Type: a\n\n", "Status: 99x\n\n",
                    "Status: 100 Continue\n\n", "Status: 200\nStatus: 201\n\n", "Content-Length: -1\nContent-Type: a\n\n",
                    " folded: x\nContent-Type: a\n\n", "Content-Type: a\nContent-Type: b\n\n"] {
            if case .invalid = parse(bad) { continue }
            Issue.record("accepted \(bad.debugDescription)")
        }
    }

    @Test func enforcesTheLimit() {
        let long = "X-Long: " + String(repeating: "a", count: 100) + "\n"
        if case .invalid = parse(long, limit: 64) {} else { Issue.record("an over-long unfinished line was not refused") }
        if case .invalid = parse("Content-Type: a\n" + long + "\n", limit: 64) {} else { Issue.record("an over-long block was not refused") }
    }
}

@Suite struct CGIEnvironmentTests {
    private func variables(_ env: CGIEnvironment) -> [String: String] {
        var out: [String: String] = [:]
        for v in env.variables() {
            let s = String(decoding: v, as: UTF8.self)
            let eq = s.firstIndex(of: "=")!
            #expect(out[String(s[..<eq])] == nil, "\(s[..<eq]) twice")
            out[String(s[..<eq])] = String(s[s.index(after: eq)...])
        }
        return out
    }

    @Test func metaVariables() {
        var env = CGIEnvironment()
        env.method = "POST"
        env.requestURI = Array("/cgi/a.sh/x%20y?q=1".utf8)
        env.query = Array("q=1".utf8)
        env.contentLength = 12
        env.contentType = Array("text/plain".utf8)
        env.scriptName = Array("/cgi/a.sh".utf8)
        env.scriptFilename = "/srv/cgi/a.sh"
        env.pathInfo = Array("/x y".utf8)
        env.documentRoot = "/srv"
        env.serverName = Array("example.test".utf8)
        env.serverPort = 8443
        env.remoteAddress = "::1"
        env.remotePort = 5000
        env.https = true
        env.path = "/bin"
        env.extra = [("FOO", "bar")]
        let v = variables(env)
        #expect(v["GATEWAY_INTERFACE"] == "CGI/1.1")
        #expect(v["REQUEST_METHOD"] == "POST")
        #expect(v["QUERY_STRING"] == "q=1")
        #expect(v["CONTENT_LENGTH"] == "12")
        #expect(v["CONTENT_TYPE"] == "text/plain")
        #expect(v["PATH_INFO"] == "/x y")
        #expect(v["PATH_TRANSLATED"] == "/srv/x y")
        #expect(v["SERVER_PORT"] == "8443")
        #expect(v["SERVER_PROTOCOL"] == "HTTP/1.1")
        #expect(v["REMOTE_ADDR"] == "::1")
        #expect(v["HTTPS"] == "on")
        #expect(v["PATH"] == "/bin")
        #expect(v["FOO"] == "bar")
    }

    @Test func absentWithoutBodyOrPathInfo() {
        let v = variables(CGIEnvironment())
        for name in ["CONTENT_LENGTH", "CONTENT_TYPE", "PATH_INFO", "PATH_TRANSLATED", "HTTPS"] { #expect(v[name] == nil, "\(name)") }
        #expect(v["QUERY_STRING"] == "")
    }

    @Test func headerVariables() {
        var env = CGIEnvironment()
        env.headers = [("User-Agent", "t"), ("x-a", "1"), ("X-A", "2"), ("Proxy", "http://evil"), ("Content-Type", "a"),
                       ("Content-Length", "3"), ("X_Under", "no"), ("Accept", "*/*")].map { (Array($0.utf8), Array($1.utf8)) }
        let v = variables(env)
        #expect(v["HTTP_USER_AGENT"] == "t")
        #expect(v["HTTP_X_A"] == "1, 2")
        #expect(v["HTTP_ACCEPT"] == "*/*")
        for name in ["HTTP_PROXY", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH", "HTTP_X_UNDER"] { #expect(v[name] == nil, "\(name)") }
    }

    @Test func nulCutsAValue() {
        var env = CGIEnvironment()
        env.headers = [(Array("X-N".utf8), [97, 0, 98])]
        #expect(variables(env)["HTTP_X_N"] == "a")
    }
}
