/// The statuses aws sends (their status lines and error pages are pre-rendered in Host's StatusTable).
public enum HTTPStatus: Int, Sendable {
    case continue_ = 100
    case ok = 200, created = 201, accepted = 202, nonAuthoritativeInformation = 203, noContent = 204,
         resetContent = 205, partialContent = 206
    case multipleChoices = 300, movedPermanently = 301, found = 302, seeOther = 303, notModified = 304,
         temporaryRedirect = 307, permanentRedirect = 308
    case badRequest = 400, unauthorized = 401, paymentRequired = 402, forbidden = 403, notFound = 404,
         methodNotAllowed = 405, notAcceptable = 406, proxyAuthenticationRequired = 407,
         requestTimeout = 408, conflict = 409, gone = 410, lengthRequired = 411,
         preconditionFailed = 412, contentTooLarge = 413, uriTooLong = 414,
         unsupportedMediaType = 415, rangeNotSatisfiable = 416, expectationFailed = 417,
         imATeapot = 418, misdirectedRequest = 421, unprocessableContent = 422, locked = 423,
         failedDependency = 424, tooEarly = 425, upgradeRequired = 426, preconditionRequired = 428,
         tooManyRequests = 429, requestHeaderFieldsTooLarge = 431, unavailableForLegalReasons = 451
    case internalServerError = 500, notImplemented = 501, badGateway = 502, serviceUnavailable = 503,
         gatewayTimeout = 504, versionNotSupported = 505, insufficientStorage = 507,
         loopDetected = 508, networkAuthenticationRequired = 511

    public var reason: String {
        switch self {
        case .continue_: "Continue"
        case .ok: "OK"
        case .created: "Created"
        case .accepted: "Accepted"
        case .nonAuthoritativeInformation: "Non-Authoritative Information"
        case .noContent: "No Content"
        case .resetContent: "Reset Content"
        case .multipleChoices: "Multiple Choices"
        case .found: "Found"
        case .seeOther: "See Other"
        case .temporaryRedirect: "Temporary Redirect"
        case .partialContent: "Partial Content"
        case .movedPermanently: "Moved Permanently"
        case .notModified: "Not Modified"
        case .permanentRedirect: "Permanent Redirect"
        case .badRequest: "Bad Request"
        case .unauthorized: "Unauthorized"
        case .paymentRequired: "Payment Required"
        case .forbidden: "Forbidden"
        case .notAcceptable: "Not Acceptable"
        case .proxyAuthenticationRequired: "Proxy Authentication Required"
        case .conflict: "Conflict"
        case .gone: "Gone"
        case .unsupportedMediaType: "Unsupported Media Type"
        case .imATeapot: "I'm a teapot"
        case .misdirectedRequest: "Misdirected Request"
        case .unprocessableContent: "Unprocessable Content"
        case .locked: "Locked"
        case .failedDependency: "Failed Dependency"
        case .tooEarly: "Too Early"
        case .upgradeRequired: "Upgrade Required"
        case .preconditionRequired: "Precondition Required"
        case .tooManyRequests: "Too Many Requests"
        case .unavailableForLegalReasons: "Unavailable For Legal Reasons"
        case .badGateway: "Bad Gateway"
        case .gatewayTimeout: "Gateway Timeout"
        case .insufficientStorage: "Insufficient Storage"
        case .loopDetected: "Loop Detected"
        case .networkAuthenticationRequired: "Network Authentication Required"
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

    /// The status for an error code from a plugin: itself when aws knows it, else the class's
    /// generic code (RFC 9110 §15: an unknown code is understood as x00); 500 outside 400-599.
    public static func errorStatus(_ code: Int) -> HTTPStatus {
        guard (400..<600).contains(code) else { return .internalServerError }
        return HTTPStatus(rawValue: code) ?? (code < 500 ? .badRequest : .internalServerError)
    }

    /// Status codes whose responses never carry a body (RFC 9110 §6.4.1), named or not.
    public static func forbidsBody(_ code: Int) -> Bool { code < 200 || code == 204 || code == 304 }
}
