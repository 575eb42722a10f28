import XCTest
@testable import Sift

/// Tiny random models written with GGUFWriter, run by the engine and by a float64 reference
/// implementation of each architecture written here from the equations.
final class ModelReferenceTests: XCTestCase {
    struct Dims {
        var vocab = 61, dim = 32, heads = 4, kvHeads = 2, headDim = 8, ffn = 48, layers = 2
        var window = 0
    }

    /// Random weights, by tensor name, in ggml shape order.
    struct Weights {
        var tensors: [String: (shape: [Int], values: [Double])] = [:]
        var rng: Xoshiro256

        init(seed: UInt64) { rng = Xoshiro256(seed: seed) }

        mutating func add(_ name: String, _ shape: [Int], scale: Double, offset: Double = 0) {
            let n = shape.reduce(1, *)
            let values = (0..<n).map { _ in offset + scale * (Double(rng.next() >> 11) * 0x1.0p-53 * 2 - 1) }
            tensors[name] = (shape, values)
        }

        /// Matrix-vector product with a weight of ggml shape [cols, rows].
        func mv(_ name: String, _ x: [Double]) -> [Double] {
            let (shape, w) = tensors[name]!
            let cols = shape[0], rows = shape[1]
            precondition(x.count == cols)
            return (0..<rows).map { r in (0..<cols).reduce(0.0) { $0 + w[r * cols + $1] * x[$1] } }
        }

        func vec(_ name: String) -> [Double] { tensors[name]!.values }

        func gguf(arch: String, d: Dims, extra: [(String, GGUFValue)]) -> [UInt8] {
            var w = GGUFWriter()
            w.set("general.architecture", .string(arch))
            w.set("\(arch).embedding_length", .uint32(UInt32(d.dim)))
            w.set("\(arch).block_count", .uint32(UInt32(d.layers)))
            w.set("\(arch).attention.head_count", .uint32(UInt32(d.heads)))
            w.set("\(arch).attention.head_count_kv", .uint32(UInt32(d.kvHeads)))
            w.set("\(arch).attention.key_length", .uint32(UInt32(d.headDim)))
            w.set("\(arch).feed_forward_length", .uint32(UInt32(d.ffn)))
            w.set("\(arch).context_length", .uint32(256))
            w.set("\(arch).attention.layer_norm_rms_epsilon", .float32(1e-6))
            w.set("\(arch).vocab_size", .uint32(UInt32(d.vocab)))
            for (k, v) in extra { w.set(k, v) }
            for (name, t) in tensors.sorted(by: { $0.key < $1.key }) {
                w.add(.init(name: name, shape: t.shape, floats: t.values.map { Float($0) }))
            }
            return w.bytes()
        }
    }

    static func rmsNorm(_ x: [Double], _ w: [Double], eps: Double = 1e-6) -> [Double] {
        let ms = x.reduce(0) { $0 + $1 * $1 } / Double(x.count)
        let inv = 1 / (ms + eps).squareRoot()
        return zip(x, w).map { $0 * inv * $1 }
    }

    /// NeoX RoPE on one head.
    static func rope(_ v: [Double], pos: Int, base: Double) -> [Double] {
        let d = v.count, half = d / 2
        var out = v
        for i in 0..<half {
            let theta = Double(pos) * pow(base, -2.0 * Double(i) / Double(d))
            out[i] = v[i] * cos(theta) - v[i + half] * sin(theta)
            out[i + half] = v[i] * sin(theta) + v[i + half] * cos(theta)
        }
        return out
    }

    /// Causal attention of all positions; `window` > 0 limits each query to the last `window` keys.
    static func attention(q: [[Double]], k: [[Double]], v: [[Double]], d: Dims, scale: Double, window: Int) -> [[Double]] {
        let g = d.heads / d.kvHeads, hd = d.headDim
        return (0..<q.count).map { t in
            var out = [Double](repeating: 0, count: d.heads * hd)
            for h in 0..<d.heads {
                let kvh = h / g
                let lo = window > 0 ? max(0, t - window + 1) : 0
                var scores: [Double] = []
                for j in lo...t {
                    var s = 0.0
                    for c in 0..<hd { s += q[t][h * hd + c] * k[j][kvh * hd + c] }
                    scores.append(s * scale)
                }
                let m = scores.max()!
                let e = scores.map { exp($0 - m) }
                let z = e.reduce(0, +)
                for (i, j) in (lo...t).enumerated() {
                    for c in 0..<hd { out[h * hd + c] += e[i] / z * v[j][kvh * hd + c] }
                }
            }
            return out
        }
    }

    static func heads(_ x: [Double], _ hd: Int) -> [[Double]] {
        stride(from: 0, to: x.count, by: hd).map { Array(x[$0..<($0 + hd)]) }
    }

    // MARK: Qwen2 (Llama family with q/k/v biases)

    func qwen2Reference(_ w: Weights, _ d: Dims, tokens: [Int]) -> [[Double]] {
        let emb = w.vec("token_embd.weight")
        var xs = tokens.map { Array(emb[($0 * d.dim)..<(($0 + 1) * d.dim)]) }
        for l in 0..<d.layers {
            let p = "blk.\(l)."
            var qs: [[Double]] = [], ks: [[Double]] = [], vs: [[Double]] = []
            for (t, x) in xs.enumerated() {
                let h = Self.rmsNorm(x, w.vec(p + "attn_norm.weight"))
                let q = zip(w.mv(p + "attn_q.weight", h), w.vec(p + "attn_q.bias")).map(+)
                let k = zip(w.mv(p + "attn_k.weight", h), w.vec(p + "attn_k.bias")).map(+)
                let v = zip(w.mv(p + "attn_v.weight", h), w.vec(p + "attn_v.bias")).map(+)
                qs.append(Self.heads(q, d.headDim).flatMap { Self.rope($0, pos: t, base: 10_000) })
                ks.append(Self.heads(k, d.headDim).flatMap { Self.rope($0, pos: t, base: 10_000) })
                vs.append(v)
            }
            let a = Self.attention(q: qs, k: ks, v: vs, d: d, scale: 1 / Double(d.headDim).squareRoot(), window: 0)
            for t in xs.indices {
                xs[t] = zip(xs[t], w.mv(p + "attn_output.weight", a[t])).map(+)
                let h = Self.rmsNorm(xs[t], w.vec(p + "ffn_norm.weight"))
                let g = w.mv(p + "ffn_gate.weight", h), u = w.mv(p + "ffn_up.weight", h)
                let act = zip(g, u).map { $0 / (1 + exp(-$0)) * $1 }
                xs[t] = zip(xs[t], w.mv(p + "ffn_down.weight", act)).map(+)
            }
        }
        return xs.map { w.mv("output.weight", Self.rmsNorm($0, w.vec("output_norm.weight"))) }
    }

    static func makeQwen2(_ d: Dims, seed: UInt64) -> Weights {
        var w = Weights(seed: seed)
        w.add("token_embd.weight", [d.dim, d.vocab], scale: 1)
        w.add("output.weight", [d.dim, d.vocab], scale: 0.3)
        w.add("output_norm.weight", [d.dim], scale: 0.2, offset: 1)
        for l in 0..<d.layers {
            let p = "blk.\(l)."
            w.add(p + "attn_norm.weight", [d.dim], scale: 0.2, offset: 1)
            w.add(p + "attn_q.weight", [d.dim, d.heads * d.headDim], scale: 0.3)
            w.add(p + "attn_k.weight", [d.dim, d.kvHeads * d.headDim], scale: 0.3)
            w.add(p + "attn_v.weight", [d.dim, d.kvHeads * d.headDim], scale: 0.3)
            w.add(p + "attn_q.bias", [d.heads * d.headDim], scale: 0.2)
            w.add(p + "attn_k.bias", [d.kvHeads * d.headDim], scale: 0.2)
            w.add(p + "attn_v.bias", [d.kvHeads * d.headDim], scale: 0.2)
            w.add(p + "attn_output.weight", [d.heads * d.headDim, d.dim], scale: 0.2)
            w.add(p + "ffn_norm.weight", [d.dim], scale: 0.2, offset: 1)
            w.add(p + "ffn_gate.weight", [d.dim, d.ffn], scale: 0.3)
            w.add(p + "ffn_up.weight", [d.dim, d.ffn], scale: 0.3)
            w.add(p + "ffn_down.weight", [d.ffn, d.dim], scale: 0.2)
        }
        return w
    }

    // MARK: Gemma 3

    func gemma3Reference(_ w: Weights, _ d: Dims, tokens: [Int]) -> [[Double]] {
        let emb = w.vec("token_embd.weight")
        let scale = Double(Float(d.dim).squareRoot())
        var xs = tokens.map { emb[($0 * d.dim)..<(($0 + 1) * d.dim)].map { $0 * scale } }
        for l in 0..<d.layers {
            let p = "blk.\(l)."
            let local = (l + 1) % 6 != 0
            let base = local ? 10_000.0 : 1_000_000.0
            var qs: [[Double]] = [], ks: [[Double]] = [], vs: [[Double]] = []
            for (t, x) in xs.enumerated() {
                let h = Self.rmsNorm(x, w.vec(p + "attn_norm.weight"))
                let q = Self.heads(w.mv(p + "attn_q.weight", h), d.headDim).map { Self.rmsNorm($0, w.vec(p + "attn_q_norm.weight")) }
                let k = Self.heads(w.mv(p + "attn_k.weight", h), d.headDim).map { Self.rmsNorm($0, w.vec(p + "attn_k_norm.weight")) }
                qs.append(q.flatMap { Self.rope($0, pos: t, base: base) })
                ks.append(k.flatMap { Self.rope($0, pos: t, base: base) })
                vs.append(w.mv(p + "attn_v.weight", h))
            }
            let a = Self.attention(q: qs, k: ks, v: vs, d: d, scale: 1 / Double(d.headDim).squareRoot(),
                                   window: local ? d.window : 0)
            for t in xs.indices {
                let o = Self.rmsNorm(w.mv(p + "attn_output.weight", a[t]), w.vec(p + "post_attention_norm.weight"))
                xs[t] = zip(xs[t], o).map(+)
                let h = Self.rmsNorm(xs[t], w.vec(p + "ffn_norm.weight"))
                let g = w.mv(p + "ffn_gate.weight", h), u = w.mv(p + "ffn_up.weight", h)
                let act = zip(g, u).map { 0.5 * $0 * (1 + tanh(0.7978845608028654 * ($0 + 0.044715 * $0 * $0 * $0))) * $1 }
                let m = Self.rmsNorm(w.mv(p + "ffn_down.weight", act), w.vec(p + "post_ffw_norm.weight"))
                xs[t] = zip(xs[t], m).map(+)
            }
        }
        // Tied output: logits = E · norm(x).
        return xs.map { x in
            let n = Self.rmsNorm(x, w.vec("output_norm.weight"))
            return (0..<d.vocab).map { r in (0..<d.dim).reduce(0.0) { $0 + emb[r * d.dim + $1] * n[$1] } }
        }
    }

    func makeGemma3(_ d: Dims, seed: UInt64) -> Weights {
        var w = Weights(seed: seed)
        w.add("token_embd.weight", [d.dim, d.vocab], scale: 0.2)
        w.add("output_norm.weight", [d.dim], scale: 0.2, offset: 1)
        for l in 0..<d.layers {
            let p = "blk.\(l)."
            for n in ["attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"] {
                w.add(p + n + ".weight", [d.dim], scale: 0.2, offset: 1)
            }
            w.add(p + "attn_q_norm.weight", [d.headDim], scale: 0.2, offset: 1)
            w.add(p + "attn_k_norm.weight", [d.headDim], scale: 0.2, offset: 1)
            w.add(p + "attn_q.weight", [d.dim, d.heads * d.headDim], scale: 0.3)
            w.add(p + "attn_k.weight", [d.dim, d.kvHeads * d.headDim], scale: 0.3)
            w.add(p + "attn_v.weight", [d.dim, d.kvHeads * d.headDim], scale: 0.3)
            w.add(p + "attn_output.weight", [d.heads * d.headDim, d.dim], scale: 0.2)
            w.add(p + "ffn_gate.weight", [d.dim, d.ffn], scale: 0.3)
            w.add(p + "ffn_up.weight", [d.dim, d.ffn], scale: 0.3)
            w.add(p + "ffn_down.weight", [d.ffn, d.dim], scale: 0.2)
        }
        return w
    }

    // MARK: Tests

    /// Runs the engine on `tokens` two ways — one batch, and a prefill followed by one-token
    /// decode steps — and compares every position's logits with the reference.
    @discardableResult
    func check(_ bytes: [UInt8], reference: [[Double]], tokens: [Int], maxBatch: Int = 512, exact: Bool = false,
               file: StaticString = #filePath, line: UInt = #line) throws -> Double {
        let gguf = try GGUFFile(file: MappedFile(copying: bytes))
        let backend = CPUBackend(threads: 2)
        backend.exactActivations = exact
        let model = try Architectures.load(gguf, backend: backend, maxBatch: maxBatch)
        let ids = tokens.map(Int32.init)

        let batch = try Session(model: model, contextLength: 64)
        let all = try batch.evaluate(ids, logits: .all)

        let stepwise = try Session(model: model, contextLength: 64)
        var steps = try stepwise.evaluate(Array(ids[0..<3]), logits: .all)
        for t in ids[3...] { steps += try stepwise.evaluate([t], logits: .all) }

        var worstOfAll = 0.0
        for (name, got) in [("batch", all), ("stepwise", steps)] {
            XCTAssertEqual(got.count, tokens.count, file: file, line: line)
            var worst = 0.0
            for (g, r) in zip(got, reference) {
                for (a, b) in zip(g, r) { worst = max(worst, abs(Double(a) - b) / max(1, abs(b))) }
            }
            // The KV cache holds f16, so allow f16-level error, nothing more.
            XCTAssertLessThan(worst, 5e-3, "\(name): worst relative logit error \(worst)", file: file, line: line)
            worstOfAll = max(worstOfAll, worst)
        }
        return worstOfAll
    }

    func testExactActivationsMatchReferenceAtLeastAsClosely() throws {
        // The f32 reference mode (no 8-bit activation rounding) used by the GPU selftest.
        let d = Dims()
        let w = Self.makeQwen2(d, seed: 13)
        let tokens = [4, 9, 1, 33, 2, 60, 7, 7, 21]
        let bytes = w.gguf(arch: "qwen2", d: d, extra: [("qwen2.rope.freq_base", .float32(10_000))])
        let ref = qwen2Reference(w, d, tokens: tokens)
        let quantized = try check(bytes, reference: ref, tokens: tokens)
        let exact = try check(bytes, reference: ref, tokens: tokens, exact: true)
        XCTAssertLessThanOrEqual(exact, quantized, "exact \(exact) vs 8-bit activations \(quantized)")
    }

    func testQwen2MatchesFloat64Reference() throws {
        let d = Dims()
        let w = Self.makeQwen2(d, seed: 7)
        let tokens = [3, 17, 42, 0, 60, 5, 5, 33, 12, 1]
        try check(w.gguf(arch: "qwen2", d: d, extra: [("qwen2.rope.freq_base", .float32(10_000))]),
                  reference: qwen2Reference(w, d, tokens: tokens), tokens: tokens)
    }

    func testQwen2SmallBatchesMatch() throws {
        // Chunks of 4 tokens through the batched path must equal the reference too.
        let d = Dims()
        let w = Self.makeQwen2(d, seed: 11)
        let tokens = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 10]
        try check(w.gguf(arch: "qwen2", d: d, extra: [("qwen2.rope.freq_base", .float32(10_000))]),
                  reference: qwen2Reference(w, d, tokens: tokens), tokens: tokens, maxBatch: 4)
    }

    func testGemma3MatchesFloat64ReferenceWithSlidingWindow() throws {
        var d = Dims()
        d.layers = 6  // layers 0-4 local, layer 5 global
        d.heads = 2
        d.kvHeads = 1
        d.headDim = 16
        d.window = 4
        let w = makeGemma3(d, seed: 3)
        let tokens = [1, 2, 3, 50, 4, 4, 4, 20, 21, 22, 23, 9]
        try check(w.gguf(arch: "gemma3", d: d, extra: [("gemma3.rope.freq_base", .float32(1_000_000)),
                                                        ("gemma3.attention.sliding_window", .uint32(4))]),
                  reference: gemma3Reference(w, d, tokens: tokens), tokens: tokens)
    }

    func testUnknownArchitectureIsAClearError() throws {
        var w = GGUFWriter()
        w.set("general.architecture", .string("mamba"))
        let gguf = try GGUFFile(file: MappedFile(copying: w.bytes(), name: "x.gguf"))
        XCTAssertThrowsError(try Architectures.load(gguf, backend: CPUBackend(threads: 1))) { e in
            XCTAssertTrue("\(e)".contains("unsupported architecture 'mamba'"), "\(e)")
        }
    }

    func testMissingTensorIsNamed() throws {
        let d = Dims()
        var w = Self.makeQwen2(d, seed: 1)
        w.tensors["blk.1.ffn_up.weight"] = nil
        let gguf = try GGUFFile(file: MappedFile(copying: w.gguf(arch: "qwen2", d: d, extra: []), name: "m.gguf"))
        XCTAssertThrowsError(try Architectures.load(gguf, backend: CPUBackend(threads: 1))) { e in
            XCTAssertTrue("\(e)".contains("blk.1.ffn_up.weight"), "\(e)")
        }
    }
}
