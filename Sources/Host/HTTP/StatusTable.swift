import AWSParsing

/// Pre-rendered bytes per status, built once at start-up and shared read-only by all workers.
struct StatusTable: Sendable {
    private let lines: [[UInt8]]
    private let pages: [[UInt8]]

    static let shared = StatusTable()

    private init() {
        var lines = [[UInt8]](repeating: [], count: 600)
        var pages = [[UInt8]](repeating: [], count: 600)
        for code in 100..<600 {
            guard let status = HTTPStatus(rawValue: code) else { continue }
            lines[code] = Array("HTTP/1.1 \(code) \(status.reason)\r\n".utf8)
            let title = "\(code) \(status.reason)"
            pages[code] = Array("<!DOCTYPE html>\n<html><head><title>\(title)</title></head><body><h1>\(title)</h1><hr><address>aws/\(AWSVersion.string)</address></body></html>\n".utf8)
        }
        self.lines = lines
        self.pages = pages
    }

    func statusLine(_ s: HTTPStatus) -> [UInt8] { lines[s.rawValue] }
    func errorPage(_ s: HTTPStatus) -> [UInt8] { pages[s.rawValue] }
}

enum AWSVersion {
    static let string = "0.1.0"
}
