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
                for h in 0..<g {
                    let q = qi * g * d + h * d
                    var logits = [Double](repeating: 0, count: n)
                    var m = -Double.infinity
                    for j in 0..<n {
                        var dot = 0.0
                        for c in 0..<d { dot += Double(s.queries[q + c]) * Double(s.keys[j * d + c]) }
                        logits[j] = dot * Double(p.scale)
                        m = max(m, logits[j])
                    }
                    var z = 0.0
                    for j in 0..<n { logits[j] = exp(logits[j] - m); z += logits[j] }
                    probs.append(logits.map { $0 / z })
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

    /// Mass of the top-`pick` of `scores[0..<n]` (ties to the lower index) under `probs`.
    /// `scratch` (n floats) is overwritten.
    @inline(__always)
    static func topMass(scores: UnsafePointer<Float>, probs: UnsafePointer<Float>, n: Int, pick: Int,
                        scratch: UnsafeMutablePointer<Float>) -> Double {
        scratch.update(from: scores, count: n)
        let t = kthLargestInPlace(scratch, n, pick)
        var mass = 0.0, above = 0, equal = 0, equalMass = 0.0
        for j in 0..<n {
            let s = scores[j]
            if s > t { mass += Double(probs[j]); above += 1 }
            else if s == t { equal += 1; equalMass += Double(probs[j]) }
        }
        var ties = pick - above
        if ties == equal { return mass + equalMass }
        for j in 0..<n where ties > 0 && scores[j] == t {
            mass += Double(probs[j])
            ties -= 1
        }
        return mass
    }

    /// k-th largest of a[0..<n] (1 ≤ k ≤ n); reorders `a`.
    static func kthLargestInPlace(_ a: UnsafeMutablePointer<Float>, _ n: Int, _ k: Int) -> Float {
        var lo = 0, hi = n - 1
        let target = k - 1
        var seed: UInt64 = 0x2545_F491_4F6C_DD1D
        while lo < hi {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let pivot = a[lo + Int((seed >> 33) % UInt64(hi - lo + 1))]
            var lt = lo, i = lo, gt = hi
            while i <= gt {
                let x = a[i]
                if x > pivot { a[i] = a[lt]; a[lt] = x; lt += 1; i += 1 }
                else if x < pivot { a[i] = a[gt]; a[gt] = x; gt -= 1 }
                else { i += 1 }
            }
            if target < lt { hi = lt - 1 }
            else if target > gt { lo = gt + 1 }
            else { return pivot }
        }
        return a[lo]
    }

    /// Keys of one sample transposed to [channel][position].
    static func transposed(_ p: Problem) -> [[Float]] {
        let d = p.headDim
        return p.samples.map { s in
            let len = s.keys.count / d
            var t = [Float](repeating: 0, count: d * len)
            for j in 0..<len { for c in 0..<d { t[c * len + j] = s.keys[j * d + c] } }
            return t
        }
    }

    /// Greedy forward selection of `steps` channels (see the type's description); the pool runs
    /// the candidates of a step in parallel.
    public static func greedy(_ p: Problem, steps: Int, perHead: Bool, options: AttentionOptions, pool: ThreadPool) -> Greedy {
        let d = p.headDim
        var (units, constant, total) = Self.units(p, perHead: perHead, options: options)
        let kt = transposed(p)
        let lengths = p.samples.map { $0.keys.count / d }
        let maxCount = units.map(\.count).max() ?? 1
        var chosen = [Bool](repeating: false, count: d)
        var result = Greedy(channels: [], recall: [])
        guard total > 0 else { return result }
        for _ in 0..<min(steps, d) {
            var gain = [Double](repeating: -1, count: d)
            gain.withUnsafeMutableBufferPointer { gainBuf in
                let gains = gainBuf.baseAddress!
                pool.parallelFor(d) { c in
                    guard !chosen[c] else { return }
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * maxCount) { buf in
                        let s = buf.baseAddress!, scratch = s + maxCount
                        var sum = 0.0
                        for u in units {
                            let a = u.coef[c]
                            kt[u.sample].withUnsafeBufferPointer { keys in
                                let col = keys.baseAddress! + c * lengths[u.sample] + u.first
                                u.scores.withUnsafeBufferPointer { base in
                                    for j in 0..<u.count { s[j] = base[j] + a * col[j] }
                                }
                            }
                            sum += u.probs.withUnsafeBufferPointer {
                                topMass(scores: s, probs: $0.baseAddress!, n: u.count, pick: u.pick, scratch: scratch)
                            }
                        }
                        gains[c] = sum
                    }
                }
            }
            var best = -1
            for c in 0..<d where !chosen[c] && (best < 0 || gain[c] > gain[best]) { best = c }
            chosen[best] = true
            result.channels.append(best)
            result.recall.append((gain[best] + constant) / Double(total))
            // Fold the chosen channel into the running scores.
            units.withUnsafeMutableBufferPointer { ub in
                pool.parallelRanges(ub.count, grain: 16) { range in
                    for i in range {
                        let a = ub[i].coef[best], first = ub[i].first, len = lengths[ub[i].sample]
                        kt[ub[i].sample].withUnsafeBufferPointer { keys in
                            let col = keys.baseAddress! + best * len + first
                            ub[i].scores.withUnsafeMutableBufferPointer { s in
                                for j in 0..<s.count { s[j] += a * col[j] }
                            }
                        }
                    }
                }
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
            var s = [Float](repeating: 0, count: u.count), scratch = s
            let keys = p.samples[u.sample].keys
            for c in channels {
                for j in 0..<u.count { s[j] += u.coef[c] * keys[(u.first + j) * d + c] }
            }
            sum += s.withUnsafeBufferPointer { sb in
                u.probs.withUnsafeBufferPointer { pb in
                    scratch.withUnsafeMutableBufferPointer { tb in
                        topMass(scores: sb.baseAddress!, probs: pb.baseAddress!, n: u.count, pick: u.pick, scratch: tb.baseAddress!)
                    }
                }
            }
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
