#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `sift calibrate --statistic recall`: chooses each (layer, KV head)'s label channels greedily
/// so that the token selection they induce keeps as much of the exact attention mass as possible
/// on calibration data (docs/ds-recall-calibration.md).
///
/// For a query at position p of a sample (visible keys 0...p, n = p + 1):
///
///     k        = budget.count(visible: n)                 (1/16 by default, as decode)
///     (s, w)   = options.pinned(visible: n, budget: k, defaultRecent: 64)   always kept
///     ranked   = the tokens s ..< n − w,  k' = k − s − w of them are picked
///     ŝ_j      = a[C] · K_j[C]          a = q_h (per-head) or Σ_{h∈group} q_h (shared)
///     recall   = Σ_{j pinned} P_j + Σ_{j ∈ top-k'(ŝ) of ranked} P_j
///
/// with P_j = softmax_j(scale · q_h·K_j) the exact attention of head h (per-head), or its mean
/// over the group's heads (shared: one ranking serves the group, recall averaged over its heads).
/// Ties in ŝ go to the lower position, as `TopK.select`. The greedy step adds the channel that
/// maximises the mean recall over all (query, head) units; running partial scores make a
/// candidate cost one multiply-add per (unit, ranked key) plus a quickselect.
public enum RecallCalibration {
    /// The calibration data of one (layer, KV head): per sample the post-RoPE keys of every
    /// position (`length × headDim`, row-major) and some query positions with the group's queries.
    public struct Problem: Sendable {
        public struct Sample: Sendable {
            /// keys[t * headDim + c], t = position in the sample.
            public var keys: [Float]
            /// Query positions (0-based within the sample).
            public var positions: [Int]
            /// queries[i * groupSize * headDim + h * headDim + c]: the group's queries at positions[i].
            public var queries: [Float]
            public init(keys: [Float], positions: [Int], queries: [Float]) {
                self.keys = keys
                self.positions = positions
                self.queries = queries
            }
        }
        public var headDim: Int
        public var groupSize: Int
        public var scale: Float
        public var samples: [Sample]
        public init(headDim: Int, groupSize: Int, scale: Float, samples: [Sample]) {
            self.headDim = headDim
            self.groupSize = groupSize
            self.scale = scale
            self.samples = samples
        }
    }

    /// The greedy result: chosen channels in order and the mean recall after each was added.
    public struct Greedy: Sendable, Equatable {
        public var channels: [Int]
        public var recall: [Double]
    }

    /// One ranking problem: a query (and head, per-head) with its ranked keys.
    struct Unit {
        var sample: Int
        var first: Int          // first ranked position (= sinks)
        var count: Int          // ranked positions
        var pick: Int           // k' (0 < pick < count)
        var coef: [Float]       // the ranking query over all channels
        var probs: [Float]      // exact attention of the ranked positions
        var scores: [Float]     // running Σ_{c∈C} coef[c] · K_j[c]
    }

    /// Builds the ranking units and the summed recall of the units whose recall no channel can change.
    static func units(_ p: Problem, perHead: Bool, options: AttentionOptions) -> (units: [Unit], constant: Double, total: Int) {
        let d = p.headDim, g = p.groupSize
        var units = [Unit](), constant = 0.0, total = 0
        for (si, s) in p.samples.enumerated() {
            for (qi, pos) in s.positions.enumerated() {
                let n = pos + 1
                let k = options.budget.count(visible: n)
                let (sk, w) = options.pinned(visible: n, budget: k, defaultRecent: AttentionOptions.doubleSparsityRecent)
                let count = n - w - sk, pick = k - sk - w
                // Exact softmax of every head of the group, in float64.
                var probs = [[Double]]()
                s.queries.withUnsafeBufferPointer { qb in
                    s.keys.withUnsafeBufferPointer { kb in
                        for h in 0..<g {
                            let q = qb.baseAddress! + qi * g * d + h * d
                            var logits = [Double](repeating: 0, count: n)
                            var m = -Double.infinity
                            for j in 0..<n {
                                let kr = kb.baseAddress! + j * d
                                var dot = 0.0
                                for c in 0..<d { dot += Double(q[c]) * Double(kr[c]) }
                                logits[j] = dot * Double(p.scale)
                                m = max(m, logits[j])
                            }
                            var z = 0.0
                            for j in 0..<n { logits[j] = exp(logits[j] - m); z += logits[j] }
                            probs.append(logits.map { $0 / z })
                        }
                    }
                }
                func pinnedMass(_ pr: [Double]) -> Double {
                    var mass = 0.0
                    for j in 0..<sk { mass += pr[j] }
                    for j in (n - w)..<n { mass += pr[j] }
                    return mass
                }
                let sets: [(coef: [Float], probs: [Double])]
                if perHead {
                    sets = (0..<g).map { h in (Array(s.queries[(qi * g * d + h * d)..<(qi * g * d + (h + 1) * d)]), probs[h]) }
                } else {
                    var a = [Float](repeating: 0, count: d)
                    for h in 0..<g { for c in 0..<d { a[c] += s.queries[qi * g * d + h * d + c] } }
                    var mean = [Double](repeating: 0, count: n)
                    for h in 0..<g { for j in 0..<n { mean[j] += probs[h][j] / Double(g) } }
                    sets = [(a, mean)]
                }
                for (coef, pr) in sets {
                    total += 1
                    let fixed = pinnedMass(pr)
                    if pick <= 0 || pick >= count {
                        // Nothing to rank: the pinned tokens, plus every ranked one if all fit.
                        var mass = fixed
                        if pick >= count && count > 0 { for j in sk..<(sk + count) { mass += pr[j] } }
                        constant += mass
                        continue
                    }
                    constant += fixed
                    units.append(Unit(sample: si, first: sk, count: count, pick: pick, coef: coef,
                                      probs: (sk..<(sk + count)).map { Float(pr[$0]) },
                                      scores: [Float](repeating: 0, count: count)))
                }
            }
        }
        return (units, constant, total)
    }

    /// Mass of the top-`pick` of the scores base[j] + a · keys[j], j < n (ties to the lower j),
    /// under `probs`: one pass keeping a min-heap of the `pick` best so far (most candidates are
    /// rejected by one comparison with its root). `heapScore`/`heapIndex` hold `pick` entries.
    @inline(__always)
    static func topMass(base: UnsafePointer<Float>, a: Float, keys: UnsafePointer<Float>, probs: UnsafePointer<Float>,
                        n: Int, pick: Int, heapScore hs: UnsafeMutablePointer<Float>, heapIndex hi: UnsafeMutablePointer<Int32>) -> Double {
        // Root = the worst kept: lowest score, and among equal scores the highest index.
        @inline(__always) func worse(_ x: Int, _ y: Int) -> Bool { hs[x] < hs[y] || (hs[x] == hs[y] && hi[x] > hi[y]) }
        @inline(__always) func siftDown(_ start: Int, _ size: Int) {
            var i = start
            while true {
                let l = 2 * i + 1
                if l >= size { return }
                var m = l
                if l + 1 < size && worse(l + 1, l) { m = l + 1 }
                if !worse(m, i) { return }
                let ts = hs[i]; hs[i] = hs[m]; hs[m] = ts
                let ti = hi[i]; hi[i] = hi[m]; hi[m] = ti
                i = m
            }
        }
        for j in 0..<pick { hs[j] = base[j] + a * keys[j]; hi[j] = Int32(j) }
        var i = pick / 2 - 1
        while i >= 0 { siftDown(i, pick); i -= 1 }
        var root = hs[0]
        for j in pick..<n {
            let x = base[j] + a * keys[j]
            // A later position enters only if strictly better (an equal score loses to a lower index).
            if x > root {
                hs[0] = x
                hi[0] = Int32(j)
                siftDown(0, pick)
                root = hs[0]
            }
        }
        var mass = 0.0
        for j in 0..<pick { mass += Double(probs[Int(hi[j])]) }
        return mass
    }

    /// Greedy forward selection of `steps` channels (see the type's description); the pool runs
    /// the candidates of a step in parallel.
    public static func greedy(_ p: Problem, steps: Int, perHead: Bool, options: AttentionOptions, pool: ThreadPool) -> Greedy {
        let d = p.headDim
        let (units, constant, total) = Self.units(p, perHead: perHead, options: options)
        var result = Greedy(channels: [], recall: [])
        guard total > 0 else { return result }
        // Flat storage (no reference counting in the hot loop): keys transposed per sample
        // [channel][position]; per unit its query coefficients, exact probabilities and running scores.
        let lengths = p.samples.map { $0.keys.count / d }
        var keyOffset = [Int](), ko = 0
        for l in lengths { keyOffset.append(ko); ko += l * d }
        var kt = [Float](repeating: 0, count: max(1, ko))
        for (si, s) in p.samples.enumerated() {
            let len = lengths[si], base = keyOffset[si]
            for j in 0..<len { for c in 0..<d { kt[base + c * len + j] = s.keys[j * d + c] } }
        }
        let u = units.count
        var offset = [Int](), col = [Int](), count = [Int](), pick = [Int](), total32 = 0
        for x in units {
            offset.append(total32)
            total32 += x.count
            count.append(x.count)
            pick.append(x.pick)
            col.append(keyOffset[x.sample] + x.first)   // + c * length: the ranked keys of channel c
        }
        let unitLength = units.map { lengths[$0.sample] }
        var coef = [Float](repeating: 0, count: max(1, u * d))
        var probs = [Float](repeating: 0, count: max(1, total32)), scores = probs
        for (i, x) in units.enumerated() {
            for c in 0..<d { coef[i * d + c] = x.coef[c] }
            for j in 0..<x.count { probs[offset[i] + j] = x.probs[j] }
        }
        let maxPick = pick.max() ?? 1
        var chosen = [Bool](repeating: false, count: d)
        for _ in 0..<min(steps, d) {
            var gain = [Double](repeating: -1, count: d)
            kt.withUnsafeBufferPointer { ktb in
            coef.withUnsafeBufferPointer { cb in
            probs.withUnsafeBufferPointer { pb in
            scores.withUnsafeBufferPointer { sb in
            gain.withUnsafeMutableBufferPointer { gb in
            chosen.withUnsafeBufferPointer { ch in
            offset.withUnsafeBufferPointer { ob in
            col.withUnsafeBufferPointer { colb in
            count.withUnsafeBufferPointer { nb in
            pick.withUnsafeBufferPointer { kb in
            unitLength.withUnsafeBufferPointer { lb in
                let keys = ktb.baseAddress!, co = cb.baseAddress!, pr = pb.baseAddress!, sc = sb.baseAddress!
                let gains = gb.baseAddress!
                pool.parallelFor(d) { c in
                    guard !ch[c] else { return }
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: maxPick) { hs in
                        withUnsafeTemporaryAllocation(of: Int32.self, capacity: maxPick) { hi in
                            var sum = 0.0
                            for i in 0..<u {
                                sum += topMass(base: sc + ob[i], a: co[i * d + c], keys: keys + colb[i] + c * lb[i],
                                               probs: pr + ob[i], n: nb[i], pick: kb[i],
                                               heapScore: hs.baseAddress!, heapIndex: hi.baseAddress!)
                            }
                            gains[c] = sum
                        }
                    }
                }
            } } } } } } } } } } }
            var best = -1
            for c in 0..<d where !chosen[c] && (best < 0 || gain[c] > gain[best]) { best = c }
            chosen[best] = true
            result.channels.append(best)
            result.recall.append((gain[best] + constant) / Double(total))
            // Fold the chosen channel into the running scores.
            for i in 0..<u {
                let a = coef[i * d + best], kc = col[i] + best * unitLength[i], o = offset[i]
                for j in 0..<count[i] { scores[o + j] += a * kt[kc + j] }
            }
        }
        return result
    }

    /// Mean recall of the selection induced by `channels` (the same definition as `greedy`).
    public static func meanRecall(_ p: Problem, channels: [Int], perHead: Bool, options: AttentionOptions) -> Double {
        let d = p.headDim
        let (units, constant, total) = Self.units(p, perHead: perHead, options: options)
        guard total > 0 else { return 1 }
        var sum = constant
        for u in units {
            var s = [Float](repeating: 0, count: u.count)
            let keys = p.samples[u.sample].keys
            for c in channels {
                for j in 0..<u.count { s[j] += u.coef[c] * keys[(u.first + j) * d + c] }
            }
            let zero = [Float](repeating: 0, count: u.count)
            var hs = [Float](repeating: 0, count: u.pick), hi = [Int32](repeating: 0, count: u.pick)
            sum += topMass(base: s, a: 0, keys: zero, probs: u.probs, n: u.count, pick: u.pick, heapScore: &hs, heapIndex: &hi)
        }
        return sum / Double(total)
    }

    /// Query positions recorded per sample: `count` positions spread evenly over the second half
    /// of a sample of `length` tokens (fewer when the half is shorter).
    public static func queryPositions(sampleLength length: Int, count: Int) -> [Int] {
        let half = length / 2, span = length - half
        let n = max(1, min(count, span))
        return (0..<n).map { i in half + (2 * i + 1) * span / (2 * n) }
    }
}
