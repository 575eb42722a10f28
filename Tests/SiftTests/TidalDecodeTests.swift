import XCTest
@testable import Sift

/// TidalDecode against a float64 reference written here from the definition: dense layers,
/// a token-selection layer that attends densely and picks the top-k positions by the attention
/// mass of the GQA group, layers that attend exactly those positions, and a re-selection layer.
final class TidalDecodeTests: XCTestCase {
    var rng = Xoshiro256(seed: UInt64.random(in: 0...UInt64.max))

    func uniform() -> Float { Float(Double(rng.next() >> 11) * 0x1.0p-53 * 2 - 1) }

    func randomTensor(_ rows: Int, _ cols: Int, scale: Float = 1) -> Tensor {
        let t = Tensor(rows: rows, cols: cols)
        for i in 0..<(rows * cols) { t.floats[i] = uniform() * scale }
        return t
    }

    func rows(_ t: Tensor, _ r: Range<Int>) -> Tensor {
        let out = Tensor(rows: r.count, cols: t.cols)
        out.floats.update(from: t.row(r.lowerBound), count: r.count * t.cols)
        return out
    }

    struct Case {
        var heads = 4, kvHeads = 2, d = 16, layers = 6, length = 48
        var denseLayers = 1, reselect = 3
    }

    func h16(_ x: Float) -> Double { Double(Float(Float16(x))) }

    /// Per query head h of the group, softmax probabilities over `positions` (float64, f16 keys).
    func probabilities(_ c: Case, q: UnsafePointer<Float>, keys: Tensor, kvh: Int, h: Int, positions: [Int]) -> [Double] {
        let scale = 1 / Double(c.d).squareRoot()
        let s = positions.map { j in (0..<c.d).reduce(0.0) { $0 + Double(q[h * c.d + $1]) * h16(keys.row(j)[kvh * c.d + $1]) } * scale }
        let m = s.max()!
        let e = s.map { exp($0 - m) }
        let z = e.reduce(0, +)
        return e.map { $0 / z }
    }

    /// Attention output of every query head of one row over `positions` of each KV head.
    func attention(_ c: Case, q: UnsafePointer<Float>, keys: Tensor, values: Tensor, positions: [[Int]]) -> [Double] {
        let g = c.heads / c.kvHeads
        var out = [Double](repeating: 0, count: c.heads * c.d)
        for h in 0..<c.heads {
            let kvh = h / g
            let p = probabilities(c, q: q, keys: keys, kvh: kvh, h: h, positions: positions[kvh])
            for (w, j) in zip(p, positions[kvh]) {
                for x in 0..<c.d { out[h * c.d + x] += w * h16(values.row(j)[kvh * c.d + x]) }
            }
        }
        return out
    }

    /// The top-k positions of 0...position by the group's summed attention probability (sinks first).
    func picks(_ c: Case, q: UnsafePointer<Float>, keys: Tensor, kvh: Int, position: Int, k: Int, sinks: Int) -> [Int] {
        let g = c.heads / c.kvHeads
        var mass = [Double](repeating: 0, count: position + 1)
        for h in (kvh * g)..<((kvh + 1) * g) {
            for (j, p) in probabilities(c, q: q, keys: keys, kvh: kvh, h: h, positions: Array(0...position)).enumerated() { mass[j] += p }
        }
        for j in 0..<min(sinks, k) { mass[j] = .infinity }
        return (0...position).sorted { mass[$0] > mass[$1] || (mass[$0] == mass[$1] && $0 < $1) }.prefix(k).sorted()
    }

    /// Prefills `prefix` rows densely through every layer, then runs rows prefix..<length as one
    /// pass (a decode step when it is one row; sparse-aware prefill otherwise) and checks every
    /// layer's output, and the selection layers' picks, against the reference.
    func check(_ c: Case, budget: TokenBudget, prefix: Int, sinks: Int = 0) throws {
        var o = AttentionOptions()
        o.budget = budget
        o.sinks = sinks
        o.tidalDenseLayers = c.denseLayers
        o.tidalReselect = c.reselect
        let cache = KVCache(layers: c.layers, kvHeads: c.kvHeads, headDim: c.d, capacity: c.length)
        let method = try TidalAttention(cache: cache, options: o, pool: ThreadPool(threads: 2))
        let shape = AttentionShape(heads: c.heads, kvHeads: c.kvHeads, headDim: c.d, scale: 1 / Float(c.d).squareRoot())
        let Q = (0..<c.layers).map { _ in randomTensor(c.length, c.heads * c.d, scale: 2) }
        let K = (0..<c.layers).map { _ in randomTensor(c.length, c.kvHeads * c.d, scale: 2) }
        let V = (0..<c.layers).map { _ in randomTensor(c.length, c.kvHeads * c.d) }
        for l in 0..<c.layers {
            method.attend(layer: l, q: rows(Q[l], 0..<prefix), k: rows(K[l], 0..<prefix), v: rows(V[l], 0..<prefix),
                          start: 0, shape: shape, out: Tensor(rows: prefix, cols: c.heads * c.d))
        }
        cache.setLength(prefix)
        let n = c.length - prefix
        method.sparsePrefill = n > 1
        // The reference's own selections, per row and KV head.
        var current: [[[Int]]] = []
        for l in 0..<c.layers {
            let out = Tensor(rows: n, cols: c.heads * c.d)
            out.floats.update(repeating: .nan, count: n * c.heads * c.d)
            method.attend(layer: l, q: rows(Q[l], prefix..<c.length), k: rows(K[l], prefix..<c.length),
                          v: rows(V[l], prefix..<c.length), start: prefix, shape: shape, out: out)
            let selects = l == c.denseLayers || (l == c.reselect && c.reselect > c.denseLayers)
            if selects {
                current = (0..<n).map { t in
                    (0..<c.kvHeads).map { kvh in
                        picks(c, q: Q[l].row(prefix + t), keys: K[l], kvh: kvh, position: prefix + t,
                              k: budget.count(visible: prefix + t + 1), sinks: sinks)
                    }
                }
                for t in 0..<n {
                    for kvh in 0..<c.kvHeads {
                        // A row whose budget covers every visible token records no selection (it attends densely).
                        let want = current[t][kvh].count == prefix + t + 1 ? [] : current[t][kvh]
                        XCTAssertEqual(method.selected(row: t, kvHead: kvh, kvHeads: c.kvHeads).map(Int.init), want,
                                       "layer \(l) row \(t) kv head \(kvh): the selection layer's picks")
                    }
                }
            }
            for t in 0..<n {
                let position = prefix + t
                let all = Array(0...position)
                let positions = l < c.denseLayers || selects ? Array(repeating: all, count: c.kvHeads) : current[t]
                let want = attention(c, q: Q[l].row(position), keys: K[l], values: V[l], positions: positions)
                for (i, w) in want.enumerated() {
                    XCTAssertEqual(Double(out.row(t)[i]), w, accuracy: 1e-4, "layer \(l) row \(t) value \(i) (budget \(budget), sinks \(sinks))")
                }
            }
        }
    }

    func testBudgetAllEqualsDenseReference() throws {
        // With every token selected, each layer is plain dense attention.
        try check(Case(), budget: .all, prefix: 47)
        try check(Case(heads: 3, kvHeads: 3, d: 8, layers: 4, length: 30, denseLayers: 2, reselect: 3), budget: .all, prefix: 20)
    }

    func testSelectionPersistsUntilReselection() throws {
        for sinks in [0, 2] {
            try check(Case(), budget: .fraction(1.0 / 8), prefix: 47, sinks: sinks)
            try check(Case(heads: 4, kvHeads: 1, d: 32, layers: 5, length: 60, denseLayers: 2, reselect: 4), budget: .tokens(5), prefix: 59, sinks: sinks)
        }
    }

    /// Sparse-aware prefill: each row of one pass keeps its own selection across layers.
    func testSparsePrefillRowsSelectIndependently() throws {
        try check(Case(), budget: .fraction(1.0 / 8), prefix: 32)
        try check(Case(heads: 6, kvHeads: 2, d: 16, layers: 5, length: 40, denseLayers: 0, reselect: 0), budget: .tokens(4), prefix: 20, sinks: 1)
    }

    func testBadSettingsAreRefused() {
        let cache = KVCache(layers: 4, kvHeads: 1, headDim: 8, capacity: 8)
        var o = AttentionOptions()
        o.tidalReselect = 4
        XCTAssertThrowsError(try TidalAttention(cache: cache, options: o, pool: ThreadPool(threads: 1))) {
            XCTAssertTrue("\($0)".contains("--tidal-reselect"), "\($0)")
        }
        o = AttentionOptions()
        o.tidalDenseLayers = 9
        XCTAssertThrowsError(try TidalAttention(cache: cache, options: o, pool: ThreadPool(threads: 1)))
        XCTAssertEqual(TidalAttention.defaultReselectLayer(layers: 32), 13)
    }

    /// KV-cache correction: after S decode steps the session recomputes the last S tokens with
    /// dense attention, so the cache equals what a dense run of the same tokens writes; without
    /// correction the sparse layers leave different keys and values behind.
    func testKVCorrectionRestoresDenseCache() throws {
        var d = ModelReferenceTests.Dims()
        d.layers = 4
        let w = ModelReferenceTests.makeQwen2(d, seed: 11)
        let gguf = try GGUFFile(file: MappedFile(copying: w.gguf(arch: "qwen2", d: d, extra: [])))
        let backend = CPUBackend(threads: 2)
        let model = try Architectures.load(gguf, backend: backend, maxBatch: 64)
        let tokens = (0..<24).map { _ in Int32(rng.next() % UInt64(d.vocab)) }
        let prompt = 16, steps = 8

        func cacheAfter(_ name: String, correct: Int) throws -> KVCache {
            var o = AttentionOptions()
            o.budget = .tokens(2)
            o.tidalDenseLayers = 1
            o.tidalReselect = 0
            o.tidalCorrect = correct
            let s = try Session(model: model, contextLength: 32, attention: name, options: o)
            if name == "dense" {
                _ = try s.evaluate(tokens, logits: .none)
            } else {
                _ = try s.evaluate(Array(tokens[0..<prompt]), logits: .none)
                for t in prompt..<(prompt + steps) { _ = try s.evaluate([tokens[t]], logits: .last) }
            }
            return s.attention.cache
        }
        let dense = try cacheAfter("dense", correct: 0)
        func worst(_ c: KVCache) -> Float {
            var m: Float = 0
            for l in 0..<d.layers {
                for h in 0..<d.kvHeads {
                    for i in 0..<(tokens.count * d.headDim) {
                        m = max(m, abs(Float(c.keys(l, h)[i]) - Float(dense.keys(l, h)[i])))
                        m = max(m, abs(Float(c.values(l, h)[i]) - Float(dense.values(l, h)[i])))
                    }
                }
            }
            return m
        }
        XCTAssertLessThan(worst(try cacheAfter("tidal", correct: 8)), 5e-3)
        XCTAssertLessThan(worst(try cacheAfter("tidal", correct: 4)), 5e-3)
        XCTAssertGreaterThan(worst(try cacheAfter("tidal", correct: 0)), 2e-2)
    }
}
