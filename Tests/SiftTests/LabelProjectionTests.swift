import XCTest
@testable import Sift

/// Projected Double Sparsity labels (`--statistic qk-svd`, LabelProjection) against float64
/// references written here: the projection's score error against its closed form and against
/// other label choices (key channels, key PCA, random bases) on the same samples, exactness at
/// full rank, a planted low-rank key subspace, and the decode step against its definition.
final class LabelProjectionTests: XCTestCase {
    var rng = Xoshiro256(seed: UInt64.random(in: 0...UInt64.max))

    func uniform() -> Double { Double(rng.next() >> 11) * 0x1.0p-53 * 2 - 1 }

    func h16(_ x: Double) -> Double { Double(Float(Float16(Float(x)))) }

    /// `n` samples of dimension d: mean + M·z with z uniform in [-1, 1]^m (rows of the result).
    func samples(_ n: Int, d: Int, m: Int, mix: [Double], mean: [Double]) -> [[Double]] {
        (0..<n).map { _ in
            let z = (0..<m).map { _ in uniform() }
            return (0..<d).map { a in mean[a] + (0..<m).reduce(0.0) { $0 + mix[a * m + $1] * z[$1] } }
        }
    }

    func moments(_ rows: [[Double]], d: Int) -> SecondMoments {
        var m = SecondMoments(dimension: d)
        let flat = rows.flatMap { $0 }
        flat.withUnsafeBufferPointer { m.add($0.baseAddress!, count: rows.count, stride: d, pool: ThreadPool(threads: 2)) }
        return m
    }

    /// Mean over every (query, key) pair of (q·(k − μ) − (Aq)·(B(k − μ)))², float64; A and B
    /// r × d row-major.
    func scoreError(queries: [[Double]], keys: [[Double]], a: [Double], b: [Double], r: Int, d: Int) -> Double {
        let mu = (0..<d).map { c in keys.reduce(0.0) { $0 + $1[c] } / Double(keys.count) }
        let kc = keys.map { k in (0..<d).map { k[$0] - mu[$0] } }
        let labels = kc.map { k in (0..<r).map { i in (0..<d).reduce(0.0) { $0 + b[i * d + $1] * k[$1] } } }
        var total = 0.0
        for q in queries {
            let qa = (0..<r).map { i in (0..<d).reduce(0.0) { $0 + a[i * d + $1] * q[$1] } }
            for (k, l) in zip(kc, labels) {
                let exact = (0..<d).reduce(0.0) { $0 + q[$1] * k[$1] }
                let approx = (0..<r).reduce(0.0) { $0 + qa[$1] * l[$1] }
                total += (exact - approx) * (exact - approx)
            }
        }
        return total / Double(queries.count * keys.count)
    }

    /// The best query side for a label map B (the regression of K on the label): A = (Σ_k Bᵀ (B Σ_k Bᵀ)⁻¹)ᵀ,
    /// by float64 Gauss–Jordan on the r × r system.
    func bestQuerySide(b: [Double], keyCovariance s: [Double], r: Int, d: Int) -> [Double] {
        // g = B Σ_k Bᵀ (r × r), h = B Σ_k (r × d); A = g⁻¹ h (g symmetric).
        var g = [Double](repeating: 0, count: r * r), h = [Double](repeating: 0, count: r * d)
        for i in 0..<r { for x in 0..<d { for y in 0..<d { h[i * d + y] += b[i * d + x] * s[x * d + y] } } }
        for i in 0..<r { for j in 0..<r { for y in 0..<d { g[i * r + j] += h[i * d + y] * b[j * d + y] } } }
        for col in 0..<r {
            let p = (col..<r).max { abs(g[$0 * r + col]) < abs(g[$1 * r + col]) }!
            for x in 0..<r { g.swapAt(col * r + x, p * r + x) }
            for x in 0..<d { h.swapAt(col * d + x, p * d + x) }
            let inv = 1 / g[col * r + col]
            for x in 0..<r { g[col * r + x] *= inv }
            for x in 0..<d { h[col * d + x] *= inv }
            for row in 0..<r where row != col {
                let f = g[row * r + col]
                for x in 0..<r { g[row * r + x] -= f * g[col * r + x] }
                for x in 0..<d { h[row * d + x] -= f * h[col * d + x] }
            }
        }
        return h
    }

    /// The calibrated projection reaches the closed-form minimum tr(Σ_q Σ_k) − Σ_{i ≤ r} λ_i(N) of
    /// the score error on the samples it was computed from, and no other label of r numbers
    /// does better: the best r key channels, the top r principal directions of the keys (Loki),
    /// random bases — each with its own best query side. At r = d it is exact (AᵀB = I).
    func testProjectionMinimisesScoreError() {
        let d = 12, r = 3
        let mixK = (0..<(d * d)).map { _ in uniform() }, mixQ = (0..<(d * 6)).map { _ in uniform() * 2 }
        let keys = samples(300, d: d, m: d, mix: mixK, mean: (0..<d).map { _ in uniform() * 4 })
        let queries = samples(200, d: d, m: 6, mix: mixQ, mean: (0..<d).map { _ in uniform() })
        let km = moments(keys, d: d), qm = moments(queries, d: d)
        let sk = km.covariance, sq = qm.secondMoment
        let p = LabelProjection.solve(keyCovariance: sk, querySecondMoment: sq, keyMean: km.mean, headDim: d, rank: r)
        let a = p.query.map(Double.init), b = p.key.map(Double.init)
        let got = scoreError(queries: queries, keys: keys, a: a, b: b, r: r, d: d)
        var trace = 0.0
        for x in 0..<d { for y in 0..<d { trace += sq[x * d + y] * sk[y * d + x] } }
        let closed = trace - p.captured.reduce(0, +)
        XCTAssertEqual(got, closed, accuracy: 1e-4 * trace, "score error vs tr(Σ_q Σ_k) − Σλ")
        XCTAssertLessThan(got, 0.9 * trace, "the projection captured little: the test is too weak")
        // Captured variances are N's eigenvalues, in decreasing order.
        XCTAssertEqual(p.captured, p.captured.sorted(by: >))
        // Whitened labels: unit variance per label channel, mean B μ.
        for i in 0..<r {
            XCTAssertEqual(p.std[i], 1, accuracy: 1e-6)
            XCTAssertEqual(p.mean[i], (0..<d).reduce(0.0) { $0 + b[i * d + $1] * km.mean[$1] }, accuracy: 1e-4 * (1 + abs(p.mean[i])))
        }
        var others: [(String, [Double])] = []
        // Every choice of r channels.
        func subsets(_ from: Int, _ chosen: [Int]) {
            if chosen.count == r {
                var sel = [Double](repeating: 0, count: r * d)
                for (i, c) in chosen.enumerated() { sel[i * d + c] = 1 }
                others.append(("channels \(chosen)", sel))
                return
            }
            if from == d { return }
            subsets(from + 1, chosen + [from])
            subsets(from + 1, chosen)
        }
        subsets(0, [])
        let pca = SymmetricEigen.decompose(sk, n: d).vectors
        others.append(("key PCA", Array(pca.prefix(r * d))))
        for i in 0..<5 { others.append(("random \(i)", (0..<(r * d)).map { _ in uniform() })) }
        for (name, bOther) in others {
            let aOther = bestQuerySide(b: bOther, keyCovariance: sk, r: r, d: d)
            let e = scoreError(queries: queries, keys: keys, a: aOther, b: bOther, r: r, d: d)
            XCTAssertGreaterThanOrEqual(e, got * (1 - 1e-5), name)
        }
        // Full rank: exact.
        let full = LabelProjection.solve(keyCovariance: sk, querySecondMoment: sq, keyMean: km.mean, headDim: d, rank: d)
        for x in 0..<d {
            for y in 0..<d {
                var s = 0.0
                for i in 0..<d { s += Double(full.query[i * d + x]) * Double(full.key[i * d + y]) }
                XCTAssertEqual(s, x == y ? 1 : 0, accuracy: 1e-4, "AᵀB at (\(x), \(y))")
            }
        }
    }

    /// Keys that move only in a planted 2-dimensional subspace (not aligned with any channel):
    /// 2 projected channels reproduce every centred score; 2 key channels scored as Double
    /// Sparsity scores them (q[C]·K[C]) cannot.
    func testPlantedKeySubspaceIsCapturedExactly() {
        let d = 10, m = 2
        let keys = samples(200, d: d, m: m, mix: (0..<(d * m)).map { _ in uniform() }, mean: (0..<d).map { _ in uniform() * 3 })
        let queries = samples(100, d: d, m: d, mix: (0..<(d * d)).map { _ in uniform() }, mean: (0..<d).map { _ in uniform() })
        let km = moments(keys, d: d), qm = moments(queries, d: d)
        let p = LabelProjection.solve(keyCovariance: km.covariance, querySecondMoment: qm.secondMoment, keyMean: km.mean,
                                      headDim: d, rank: m)
        var trace = 0.0
        for x in 0..<d { for y in 0..<d { trace += qm.secondMoment[x * d + y] * km.covariance[y * d + x] } }
        let e = scoreError(queries: queries, keys: keys, a: p.query.map(Double.init), b: p.key.map(Double.init), r: m, d: d)
        XCTAssertLessThan(e, 1e-6 * trace)
        var best = Double.infinity
        for c0 in 0..<d {
            for c1 in (c0 + 1)..<d {
                var sel = [Double](repeating: 0, count: m * d)
                sel[c0] = 1
                sel[d + c1] = 1
                best = min(best, scoreError(queries: queries, keys: keys, a: sel, b: sel, r: m, d: d))
            }
        }
        XCTAssertGreaterThan(best, 1e-3 * trace, "two channels suffice: the planted subspace is too easy")
    }

    // MARK: decode with projected labels

    struct Case {
        var heads = 4, kvHeads = 2, d = 16, r = 4, rank = 6, length = 50
    }

    func config(_ c: Case) throws -> DoubleSparsityConfig {
        let model = try TestModels.attentionConfig(heads: c.heads, kvHeads: c.kvHeads, headDim: c.d)
        let rand = { (n: Int) in (0..<n).map { _ in Float(self.uniform()) } }
        let projection = LabelProjection(rank: c.rank, keys: [(0..<c.kvHeads).map { _ in rand(c.rank * c.d) }],
                                         queries: [(0..<c.kvHeads).map { _ in rand(c.rank * c.d) }],
                                         captured: [(0..<c.kvHeads).map { _ in (0..<c.rank).map { Double(c.rank - $0) } }])
        return DoubleSparsityConfig(
            model: .init(config: model, fileSHA256: nil), statistic: .qkSVD,
            calibration: .init(text: "test", tokens: 0, sampleLength: 1, seconds: 0, peakMemoryBytes: 0),
            channels: [Array(repeating: Array(0..<c.d), count: c.kvHeads)], labelProjection: projection)
    }

    func randomTensor(_ rows: Int, _ cols: Int, scale: Float = 1) -> Tensor {
        let t = Tensor(rows: rows, cols: cols)
        for i in 0..<(rows * cols) { t.floats[i] = Float(uniform()) * scale }
        return t
    }

    /// One decode step after a dense prefill against the float64 definition: ŝ_j = (A Σ_h q_h)·f16(B K_j)
    /// (per head: A q_h), exact top-k (ties to the lower position), softmax attention over the
    /// selected f16 rows.
    func testDecodeMatchesDefinition() throws {
        for perHead in [false, true] {
            for (heads, kvHeads, d, r) in [(4, 2, 16, 4), (6, 1, 32, 8)] {
                let c = Case(heads: heads, kvHeads: kvHeads, d: d, r: r, rank: r + 2, length: 50)
                let cfg = try config(c)
                var o = AttentionOptions()
                o.budget = .fraction(1.0 / 8)
                o.recent = 0
                o.dsPerHead = perHead
                let cache = KVCache(layers: 1, kvHeads: c.kvHeads, headDim: c.d, capacity: 64)
                let method = try DoubleSparseAttention(cache: cache, config: cfg, channels: c.r, options: o, pool: ThreadPool(threads: 2))
                let shape = AttentionShape(heads: c.heads, kvHeads: c.kvHeads, headDim: c.d, scale: 1 / Float(c.d).squareRoot())
                let keys = randomTensor(c.length, c.kvHeads * c.d, scale: 2), values = randomTensor(c.length, c.kvHeads * c.d)
                let out = Tensor(rows: c.length, cols: c.heads * c.d)
                let pk = Tensor(rows: c.length - 1, cols: c.kvHeads * c.d), pv = Tensor(rows: c.length - 1, cols: c.kvHeads * c.d)
                pk.floats.update(from: keys.floats, count: (c.length - 1) * c.kvHeads * c.d)
                pv.floats.update(from: values.floats, count: (c.length - 1) * c.kvHeads * c.d)
                method.attend(layer: 0, q: randomTensor(c.length - 1, c.heads * c.d), k: pk, v: pv, start: 0, shape: shape, out: out)
                let q = randomTensor(1, c.heads * c.d, scale: 2)
                let lk = Tensor(rows: 1, cols: c.kvHeads * c.d), lv = Tensor(rows: 1, cols: c.kvHeads * c.d)
                lk.floats.update(from: keys.row(c.length - 1), count: c.kvHeads * c.d)
                lv.floats.update(from: values.row(c.length - 1), count: c.kvHeads * c.d)
                method.attend(layer: 0, q: q, k: lk, v: lv, start: c.length - 1, shape: shape, out: out)

                let g = c.heads / c.kvHeads, k = 7, scale = 1 / Double(c.d).squareRoot()
                let proj = cfg.labelProjection!
                for kvh in 0..<c.kvHeads {
                    let A = proj.queries[0][kvh].map(Double.init), B = proj.keys[0][kvh].map(Double.init)
                    func pick(_ selectors: Range<Int>) -> [Int] {
                        let qa = (0..<c.r).map { i in
                            selectors.reduce(0.0) { s, h in s + (0..<c.d).reduce(0.0) { $0 + A[i * c.d + $1] * Double(q.row(0)[h * c.d + $1]) } }
                        }
                        let approx = (0..<c.length).map { j in
                            (0..<c.r).reduce(0.0) { s, i in
                                s + qa[i] * h16((0..<c.d).reduce(0.0) { $0 + B[i * c.d + $1] * Double(keys.row(j)[kvh * c.d + $1]) })
                            }
                        }
                        return Array((0..<c.length).sorted { approx[$0] > approx[$1] || (approx[$0] == approx[$1] && $0 < $1) }.prefix(k))
                    }
                    let shared = pick((kvh * g)..<((kvh + 1) * g))
                    for h in (kvh * g)..<((kvh + 1) * g) {
                        let picked = perHead ? pick(h..<(h + 1)) : shared
                        let s = picked.map { j in
                            (0..<c.d).reduce(0.0) { $0 + Double(q.row(0)[h * c.d + $1]) * Double(Float(Float16(keys.row(j)[kvh * c.d + $1]))) } * scale
                        }
                        let m = s.max()!, e = s.map { exp($0 - m) }, z = e.reduce(0, +)
                        for x in 0..<c.d {
                            let want = zip(e, picked).reduce(0.0) { $0 + $1.0 / z * Double(Float(Float16(values.row($1.1)[kvh * c.d + x]))) }
                            XCTAssertEqual(Double(out.row(0)[h * c.d + x]), want, accuracy: 1e-4,
                                           "per-head \(perHead) heads \(heads)/\(kvHeads) r \(r) head \(h) dim \(x)")
                        }
                    }
                }
            }
        }
    }

    /// A config whose labels are the identity (B = A = I, rank d) selects the exact top-k:
    /// with budget = all tokens it equals dense attention, and 4-bit projected labels decode
    /// within half a quantisation step of B·K.
    func testIdentityProjectionAndFourBitLabels() throws {
        let c = Case(heads: 4, kvHeads: 2, d: 16, r: 16, rank: 16, length: 40)
        var cfg = try config(c)
        let eye = (0..<(c.d * c.d)).map { Float($0 / c.d == $0 % c.d ? 1 : 0) }
        cfg.labelProjection!.keys = [Array(repeating: eye, count: c.kvHeads)]
        cfg.labelProjection!.queries = cfg.labelProjection!.keys
        let cache = KVCache(layers: 1, kvHeads: c.kvHeads, headDim: c.d, capacity: 64)
        var o = AttentionOptions()
        o.dsLabelBits = 4
        let method = try DoubleSparseAttention(cache: cache, config: cfg, channels: 8, options: o, pool: ThreadPool(threads: 2))
        let keys = randomTensor(c.length, c.kvHeads * c.d, scale: 3)
        method.append(layer: 0, k: keys, v: randomTensor(c.length, c.kvHeads * c.d), start: 0)
        for kvh in 0..<c.kvHeads {
            for j in 0..<c.length {
                let x = (0..<8).map { Double(keys.row(j)[kvh * c.d + $0]) }
                let step = (x.max()! - x.min()!) / 15, big = x.map(abs).max()!
                for (a, b) in zip(method.labels.label(layer: 0, head: kvh, position: j).map(Double.init), x) {
                    XCTAssertEqual(a, b, accuracy: step / 2 + 4e-3 * big)
                }
            }
        }
    }

    // MARK: config

    func testConfigValidation() throws {
        let c = Case()
        let good = try config(c)
        let dir = NSTemporaryDirectory() + "sift-proj-\(rng.next())"
        try makeDirectories(dir)
        let path = dir + "/c.json"
        try writeFile(path, good.encoded())
        XCTAssertEqual(try DoubleSparsityConfig.load(path: path), good)
        func refused(_ broken: DoubleSparsityConfig, _ needle: String, line: UInt = #line) throws {
            try writeFile(path, broken.encoded())
            XCTAssertThrowsError(try DoubleSparsityConfig.load(path: path), line: line) {
                XCTAssertTrue("\($0)".contains(needle) && "\($0)".contains(path), "\($0)", line: line)
            }
        }
        var b = good
        b.labelProjection = nil
        try refused(b, "needs label_projection")
        b = good
        b.statistic = .qk
        try refused(b, "only with qk-svd")
        b = good
        b.labelProjection!.keys[0][1].removeLast()
        try refused(b, "label_projection.keys[0][1]")
        b = good
        b.labelProjection!.queries[0][0][5] = .nan  // JSON cannot hold it; the validator still names it
        XCTAssertThrowsError(try b.labelProjection!.validate(layers: 1, kvHeads: c.kvHeads, headDim: c.d, path: path)) {
            XCTAssertTrue("\($0)".contains("label_projection.queries[0][0][5]"), "\($0)")
        }
        b = good
        b.labelProjection!.rank = c.d + 1
        try refused(b, "label_projection.rank")
        b = good
        b.defaultChannels = c.rank + 1
        try refused(b, "default_channels")
        // More label channels than the projection stores: a clear error at run time.
        let cache = KVCache(layers: 1, kvHeads: c.kvHeads, headDim: c.d, capacity: 8)
        XCTAssertThrowsError(try DoubleSparseAttention(cache: cache, config: good, channels: c.rank + 1, options: AttentionOptions(),
                                                       pool: ThreadPool(threads: 1))) {
            XCTAssertTrue("\($0)".contains("label_projection.rank"), "\($0)")
        }
    }

    // MARK: calibration end to end

    /// `qk-svd` calibration of a tiny Qwen2 model: a projection per layer and KV head of the
    /// requested rank, identity channel lists, whitened label moments; at full rank the labels
    /// reproduce the exact scores (AᵀB = I).
    func testCalibrationOnTinyModel() throws {
        var d = ModelReferenceTests.Dims()
        d.headDim = 16
        d.layers = 2
        let w = ModelReferenceTests.makeQwen2(d, seed: 5)
        let gguf = try GGUFFile(file: MappedFile(copying: w.gguf(arch: "qwen2", d: d, extra: [])))
        let backend = CPUBackend(threads: 2)
        let model = try Architectures.load(gguf, backend: backend, maxBatch: 64)
        let tokens = (0..<256).map { _ in Int32(rng.next() % UInt64(d.vocab)) }
        for rank in [4, d.headDim] {
            let result = try ChannelCalibrator.calibrateWithMoments(model: model, tokens: tokens, sampleLength: 64, statistic: .qkSVD,
                                                                    pool: backend.pool, projectionRank: rank)
            let p = try XCTUnwrap(result.projection)
            XCTAssertEqual(p.rank, rank)
            try p.validate(layers: d.layers, kvHeads: d.kvHeads, headDim: d.headDim, path: "test")
            XCTAssertEqual(result.ranking, Array(repeating: Array(repeating: Array(0..<d.headDim), count: d.kvHeads), count: d.layers))
            for l in 0..<d.layers {
                for h in 0..<d.kvHeads {
                    for i in 0..<rank { XCTAssertEqual(result.std[l][h][i], 1, accuracy: 1e-3, "layer \(l) head \(h) channel \(i)") }
                    XCTAssertEqual(p.captured[l][h], p.captured[l][h].sorted(by: >))
                    guard rank == d.headDim else { continue }
                    let n = d.headDim, a = p.queries[l][h], b = p.keys[l][h]
                    for x in 0..<n {
                        for y in 0..<n {
                            var s = 0.0
                            for i in 0..<n { s += Double(a[i * n + x]) * Double(b[i * n + y]) }
                            XCTAssertEqual(s, x == y ? 1 : 0, accuracy: 2e-3, "layer \(l) head \(h) AᵀB at (\(x), \(y))")
                        }
                    }
                }
            }
        }
    }
}
