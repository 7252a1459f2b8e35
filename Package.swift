// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "aws",
    products: [
        .executable(name: "aws", targets: ["Host"]),
        // Example plugin written in Swift; `make plugins` copies it to Plugins/hello.so.
        .library(name: "hello", type: .dynamic, targets: ["HelloPlugin"]),
        .executable(name: "aws-fuzz", targets: ["aws-fuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    ],
    targets: [
        // System libraries, each a one-line shim header plus a module map.
        .systemLibrary(name: "CAIO", path: "Sources/CAIO", providers: [.apt(["libaio-dev"])]),
        .systemLibrary(name: "CHTTPParser", path: "Sources/CHTTPParser", providers: [.apt(["libhttp-parser-dev"])]),
        .systemLibrary(name: "CFFI", path: "Sources/CFFI", pkgConfig: "libffi", providers: [.apt(["libffi-dev"])]),
        // The three content codings of compressed responses: zlib (gzip), brotli's encoder, zstd.
        .systemLibrary(name: "CCompress", path: "Sources/CCompress", providers: [.apt(["zlib1g-dev", "libbrotli-dev", "libzstd-dev"])]),
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        // OpenSSL macros and the C callbacks of a handshake (SNI, ALPN, session-ticket keys).
        .target(name: "CTLS", dependencies: ["COpenSSL"], path: "Sources/CTLS"),
        // Linux calls Glibc's module does not expose (epoll, eventfd, sendfile, accept4, openat2 ...).
        .target(name: "CLinux", path: "Sources/CLinux"),
        // The plugin C ABI: a header plugins compile against; the host includes it too.
        .target(name: "PluginAPI", path: "Sources/PluginAPI"),
        // The host's parsers of what arrives from outside (request heads and framing, targets,
        // ranges, validators, CGI header blocks): pure code with no I/O, in a target of its own so
        // the fuzzers and unit tests link exactly what the server runs.
        .target(name: "AWSParsing", dependencies: ["CHTTPParser"], path: "Sources/AWSParsing",
                // Per request and per byte, like the server's own code: the same compile-time-only
                // exclusivity checking as Host.
                swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]),
        .executableTarget(
            name: "Host",
            dependencies: [
                "AWSParsing", "CAIO", "CCompress", "CHTTPParser", "CFFI", "CLinux", "COpenSSL", "CTLS", "PluginAPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            path: "Sources/Host",
            // Runtime exclusivity checks cost ~3% of a small-file request in profiles; the
            // release build relies on the compile-time checks alone.
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
        ),
        .target(name: "HelloPlugin", dependencies: ["PluginAPI"], path: "Plugins/hello"),
        // Fuzzing the parsers (`make fuzz`, a short run in `make test`): the targets, and a driver
        // whose `main` replays files when libFuzzer is not linked in.
        .target(name: "FuzzTargets", dependencies: ["AWSParsing", "CHTTPParser", "COpenSSL", "CTLS"], path: "Tests/Fuzz/Targets"),
        .executableTarget(name: "aws-fuzz", dependencies: ["FuzzTargets"], path: "Tests/Fuzz/Driver"),
        // Unit tests of the host's pure functions (`make unit`); Tests/*.py are the end-to-end suite.
        .testTarget(name: "HostTests", dependencies: ["Host", "AWSParsing"], path: "Tests/HostTests"),
    ]
)
