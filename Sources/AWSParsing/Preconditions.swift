import CHTTPParser
import Glibc

/// What identifies one version of a file (RFC 9110 §8.8): a strong entity tag and the
/// modification time, with its HTTP date rendered once.
public struct Validators {
    /// Strong entity tag: inode, size and modification time in nanoseconds, quoted.
    public var etag: [UInt8] = []
    public var modified: Int
    /// `modified` as an HTTP date.
    public var lastModified: [UInt8] = []

    public init(_ st: stat) {
        modified = Int(st.st_mtim.tv_sec)
        HTTPDate.append(modified, to: &lastModified)
        etag.append(34)
        etag.append(hex: UInt64(st.st_ino))
        etag.append(45)
        etag.append(hex: UInt64(bitPattern: Int64(st.st_size)))
        etag.append(45)
        etag.append(hex: UInt64(bitPattern: Int64(st.st_mtim.tv_sec)) &* 1_000_000_000 &+ UInt64(bitPattern: Int64(st.st_mtim.tv_nsec)))
        etag.append(34)
    }
}

/// Conditional requests (RFC 9110 §13) judged against a file's validators: the request's
/// If-Match / If-Unmodified-Since / If-None-Match / If-Modified-Since, and If-Range before a
/// Range is used. Header values this cannot read make their condition false, as §13.1 allows.
public enum Preconditions {
    public enum Outcome: Equatable { case proceed, notModified, failed }

    /// RFC 9110 §13.2.2, in its order.
    @inlinable @inline(__always) public static func evaluate(_ request: borrowing RequestHead, _ v: Validators) -> Outcome {
        if let ifMatch = request.value(.ifMatch) {
            if !EntityTags.list(request.storage[ifMatch], contains: v.etag, weak: false) { return .failed }
        } else if let since = request.value(.ifUnmodifiedSince), let date = HTTPDate.parse(request.storage[since]) {
            if v.modified > date { return .failed }
        }
        if let ifNoneMatch = request.value(.ifNoneMatch) {
            if EntityTags.list(request.storage[ifNoneMatch], contains: v.etag, weak: true) { return .notModified }
        } else if let since = request.value(.ifModifiedSince), let date = HTTPDate.parse(request.storage[since]) {
            if v.modified <= date { return .notModified }
        }
        return .proceed
    }

    /// The part of a GET's Range that applies to a representation of `size` bytes: If-Range
    /// (§13.1.5, a strong comparison with the entity tag or an exact date) decides whether the
    /// Range header counts at all.
    @inlinable @inline(__always) public static func selectRange(_ request: borrowing RequestHead, size: Int, validators v: Validators) -> ByteRanges.Selection {
        // Inlined up to here: most requests have no Range, and answer without a call.
        guard request.method == HTTP_GET, let header = request.value(.range) else { return .whole }
        return selectRange(request, header: header, size: size, validators: v)
    }

    public static func selectRange(_ request: borrowing RequestHead, header: Range<Int>, size: Int, validators v: Validators) -> ByteRanges.Selection {
        if let ifRange = request.value(.ifRange) {
            let value = request.storage[ifRange]
            if value.first == 34 || value.starts(with: [87, 47]) {
                if !value.elementsEqual(v.etag) { return .whole }
            } else if HTTPDate.parse(value) != v.modified {
                return .whole
            }
        }
        return ByteRanges.select(request.storage[header], size: size)
    }
}
