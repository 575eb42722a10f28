import XCTest
@testable import Sift

final class DoubleSparsityTests: XCTestCase {
    var rng = Xoshiro256(seed: UInt64.random(in: 0...UInt64.max))

    func uniform() -> Float { Float(Double(rng.next() >> 11) * 0x1.0p-53 * 2 - 1) }

    func randomTensor(_ rows: Int, _ cols: Int, scale: Float = 1) -> Tensor {
        let t = Tensor(rows: rows, cols: cols)
        for i in 0..<(rows * cols) { t.floats[i] = uniform() * scale }
        return t
    }

    // MARK: top-k

    func testTopKEqualsSortedReference() {
        for trial in 0..<200 {
            let n = 1 + Int(rng.next() % 300)
            let k = Int(rng.next() % UInt64(n + 1))
            // Coarse values so that ties happen; ties must go to the lower index.
            var v = [Float](repeating: 0, count: n)
            for i in 0..<n { v[i] = trial % 2 == 0 ? Float(Int(rng.next() % 7)) : uniform() }
            let order: [Int] = (0..<n).sorted { (a: Int, b: Int) -> Bool in
                v[a] > v[b] || (v[a] == v[b] && a < b)
            }
            let want: [Int32] = order.prefix(k).sorted().map { Int32($0 + 5) }
            var got = [Int32](repeating: -1, count: max(k, 1))
            let w = v.withUnsafeBufferPointer { TopK.select($0.baseAddress!, count: n, k: k, base: 5, into: &got) }
            XCTAssertEqual(w, k)
            XCTAssertEqual(Array(got.prefix(k)), want, "n \(n) k \(k)")
        }
    }

    // MARK: sparse decode attention

    struct Case {
        var heads = 4, kvHeads = 2, d = 16, r = 4, length = 40
    }

    func makeMethod(_ c: Case, budget: TokenBudget, channels: [[[Int]]], perHead: Bool = false, sinks: Int = 0,
                    recent: Int? = 0, labelBits: Int = 16, soft: Bool = false, residual: Bool = false) throws -> DoubleSparseAttention {
        let cache = KVCache(layers: 1, kvHeads: c.kvHeads, headDim: c.d, capacity: max(64, c.length))
        var o = AttentionOptions()
        o.dsLabelBits = labelBits
        o.budget = budget
        o.dsPerHead = perHead
        o.dsSoftGroup = soft ? true : nil
        o.dsResidual = residual ? true : nil
        o.sinks = sinks
        o.recent = recent
        let config = DoubleSparsityConfig(
            model: .init(config: try tinyConfig(c), fileSHA256: nil), statistic: .qk,
            calibration: .init(text: "test", tokens: 0, sampleLength: 1, seconds: 0, peakMemoryBytes: 0),
            channels: channels)
        return try DoubleSparseAttention(cache: cache, config: config, channels: c.r, options: o, pool: ThreadPool(threads: 2))
    }

    func tinyConfig(_ c: Case) throws -> ModelConfig {
        try TestModels.attentionConfig(heads: c.heads, kvHeads: c.kvHeads, headDim: c.d)
    }

    func randomChannels(_ c: Case) -> [[[Int]]] {
        [(0..<c.kvHeads).map { _ in Array(0..<c.d).shuffled(using: &rng) }]
    }

    /// Float64 reference of one decode step: approximate scores over f16 labels, top-k, exact
    /// softmax attention over the selected f16 keys/values.
    func reference(_ c: Case, q: Tensor, keys: Tensor, values: Tensor, channels: [[[Int]]], k: Int, perHead: Bool = false,
                   sinks: Int = 0, recent: Int = 0, labelBits: Int = 16, soft: Bool = false, residual: Bool = false) -> [Double] {
        let g = c.heads / c.kvHeads, scale = 1 / Double(c.d).squareRoot()
        func h16(_ x: Float) -> Double { Double(Float(Float16(x))) }
        // The label of token j, KV head kvh: f16 values, or the 4-bit definition (offset = the
        // f16 minimum, scale = f16 of range/15, codes rounded and clamped to 0...15).
        func label(_ j: Int, _ kvh: Int) -> [Int: Double] {
            let ch = Array(channels[0][kvh].prefix(c.r))
            let x = ch.map { keys.row(j)[kvh * c.d + $0] }
            if labelBits == 16 { return Dictionary(uniqueKeysWithValues: zip(ch, x.map(h16))) }
            let m = h16(x.min()!)
            let sc = h16(Float((Double(x.max()!) - m) / 15))
            return Dictionary(uniqueKeysWithValues: zip(ch, x.map { v in
                let u = sc > 0 ? min(15, max(0, ((Double(v) - m) / sc).rounded())) : 0
                return m + sc * u
            }))
        }
        var out = [Double](repeating: 0, count: c.heads * c.d)
        for kvh in 0..<c.kvHeads {
            let ch = channels[0][kvh].prefix(c.r)
            // Shared: the group's summed query picks for every head; per head: each its own.
            func pick(_ selectors: Range<Int>) -> ArraySlice<Int> {
                var approx = [Double](repeating: 0, count: c.length)
                if soft && selectors.count > 1 {
                    // --ds-group soft: Σ_h softmax_j(scale · q_h[C]·label_j).
                    for h in selectors {
                        let sh = (0..<c.length).map { j in
                            let lab = label(j, kvh)
                            return ch.reduce(0.0) { $0 + Double(q.row(0)[h * c.d + $1]) * lab[$1]! } * scale
                        }
                        let m = sh.max()!
                        let z = sh.reduce(0.0) { $0 + exp($1 - m) }
                        for j in 0..<c.length { approx[j] += exp(sh[j] - m) / z }
                    }
                } else {
                    for j in 0..<c.length {
                        let lab = label(j, kvh)
                        for h in selectors {
                            for cc in ch { approx[j] += Double(q.row(0)[h * c.d + cc]) * lab[cc]! }
                        }
                    }
                }
                // Sinks, then the recent window: at most half of what the budget leaves.
                let s = min(sinks, k), w = min(recent, (k - s) / 2)
                for j in 0..<s { approx[j] = .infinity }
                for j in (c.length - w)..<c.length { approx[j] = .infinity }
                return (0..<c.length).sorted { approx[$0] > approx[$1] || (approx[$0] == approx[$1] && $0 < $1) }.prefix(k)
            }
            let shared = pick((kvh * g)..<((kvh + 1) * g))
            for h in (kvh * g)..<((kvh + 1) * g) {
                let picked = perHead ? pick(h..<(h + 1)) : shared
                let s = picked.map { j in (0..<c.d).reduce(0.0) { $0 + Double(q.row(0)[h * c.d + $1]) * h16(keys.row(j)[kvh * c.d + $1]) } * scale }
                let m = s.max()!
                let e = s.map { exp($0 - m) }
                let z = e.reduce(0, +)
                for (w, j) in zip(e, picked) {
                    for x in 0..<c.d { out[h * c.d + x] += w / z * h16(values.row(j)[kvh * c.d + x]) }
                }
                if residual && picked.count < c.length {
                    // The unselected tokens' approximate softmax mass (head h's own label scores)
                    // relative to the selection's, with their mean value.
                    // Their mass on the exact scale: the approximate one times the exact/approximate
                    // ratio over the selection less the pinned sinks and recent window.
                    let sel = Set(picked), pinned = min(sinks, k), recentFrom = c.length - min(recent, (k - pinned) / 2)
                    var rest = 0.0, kept = 0.0, exactKept = 0.0
                    let approx = (0..<c.length).map { j in
                        let lab = label(j, kvh)
                        return ch.reduce(0.0) { $0 + Double(q.row(0)[h * c.d + $1]) * lab[$1]! } * scale
                    }
                    let am = approx.max()!
                    for j in 0..<c.length where !sel.contains(j) { rest += exp(approx[j] - am) }
                    for (w, j) in zip(e, picked) where j >= pinned && j < recentFrom { kept += exp(approx[j] - am); exactKept += w }
                    let f = rest / kept * exactKept / z
                    for x in 0..<c.d {
                        var mean = 0.0
                        for j in 0..<c.length where !sel.contains(j) { mean += h16(values.row(j)[kvh * c.d + x]) }
                        mean /= Double(c.length - sel.count)
                        out[h * c.d + x] = (out[h * c.d + x] + f * mean) / (1 + f)
                    }
                }
            }
        }
        return out
    }

    func run(_ c: Case, budget: TokenBudget, channels: [[[Int]]], perHead: Bool = false, sinks: Int = 0, recent: Int? = 0,
             labelBits: Int = 16, soft: Bool = false, residual: Bool = false) throws -> (got: [Float], q: Tensor, k: Tensor, v: Tensor) {
        let method = try makeMethod(c, budget: budget, channels: channels, perHead: perHead, sinks: sinks, recent: recent,
                                    labelBits: labelBits, soft: soft, residual: residual)
        let shape = AttentionShape(heads: c.heads, kvHeads: c.kvHeads, headDim: c.d, scale: 1 / Float(c.d).squareRoot())
        let keys = randomTensor(c.length, c.kvHeads * c.d, scale: 2)
        let values = randomTensor(c.length, c.kvHeads * c.d)
        let prefixK = Tensor(rows: c.length - 1, cols: c.kvHeads * c.d), prefixV = Tensor(rows: c.length - 1, cols: c.kvHeads * c.d)
        prefixK.floats.update(from: keys.floats, count: (c.length - 1) * c.kvHeads * c.d)
        prefixV.floats.update(from: values.floats, count: (c.length - 1) * c.kvHeads * c.d)
        let out = Tensor(rows: c.length, cols: c.heads * c.d)
        // Prefill (dense) of all but the last token, then one decode step.
        method.attend(layer: 0, q: randomTensor(c.length - 1, c.heads * c.d), k: prefixK, v: prefixV, start: 0, shape: shape, out: out)
        let q = randomTensor(1, c.heads * c.d, scale: 2)
        let lastK = Tensor(rows: 1, cols: c.kvHeads * c.d), lastV = Tensor(rows: 1, cols: c.kvHeads * c.d)
        lastK.floats.update(from: keys.row(c.length - 1), count: c.kvHeads * c.d)
        lastV.floats.update(from: values.row(c.length - 1), count: c.kvHeads * c.d)
        method.attend(layer: 0, q: q, k: lastK, v: lastV, start: c.length - 1, shape: shape, out: out)
        return (Array(UnsafeBufferPointer(start: out.row(0), count: c.heads * c.d)), q, keys, values)
    }

    func testBudgetAllEqualsDenseReference() throws {
        let c = Case()
        let channels = randomChannels(c)
        let (got, q, k, v) = try run(c, budget: .all, channels: channels)
        let want = reference(c, q: q, keys: k, values: v, channels: channels, k: c.length)
        for (a, b) in zip(got, want) { XCTAssertEqual(Double(a), b, accuracy: 1e-4) }
    }

    func testSparseDecodeMatchesDefinition() throws {
        for (heads, kvHeads, d, r) in [(4, 2, 16, 4), (4, 1, 32, 8), (6, 2, 16, 16)] {
            for perHead in [false, true] {
                for (sinks, recent) in [(0, 0), (3, 0), (0, 2), (3, 100)] {
                    let c = Case(heads: heads, kvHeads: kvHeads, d: d, r: r, length: 50)
                    let channels = randomChannels(c)
                    let (got, q, k, v) = try run(c, budget: .fraction(1.0 / 8), channels: channels, perHead: perHead, sinks: sinks,
                                                 recent: recent)
                    let want = reference(c, q: q, keys: k, values: v, channels: channels, k: 7, perHead: perHead, sinks: sinks,
                                         recent: recent)  // k = ⌈50/8⌉; recent 100 is capped at (7 − 3) / 2
                    for (a, b) in zip(got, want) {
                        XCTAssertEqual(Double(a), b, accuracy: 1e-4,
                                       "heads \(heads)/\(kvHeads) d \(d) r \(r) per-head \(perHead) sinks \(sinks) recent \(recent)")
                    }
                }
            }
        }
    }

    /// Without `--recent`, Double Sparsity keeps the last 64 tokens (capped at half the budget):
    /// at L = 200 and budget 1/4 (k = 50) that is 25 of them, which the reference without a window
    /// would not all pick.
    func testDefaultRecentWindow() throws {
        let c = Case(heads: 4, kvHeads: 2, d: 16, r: 4, length: 200)
        let channels = randomChannels(c)
        let (got, q, k, v) = try run(c, budget: .fraction(1.0 / 4), channels: channels, recent: nil)
        let want = reference(c, q: q, keys: k, values: v, channels: channels, k: 50, recent: AttentionOptions.doubleSparsityRecent)
        for (a, b) in zip(got, want) { XCTAssertEqual(Double(a), b, accuracy: 1e-4) }
        let none = reference(c, q: q, keys: k, values: v, channels: channels, k: 50)
        XCTAssertTrue(zip(none, want).contains { abs($0 - $1) > 1e-3 }, "the window changed nothing: the test cannot see it")
        var o = AttentionOptions()
        o.sinks = 4
        XCTAssertEqual(o.pinned(visible: 4096, budget: 256, defaultRecent: 64).recent, 64)
        XCTAssertEqual(o.pinned(visible: 1000, budget: 63, defaultRecent: 64).recent, 29)
        XCTAssertEqual(o.pinned(visible: 3, budget: 3, defaultRecent: 64).sinks, 3)
        XCTAssertEqual(o.pinned(visible: 3, budget: 3, defaultRecent: 64).recent, 0)
        o.recent = 0
        XCTAssertEqual(o.pinned(visible: 4096, budget: 256, defaultRecent: 64).recent, 0)
    }

    /// `--ds-group soft` against its float64 definition (and it must differ from the summed query
    /// somewhere, or the test would not see a wrong ranking rule).
    func testSoftGroupSelectionMatchesDefinition() throws {
        var differs = false
        for (heads, kvHeads, d, r) in [(4, 2, 16, 4), (6, 1, 32, 8), (8, 2, 16, 16)] {
            for sinks in [0, 3] {
                for bits in [16, 4] {
                    let c = Case(heads: heads, kvHeads: kvHeads, d: d, r: r, length: 64)
                    let channels = randomChannels(c)
                    let (got, q, k, v) = try run(c, budget: .fraction(1.0 / 8), channels: channels, sinks: sinks,
                                                 labelBits: bits, soft: true)
                    let want = reference(c, q: q, keys: k, values: v, channels: channels, k: 8, sinks: sinks,
                                         labelBits: bits, soft: true)
                    for (a, b) in zip(got, want) {
                        XCTAssertEqual(Double(a), b, accuracy: 1e-4, "heads \(heads)/\(kvHeads) d \(d) r \(r) sinks \(sinks) bits \(bits)")
                    }
                    let summed = reference(c, q: q, keys: k, values: v, channels: channels, k: 8, sinks: sinks, labelBits: bits)
                    if zip(summed, want).contains(where: { abs($0 - $1) > 1e-3 }) { differs = true }
                }
            }
        }
        XCTAssertTrue(differs, "soft and summed selections never differed: the test cannot tell them apart")
    }

    /// `--ds-residual` against its float64 definition, shared and per-head, f16 and 4-bit labels;
    /// it must change the output, or the test could not see it missing.
    func testResidualCorrectionMatchesDefinition() throws {
        for (heads, kvHeads, d, r) in [(4, 2, 16, 4), (4, 1, 32, 8), (6, 2, 16, 16)] {
            for perHead in [false, true] {
                for (sinks, recent, bits) in [(0, 0, 16), (3, 2, 16), (1, 0, 4)] {
                    let c = Case(heads: heads, kvHeads: kvHeads, d: d, r: r, length: 50)
                    let channels = randomChannels(c)
                    let (got, q, k, v) = try run(c, budget: .fraction(1.0 / 8), channels: channels, perHead: perHead, sinks: sinks,
                                                 recent: recent, labelBits: bits, residual: true)
                    let want = reference(c, q: q, keys: k, values: v, channels: channels, k: 7, perHead: perHead, sinks: sinks,
                                         recent: recent, labelBits: bits, residual: true)
                    let plain = reference(c, q: q, keys: k, values: v, channels: channels, k: 7, perHead: perHead, sinks: sinks,
                                          recent: recent, labelBits: bits)
                    let label = "heads \(heads)/\(kvHeads) d \(d) r \(r) per-head \(perHead) sinks \(sinks) recent \(recent) bits \(bits)"
                    for (a, b) in zip(got, want) { XCTAssertEqual(Double(a), b, accuracy: 1e-4, label) }
                    XCTAssertTrue(zip(plain, want).contains { abs($0 - $1) > 1e-3 }, "the correction changed nothing: \(label)")
                }
            }
        }
    }

    /// The running value sums behind `--ds-residual`: a sparse-aware prefill (every row its own
    /// prefix) gives what decoding the same tokens one by one gives, and rewinding the cache to
    /// position 0 with other tokens gives what a fresh method gives.
    func testResidualPrefillMatchesDecodeStepsAndRewinds() throws {
        let c = Case(heads: 4, kvHeads: 2, d: 16, r: 4, length: 48)
        let channels = randomChannels(c)
        let shape = AttentionShape(heads: c.heads, kvHeads: c.kvHeads, headDim: c.d, scale: 1 / Float(c.d).squareRoot())
        let n = c.length
        func decodeOneByOne(_ m: DoubleSparseAttention, q: Tensor, k: Tensor, v: Tensor) -> [Float] {
            var out: [Float] = []
            for t in 0..<n {
                let row = { (x: Tensor) -> Tensor in
                    let r = Tensor(rows: 1, cols: x.cols)
                    r.floats.update(from: x.row(t), count: x.cols)
                    return r
                }
                let o = Tensor(rows: 1, cols: c.heads * c.d)
                m.attend(layer: 0, q: row(q), k: row(k), v: row(v), start: t, shape: shape, out: o)
                out += Array(UnsafeBufferPointer(start: o.floats, count: c.heads * c.d))
            }
            return out
        }
        let prefill = try makeMethod(c, budget: .fraction(1.0 / 8), channels: channels, sinks: 1, residual: true)
        prefill.sparsePrefill = true
        for round in 0..<2 {   // round 1 rewinds the same method to position 0 with other tokens
            let q = randomTensor(n, c.heads * c.d, scale: 2)
            let k = randomTensor(n, c.kvHeads * c.d, scale: 2), v = randomTensor(n, c.kvHeads * c.d)
            let o = Tensor(rows: n, cols: c.heads * c.d)
            prefill.attend(layer: 0, q: q, k: k, v: v, start: 0, shape: shape, out: o)
            let got = Array(UnsafeBufferPointer(start: o.floats, count: n * c.heads * c.d))
            let fresh = try makeMethod(c, budget: .fraction(1.0 / 8), channels: channels, sinks: 1, residual: true)
            let want = decodeOneByOne(fresh, q: q, k: k, v: v)
            for (i, (a, b)) in zip(got, want).enumerated() {
                XCTAssertEqual(a, b, accuracy: 1e-5, "round \(round) row \(i / (c.heads * c.d))")
            }
        }
    }

    func testFourBitLabelsMatchDefinition() throws {
        // The encoding: every decoded channel within half a step (plus f16 rounding of the
        // offset and scale) of the key, and scores = the dot product with the decoded labels.
        for r in [8, 5, 16] {
            let c = Case(heads: 4, kvHeads: 2, d: 32, r: r, length: 30)
            let channels = randomChannels(c)
            let labels = LabelCache(layers: 1, kvHeads: c.kvHeads, channels: r, capacity: 64, bits: 4)
            XCTAssertEqual(labels.recordBytes, 4 + (r + 1) / 2)
            let keys = randomTensor(c.length, c.kvHeads * c.d, scale: 3)
            labels.store(layer: 0, k: keys, start: 0, headDim: c.d, select: channels[0].map { $0.prefix(r).map { Int32($0) } })
            for kvh in 0..<c.kvHeads {
                let ch = Array(channels[0][kvh].prefix(r))
                let q = (0..<r).map { _ in Float.random(in: -2...2, using: &rng) }
                var got = [Float](repeating: .nan, count: c.length)
                q.withUnsafeBufferPointer { qp in
                    got.withUnsafeMutableBufferPointer { labels.scores(layer: 0, head: kvh, q: qp.baseAddress!, first: 0, count: c.length, into: $0.baseAddress!) }
                }
                for j in 0..<c.length {
                    let x = ch.map { Double(keys.row(j)[kvh * c.d + $0]) }
                    let dec = labels.label(layer: 0, head: kvh, position: j).map(Double.init)
                    let step = (x.max()! - x.min()!) / 15, big = x.map(abs).max()!
                    for (a, b) in zip(dec, x) { XCTAssertEqual(a, b, accuracy: step / 2 + 4e-3 * big, "r \(r) j \(j)") }
                    let want = zip(q, dec).reduce(0.0) { $0 + Double($1.0) * $1.1 }
                    XCTAssertEqual(Double(got[j]), want, accuracy: 1e-4 * (1 + abs(want)), "r \(r) j \(j)")
                }
            }
        }
        // Decode with 4-bit labels: selection by the 4-bit scores, exact attention after.
        for (heads, kvHeads, d, r) in [(4, 2, 16, 4), (6, 2, 32, 8)] {
            let c = Case(heads: heads, kvHeads: kvHeads, d: d, r: r, length: 50)
            let channels = randomChannels(c)
            let (got, q, k, v) = try run(c, budget: .fraction(1.0 / 8), channels: channels, labelBits: 4)
            let want = reference(c, q: q, keys: k, values: v, channels: channels, k: 7, labelBits: 4)
            for (a, b) in zip(got, want) { XCTAssertEqual(Double(a), b, accuracy: 1e-4, "4-bit heads \(heads)/\(kvHeads) r \(r)") }
        }
        XCTAssertThrowsError(try makeMethod(Case(), budget: .all, channels: randomChannels(Case()), labelBits: 8))
    }

    /// Importing a prefix with `append` (no attention) leaves the method in the state a
    /// prefill leaves it: the next decode step gives the same output, bit for bit.
    func testAppendMatchesPrefillState() throws {
        let c = Case(heads: 4, kvHeads: 2, d: 16, r: 4, length: 60)
        let channels = randomChannels(c)
        let a = try makeMethod(c, budget: .fraction(1.0 / 8), channels: channels)
        let b = try makeMethod(c, budget: .fraction(1.0 / 8), channels: channels)
        let shape = AttentionShape(heads: c.heads, kvHeads: c.kvHeads, headDim: c.d, scale: 1 / Float(c.d).squareRoot())
        let n = c.length - 1
        let k = randomTensor(n, c.kvHeads * c.d, scale: 2), v = randomTensor(n, c.kvHeads * c.d)
        a.attend(layer: 0, q: randomTensor(n, c.heads * c.d), k: k, v: v, start: 0, shape: shape, out: Tensor(rows: n, cols: c.heads * c.d))
        b.append(layer: 0, k: k, v: v, start: 0)
        let q = randomTensor(1, c.heads * c.d, scale: 2)
        let lk = randomTensor(1, c.kvHeads * c.d, scale: 2), lv = randomTensor(1, c.kvHeads * c.d)
        let oa = Tensor(rows: 1, cols: c.heads * c.d), ob = Tensor(rows: 1, cols: c.heads * c.d)
        a.attend(layer: 0, q: q, k: lk, v: lv, start: n, shape: shape, out: oa)
        b.attend(layer: 0, q: q, k: lk, v: lv, start: n, shape: shape, out: ob)
        let x = Array(UnsafeBufferPointer(start: oa.floats, count: c.heads * c.d))
        let y = Array(UnsafeBufferPointer(start: ob.floats, count: c.heads * c.d))
        XCTAssertEqual(x, y)
    }

    func testBudgetParsing() throws {
        XCTAssertEqual(try TokenBudget(parsing: "1/16"), .fraction(1.0 / 16))
        XCTAssertEqual(try TokenBudget(parsing: "256"), .tokens(256))
        XCTAssertEqual(try TokenBudget(parsing: "all"), .all)
        XCTAssertEqual(TokenBudget.fraction(1.0 / 16).count(visible: 1000), 63)
        XCTAssertEqual(TokenBudget.tokens(256).count(visible: 100), 100)
        for bad in ["0", "-3", "1/0", "2/1", "x", ""] {
            XCTAssertThrowsError(try TokenBudget(parsing: bad), bad)
        }
    }

    // MARK: calibration

    /// A tiny Qwen2 model whose q and k projections are scaled up on planted channels (and
    /// their RoPE partners, which rotation mixes them with): calibration must rank exactly
    /// those channels first in every layer and KV head.
    func testCalibrationRecoversPlantedChannels() throws {
        var d = ModelReferenceTests.Dims()
        d.headDim = 16
        d.layers = 2
        var w = ModelReferenceTests.makeQwen2(d, seed: 3)
        let half = d.headDim / 2
        let planted = [1, 5]  // and 9, 13
        let plantedSet = Set(planted + planted.map { $0 + half })
        for l in 0..<d.layers {
            for (name, heads) in [("attn_q", d.heads), ("attn_k", d.kvHeads)] {
                var t = w.tensors["blk.\(l).\(name).weight"]!
                for h in 0..<heads {
                    for c in plantedSet {
                        let row = h * d.headDim + c
                        for i in 0..<d.dim { t.values[row * d.dim + i] *= 8 }
                    }
                }
                w.tensors["blk.\(l).\(name).weight"] = t
            }
        }
        let gguf = try GGUFFile(file: MappedFile(copying: w.gguf(arch: "qwen2", d: d, extra: [])))
        let backend = CPUBackend(threads: 2)
        let model = try Architectures.load(gguf, backend: backend, maxBatch: 128)
        // 4 samples of 128: `recall` ranks channels by the selection they induce at 1/16 of the
        // visible tokens, which needs more than the 1–2 tokens of 32-token samples to be stable
        // (with 4 samples of 32 it let a non-planted channel in about 1 run in 13).
        let tokens = (0..<512).map { _ in Int32(rng.next() % UInt64(d.vocab)) }
        // qk-svd projects instead of ranking channels (LabelProjectionTests).
        for stat in ChannelStatistic.allCases where stat != .qkSVD {
            let ranking = try ChannelCalibrator.calibrate(model: model, tokens: tokens, sampleLength: 128, statistic: stat, pool: backend.pool)
            XCTAssertEqual(ranking.count, d.layers)
            for layer in ranking {
                XCTAssertEqual(layer.count, d.kvHeads)
                for head in layer {
                    XCTAssertEqual(Set(head.prefix(plantedSet.count)), plantedSet, "\(stat): \(head)")
                    XCTAssertEqual(Set(head), Set(0..<d.headDim))
                }
            }
        }
    }

    func testConfigForAnotherModelIsRefused() throws {
        let c = Case()
        let config = DoubleSparsityConfig(
            model: .init(config: try tinyConfig(c), fileSHA256: "aa"), statistic: .qk,
            calibration: .init(text: "t", tokens: 1, sampleLength: 1, seconds: 0, peakMemoryBytes: 0),
            channels: randomChannels(c))
        let dir = NSTemporaryDirectory() + "sift-ds-\(rng.next())"
        try makeDirectories(dir)
        let path = dir + "/c.json"
        try writeFile(path, config.encoded())
        let loaded = try DoubleSparsityConfig.load(path: path)
        XCTAssertEqual(loaded, config)
        var other = Case()
        other.kvHeads = 4
        XCTAssertThrowsError(try loaded.check(against: try tinyConfig(other), fileSHA256: "aa", path: path)) {
            XCTAssertTrue("\($0)".contains("kv_heads"), "\($0)")
        }
        XCTAssertThrowsError(try loaded.check(against: try tinyConfig(c), fileSHA256: "bb", path: path)) {
            XCTAssertTrue("\($0)".contains("file_sha256"), "\($0)")
        }
        // Malformed: truncated JSON, and a channel list that is not a permutation.
        try writeFile(path, Array(config.encoded().prefix(40)))
        XCTAssertThrowsError(try DoubleSparsityConfig.load(path: path)) { XCTAssertTrue("\($0)".contains(path)) }
        var broken = config
        broken.channels[0][0][0] = broken.channels[0][0][1]
        try writeFile(path, broken.encoded())
        XCTAssertThrowsError(try DoubleSparsityConfig.load(path: path)) { XCTAssertTrue("\($0)".contains("permutation"), "\($0)") }
    }
}
