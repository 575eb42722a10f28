import Foundation
@testable import Sift

/// The real models the tests use, from the sift cache; a missing model is pulled (so a test
/// never skips for want of one).
enum TestModels {
    /// The config of a one-layer Qwen2 with this attention geometry (no weights): what
    /// calibration files are checked against in the method tests.
    static func attentionConfig(heads: Int, kvHeads: Int, headDim: Int) throws -> ModelConfig {
        var w = GGUFWriter()
        w.set("general.architecture", .string("qwen2"))
        w.set("qwen2.embedding_length", .uint32(UInt32(heads * headDim)))
        w.set("qwen2.block_count", .uint32(1))
        w.set("qwen2.attention.head_count", .uint32(UInt32(heads)))
        w.set("qwen2.attention.head_count_kv", .uint32(UInt32(kvHeads)))
        w.set("qwen2.attention.key_length", .uint32(UInt32(headDim)))
        w.set("qwen2.feed_forward_length", .uint32(8))
        return try ModelConfig(gguf: GGUFFile(file: MappedFile(copying: w.bytes())))
    }

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
