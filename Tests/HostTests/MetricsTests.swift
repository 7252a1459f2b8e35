@testable import Host
import Testing

/// `--metrics` parsing, the request counting and the text format of `/metrics`.
@Suite struct MetricsTests {
    @Test func endpointsAreAnIPv4AddressOrABracketedIPv6OneAndAPort() {
        #expect(MetricsEndpoint("127.0.0.1:9100") == MetricsEndpoint("127.0.0.1:9100"))
        #expect(MetricsEndpoint("127.0.0.1:9100")?.address == "127.0.0.1")
        #expect(MetricsEndpoint("127.0.0.1:9100")?.port == 9100)
        #expect(MetricsEndpoint("[::1]:9100")?.address == "::1")
        #expect(MetricsEndpoint("[::1]:9100")?.description == "[::1]:9100")
        for bad in ["", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:+80", "localhost:80",
                    "::1:9100", "[::1]", "[::1]9100", "[127.0.0.1]:80", "[::1]:x"] {
            #expect(MetricsEndpoint(bad) == nil, "\(bad)")
        }
    }

    @Test func aRequestIsCountedByClassMethodAndDurationBucket() {
        let m = WorkerMetrics()
        m.requestEnded(status: 404, method: 1, nanos: 100_000)      // HEAD 4xx, in the first bucket (le is inclusive)
        m.requestEnded(status: 200, method: 0, nanos: 100_001)      // GET 2xx, second bucket
        m.requestEnded(status: 999, method: 5, nanos: 20_000_000_000) // past the last bound
        let s = MetricsSnapshot(m)
        #expect(s.requests[3 * WorkerMetrics.methodCount + 1] == 1)
        #expect(s.requests[1 * WorkerMetrics.methodCount + 0] == 1)
        #expect(s.requests[4 * WorkerMetrics.methodCount + 5] == 1)
        #expect(s.requests.reduce(0, +) == 3)
        #expect(s.durationBuckets[0] == 1 && s.durationBuckets[1] == 1 && s.durationBuckets.last == 1)
        #expect(s.durationNanos == 20_000_200_001)
    }

    @Test func totalsAreTheSumOfTheWorkersAndHistogramsAreCumulative() {
        var a = MetricsSnapshot(), b = MetricsSnapshot()
        a.connectionsAccepted = 3
        b.connectionsAccepted = 4
        a.durationBuckets[0] = 2
        b.durationBuckets[2] = 1
        b.durationBuckets[WorkerMetrics.durationBounds.count] = 1
        a.durationNanos = 1_500_000_000
        b.durationNanos = 12
        let text = MetricsText.render([a, b])
        let lines = Set(text.split(separator: "\n").map(String.init))
        #expect(lines.contains("aws_connections_accepted_total 7"))
        #expect(lines.contains("aws_worker_connections_accepted_total{worker=\"0\"} 3"))
        #expect(lines.contains("aws_worker_connections_accepted_total{worker=\"1\"} 4"))
        #expect(lines.contains("# TYPE aws_http_request_duration_seconds histogram"))
        #expect(lines.contains("aws_http_request_duration_seconds_bucket{le=\"0.0001\"} 2"))
        #expect(lines.contains("aws_http_request_duration_seconds_bucket{le=\"0.0005\"} 3"))
        #expect(lines.contains("aws_http_request_duration_seconds_bucket{le=\"10\"} 3"))
        #expect(lines.contains("aws_http_request_duration_seconds_bucket{le=\"+Inf\"} 4"))
        #expect(lines.contains("aws_http_request_duration_seconds_count 4"))
        #expect(lines.contains("aws_http_request_duration_seconds_sum 1.500000012"))
        #expect(lines.contains("aws_worker_http_request_duration_seconds_bucket{worker=\"1\",le=\"+Inf\"} 2"))
        #expect(lines.contains("aws_worker_http_request_duration_seconds_sum{worker=\"0\"} 1.500000000"))
        // Every family has its HELP and TYPE once.
        let types = text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }
        #expect(Set(types).count == types.count)
    }

    @Test func onlyGetAndHeadOfMetricsAreAnswered() {
        func status(_ head: String) -> String {
            let r = MetricsListener.response(to: Array(head.utf8)) { "x 1\n" }
            return String(decoding: r.prefix(12), as: UTF8.self)
        }
        #expect(status("GET /metrics HTTP/1.1\r\n\r\n") == "HTTP/1.1 200")
        #expect(status("GET /metrics?a=b HTTP/1.0\r\n\r\n") == "HTTP/1.1 200")
        #expect(status("HEAD /metrics HTTP/1.1\r\n\r\n") == "HTTP/1.1 200")
        #expect(status("GET /metrics/ HTTP/1.1\r\n\r\n") == "HTTP/1.1 404")
        #expect(status("PUT /metrics HTTP/1.1\r\n\r\n") == "HTTP/1.1 405")
        #expect(status("GET /metrics\r\n\r\n") == "HTTP/1.1 400")
        let head = MetricsListener.response(to: Array("HEAD /metrics HTTP/1.1\r\n\r\n".utf8)) { "x 1\n" }
        #expect(String(decoding: head, as: UTF8.self).hasSuffix("Content-Length: 4\r\nConnection: close\r\n\r\n"))
    }
}
