import Foundation

/// The real models the tests use, as `sift pull NAME` caches them.
enum TestModels {
    struct Missing: Error, CustomStringConvertible {
        let name: String
        let path: String
        var description: String {
            "model '\(name)' is not at \(path): run `sift pull \(name)` first (tests that need real models fail rather than skip)"
        }
    }

    static var directory: String {
        let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
        return home + "/.cache/sift/models"
    }

    /// `~/.cache/sift/models/NAME.gguf`, or an error telling how to get it.
    static func path(_ name: String) throws -> String {
        let p = directory + "/" + name + ".gguf"
        guard FileManager.default.fileExists(atPath: p) else { throw Missing(name: name, path: p) }
        return p
    }
}
