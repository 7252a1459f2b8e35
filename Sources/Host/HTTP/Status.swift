/// The statuses aws sends, with their pre-rendered status lines and error pages.
enum HTTPStatus: Int, Sendable {
    case continue_ = 100
    case ok = 200, created = 201, noContent = 204, partialContent = 206
    case movedPermanently = 301, notModified = 304
    case badRequest = 400, forbidden = 403, notFound = 404, methodNotAllowed = 405,
         requestTimeout = 408, lengthRequired = 411, preconditionFailed = 412,
         contentTooLarge = 413, uriTooLong = 414, rangeNotSatisfiable = 416,
         expectationFailed = 417, requestHeaderFieldsTooLarge = 431
    case internalServerError = 500, notImplemented = 501, serviceUnavailable = 503,
         versionNotSupported = 505

    var reason: String {
        switch self {
        case .continue_: "Continue"
        case .ok: "OK"
        case .created: "Created"
        case .noContent: "No Content"
        case .partialContent: "Partial Content"
        case .movedPermanently: "Moved Permanently"
        case .notModified: "Not Modified"
        case .badRequest: "Bad Request"
        case .forbidden: "Forbidden"
        case .notFound: "Not Found"
        case .methodNotAllowed: "Method Not Allowed"
        case .requestTimeout: "Request Timeout"
        case .lengthRequired: "Length Required"
        case .preconditionFailed: "Precondition Failed"
        case .contentTooLarge: "Content Too Large"
        case .uriTooLong: "URI Too Long"
        case .rangeNotSatisfiable: "Range Not Satisfiable"
        case .expectationFailed: "Expectation Failed"
        case .requestHeaderFieldsTooLarge: "Request Header Fields Too Large"
        case .internalServerError: "Internal Server Error"
        case .notImplemented: "Not Implemented"
        case .serviceUnavailable: "Service Unavailable"
        case .versionNotSupported: "HTTP Version Not Supported"
        }
    }

    /// Statuses that never carry a body (RFC 9110 §6.4.1).
    var forbidsBody: Bool { rawValue < 200 || self == .noContent || self == .notModified }
}

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
