#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Checks of the CUDA backend on a real GPU (`sift selftest --device cuda`): every kernel
/// against a float64 reference on fresh random inputs (outputs poisoned with NaN first, so
/// unwritten elements fail), whole models GPU vs CPU, and the real models against the golden
/// greedy continuations. Each check is a relative error ‖out − ref‖ / ‖ref‖ and a tolerance;
/// NaN never passes.
public struct GPUCheck: Sendable {
    public var name: String
    public var error: Double
    public var tolerance: Double
    public var detail: String = ""
    public var passed: Bool { error <= tolerance }  // false for NaN
    public init(name: String, error: Double, tolerance: Double, detail: String = "") {
        self.name = name
        self.error = error
        self.tolerance = tolerance
        self.detail = detail
    }
}

public enum CUDASelfTest {
    static func relErr(_ out: [Float], _ ref: [Double]) -> Double {
        precondition(out.count == ref.count)
        var num = 0.0, den = 0.0
        for (o, r) in zip(out, ref) {
            let d = Double(o) - r
            num += d * d
            den += r * r
        }
        return (num / max(den, 1e-300)).squareRoot()
    }

    static func relErr(_ out: [Float], _ ref: [Float]) -> Double { relErr(out, ref.map(Double.init)) }

    /// bf16 rounding of x (as the GPU stores the KV cache, and weights and cuBLAS inputs in bf16).
    static func bf16(_ x: Float) -> Double { Double(Float(bitPattern: UInt32(bf16Bits(x)) << 16)) }

    /// x rounded to the backend's weight precision.
    static func rounded(_ x: Float, _ p: GPUPrecision) -> Double {
        switch p {
        case .bf16: return bf16(x)
        case .f16: return Double(Float(Float16(x)))
        case .f32: return Double(x)
        }
    }

    struct Rand {
        var rng: Xoshiro256
        init(seed: UInt64) { rng = Xoshiro256(seed: seed) }
        mutating func uniform() -> Float { Float(rng.next() >> 40) * 0x1p-24 * 2 - 1 }
        mutating func floats(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in uniform() * scale } }
        mutating func int(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
    }

    /// A device tensor holding `values` (rows × cols).
    static func tensor(_ b: CUDABackend, _ values: [Float], rows: Int, cols: Int) -> Tensor {
        let t = b.makeTensor(rows: rows, cols: cols)
        values.withUnsafeBufferPointer { b.write($0.baseAddress!, rows: rows, into: t) }
        return t
    }

    static func poisoned(_ b: CUDABackend, rows: Int, cols: Int) -> Tensor {
        tensor(b, [Float](repeating: .nan, count: rows * cols), rows: rows, cols: cols)
    }

    static func flat(_ b: CUDABackend, _ t: Tensor) -> [Float] { b.read(t).flatMap { $0 } }

    /// A GGUF file in memory holding f32 tensors (name, ggml shape, values).
    static func weightsFile(_ tensors: [(String, [Int], [Float])]) throws -> GGUFFile {
        var w = GGUFWriter()
        w.set("general.architecture", .string("test"))
        for (name, shape, values) in tensors { w.add(.init(name: name, shape: shape, floats: values)) }
        return try GGUFFile(file: MappedFile(copying: w.bytes(), name: "<selftest>"))
    }

    // MARK: kernels

    /// Every backend operation and the attention kernel against float64 references.
    public static func kernelChecks(_ b: CUDABackend, seed: UInt64) throws -> [GPUCheck] {
        var r = Rand(seed: seed)
        var checks: [GPUCheck] = []
        func add(_ name: String, _ err: Double, _ tol: Double) { checks.append(GPUCheck(name: name, error: err, tolerance: tol)) }

        // linear (cuBLAS) with and without bias, several token counts.
        let n = 96, m = 80, vocab = 50, d = 64
        let wv = r.floats(m * n, scale: 0.3), bias = r.floats(m), table = r.floats(vocab * d), norm = r.floats(n).map { 1 + $0 * 0.5 }
        let headNorm = r.floats(32).map { 1 + $0 * 0.5 }
        let file = try weightsFile([("w", [n, m], wv), ("b", [m], bias), ("emb", [d, vocab], table), ("norm", [n], norm),
                                    ("hnorm", [32], headNorm)])
        func weight(_ name: String) throws -> Weight { try b.loadWeight(file.tensorsByName[name]!, from: file) }
        let W = try weight("w"), B = try weight("b"), E = try weight("emb"), N = try weight("norm"), HN = try weight("hnorm")
        for tokens in [1, 7, 33] {
            let x = r.floats(tokens * n, scale: 2)
            for withBias in [false, true] {
                let out = poisoned(b, rows: tokens, cols: m)
                b.linear(tensor(b, x, rows: tokens, cols: n), W, bias: withBias ? B : nil, into: out)
                var ref = [Double](repeating: 0, count: tokens * m)
                for t in 0..<tokens {
                    for i in 0..<m {
                        var s = withBias ? Double(bias[i]) : 0
                        for j in 0..<n { s += rounded(wv[i * n + j], b.precision) * rounded(x[t * n + j], b.precision) }
                        ref[t * m + i] = s
                    }
                }
                add("linear \(b.precision) \(tokens)×\(n)→\(m)\(withBias ? " +bias" : "")", relErr(flat(b, out), ref), 1e-5)
            }
        }
        // One token through a long row (the GEMV's 4-loads-in-flight loop and its tail; 37 rows: a
        // partial last block), against float64 of the same bf16/f16-rounded operands.
        do {
            let n2 = 8 * 259, m2 = 37
            let w2 = r.floats(m2 * n2, scale: 0.1), b2 = r.floats(m2), x2 = r.floats(n2, scale: 2)
            let f2 = try weightsFile([("w2", [n2, m2], w2), ("b2", [m2], b2)])
            let W2 = try b.loadWeight(f2.tensorsByName["w2"]!, from: f2), B2 = try b.loadWeight(f2.tensorsByName["b2"]!, from: f2)
            for withBias in [false, true] {
                let out = poisoned(b, rows: 1, cols: m2)
                b.linear(tensor(b, x2, rows: 1, cols: n2), W2, bias: withBias ? B2 : nil, into: out)
                let ref = (0..<m2).map { i -> Double in
                    var s = withBias ? Double(b2[i]) : 0
                    for j in 0..<n2 { s += rounded(w2[i * n2 + j], b.precision) * rounded(x2[j], b.precision) }
                    return s
                }
                add("linear \(b.precision) 1×\(n2)→\(m2)\(withBias ? " +bias" : "")\(b.useGEMV ? " (GEMV)" : "")", relErr(flat(b, out), ref), 1e-5)
            }
        }

        // embedding lookup with scale
        let toks = (0..<9).map { _ in Int32(r.int(vocab)) }
        let eo = poisoned(b, rows: 9, cols: d)
        b.embed(toks, table: E, scale: 1.7, into: eo)
        add("embed", relErr(flat(b, eo), toks.flatMap { t in (0..<d).map { rounded(table[Int(t) * d + $0], b.precision) * Double(Float(1.7)) } }), 1e-6)

        // RMSNorm over rows, and per head (group 32) in place
        let rows = 5
        let xr = r.floats(rows * n, scale: 3)
        let no = poisoned(b, rows: rows, cols: n)
        b.rmsNorm(tensor(b, xr, rows: rows, cols: n), weight: N, groupSize: n, eps: 1e-6, into: no)
        func rmsRef(_ x: [Float], _ w: [Float], _ g: Int) -> [Double] {
            var out = [Double](repeating: 0, count: x.count)
            for s in stride(from: 0, to: x.count, by: g) {
                let ss = (0..<g).reduce(0.0) { $0 + Double(x[s + $1]) * Double(x[s + $1]) }
                let inv = 1 / (ss / Double(g) + 1e-6).squareRoot()
                for j in 0..<g { out[s + j] = Double(x[s + j]) * inv * Double(w[j]) }
            }
            return out
        }
        add("rms_norm rows", relErr(flat(b, no), rmsRef(xr, norm, n)), 1e-5)
        let inplace = tensor(b, xr, rows: rows, cols: n)
        b.rmsNorm(inplace, weight: HN, groupSize: 32, eps: 1e-6, into: inplace)
        add("rms_norm per head (in place)", relErr(flat(b, inplace), rmsRef(xr, headNorm, 32)), 1e-5)

        // RoPE, both styles; angle = Float(pos)/scale · Float(base^(-2i/d)) as the CPU defines it
        for (style, base, scale, hd) in [(RoPEStyle.neox, Float(10_000), Float(1), 64), (.interleaved, 1_000_000, 2, 128), (.neox, 10_000, 1, 256)] {
            let cols = 2 * hd, rr = 6
            let x = r.floats(rr * cols)
            let pos = (0..<rr).map { _ in Int32(r.int(40_000)) }
            let t = tensor(b, x, rows: rr, cols: cols)
            b.rope(t, headDim: hd, positions: pos, base: base, scale: scale, style: style)
            var ref = x.map(Double.init)
            let half = hd / 2
            for row in 0..<rr {
                let p = Float(pos[row]) / scale
                for h in 0..<2 {
                    for i in 0..<half {
                        let a = Double(p * Float(pow(Double(base), -2.0 * Double(i) / Double(hd))))
                        let o = row * cols + h * hd
                        let (i0, i1) = style == .neox ? (i, i + half) : (2 * i, 2 * i + 1)
                        let u = Double(x[o + i0]), v = Double(x[o + i1])
                        ref[o + i0] = u * cos(a) - v * sin(a)
                        ref[o + i1] = u * sin(a) + v * cos(a)
                    }
                }
            }
            add("rope \(style) d\(hd) base \(Int(base)) scale \(Int(scale))", relErr(flat(b, t), ref), 2e-5)
        }

        // add, gated activations, copyRow
        let ga = r.floats(4 * 100, scale: 4), gb = r.floats(4 * 100, scale: 2)
        let ta = tensor(b, ga, rows: 4, cols: 100)
        b.add(ta, tensor(b, gb, rows: 4, cols: 100))
        add("add", relErr(flat(b, ta), zip(ga, gb).map { Double($0) + Double($1) }), 1e-7)
        for kind in [Activation.silu, .geluTanh] {
            let g = tensor(b, ga, rows: 4, cols: 100)
            b.gatedActivation(g, tensor(b, gb, rows: 4, cols: 100), kind)
            let ref = zip(ga, gb).map { (v, u) -> Double in
                let x = Double(v)
                let a = kind == .silu ? x / (1 + exp(-x)) : 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
                return a * Double(u)
            }
            add("gated \(kind)", relErr(flat(b, g), ref), 1e-5)
        }
        let cr = poisoned(b, rows: 2, cols: 100)
        b.copyRow(tensor(b, ga, rows: 4, cols: 100), 2, into: cr, 1)
        b.copyRow(tensor(b, gb, rows: 4, cols: 100), 0, into: cr, 0)
        add("copy_row", relErr(flat(b, cr), (Array(gb[0..<100]) + Array(ga[200..<300])).map(Double.init)), 0)

        checks += try attentionChecks(b, seed: seed &+ 1)
        try b.checkError()
        return checks
    }

    /// The dense attention kernel over the paged cache (pages of 16 so sequences cross pages):
    /// GQA, a prefill from 0, a chunk after a prefix, decode steps, sliding windows.
    static func attentionChecks(_ b: CUDABackend, seed: UInt64) throws -> [GPUCheck] {
        var r = Rand(seed: seed)
        var checks: [GPUCheck] = []
        // (heads, kvHeads, headDim, prefix, rows, window)
        let cases = [(4, 2, 64, 0, 37, 0), (14, 2, 64, 45, 20, 0), (8, 1, 256, 50, 20, 16), (12, 2, 128, 300, 1, 0),
                     (4, 1, 256, 600, 1, 512), (16, 8, 128, 3, 5, 0), (4, 4, 32, 0, 1, 0),
                     // the tensor-core prefill: two 128-row blocks, key tiles off and on the diagonal,
                     // a window edge inside a tile
                     (12, 2, 128, 130, 200, 0), (4, 1, 256, 200, 150, 96), (14, 2, 64, 0, 160, 100)]
        for (heads, kvHeads, hd, prefix, rows, window) in cases {
            let total = prefix + rows
            let cache = try CUDAKVCache(context: b.context, layers: 2, kvHeads: kvHeads, headDim: hd, contextLength: total + 10, pageSize: 16)
            let att = try CUDADenseAttention(cache: cache, backend: b)
            let kvw = kvHeads * hd
            let K = r.floats(total * kvw, scale: 2), V = r.floats(total * kvw)
            let Q = r.floats(rows * heads * hd, scale: 2)
            let layer = 1
            if prefix > 0 {
                att.append(layer: layer, k: tensor(b, Array(K[0..<(prefix * kvw)]), rows: prefix, cols: kvw),
                           v: tensor(b, Array(V[0..<(prefix * kvw)]), rows: prefix, cols: kvw), start: 0)
            }
            let shape = AttentionShape(heads: heads, kvHeads: kvHeads, headDim: hd, scale: 1 / Float(hd).squareRoot(), window: window)
            let out = poisoned(b, rows: rows, cols: heads * hd)
            att.attend(layer: layer, q: tensor(b, Q, rows: rows, cols: heads * hd),
                       k: tensor(b, Array(K[(prefix * kvw)...]), rows: rows, cols: kvw),
                       v: tensor(b, Array(V[(prefix * kvw)...]), rows: rows, cols: kvw),
                       start: prefix, shape: shape, out: out)
            var ref = [Double](repeating: 0, count: rows * heads * hd)
            let g = heads / kvHeads
            for t in 0..<rows {
                let pos = prefix + t
                let first = shape.firstVisible(pos)
                for h in 0..<heads {
                    let kvh = h / g
                    let q = (0..<hd).map { Double(Q[(t * heads + h) * hd + $0]) }
                    let scores = (first...pos).map { j in
                        (0..<hd).reduce(0.0) { $0 + q[$1] * bf16(K[j * kvw + kvh * hd + $1]) } * Double(shape.scale)
                    }
                    let mx = scores.max()!
                    let e = scores.map { exp($0 - mx) }
                    let sum = e.reduce(0, +)
                    for c in 0..<hd {
                        var acc = 0.0
                        for (i, j) in (first...pos).enumerated() { acc += e[i] * bf16(V[j * kvw + kvh * hd + c]) }
                        ref[(t * heads + h) * hd + c] = acc / sum
                    }
                }
            }
            checks.append(GPUCheck(name: "attention h\(heads)/kv\(kvHeads) d\(hd) prefix \(prefix) rows \(rows) window \(window)",
                                   error: relErr(flat(b, out), ref), tolerance: rows > 1 ? 5e-3 : 1e-4))
        }
        // Decode rows keep f32 queries and probabilities (1e-4); prefill chunks run on tensor
        // cores with queries and probabilities rounded to bf16 (unit roundoff 2^-8 ≈ 3.9e-3), so
        // they are held to 5e-3, still far below any indexing or masking error (which is O(1)).
        return checks
    }

    // MARK: whole models

    /// A random model of architecture `arch` (qwen2 with biases, or gemma3 with a sliding
    /// window smaller than the test sequence), f32 weights, in memory.
    /// `heads`, `kvHeads`, `headDim`, `layers` override the shape (nil: the defaults below).
    public static func syntheticModel(arch: String, seed: UInt64, heads: Int? = nil, kvHeads: Int? = nil,
                                      headDim: Int? = nil, layers: Int? = nil, context: Int = 1024) throws -> GGUFFile {
        var r = Rand(seed: seed)
        let gemma = arch == "gemma3"
        let vocab = 512, dim = 256, heads = heads ?? 4, kvHeads = kvHeads ?? (gemma ? 1 : 2), hd = headDim ?? (gemma ? 128 : 64)
        let ffn = 512
        let layers = layers ?? (gemma ? 6 : 3)
        var w = GGUFWriter()
        w.set("general.architecture", .string(arch))
        w.set("\(arch).embedding_length", .uint32(UInt32(dim)))
        w.set("\(arch).block_count", .uint32(UInt32(layers)))
        w.set("\(arch).attention.head_count", .uint32(UInt32(heads)))
        w.set("\(arch).attention.head_count_kv", .uint32(UInt32(kvHeads)))
        w.set("\(arch).attention.key_length", .uint32(UInt32(hd)))
        w.set("\(arch).feed_forward_length", .uint32(UInt32(ffn)))
        w.set("\(arch).context_length", .uint32(UInt32(context)))
        w.set("\(arch).attention.layer_norm_rms_epsilon", .float32(1e-6))
        w.set("\(arch).vocab_size", .uint32(UInt32(vocab)))
        w.set("\(arch).rope.freq_base", .float32(gemma ? 1_000_000 : 10_000))
        if gemma { w.set("\(arch).attention.sliding_window", .uint32(8)) }
        func mat(_ name: String, _ cols: Int, _ rows: Int) {
            w.add(.init(name: name, shape: [cols, rows], floats: r.floats(cols * rows, scale: 1.7 / Float(cols).squareRoot())))
        }
        func vec(_ name: String, _ n: Int, offset: Float = 1, scale: Float = 0.2) {
            w.add(.init(name: name, shape: [n], floats: r.floats(n, scale: scale).map { $0 + offset }))
        }
        w.add(.init(name: "token_embd.weight", shape: [dim, vocab], floats: r.floats(dim * vocab, scale: gemma ? 0.1 : 1)))
        vec("output_norm.weight", dim)
        for l in 0..<layers {
            let p = "blk.\(l)."
            vec(p + "attn_norm.weight", dim)
            vec(p + "ffn_norm.weight", dim)
            mat(p + "attn_q.weight", dim, heads * hd)
            mat(p + "attn_k.weight", dim, kvHeads * hd)
            mat(p + "attn_v.weight", dim, kvHeads * hd)
            mat(p + "attn_output.weight", heads * hd, dim)
            mat(p + "ffn_gate.weight", dim, ffn)
            mat(p + "ffn_up.weight", dim, ffn)
            mat(p + "ffn_down.weight", ffn, dim)
            if gemma {
                vec(p + "attn_q_norm.weight", hd)
                vec(p + "attn_k_norm.weight", hd)
                vec(p + "post_attention_norm.weight", dim)
                vec(p + "post_ffw_norm.weight", dim)
            } else {
                vec(p + "attn_q.bias", heads * hd, offset: 0, scale: 0.5)
                vec(p + "attn_k.bias", kvHeads * hd, offset: 0, scale: 0.5)
                vec(p + "attn_v.bias", kvHeads * hd, offset: 0, scale: 0.5)
            }
        }
        return try GGUFFile(file: MappedFile(copying: w.bytes(), name: "<synthetic \(arch)>"))
    }

    /// One model file on the CPU and on the GPU: a prompt in prefill chunks of `maxBatch`, then
    /// decode steps teacher-forced with the CPU's greedy tokens; logits compared at every step.
    public static func compareModels(cpu: LanguageModel, gpu: LanguageModel, prompt: [Int32], steps: Int,
                                     label: String, tolerance: Double = 2e-2,
                                     what: String = "GPU vs CPU") throws -> [GPUCheck] {
        let sc = try Session(model: cpu, contextLength: prompt.count + steps + 1)
        let sg = try Session(model: gpu, contextLength: prompt.count + steps + 1)
        var lc = try sc.evaluate(prompt, logits: .last)[0]
        var lg = try sg.evaluate(prompt, logits: .last)[0]
        let first = relErr(lg, lc)
        var worst = first, argmaxAgree = 0
        for _ in 0..<steps {
            let tok = Int32(lc.firstIndex(of: lc.max()!)!)
            if Int32(lg.firstIndex(of: lg.max()!)!) == tok { argmaxAgree += 1 }
            lc = try sc.evaluate([tok], logits: .last)[0]
            lg = try sg.evaluate([tok], logits: .last)[0]
            worst = max(worst, relErr(lg, lc))
        }
        return [GPUCheck(name: "\(label): prefill last-position logits \(what)", error: first, tolerance: tolerance),
                GPUCheck(name: "\(label): worst decode-step logits \(what) (\(steps) steps)", error: worst, tolerance: tolerance,
                         detail: "argmax agrees \(argmaxAgree)/\(steps)")]
    }

    /// Random qwen2- and gemma3-shaped models, CPU vs GPU, prefill in chunks of 16.
    public static func syntheticChecks(_ b: CUDABackend, cpuThreads: Int, seed: UInt64) throws -> [GPUCheck] {
        var checks: [GPUCheck] = []
        let cpu = CPUBackend(threads: cpuThreads)
        var r = Rand(seed: seed)
        for arch in ["qwen2", "gemma3"] {
            let file = try syntheticModel(arch: arch, seed: seed &+ (arch == "qwen2" ? 1 : 2))
            let mc = try Architectures.load(file, backend: cpu, maxBatch: 16)
            let mg = try Architectures.load(file, backend: b, maxBatch: 16)
            let prompt = (0..<41).map { _ in Int32(r.int(512)) }
            checks += try compareModels(cpu: mc, gpu: mg, prompt: prompt, steps: 12, label: "synthetic \(arch)")
        }
        return checks
    }
}
