// Inputs are written as text for readability; the functions under test take bytes.

/// `s` as bytes, in a slice whose indices start at 0.
func bytes(_ s: String) -> ArraySlice<UInt8> { ArraySlice(s.utf8) }

/// `s` as bytes in the middle of a larger buffer, the way the server passes a header value out
/// of its request storage: catches code that indexes from 0 instead of `startIndex`.
func embedded(_ s: String) -> ArraySlice<UInt8> {
    let buffer = Array("Name: \(s)\r\n".utf8)
    return buffer[6..<(6 + s.utf8.count)]
}

func text(_ b: some Sequence<UInt8>) -> String { String(decoding: Array(b), as: UTF8.self) }
