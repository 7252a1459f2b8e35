// swift-tools-version:6.0
// Measures what a request's metrics cost: aws's single-writer counters against swift-metrics
// with the swift-prometheus backend, and swift-prometheus on its own. See README.md.
import PackageDescription

let package = Package(
    name: "metrics-cost",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
    ],
    targets: [
        .target(name: "MallocCounter"),
        .executableTarget(
            name: "MetricsCost",
            dependencies: [
                "MallocCounter",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
    ]
)
