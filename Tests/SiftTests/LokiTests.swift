import XCTest
@testable import Sift

/// Loki against float64 references written here: the key PCA against subspace iteration on
/// the covariance, and the decode step against its definition (low-rank approximate scores
/// over f16 labels, top-k, exact attention on the selected f16 rows).
final class LokiTests: XCTestCase {
    var rng = Xoshiro256(seed: UInt64.random(in: 0...UInt64.max))

    func uniform() -> Double { Double(rng.next() >> 11) * 0x1.0p-53 * 2 - 1 }

    func randomTensor(_ rows: Int, _ cols: Int, scale: Float = 1) -> Tensor {
        let t = Tensor(rows: rows, cols: cols)
        for i in 0..<(rows * cols) { t.floats[i] = Float(uniform()) * scale }
        return t
    }

    func h16(_ x: Float) -> Double { Double(Float(Float16(x))) }
    func h16(_ x: Double) -> Double { Double(Float(Float16(Float(x)))) }

    /// Orthonormalises the columns of an n × m row-major matrix (modified Gram–Schmidt).
    func orthonormalColumns(_ a: [Double], n: Int, m: Int) -> [Double] {
        var a = a
        for j in 0..<m {
            for p in 0..<j {
                var dot = 0.0
                for i in 0..<n { dot += a[i * m + j] * a[i * m + p] }
                for i in 0..<n { a[i * m + j] -= dot * a[i * m + p] }
            }
            var norm = 0.0
            for i in 0..<n { norm += a[i * m + j] * a[i * m + j] }
            norm = norm.squareRoot()
            for i in 0..<n { a[i * m + j] /= norm }
        }
        return a
    }

    /// n × n projector onto the span of the orthonormal columns of `a` (n × m).
    func projector(_ a: [Double], n: Int, m: Int) -> [Double] {
        var p = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0..<n { for c in 0..<m { p[i * n + j] += a[i * m + c] * a[j * m + c] } } }
        return p
    }

    // MARK: calibration

    /// Keys = mean + A·z + small noise with A of rank 3: the calibrated top-3 directions span
    /// the same subspace as float64 subspace iteration on the keys' covariance (and nearly A's
    /// span); the full decomposition reconstructs the covariance.
    func testCalibrationRecoversPlantedSubspace() throws {
        let layers = 2, kvHeads = 2, d = 16, planted = 3, tokens = 600
        let cache = KVCache(layers: layers, kvHeads: kvHeads, headDim: d, capacity: 8)
        let calibrator = KeyPCACalibrator(cache: cache, pool: ThreadPool(threads: 2))
        var A: [[Double]] = [], mu: [[Double]] = []
        for _ in 0..<(layers * kvHeads) {
            A.append((0..<(d * planted)).map { _ in uniform() * 2 })
            mu.append((0..<d).map { _ in uniform() * 3 })
        }
        var all = [[[Double]]](repeating: [], count: layers * kvHeads)  // every key, per (layer, head)
        for chunk in [200, 150, 250] {
            for l in 0..<layers {
                let k = Tensor(rows: chunk, cols: kvHeads * d)
                for t in 0..<chunk {
                    for h in 0..<kvHeads {
                        let i = l * kvHeads + h
                        let z = (0..<planted).map { p in uniform() * Double(3 - p) }
                        var key = [Double](repeating: 0, count: d)
                        for c in 0..<d {
                            var x = mu[i][c] + 0.01 * uniform()
                            for p in 0..<planted { x += A[i][c * planted + p] * z[p] }
                            k.row(t)[h * d + c] = Float(x)
                            key[c] = Double(Float(x))
                        }
                        all[i].append(key)
                    }
                }
                calibrator.accumulate(layer: l, keys: k)
            }
        }
        let pca = calibrator.pca()
        XCTAssertEqual(pca.count, layers)
        for l in 0..<layers {
            for h in 0..<kvHeads {
                let i = l * kvHeads + h, keys = all[i], n = Double(tokens)
                XCTAssertEqual(keys.count, tokens)
                let mean = (0..<d).map { c in keys.reduce(0.0) { $0 + $1[c] } / n }
                var cov = [Double](repeating: 0, count: d * d)
                for key in keys { for a in 0..<d { for b in 0..<d { cov[a * d + b] += (key[a] - mean[a]) * (key[b] - mean[b]) / n } } }
                // Float64 reference: subspace iteration for the top `planted` eigenvectors.
                var Q = orthonormalColumns((0..<(d * planted)).map { _ in uniform() }, n: d, m: planted)
                for _ in 0..<200 {
                    var Z = [Double](repeating: 0, count: d * planted)
                    for a in 0..<d { for c in 0..<planted { for b in 0..<d { Z[a * planted + c] += cov[a * d + b] * Q[b * planted + c] } } }
                    Q = orthonormalColumns(Z, n: d, m: planted)
                }
                let p = pca[l][h]
                // Calibrated top directions as columns.
                var top = [Double](repeating: 0, count: d * planted)
                for c in 0..<planted { for a in 0..<d { top[a * planted + c] = Double(p.components[c * d + a]) } }
                let pRef = projector(Q, n: d, m: planted), pGot = projector(top, n: d, m: planted)
                let pPlanted = projector(orthonormalColumns(A[i], n: d, m: planted), n: d, m: planted)
                for e in 0..<(d * d) {
                    XCTAssertEqual(pGot[e], pRef[e], accuracy: 1e-5, "layer \(l) head \(h): subspace vs float64 subspace iteration")
                    XCTAssertEqual(pGot[e], pPlanted[e], accuracy: 1e-2, "layer \(l) head \(h): subspace vs planted span")
                }
                // Variances: the sum of the top ones is the trace of Qᵀ·cov·Q; all sorted, ≥ 0.
                var trace = 0.0
                for c in 0..<planted { for a in 0..<d { for b in 0..<d { trace += Q[a * planted + c] * cov[a * d + b] * Q[b * planted + c] } } }
                XCTAssertEqual(p.variances.prefix(planted).reduce(0, +), trace, accuracy: 1e-8 * trace)
                XCTAssertEqual(p.variances, p.variances.sorted(by: >))
                XCTAssertGreaterThan(p.variances.last!, -1e-9)
                for c in 0..<d { XCTAssertEqual(Double(p.mean[c]), mean[c], accuracy: 1e-5 * max(1, abs(mean[c]))) }
                // Σ λ_i v_i v_iᵀ = cov, and the directions are orthonormal.
                for a in 0..<d {
                    for b in 0..<d {
                        var s = 0.0, dot = 0.0
                        for c in 0..<d {
                            s += p.variances[c] * Double(p.components[c * d + a]) * Double(p.components[c * d + b])
                            dot += Double(p.components[a * d + c]) * Double(p.components[b * d + c])
                        }
                        XCTAssertEqual(s, cov[a * d + b], accuracy: 1e-6 * Double(d) * (1 + p.variances[0]))
                        XCTAssertEqual(dot, a == b ? 1 : 0, accuracy: 1e-6)
                    }
                }
            }
        }
    }

    func testJacobiOnKnownSpectrum() {
        // cov = U·diag(λ)·Uᵀ with a random orthogonal U and known, distinct λ.
        let n = 12
        let U = orthonormalColumns((0..<(n * n)).map { _ in uniform() }, n: n, m: n)
        let lambda = (0..<n).map { Double(n - $0) * 1.5 }
        var a = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0..<n { for c in 0..<n { a[i * n + j] += U[i * n + c] * lambda[c] * U[j * n + c] } } }
        let (values, vectors) = SymmetricEigen.decompose(a, n: n)
        for c in 0..<n {
            XCTAssertEqual(values[c], lambda[c], accuracy: 1e-9)
            // Same direction up to sign.
            var dot = 0.0
            for i in 0..<n { dot += vectors[c * n + i] * U[i * n + c] }
            XCTAssertEqual(abs(dot), 1, accuracy: 1e-9)
        }
    }

    // MARK: decode

    struct Case {
        var heads = 4, kvHeads = 2, d = 16, r = 4, length = 50
    }

    func tinyConfig(_ c: Case) throws -> ModelConfig {
        try TestModels.attentionConfig(heads: c.heads, kvHeads: c.kvHeads, headDim: c.d)
    }

    /// A config with random orthonormal components (rows) per KV head.
    func randomConfig(_ c: Case, sha: String? = nil) throws -> LokiConfig {
        let pca = (0..<c.kvHeads).map { _ -> KeyPCA in
            let u = orthonormalColumns((0..<(c.d * c.d)).map { _ in uniform() }, n: c.d, m: c.d)
            // Row i of the components = column i of u.
            var rows = [Float](repeating: 0, count: c.d * c.d)
            for i in 0..<c.d { for a in 0..<c.d { rows[i * c.d + a] = Float(u[a * c.d + i]) } }
            return KeyPCA(components: rows, variances: (0..<c.d).map { Double(c.d - $0) }, mean: Array(repeating: 0, count: c.d))
        }
        return LokiConfig(model: .init(config: try tinyConfig(c), fileSHA256: sha),
                          calibration: .init(text: "test", tokens: 0, sampleLength: 1, seconds: 0, peakMemoryBytes: 0),
                          pca: [pca])
    }

    func makeMethod(_ c: Case, config: LokiConfig, budget: TokenBudget, sinks: Int = 0) throws -> LokiAttention {
        var o = AttentionOptions()
        o.budget = budget
        o.sinks = sinks
        let cache = KVCache(layers: 1, kvHeads: c.kvHeads, headDim: c.d, capacity: 64)
        return try LokiAttention(cache: cache, config: config, rank: c.r, options: o, pool: ThreadPool(threads: 2))
    }

    /// Float64 reference of one decode step.
    func reference(_ c: Case, config: LokiConfig, q: Tensor, keys: Tensor, values: Tensor, k: Int, sinks: Int) -> [Double] {
        let g = c.heads / c.kvHeads, scale = 1 / Double(c.d).squareRoot()
        var out = [Double](repeating: 0, count: c.heads * c.d)
        for kvh in 0..<c.kvHeads {
            let P = config.components[0][kvh]
            var qsum = [Double](repeating: 0, count: c.d)
            for h in (kvh * g)..<((kvh + 1) * g) { for x in 0..<c.d { qsum[x] += Double(q.row(0)[h * c.d + x]) } }
            var approx = [Double](repeating: 0, count: c.length)
            for j in 0..<c.length {
                for i in 0..<c.r {
                    var qp = 0.0, label = 0.0
                    for x in 0..<c.d {
                        qp += Double(P[i * c.d + x]) * qsum[x]
                        label += Double(P[i * c.d + x]) * Double(keys.row(j)[kvh * c.d + x])
                    }
                    approx[j] += qp * h16(label)
                }
            }
            for j in 0..<min(sinks, k) { approx[j] = .infinity }
            let picked = (0..<c.length).sorted { approx[$0] > approx[$1] || (approx[$0] == approx[$1] && $0 < $1) }.prefix(k)
            for h in (kvh * g)..<((kvh + 1) * g) {
                let s = picked.map { j in (0..<c.d).reduce(0.0) { $0 + Double(q.row(0)[h * c.d + $1]) * h16(keys.row(j)[kvh * c.d + $1]) } * scale }
                let m = s.max()!
                let e = s.map { exp($0 - m) }
                let z = e.reduce(0, +)
                for (w, j) in zip(e, picked) {
                    for x in 0..<c.d { out[h * c.d + x] += w / z * h16(values.row(j)[kvh * c.d + x]) }
                }
            }
        }
        return out
    }

    func run(_ c: Case, budget: TokenBudget, sinks: Int) throws {
        let config = try randomConfig(c)
        let method = try makeMethod(c, config: config, budget: budget, sinks: sinks)
        let shape = AttentionShape(heads: c.heads, kvHeads: c.kvHeads, headDim: c.d, scale: 1 / Float(c.d).squareRoot())
        let keys = randomTensor(c.length, c.kvHeads * c.d, scale: 2), values = randomTensor(c.length, c.kvHeads * c.d)
        let n = c.length - 1
        let pk = Tensor(rows: n, cols: keys.cols), pv = Tensor(rows: n, cols: values.cols)
        pk.floats.update(from: keys.floats, count: n * keys.cols)
        pv.floats.update(from: values.floats, count: n * values.cols)
        method.attend(layer: 0, q: randomTensor(n, c.heads * c.d), k: pk, v: pv, start: 0, shape: shape,
                      out: Tensor(rows: n, cols: c.heads * c.d))
        let q = randomTensor(1, c.heads * c.d, scale: 2)
        let lk = Tensor(rows: 1, cols: keys.cols), lv = Tensor(rows: 1, cols: values.cols)
        lk.floats.update(from: keys.row(n), count: keys.cols)
        lv.floats.update(from: values.row(n), count: values.cols)
        let out = Tensor(rows: 1, cols: c.heads * c.d)
        method.attend(layer: 0, q: q, k: lk, v: lv, start: n, shape: shape, out: out)
        let want = reference(c, config: config, q: q, keys: keys, values: values, k: budget.count(visible: c.length), sinks: sinks)
        for (i, w) in want.enumerated() {
            XCTAssertEqual(Double(out.row(0)[i]), w, accuracy: 1e-4, "heads \(c.heads)/\(c.kvHeads) d \(c.d) r \(c.r) budget \(budget) sinks \(sinks): value \(i)")
        }
    }

    func testBudgetAllEqualsDenseReference() throws {
        try run(Case(), budget: .all, sinks: 0)
        try run(Case(heads: 4, kvHeads: 1, d: 32, r: 8, length: 40), budget: .all, sinks: 0)
    }

    func testSparseDecodeMatchesDefinition() throws {
        for (heads, kvHeads, d, r) in [(4, 2, 16, 4), (4, 1, 32, 8), (6, 2, 16, 16), (3, 3, 8, 3)] {
            for sinks in [0, 3] {
                try run(Case(heads: heads, kvHeads: kvHeads, d: d, r: r, length: 50), budget: .fraction(1.0 / 8), sinks: sinks)
            }
        }
    }

    /// With r = head_dim the projection is orthogonal: approximate scores are exact q·k (up to
    /// the f16 rounding of the labels).
    func testFullRankScoresAreExact() throws {
        let c = Case(heads: 2, kvHeads: 1, d: 32, r: 32, length: 40)
        let method = try makeMethod(c, config: try randomConfig(c), budget: .all)
        let keys = randomTensor(c.length, c.d, scale: 2)
        method.append(layer: 0, k: keys, v: randomTensor(c.length, c.d), start: 0)
        let q = randomTensor(1, c.heads * c.d, scale: 2)
        var scores = [Float](repeating: 0, count: c.length)
        method.approximateScores(layer: 0, kvHead: 0, q: q.row(0), heads: c.heads, first: 0, count: c.length, into: &scores)
        for j in 0..<c.length {
            var exact = 0.0, bound = 0.0
            for x in 0..<c.d {
                let qs = Double(q.row(0)[x]) + Double(q.row(0)[c.d + x])
                exact += qs * Double(keys.row(j)[x])
                bound += abs(qs) * abs(Double(keys.row(j)[x]))
            }
            XCTAssertEqual(Double(scores[j]), exact, accuracy: 2e-3 * bound, "token \(j)")
        }
    }

    // MARK: config file

    func testConfigForAnotherModelOrMalformedIsRefused() throws {
        let c = Case()
        let config = try randomConfig(c, sha: "aa")
        let dir = NSTemporaryDirectory() + "sift-loki-\(rng.next())"
        try makeDirectories(dir)
        let path = dir + "/c.json"
        try writeFile(path, config.encoded())
        let loaded = try LokiConfig.load(path: path)
        XCTAssertEqual(loaded, config)
        var other = c
        other.kvHeads = 4
        XCTAssertThrowsError(try loaded.model.check(against: try tinyConfig(other), fileSHA256: "aa", path: path)) {
            XCTAssertTrue("\($0)".contains("kv_heads"), "\($0)")
        }
        XCTAssertThrowsError(try loaded.model.check(against: try tinyConfig(c), fileSHA256: "bb", path: path)) {
            XCTAssertTrue("\($0)".contains("file_sha256"), "\($0)")
        }
        try writeFile(path, Array(config.encoded().prefix(60)))
        XCTAssertThrowsError(try LokiConfig.load(path: path)) { XCTAssertTrue("\($0)".contains(path), "\($0)") }
        var broken = config
        // Row 0 doubled: its squared norm becomes 4 whatever the random values (doubling one
        // element alone is invisible when that element is tiny, which made this check flaky).
        for a in 0..<c.d { broken.components[0][0][a] *= 2 }
        try writeFile(path, broken.encoded())
        XCTAssertThrowsError(try LokiConfig.load(path: path)) { XCTAssertTrue("\($0)".contains("orthonormal"), "\($0)") }
        broken = config
        broken.mean[0][0].removeLast()
        try writeFile(path, broken.encoded())
        XCTAssertThrowsError(try LokiConfig.load(path: path)) { XCTAssertTrue("\($0)".contains("head_dim"), "\($0)") }
        var dsLike = config
        dsLike.format = "sift.double-sparsity"
        try writeFile(path, dsLike.encoded())
        XCTAssertThrowsError(try LokiConfig.load(path: path)) { XCTAssertTrue("\($0)".contains("sift.loki"), "\($0)") }
        // Another sift format (missing Loki's fields) is named as such.
        try writeFile(path, Array(#"{"format": "sift.double-sparsity", "version": 1, "channels": []}"#.utf8))
        XCTAssertThrowsError(try LokiConfig.load(path: path)) {
            XCTAssertTrue("\($0)".contains("'sift.double-sparsity', expected 'sift.loki'"), "\($0)")
        }
    }
}
