import XCTest
@testable import Sift

/// StreamingLLM, H2O, Quest and SparQ against float64 definitions written here, on fresh random
/// inputs: budget "all" equals dense attention, and each method's selection and output equal its
/// paper's rule, step by step (decode) and row by row (sparse-aware prefill).
final class BaselineMethodsTests: XCTestCase {
    var rng = Xoshiro256(seed: UInt64.random(in: 0...UInt64.max))

    func uniform() -> Float { Float(Double(rng.next() >> 11) * 0x1.0p-53 * 2 - 1) }

    func randomTensor(_ rows: Int, _ cols: Int, scale: Float = 1) -> Tensor {
        let t = Tensor(rows: rows, cols: cols)
        for i in 0..<(rows * cols) { t.floats[i] = uniform() * scale }
        return t
    }

    struct Geometry {
        var heads = 4, kvHeads = 2, d = 16, length = 48, prefill = 24
        var g: Int { heads / kvHeads }
        var scale: Double { 1 / Double(d).squareRoot() }
        var shape: AttentionShape { AttentionShape(heads: heads, kvHeads: kvHeads, headDim: d, scale: Float(scale)) }
    }

    /// The inputs of one run: keys, values and queries for every position.
    struct Inputs {
        var k: Tensor, v: Tensor, q: Tensor
    }

    func inputs(_ c: Geometry) -> Inputs {
        Inputs(k: randomTensor(c.length, c.kvHeads * c.d, scale: 2), v: randomTensor(c.length, c.kvHeads * c.d),
               q: randomTensor(c.length, c.heads * c.d, scale: 2))
    }

    func rows(_ t: Tensor, _ r: Range<Int>) -> Tensor {
        let out = Tensor(rows: r.count, cols: t.cols)
        out.floats.update(from: t.row(r.lowerBound), count: r.count * t.cols)
        return out
    }

    /// Dense prefill of rows 0..<prefill, then rows prefill..<length either one decode step at a
    /// time or (batch) as one sparse-aware forward pass. Returns the outputs of the later rows.
    func run(_ method: SparseAwareAttention, _ c: Geometry, _ x: Inputs, layer: Int, batch: Bool) -> [[Float]] {
        method.sparsePrefill = false
        let pre = Tensor(rows: c.prefill, cols: c.heads * c.d)
        method.attend(layer: layer, q: rows(x.q, 0..<c.prefill), k: rows(x.k, 0..<c.prefill), v: rows(x.v, 0..<c.prefill),
                      start: 0, shape: c.shape, out: pre)
        var outs: [[Float]] = []
        if batch {
            method.sparsePrefill = true
            let r = c.prefill..<c.length
            let out = Tensor(rows: r.count, cols: c.heads * c.d)
            method.attend(layer: layer, q: rows(x.q, r), k: rows(x.k, r), v: rows(x.v, r), start: c.prefill, shape: c.shape, out: out)
            for t in 0..<r.count { outs.append(Array(UnsafeBufferPointer(start: out.row(t), count: c.heads * c.d))) }
        } else {
            for p in c.prefill..<c.length {
                let out = Tensor(rows: 1, cols: c.heads * c.d)
                method.attend(layer: layer, q: rows(x.q, p..<(p + 1)), k: rows(x.k, p..<(p + 1)), v: rows(x.v, p..<(p + 1)),
                              start: p, shape: c.shape, out: out)
                outs.append(Array(UnsafeBufferPointer(start: out.floats, count: c.heads * c.d)))
            }
        }
        return outs
    }

    // MARK: float64 reference pieces

    func h16(_ x: Float) -> Double { Double(Float(Float16(x))) }
    func key(_ x: Inputs, _ c: Geometry, _ j: Int, _ kvh: Int) -> [Double] { (0..<c.d).map { h16(x.k.row(j)[kvh * c.d + $0]) } }
    func value(_ x: Inputs, _ c: Geometry, _ j: Int, _ kvh: Int) -> [Double] { (0..<c.d).map { h16(x.v.row(j)[kvh * c.d + $0]) } }
    func query(_ x: Inputs, _ c: Geometry, _ p: Int, _ h: Int) -> [Double] { (0..<c.d).map { Double(x.q.row(p)[h * c.d + $0]) } }
    func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }

    /// Softmax probabilities of query head h at position p over `positions`, and the output.
    func attention(_ x: Inputs, _ c: Geometry, p: Int, h: Int, positions: [Int]) -> (probs: [Double], out: [Double]) {
        let kvh = h / c.g
        let q = query(x, c, p, h)
        let s = positions.map { dot(q, key(x, c, $0, kvh)) * c.scale }
        let m = s.max()!
        let e = s.map { exp($0 - m) }
        let z = e.reduce(0, +)
        var out = [Double](repeating: 0, count: c.d)
        for (w, j) in zip(e, positions) {
            let v = value(x, c, j, kvh)
            for i in 0..<c.d { out[i] += w / z * v[i] }
        }
        return (e.map { $0 / z }, out)
    }

    func assertClose(_ got: [[Float]], _ want: [[Double]], _ what: String, accuracy: Double = 1e-4) {
        XCTAssertEqual(got.count, want.count, what)
        for (t, (a, b)) in zip(got, want).enumerated() {
            for (i, (x, y)) in zip(a, b).enumerated() where abs(Double(x) - y) > accuracy {
                XCTFail("\(what): row \(t) value \(i): \(x) vs reference \(y)")
                return
            }
        }
    }

    func denseReference(_ x: Inputs, _ c: Geometry) -> [[Double]] {
        (c.prefill..<c.length).map { p in
            (0..<c.heads).flatMap { attention(x, c, p: p, h: $0, positions: Array(0...p)).out }
        }
    }

    func options(_ budget: TokenBudget) -> AttentionOptions {
        var o = AttentionOptions()
        o.budget = budget
        return o
    }

    func cache(_ c: Geometry, layers: Int = 3) -> KVCache {
        KVCache(layers: layers, kvHeads: c.kvHeads, headDim: c.d, capacity: c.length)
    }

    let pool = ThreadPool(threads: 2)

    // MARK: budget all = dense

    func testBudgetAllEqualsDense() throws {
        let c = Geometry()
        for batch in [false, true] {
            let x = inputs(c)
            let want = denseReference(x, c)
            let methods: [SparseAwareAttention] = [
                StreamingLLMAttention(cache: cache(c), options: options(.all), pool: pool),
                H2OAttention(cache: cache(c), options: options(.all), pool: pool),
                try QuestAttention(cache: cache(c), options: options(.all), pool: pool),
                try SparQAttention(cache: cache(c), rank: 4, options: options(.all), pool: pool),
            ]
            for m in methods {
                assertClose(run(m, c, x, layer: 2, batch: batch), want, "\(m.name) batch \(batch)")
            }
        }
    }

    // MARK: StreamingLLM

    func testStreamingAttendsExactlySinksAndWindow() {
        let c = Geometry()
        for (sinks, given) in [(4, false), (2, true), (0, true)] {
            for batch in [false, true] {
                let x = inputs(c)
                var o = options(.tokens(10))
                if given { o.sinks = sinks; o.sinksGiven = true }
                let m = StreamingLLMAttention(cache: cache(c, layers: 1), options: o, pool: pool)
                XCTAssertEqual(m.sinks, sinks)
                let want: [[Double]] = (c.prefill..<c.length).map { p in
                    let kept = Array(0..<sinks) + Array((p - (10 - sinks) + 1)...p)
                    return (0..<c.heads).flatMap { attention(x, c, p: p, h: $0, positions: kept).out }
                }
                assertClose(run(m, c, x, layer: 0, batch: batch), want, "streaming sinks \(sinks) batch \(batch)")
            }
        }
    }

    /// The recall meter reports the mean share of the exact attention mass on the kept rows.
    func testStreamingRecallEqualsKeptMass() {
        let c = Geometry()
        let x = inputs(c)
        var o = options(.tokens(10))
        o.measureRecall = true
        let m = StreamingLLMAttention(cache: cache(c, layers: 1), options: o, pool: pool)
        _ = run(m, c, x, layer: 0, batch: true)
        var mass = 0.0, count = 0.0
        for p in c.prefill..<c.length {
            let kept = Set(Array(0..<4) + Array((p - 5)...p))
            for h in 0..<c.heads {
                let probs = attention(x, c, p: p, h: h, positions: Array(0...p)).probs
                mass += probs.enumerated().filter { kept.contains($0.offset) }.reduce(0.0) { $0 + $1.element }
                count += 1
            }
        }
        XCTAssertEqual(m.recall!.perLayer[0], mass / count, accuracy: 1e-5)
    }

    // MARK: H2O

    /// Float64 simulation of H2O's accumulate-and-evict rule: dense prefill adds every row's
    /// probabilities; each later step admits p, keeps sinks ∪ recent ∪ top-heavy by acc, attends
    /// over the kept set and adds the probabilities (summed over the group's heads).
    func h2oReference(_ x: Inputs, _ c: Geometry, budget: TokenBudget, sinks: Int) -> (out: [[Double]], kept: [[Int]]) {
        var acc = [[Double]](repeating: [Double](repeating: 0, count: c.length), count: c.kvHeads)
        var kept = [[Int]](repeating: Array(0..<c.prefill), count: c.kvHeads)
        for p in 0..<c.prefill {
            for h in 0..<c.heads {
                let probs = attention(x, c, p: p, h: h, positions: Array(0...p)).probs
                for j in 0...p { acc[h / c.g][j] += probs[j] }
            }
        }
        var outs: [[Double]] = []
        for p in c.prefill..<c.length {
            var row = [Double](repeating: 0, count: c.heads * c.d)
            for kvh in 0..<c.kvHeads {
                var set = kept[kvh] + [p]
                let k = budget.count(visible: p + 1)
                if set.count > k {
                    let s = min(sinks, k), rest = k - s
                    let recent = rest - rest / 2, heavy = rest / 2
                    let recentFrom = max(s, p - recent + 1)
                    let cands = set.filter { $0 >= s && $0 < recentFrom }
                    let top = cands.sorted { acc[kvh][$0] > acc[kvh][$1] || (acc[kvh][$0] == acc[kvh][$1] && $0 < $1) }.prefix(heavy)
                    set = (set.filter { $0 < s } + top + Array(recentFrom...p)).sorted()
                }
                kept[kvh] = set
                for h in (kvh * c.g)..<((kvh + 1) * c.g) {
                    let (probs, o) = attention(x, c, p: p, h: h, positions: set)
                    for (w, j) in zip(probs, set) { acc[kvh][j] += w }
                    for i in 0..<c.d { row[h * c.d + i] = o[i] }
                }
            }
            outs.append(row)
        }
        return (outs, kept)
    }

    func testH2OKeptSetAndOutputEqualSimulation() {
        for (heads, kvHeads) in [(4, 2), (3, 1)] {
            let c = Geometry(heads: heads, kvHeads: kvHeads, d: 16, length: 56, prefill: 24)
            for (budget, sinks) in [(TokenBudget.tokens(9), 0), (.tokens(12), 2), (.fraction(1.0 / 4), 1)] {
                for batch in [false, true] {
                    let x = inputs(c)
                    var o = options(budget)
                    o.sinks = sinks
                    let m = H2OAttention(cache: cache(c, layers: 1), options: o, pool: pool)
                    let got = run(m, c, x, layer: 0, batch: batch)
                    let want = h2oReference(x, c, budget: budget, sinks: sinks)
                    let what = "h2o \(heads)/\(kvHeads) budget \(budget) sinks \(sinks) batch \(batch)"
                    assertClose(got, want.out, what)
                    for kvh in 0..<kvHeads {
                        XCTAssertEqual(m.kept(layer: 0, kvHead: kvh), want.kept[kvh], what)
                        XCTAssertEqual(m.kept(layer: 0, kvHead: kvh).count, budget.count(visible: c.length), what)
                    }
                }
            }
        }
    }

    // MARK: Quest

    func testQuestBoundNeverUnderestimates() {
        for _ in 0..<300 {
            let d = [4, 16, 64][Int(rng.next() % 3)], n = 1 + Int(rng.next() % 32)
            var keys = [Float16](repeating: 0, count: n * d)
            let scale = Float(1 + rng.next() % 8)
            for i in keys.indices { keys[i] = Float16(uniform() * scale) }
            let q = (0..<d).map { _ in uniform() * scale }
            var bounds = [Float](repeating: 0, count: 2 * d)
            keys.withUnsafeBufferPointer { QuestAttention.computeBounds(keys: $0.baseAddress!, first: 0, count: n, headDim: d, into: &bounds) }
            let u = Double(q.withUnsafeBufferPointer { QuestAttention.upperBound(q: $0.baseAddress!, heads: 1, headDim: d, bounds: bounds) })
            let best = (0..<n).map { j in (0..<d).reduce(0.0) { $0 + Double(q[$1]) * Double(Float(keys[j * d + $1])) } }.max()!
            XCTAssertGreaterThanOrEqual(u, best - 1e-4 * max(1, abs(best)), "d \(d) n \(n)")
        }
    }

    /// Brute force: bounds of every page (the query's own page over its visible keys only),
    /// top ⌊k/P⌋ pages by the (group-summed, if shared) bound, exact attention over their tokens.
    func questReference(_ x: Inputs, _ c: Geometry, budget: TokenBudget, page: Int, perHead: Bool) -> [[Double]] {
        (c.prefill..<c.length).map { p in
            let visible = p + 1
            let pages = (visible + page - 1) / page
            let select = max(1, budget.count(visible: visible) / page)
            var row = [Double](repeating: 0, count: c.heads * c.d)
            func bound(_ heads: [Int], _ pg: Int) -> Double {
                let members = Array((pg * page)..<min(visible, (pg + 1) * page))
                var u = 0.0
                for h in heads {
                    let q = query(x, c, p, h)
                    for ch in 0..<c.d {
                        let vals = members.map { key(x, c, $0, h / c.g)[ch] }
                        u += max(q[ch] * vals.min()!, q[ch] * vals.max()!)
                    }
                }
                return u
            }
            for kvh in 0..<c.kvHeads {
                let group = Array((kvh * c.g)..<((kvh + 1) * c.g))
                for sel in perHead ? group.map({ [$0] }) : [group] {
                    let u = (0..<pages).map { bound(sel, $0) }
                    let top = (0..<pages).sorted { u[$0] > u[$1] || (u[$0] == u[$1] && $0 < $1) }.prefix(select).sorted()
                    let positions = select >= pages || budget.count(visible: visible) >= visible ? Array(0...p) : top.flatMap { Array(($0 * page)..<min(visible, ($0 + 1) * page)) }
                    for h in sel {
                        let o = attention(x, c, p: p, h: h, positions: positions).out
                        for i in 0..<c.d { row[h * c.d + i] = o[i] }
                    }
                }
            }
            return row
        }
    }

    func testQuestPagesEqualBruteForce() throws {
        let c = Geometry(heads: 4, kvHeads: 2, d: 16, length: 61, prefill: 30)
        for (page, budget) in [(4, TokenBudget.tokens(12)), (5, .fraction(1.0 / 4)), (16, .tokens(20))] {
            for perHead in [false, true] {
                for batch in [false, true] {
                    let x = inputs(c)
                    var o = options(budget)
                    o.questPage = page
                    o.gqaPerHead = perHead
                    let m = try QuestAttention(cache: cache(c), options: o, pool: pool)
                    let what = "quest page \(page) budget \(budget) per-head \(perHead) batch \(batch)"
                    assertClose(run(m, c, x, layer: 2, batch: batch), questReference(x, c, budget: budget, page: page, perHead: perHead), what)
                    // The first two layers stay dense.
                    let m0 = try QuestAttention(cache: cache(c), options: o, pool: pool)
                    assertClose(run(m0, c, x, layer: 1, batch: batch), denseReference(x, c), what + " layer 1")
                }
            }
        }
        XCTAssertThrowsError(try { var o = AttentionOptions(); o.questPage = 0; return try QuestAttention(cache: cache(c), options: o, pool: pool) }())
    }

    /// `recordSelection` (the GPU selftest's view of the CPU Quest): recording changes no output,
    /// and the last decode row's recorded positions are the tokens of the float64 top pages by
    /// the group's summed bound, ascending.
    func testQuestRecordsItsDecodeSelection() throws {
        let c = Geometry(heads: 4, kvHeads: 2, d: 16, length: 61, prefill: 30)
        let x = inputs(c)
        var o = options(.tokens(12))
        o.questPage = 4
        let m = try QuestAttention(cache: cache(c), options: o, pool: pool)
        m.recordSelection = true
        let got = run(m, c, x, layer: 2, batch: false)
        assertClose(got, questReference(x, c, budget: .tokens(12), page: 4, perHead: false), "quest recording")
        let p = c.length - 1, L = c.length, P = 4
        for kvh in 0..<c.kvHeads {
            var u: [Double] = []
            for pg in 0..<((L + P - 1) / P) {
                let keys = (pg * P..<min(L, pg * P + P)).map { key(x, c, $0, kvh) }
                var b = 0.0
                for h in (kvh * c.g)..<((kvh + 1) * c.g) {
                    let q = query(x, c, p, h)
                    for ch in 0..<c.d {
                        let lo = keys.map { $0[ch] }.min()!, hi = keys.map { $0[ch] }.max()!
                        b += max(q[ch] * lo, q[ch] * hi)
                    }
                }
                u.append(b)
            }
            let top = (0..<u.count).sorted { u[$0] > u[$1] }.prefix(3).sorted()
            let want = top.flatMap { Array(($0 * P)..<min(L, $0 * P + P)) }.map { Int32($0) }
            XCTAssertEqual(m.lastSelection(kvHead: kvh), want, "KV head \(kvh)")
        }
    }

    // MARK: SparQ

    /// Float64 SparQ: i1 = top-r |q| (group-summed if shared), γ = sqrt(Σ_i1|q|/Σ|q|),
    /// ŝ = softmax(q[i1]·K[i1]·scale/γ), i2 = top-k ŝ (group-summed if shared), α = Σ_i2 ŝ,
    /// y = α·attention(i2) + (1−α)·mean(V[0...p]).
    func sparqReference(_ x: Inputs, _ c: Geometry, budget: TokenBudget, r: Int, perHead: Bool) -> [[Double]] {
        (c.prefill..<c.length).map { p in
            let L = p + 1, k = budget.count(visible: L)
            var row = [Double](repeating: 0, count: c.heads * c.d)
            for kvh in 0..<c.kvHeads {
                let group = Array((kvh * c.g)..<((kvh + 1) * c.g))
                let mean = (0..<c.d).map { i in (0...p).reduce(0.0) { $0 + value(x, c, $1, kvh)[i] } / Double(L) }
                for sel in perHead ? group.map({ [$0] }) : [group] {
                    if k >= L {
                        for h in sel {
                            let o = attention(x, c, p: p, h: h, positions: Array(0...p)).out
                            for i in 0..<c.d { row[h * c.d + i] = o[i] }
                        }
                        continue
                    }
                    let absq = (0..<c.d).map { ch in sel.reduce(0.0) { $0 + abs(query(x, c, p, $1)[ch]) } }
                    let i1 = (0..<c.d).sorted { absq[$0] > absq[$1] || (absq[$0] == absq[$1] && $0 < $1) }.prefix(r)
                    var shat: [Int: [Double]] = [:]
                    var total = [Double](repeating: 0, count: L)
                    for h in sel {
                        let q = query(x, c, p, h)
                        let gamma = (i1.reduce(0.0) { $0 + abs(q[$1]) } / q.reduce(0.0) { $0 + abs($1) }).squareRoot()
                        let s = (0..<L).map { j in i1.reduce(0.0) { $0 + q[$1] * key(x, c, j, kvh)[$1] } * c.scale / gamma }
                        let m = s.max()!
                        let e = s.map { exp($0 - m) }
                        let z = e.reduce(0, +)
                        shat[h] = e.map { $0 / z }
                        for j in 0..<L { total[j] += shat[h]![j] }
                    }
                    let i2 = (0..<L).sorted { total[$0] > total[$1] || (total[$0] == total[$1] && $0 < $1) }.prefix(k).sorted()
                    for h in sel {
                        let alpha = i2.reduce(0.0) { $0 + shat[h]![$1] }
                        let o = attention(x, c, p: p, h: h, positions: Array(i2)).out
                        for i in 0..<c.d { row[h * c.d + i] = alpha * o[i] + (1 - alpha) * mean[i] }
                    }
                }
            }
            return row
        }
    }

    func testSparQEqualsFormula() throws {
        for (heads, kvHeads, d, r) in [(4, 2, 16, 4), (2, 2, 32, 4), (6, 2, 16, 2)] {
            let c = Geometry(heads: heads, kvHeads: kvHeads, d: d, length: 50, prefill: 25)
            for perHead in [false, true] {
                for batch in [false, true] {
                    let x = inputs(c)
                    var o = options(.fraction(1.0 / 8))
                    o.gqaPerHead = perHead
                    let m = try SparQAttention(cache: cache(c, layers: 1), rank: r, options: o, pool: pool)
                    XCTAssertEqual(m.perHead, perHead)
                    assertClose(run(m, c, x, layer: 0, batch: batch),
                                sparqReference(x, c, budget: .fraction(1.0 / 8), r: r, perHead: perHead),
                                "sparq \(heads)/\(kvHeads) d \(d) r \(r) per-head \(perHead) batch \(batch)")
                }
            }
        }
        XCTAssertThrowsError(try SparQAttention(cache: cache(Geometry()), rank: 17, options: AttentionOptions(), pool: pool))
    }

    /// After a truncation the running V mean is rebuilt from the cache: the next step equals a
    /// fresh method fed the same prefix.
    func testSparQTruncateRebuildsMean() throws {
        let c = Geometry(heads: 2, kvHeads: 1, d: 16, length: 40, prefill: 20)
        let x = inputs(c)
        let m = try SparQAttention(cache: cache(c, layers: 1), rank: 4, options: options(.tokens(5)), pool: pool)
        _ = run(m, c, x, layer: 0, batch: false)
        m.truncate(to: 30)
        let out = Tensor(rows: 1, cols: c.heads * c.d)
        m.attend(layer: 0, q: rows(x.q, 30..<31), k: rows(x.k, 30..<31), v: rows(x.v, 30..<31), start: 30, shape: c.shape, out: out)
        let want = sparqReference(x, c, budget: .tokens(5), r: 4, perHead: true)[30 - c.prefill]
        assertClose([Array(UnsafeBufferPointer(start: out.floats, count: c.heads * c.d))], [want], "sparq after truncate")
    }
}
