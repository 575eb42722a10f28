import Foundation
@testable import Sift

/// The real models the tests use, from the sift cache; a missing model is pulled (so a test
/// never skips for want of one).
enum TestModels {
    /// The cached file of a known model, pulled first when missing.
    static func path(_ name: String) throws -> String {
        try ModelHub.resolve(name, download: true)
    }
}

/// Files under Tests/Golden (llama.cpp's reference outputs, copied from ../shared/golden).
enum GoldenFiles {
    static var directory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Golden")
    }

    static func url(_ name: String) -> URL { directory.appendingPathComponent(name) }
}
