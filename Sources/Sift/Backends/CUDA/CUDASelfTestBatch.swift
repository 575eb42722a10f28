/// Device checks of batched decode and GPU-side sampling (`sift selftest --device cuda`).
extension CUDASelfTest {
    public static func batchAndSamplingChecks(_ b: CUDABackend, seed: UInt64) throws -> [GPUCheck] {
        try batchedDecodeChecks(b, seed: seed) + samplingChecks(b, seed: seed &+ 1)
    }

    /// Random qwen2 / gemma3 models on the GPU: 3 sequences of different lengths (past
    /// Gemma's sliding window) prefilled one at a time into a `BatchSession`, then decode steps
    /// of all 3 in one forward pass, each row compared with a separate single-sequence GPU
    /// `Session` fed the same tokens (the cache is NaN-poisoned: a row reading another
    /// sequence's or unwritten positions fails).
    static func batchedDecodeChecks(_ b: CUDABackend, seed: UInt64) throws -> [GPUCheck] {
        var checks: [GPUCheck] = []
        var r = Rand(seed: seed)
        for arch in ["qwen2", "gemma3"] {
            let file = try syntheticModel(arch: arch, seed: seed &+ (arch == "qwen2" ? 11 : 12))
            let model = try Architectures.load(file, backend: b, maxBatch: 16)
            let lengths = [5, 23, 47], steps = 6
            let batch = try BatchSession(model: model, sequences: lengths.count, contextLength: 64)
            var singles: [Session] = []
            var next: [Int32] = []
            var prefillErr = 0.0
            for (i, n) in lengths.enumerated() {
                let prompt = (0..<n).map { _ in Int32(r.int(512)) }
                let s = try Session(model: model, contextLength: 64)
                let a = try s.evaluate(prompt, logits: .last)[0]
                let p = try batch.prefill(sequence: i, prompt, logits: .last)[0]
                prefillErr = max(prefillErr, relErr(p, a))
                singles.append(s)
                next.append(Int32(r.int(512)))
            }
            var worst = 0.0, greedyAgree = 0, greedyTotal = 0
            for step in 0..<steps {
                // Alternate the host-read and the GPU-argmax forms of the step.
                if step % 2 == 0 {
                    let out = try batch.decode(next)
                    for i in lengths.indices {
                        let ref = try singles[i].evaluate([next[i]], logits: .last)[0]
                        worst = max(worst, relErr(out[i], ref))
                    }
                } else {
                    let ids = try batch.decodeGreedy(next)
                    for i in lengths.indices {
                        let ref = try singles[i].evaluate([next[i]], logits: .last)[0]
                        greedyTotal += 1
                        if ids[i] == Sampler.argmax(ref) { greedyAgree += 1 }
                    }
                }
                next = lengths.indices.map { _ in Int32(r.int(512)) }
            }
            checks.append(GPUCheck(name: "synthetic \(arch): prefill into sequence i of a batch vs a single-sequence session",
                                   error: prefillErr, tolerance: 1e-5))
            // A row reading the wrong sequence or a poisoned position is off by O(1). The single-sequence
            // steps multiply through the one-token GEMV and the batched ones through cuBLAS: different
            // summation orders, which the bf16 rounding of each layer's input amplifies through the
            // random layers (H100: 3.5e-3 on gemma3; 2e-3 held while both went through cuBLAS).
            checks.append(GPUCheck(name: "synthetic \(arch): batched GPU decode (3 sequences, lengths \(lengths)) vs single-sequence GPU decodes",
                                   error: worst, tolerance: b.useGEMV ? 6e-3 : 2e-3, detail: "\(steps / 2) steps compared"))
            checks.append(GPUCheck(name: "synthetic \(arch): batched greedy (GPU argmax) vs argmax of single-sequence logits",
                                   error: Double(greedyTotal - greedyAgree), tolerance: 0,
                                   detail: "\(greedyAgree)/\(greedyTotal) agree"))
        }
        return checks
    }

    /// GPU argmax and top-k against the host `Sampler` on random logits with ties (error =
    /// mismatching ids or values; ties: lowest id first), and a full top-k/top-p/min-p/
    /// temperature draw from the GPU candidates vs the host draw over the whole vocabulary.
    static func samplingChecks(_ b: CUDABackend, seed: UInt64) throws -> [GPUCheck] {
        var r = Rand(seed: seed)
        let s = try b.sampling()
        var checks: [GPUCheck] = []
        for vocab in [1000, 151_936] {
            let rows = 6
            var host: [[Float]] = (0..<rows).map { _ in r.floats(vocab, scale: 8) }
            // Row 1: the maximum repeated at several ids.
            let m = host[1].max()! + 1
            for _ in 0..<5 { host[1][r.int(vocab)] = m }
            // Row 2: one value everywhere (argmax 0, top-k = ids 0..<k).
            host[2] = Array(repeating: 0.25, count: vocab)
            // Row 3: coarse values (many ties at the k-th place).
            host[3] = host[3].map { ($0 * 2).rounded() / 2 }
            // Row 4: -inf and negative values only.
            host[4] = host[4].map { $0 > 4 ? -.infinity : -abs($0) - 1 }
            let t = tensor(b, host.flatMap { $0 }, rows: rows, cols: vocab)
            let ids = try s.argmax(logits: CUDABackend.address(t), rows: rows, vocab: vocab)
            let bad = zip(ids, host).filter { $0 != Sampler.argmax($1) }.count
            checks.append(GPUCheck(name: "GPU argmax vs Sampler.argmax (vocab \(vocab), ties)", error: Double(bad), tolerance: 0,
                                   detail: "\(rows - bad)/\(rows) rows"))
            for k in [1, 7, 40, 64] {
                let top = try s.topK(logits: CUDABackend.address(t), rows: rows, vocab: vocab, k: k)
                var mismatches = 0
                for (row, c) in zip(host, top) {
                    let ref = Sampler.topIndices(row, k)
                    mismatches += zip(ref, c.ids).filter { Int32($0) != $1 }.count
                    mismatches += zip(ref, c.values).filter { row[$0] != $1 }.count
                }
                checks.append(GPUCheck(name: "GPU top-\(k) ids and logits vs Sampler.topIndices (vocab \(vocab), ties)",
                                       error: Double(mismatches), tolerance: 0))
            }
            // Sampled draws: the same seed gives the same token from the GPU's 40 candidates.
            let params = SamplingParams(temperature: 0.9, topK: 40, topP: 0.95, minP: 0.02, seed: seed)
            var hostSampler = Sampler(params), gpuSampler = Sampler(params)
            let cands = try s.topK(logits: CUDABackend.address(t), rows: rows, vocab: vocab, k: 40)
            var differ = 0
            for rep in 0..<4 {
                for (row, c) in zip(host, cands) {
                    _ = rep
                    if hostSampler.sample(row) != gpuSampler.sample(candidates: c.ids, logits: c.values) { differ += 1 }
                }
            }
            checks.append(GPUCheck(name: "top-k/top-p/min-p draw from GPU candidates vs host Sampler (vocab \(vocab))",
                                   error: Double(differ), tolerance: 0))
        }
        return checks
    }
}
