#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension CUDASelfTest {
    /// GPU Double Sparsity with projected labels (`qk-svd`, LabelProjection) against float64 and
    /// the CPU method, on a random Qwen2-shaped model (head_dim 128, 4 query heads per KV head)
    /// with a random projection of rank 24:
    ///
    /// - one layer over 1,537 random keys (bf16 r = 16 shared, bf16 r = 8 per-head, 4-bit r = 24):
    ///   the GPU labels against bf16 of float64 B·k (bf16 labels), the selection has exactly k
    ///   tokens and overlaps the float64 definition's top-k (A·Σq over f16(B·k)), and the output
    ///   equals float64 attention over the GPU's own selection;
    /// - batched decode (3 sequences) against one call each;
    /// - the whole model: 1,500 prompt tokens and 8 decode steps, GPU vs CPU logits.
    public static func projectedLabelChecks(_ b: CUDABackend, cpuThreads: Int, seed: UInt64) throws -> [GPUCheck] {
        var r = Rand(seed: seed)
        var checks: [GPUCheck] = []
        let cpu = CPUBackend(threads: cpuThreads)
        let heads = 8, kvHeads = 2, hd = 128, layers = 2, g = heads / kvHeads, kvw = kvHeads * hd, rank = 24
        let file = try syntheticModel(arch: "qwen2", seed: seed &+ 5, heads: heads, kvHeads: kvHeads, headDim: hd,
                                      layers: layers, context: 4096)
        let mc = try Architectures.load(file, backend: cpu, maxBatch: 64)
        let mg = try Architectures.load(file, backend: b, maxBatch: 64)
        // Random B and A (entries ~ ±1/√hd, so a label of a unit-scale key is O(1)); label moments
        // for the 4-bit normalisation: offsets up to ±0.5, spreads 0.5–1.5.
        let w = 1 / Float(hd).squareRoot()
        func matrices() -> [[[Float]]] { (0..<layers).map { _ in (0..<kvHeads).map { _ in r.floats(rank * hd, scale: w) } } }
        let projection = LabelProjection(rank: rank, keys: matrices(), queries: matrices(),
                                         captured: Array(repeating: Array(repeating: Array(repeating: 1, count: rank), count: kvHeads),
                                                         count: layers))
        let pad = { (v: [Double], fill: Double) in v + Array(repeating: fill, count: hd - v.count) }
        let config = DoubleSparsityConfig(
            model: .init(config: mc.config, fileSHA256: nil), statistic: .qkSVD,
            calibration: .init(text: "selftest", tokens: 0, sampleLength: 0, seconds: 0, peakMemoryBytes: 0),
            channels: Array(repeating: Array(repeating: Array(0..<hd), count: kvHeads), count: layers),
            keyMean: (0..<layers).map { _ in (0..<kvHeads).map { _ in pad(r.floats(rank, scale: 0.5).map(Double.init), 0) } },
            keyStd: (0..<layers).map { _ in (0..<kvHeads).map { _ in pad(r.floats(rank, scale: 0.5).map { 1 + Double($0) }, 1) } },
            labelProjection: projection)
        func gpuMethod(_ cache: CUDAKVCache, _ rr: Int, _ opts: AttentionOptions) throws -> CUDADoubleSparseAttention {
            let norm = config.labelNormalization(channels: rr)
            let cut = { (m: [[[Float]]]) in m.map { $0.map { Array($0.prefix(rr * hd)) } } }
            return try CUDADoubleSparseAttention(cache: cache, backend: b, heads: heads,
                                                 channels: config.channels.map { $0.map { $0.prefix(rr).map { Int32($0) } } },
                                                 options: opts, mean: norm.mean, std: norm.std,
                                                 projection: (cut(projection.keys), cut(projection.queries)))
        }
        var options = AttentionOptions()
        options.budget = .fraction(1.0 / 16)
        options.sinks = 4

        // MARK: one layer
        let L = 1536, n = L + 1, layer = 1
        for (rr, bits, perHead) in [(16, 16, false), (8, 16, true), (24, 4, false)] {
            let K = r.floats(n * kvw, scale: 2), V = r.floats(n * kvw), Q = r.floats(heads * hd, scale: 2)
            var opts = options
            opts.dsLabelBits = bits
            opts.dsPerHead = perHead
            let gpuDS = try gpuMethod(try CUDAKVCache(context: b.context, layers: layers, kvHeads: kvHeads, headDim: hd,
                                                      contextLength: n, pageSize: 16), rr, opts)
            var s = 0
            while s < L {
                let c = min(256, L - s)
                let ks = K[(s * kvw)..<((s + c) * kvw)], vs = V[(s * kvw)..<((s + c) * kvw)]
                gpuDS.append(layer: layer, k: tensor(b, Array(ks), rows: c, cols: kvw), v: tensor(b, Array(vs), rows: c, cols: kvw),
                             start: s)
                s += c
            }
            let shape = AttentionShape(heads: heads, kvHeads: kvHeads, headDim: hd, scale: 1 / Float(hd).squareRoot())
            let lastK = K[(L * kvw)...], lastV = V[(L * kvw)...]
            let gpuOut = poisoned(b, rows: 1, cols: heads * hd)
            gpuDS.attend(layer: layer, q: tensor(b, Q, rows: 1, cols: heads * hd), k: tensor(b, Array(lastK), rows: 1, cols: kvw),
                         v: tensor(b, Array(lastV), rows: 1, cols: kvw), start: L, shape: shape, out: gpuOut)
            try b.checkError()
            let tag = "DS projected labels r=\(rr)\(bits == 4 ? " 4-bit" : "")\(perHead ? " per-head" : "") h\(heads)/kv\(kvHeads) d\(hd) L=\(n) 1/16"
            // float64 labels B·k, [position][kvHead][rr].
            var label = [Double](repeating: 0, count: n * kvHeads * rr)
            for p in 0..<n {
                for h in 0..<kvHeads {
                    let B = projection.keys[layer][h]
                    for c in 0..<rr {
                        var acc = 0.0
                        for x in 0..<hd { acc += Double(B[c * hd + x]) * Double(K[p * kvw + h * hd + x]) }
                        label[(p * kvHeads + h) * rr + c] = acc
                    }
                }
            }
            if bits == 16 {
                let gl = try gpuDS.labels.host(layer: layer, count: n)
                // f32 sums in another order, then bf16 rounding (relative 2^-9).
                checks.append(GPUCheck(name: "\(tag): label cache vs bf16(float64 B·k)", error: relErr(gl, label.map { bf16(Float($0)) }),
                                       tolerance: 8e-3))
            }
            let k = options.budget.count(visible: n)
            let sel = try gpuDS.lastSelection(length: n)
            checks.append(GPUCheck(name: "\(tag): selected count − k", error: Double(sel.map { abs($0.count - k) }.max() ?? k),
                                   tolerance: 0, detail: "k = \(k)"))
            let spk = perHead ? g : 1, gs = g / spk
            checks.append(GPUCheck(name: "\(tag): selections − \(kvHeads * spk)", error: Double(abs(sel.count - kvHeads * spk)),
                                   tolerance: 0))
            var worstOverlap = 1.0
            var refOut = [Double](repeating: 0, count: heads * hd)
            let pin = options.pinned(visible: n, budget: k, defaultRecent: AttentionOptions.doubleSparsityRecent)
            for sIdx in 0..<min(sel.count, kvHeads * spk) {
                let h = sIdx / spk, A = projection.queries[layer][h]
                // The definition: A·Σ_{heads of the selection} q over float64 labels.
                var qa = [Double](repeating: 0, count: rr)
                for c in 0..<rr {
                    for j in (sIdx * gs)..<((sIdx + 1) * gs) {
                        for x in 0..<hd { qa[c] += Double(A[c * hd + x]) * Double(Q[j * hd + x]) }
                    }
                }
                var score = (0..<n).map { p in (0..<rr).reduce(0.0) { $0 + qa[$1] * label[(p * kvHeads + h) * rr + $1] } }
                for p in 0..<n where p < pin.sinks || p >= n - pin.recent { score[p] = .infinity }
                let want = Set((0..<n).sorted { score[$0] != score[$1] ? score[$0] > score[$1] : $0 < $1 }.prefix(k))
                worstOverlap = min(worstOverlap, Double(want.intersection(Set(sel[sIdx])).count) / Double(k))
                for j in (sIdx * gs)..<((sIdx + 1) * gs) {
                    refOut.replaceSubrange((j * hd)..<((j + 1) * hd),
                                           with: float64Attention(q: Q[(j * hd)..<((j + 1) * hd)], K: K, V: V, rows: sel[sIdx],
                                                                  kvHead: h, headDim: hd, kvWidth: kvw))
                }
            }
            // bf16 labels and projected queries reorder near-ties at the k-th score (the channel
            // selections' bound); 4-bit labels quantise the scores themselves, so their top-k is
            // compared with the float64 one more loosely.
            checks.append(GPUCheck(name: "\(tag): 1 − overlap(GPU selection, float64 top-k)", error: 1 - worstOverlap,
                                   tolerance: bits == 4 ? 0.3 : 0.1, detail: "overlap \(worstOverlap)"))
            checks.append(GPUCheck(name: "\(tag): output vs float64 over the GPU selection", error: relErr(flat(b, gpuOut), refOut),
                                   tolerance: 5e-3))
        }

        // MARK: batched decode vs one call each
        let batchCache = try CUDAKVCache(context: b.context, layers: layers, kvHeads: kvHeads, headDim: hd,
                                         contextLength: dsBatchLengths.max()! + 1, pageSize: 16, sequences: dsBatchLengths.count)
        checks.append(GPUCheck(name: "DS projected labels batched decode (3 sequences, r=8) vs one call each",
                               error: try dsBatchedVsSingle(b, try gpuMethod(batchCache, 8, options), heads: heads, layer: layer, rand: &r),
                               tolerance: 1e-3))

        // MARK: whole model
        let prompt = (0..<1500).map { _ in Int32(r.int(512)) }
        let steps = 8, ctx = prompt.count + steps + 1
        let cpuDense = try Session(model: mc, contextLength: ctx), gpuDense = try Session(model: mg, contextLength: ctx)
        let cpuDS = Session(model: mc, attention: try DoubleSparseAttention(
            cache: KVCache(layers: layers, kvHeads: kvHeads, headDim: hd, capacity: ctx), config: config, channels: 16,
            options: options, pool: cpu.pool))
        let gpuMethodDS = try gpuMethod(try CUDAKVCache(context: b.context, layers: layers, kvHeads: kvHeads, headDim: hd,
                                                        contextLength: ctx), 16, options)
        let gpuDS = Session(model: mg, attention: gpuMethodDS)
        let sessions = [cpuDense, gpuDense, cpuDS, gpuDS]
        var logits = try sessions.map { try $0.evaluate(prompt, logits: .last)[0] }
        var worstDense = 0.0, worstDS = 0.0, dsVsDense = 0.0
        for step in 0...steps {
            worstDense = max(worstDense, relErr(logits[1], logits[0]))
            worstDS = max(worstDS, relErr(logits[3], logits[2]))
            dsVsDense = max(dsVsDense, relErr(logits[3], logits[1]))
            if step == steps { break }
            let tok = Int32(logits[2].firstIndex(of: logits[2].max()!)!)
            logits = try sessions.map { try $0.evaluate([tok], logits: .last)[0] }
        }
        let mtag = "DS projected labels model qwen2 h\(heads)/kv\(kvHeads) d\(hd), \(prompt.count) + \(steps) tokens"
        // As the channel labels' bound (CUDADoubleSparsitySelfTest): dense GPU-CPU noise + 0.1.
        checks.append(GPUCheck(name: "\(mtag): GPU DS vs CPU DS logits (1/16, r=16)", error: worstDS, tolerance: worstDense + 0.1,
                               detail: "GPU vs CPU dense \(worstDense); GPU DS vs GPU dense \(dsVsDense); \(gpuMethodDS.sparseRows) DS rows"))
        if gpuMethodDS.sparseRows == 0 {
            checks.append(GPUCheck(name: "\(mtag): decode steps ran the DS kernels", error: .infinity, tolerance: 0))
        }
        try b.checkError()
        return checks
    }
}
