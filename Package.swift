// swift-tools-version: 6.0
import PackageDescription

// On x86-64, sift targets AVX2/FMA/F16C machines (Haswell and later): Swift's SIMD types then
// compile to 256-bit instructions, and the hot kernels can call the intrinsics of Clang's
// `_Builtin_intrinsics.intel` module. Other architectures use the portable Swift paths.
#if arch(x86_64)
let simdFlags: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell", "-Xcc", "-mavx2", "-Xcc", "-mfma", "-Xcc", "-mf16c"])]
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
            // CUDA C sources are embedded by scripts/embed-kernels.sh (KernelSources.generated.swift).
            exclude: ["Backends/CUDA/Kernels"],
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
    ],
    swiftLanguageModes: [.v5]
)
