#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Model shapes for GPU speed benchmarks with random weights made on the GPU
/// (`sift bench --synthetic NAME --device cuda`): no file to download or carry. The GGUF here
/// holds metadata and tensor descriptions only; its data section is a sparse file that is
/// never read (`CUDABackend.syntheticWeights`).
public enum SyntheticModels {
    struct Shape {
        var arch: String, dim: Int, layers: Int, heads: Int, kvHeads: Int, headDim: Int, ffn: Int, vocab: Int
        var ropeBase: Float, context: Int, biases: Bool
    }

    static let shapes: [String: Shape] = [
        "llama3-8b": Shape(arch: "llama", dim: 4096, layers: 32, heads: 32, kvHeads: 8, headDim: 128, ffn: 14336,
                           vocab: 128_256, ropeBase: 500_000, context: 131_072, biases: false),
        "qwen2.5-1.5b": Shape(arch: "qwen2", dim: 1536, layers: 28, heads: 12, kvHeads: 2, headDim: 128, ffn: 8960,
                              vocab: 151_936, ropeBase: 1_000_000, context: 32_768, biases: true),
        "qwen2.5-7b": Shape(arch: "qwen2", dim: 3584, layers: 28, heads: 28, kvHeads: 4, headDim: 128, ffn: 18944,
                            vocab: 152_064, ropeBase: 1_000_000, context: 32_768, biases: true),
    ]

    public static var names: [String] { shapes.keys.sorted() }

    /// The (metadata-only) GGUF of a synthetic model, written to a sparse file under /tmp.
    public static func file(_ name: String) throws -> GGUFFile {
        guard let s = shapes[name] else {
            throw ModelError.invalid("unknown synthetic model '\(name)' (known: \(names.joined(separator: ", ")))")
        }
        var w = GGUFWriter()
        let a = s.arch
        w.set("general.architecture", .string(a))
        w.set("general.name", .string("synthetic \(name)"))
        w.set("\(a).embedding_length", .uint32(UInt32(s.dim)))
        w.set("\(a).block_count", .uint32(UInt32(s.layers)))
        w.set("\(a).attention.head_count", .uint32(UInt32(s.heads)))
        w.set("\(a).attention.head_count_kv", .uint32(UInt32(s.kvHeads)))
        w.set("\(a).attention.key_length", .uint32(UInt32(s.headDim)))
        w.set("\(a).feed_forward_length", .uint32(UInt32(s.ffn)))
        w.set("\(a).context_length", .uint32(UInt32(s.context)))
        w.set("\(a).attention.layer_norm_rms_epsilon", .float32(1e-6))
        w.set("\(a).rope.freq_base", .float32(s.ropeBase))
        w.set("\(a).vocab_size", .uint32(UInt32(s.vocab)))
        var largest = 0
        func t(_ n: String, _ shape: [Int], _ type: GGMLType) {
            // No bytes: every tensor's offset is 0 (they overlap in the never-read data section).
            w.add(.init(name: n, shape: shape, type: type, bytes: []))
            largest = max(largest, type.byteCount(elements: shape.reduce(1, *)) ?? 0)
        }
        let q = s.heads * s.headDim, kv = s.kvHeads * s.headDim
        t("token_embd.weight", [s.dim, s.vocab], .bf16)
        t("output.weight", [s.dim, s.vocab], .bf16)
        t("output_norm.weight", [s.dim], .f32)
        for l in 0..<s.layers {
            let p = "blk.\(l)."
            t(p + "attn_norm.weight", [s.dim], .f32)
            t(p + "ffn_norm.weight", [s.dim], .f32)
            t(p + "attn_q.weight", [s.dim, q], .bf16)
            t(p + "attn_k.weight", [s.dim, kv], .bf16)
            t(p + "attn_v.weight", [s.dim, kv], .bf16)
            t(p + "attn_output.weight", [q, s.dim], .bf16)
            t(p + "ffn_gate.weight", [s.dim, s.ffn], .bf16)
            t(p + "ffn_up.weight", [s.dim, s.ffn], .bf16)
            t(p + "ffn_down.weight", [s.ffn, s.dim], .bf16)
            if s.biases {
                t(p + "attn_q.bias", [q], .f32)
                t(p + "attn_k.bias", [kv], .f32)
                t(p + "attn_v.bias", [kv], .f32)
            }
        }
        let header = w.bytes()
        let path = "/tmp/sift-synthetic-\(name)-\(getpid()).gguf"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw ModelError.invalid("cannot create \(path): \(FS.errnoText())") }
        defer { close(fd); unlink(path) }  // the mapping outlives the name
        let wrote = header.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard wrote == header.count, ftruncate(fd, off_t(header.count + largest)) == 0 else {
            throw ModelError.invalid("cannot write \(path): \(FS.errnoText())")
        }
        return try GGUFFile(path: path)
    }
}
