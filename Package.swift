// swift-tools-version: 6.0
import PackageDescription

// The CPU kernels call x86 SIMD intrinsics (AVX2, FMA, F16C) through Clang's
// `_Builtin_intrinsics.intel` module; other architectures use the portable Swift paths.
#if arch(x86_64)
let simdFlags: [SwiftSetting] = [.unsafeFlags(["-Xcc", "-mavx2", "-Xcc", "-mfma", "-Xcc", "-mf16c"])]
#else
let simdFlags: [SwiftSetting] = []
#endif

let package = Package(
    name: "sift",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "Sift", targets: ["Sift"]),
        .executable(name: "sift", targets: ["sift"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .target(
            name: "Sift",
            swiftSettings: simdFlags + [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),
        .executableTarget(
            name: "sift",
            dependencies: ["Sift", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: simdFlags
        ),
        .testTarget(
            name: "SiftTests",
            dependencies: ["Sift"],
            swiftSettings: simdFlags
        ),
    ]
)
