import Glibc

// libFuzzer's entry points. One binary holds every target; AWS_FUZZ_TARGET names the one a run
// exercises (`make fuzz` runs each in turn). Built with `-sanitize=fuzzer,address` libFuzzer
// supplies `main`; built plainly, Driver/main.c replays the files it is given. (`make test` and
// `make fuzz` replay Tests/Fuzz/regressions through the libFuzzer build, as part of the corpus.)

/// A fuzz target: takes any bytes, and traps (`check`) when an invariant of the code under test
/// does not hold. Returning normally is a pass.
typealias FuzzTarget = @Sendable (UnsafeRawBufferPointer) -> Void

let targets: [(name: String, run: FuzzTarget)] = [
    ("http1", HTTP1Fuzz.run),
    ("chunked", ChunkedFuzz.run),
    ("path", PathFuzz.run),
    ("ranges", RangesFuzz.run),
    ("conditional", ConditionalFuzz.run),
    ("cgi-head", CGIHeadFuzz.run),
    ("tls", TLSFuzz.run),
    ("form", FormFuzz.run),
    ("proxy", ProxyFuzz.run),
]

nonisolated(unsafe) private var selected: FuzzTarget?

@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    let names = targets.map(\.name).joined(separator: " ")
    guard let raw = getenv("AWS_FUZZ_TARGET") else {
        report("AWS_FUZZ_TARGET must name a target: \(names)")
        exit(2)
    }
    let name = String(cString: raw)
    guard let target = targets.first(where: { $0.name == name }) else {
        report("unknown AWS_FUZZ_TARGET \(name); targets: \(names)")
        exit(2)
    }
    selected = target.run
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    selected!(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

/// An invariant of the code under test: a violation aborts, which libFuzzer reports as a crash
/// and saves the input.
func check(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
           file: StaticString = #fileID, line: UInt = #line) {
    if !condition() {
        report("invariant violated at \(file):\(line): \(message())")
        abort()
    }
}

func report(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

/// Reads small numbers off the front of an input (split sizes, lengths), leaving the rest.
struct InputReader {
    var bytes: UnsafeRawBufferPointer

    mutating func byte() -> UInt8 {
        guard let b = bytes.first else { return 0 }
        bytes = UnsafeRawBufferPointer(rebasing: bytes.dropFirst())
        return b
    }

    mutating func integer(bytes count: Int) -> UInt64 {
        var v: UInt64 = 0
        for _ in 0..<count { v = v << 8 | UInt64(byte()) }
        return v
    }
}

/// Piece sizes for feeding a stream in parts, derived from a seed byte: the same input is
/// decoded whole and in these parts, and both must tell the same story.
struct Splitter {
    private var state: UInt32

    init(seed: UInt8) { state = UInt32(seed) &* 2_654_435_761 | 1 }

    mutating func next() -> Int {
        state ^= state << 13; state ^= state >> 17; state ^= state << 5
        // Mostly tiny pieces (1–8 bytes), sometimes larger ones.
        return state % 5 == 0 ? Int(state % 97) + 1 : Int(state % 8) + 1
    }
}
