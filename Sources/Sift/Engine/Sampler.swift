#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Sampling settings. `temperature <= 0` is greedy (argmax).
public struct SamplingParams: Sendable, Equatable {
    public var temperature: Float = 0.8
    /// Keep the `topK` most likely tokens (0 = all).
    public var topK: Int = 40
    /// Keep the smallest set of tokens whose probability reaches `topP` (1 = all).
    public var topP: Float = 0.95
    /// Drop tokens less likely than `minP` × the most likely one (0 = none).
    public var minP: Float = 0.05
    public var seed: UInt64 = 0

    public init(temperature: Float = 0.8, topK: Int = 40, topP: Float = 0.95, minP: Float = 0.05, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.seed = seed
    }

    public static let greedy = SamplingParams(temperature: 0)
}

/// A small, fast, seedable generator (xoshiro256**).
public struct Xoshiro256: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var x = seed
        func splitmix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitmix(), splitmix(), splitmix(), splitmix())
    }

    public mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = (s.3 << 45) | (s.3 >> 19)
        return result
    }
}

/// Picks the next token from logits: top-k, then top-p, then min-p (on the untempered
/// distribution), then temperature and a seeded draw — the order llama.cpp's default chain uses.
public struct Sampler {
    public let params: SamplingParams
    private var rng: Xoshiro256

    public init(_ params: SamplingParams) {
        self.params = params
        rng = Xoshiro256(seed: params.seed)
    }

    public static func argmax(_ logits: [Float]) -> Int32 {
        var best = 0
        var bestValue = -Float.infinity
        for (i, v) in logits.enumerated() where v > bestValue {
            best = i
            bestValue = v
        }
        return Int32(best)
    }

    public mutating func sample(_ logits: [Float]) -> Int32 {
        if params.temperature <= 0 { return Sampler.argmax(logits) }
        // Candidates sorted by logit, cut to top-k.
        var ids = Array(0..<logits.count)
        let k = params.topK > 0 ? min(params.topK, ids.count) : ids.count
        if k < ids.count {
            ids = Sampler.topIndices(logits, k)
        } else {
            ids.sort { logits[$0] > logits[$1] }
        }
        return sample(candidates: ids.map { Int32($0) }, logits: ids.map { logits[$0] })
    }

    /// The draw after the top-k cut: `ids` are the candidates sorted by logit, largest first
    /// (ties: lower id first), `logits` their logits — all of the vocabulary, or the top k
    /// from the GPU (`CUDASampling.topK`). Applies top-p, min-p, temperature and the seeded draw.
    public mutating func sample(candidates ids: [Int32], logits: [Float]) -> Int32 {
        precondition(!ids.isEmpty && ids.count == logits.count)
        if params.temperature <= 0 { return ids[0] }
        // Probabilities of the candidates (untempered) for top-p and min-p.
        let maxLogit = logits[0]
        var probs = logits.map { expf($0 - maxLogit) }
        let total = probs.reduce(0, +)
        for i in probs.indices { probs[i] /= total }
        var keep = ids.count
        if params.topP < 1 {
            var acc: Float = 0
            for i in 0..<ids.count {
                acc += probs[i]
                if acc >= params.topP { keep = i + 1; break }
            }
        }
        if params.minP > 0 {
            let threshold = probs[0] * params.minP
            var n = 1
            while n < keep && probs[n] >= threshold { n += 1 }
            keep = n
        }
        // Temperature on the survivors, then draw.
        let inv = 1 / params.temperature
        var weights = (0..<keep).map { expf((logits[$0] - maxLogit) * inv) }
        let sum = weights.reduce(0, +)
        for i in weights.indices { weights[i] /= sum }
        let u = Float(Double(rng.next() >> 11) * 0x1.0p-53)
        var acc: Float = 0
        for i in 0..<keep {
            acc += weights[i]
            if u < acc { return ids[i] }
        }
        return ids[keep - 1]
    }

    /// Indices of the k largest values, largest first; among equal values the lower index
    /// ranks first and is the one kept at the cut (as the GPU's `sift_topk_rows`).
    static func topIndices(_ v: [Float], _ k: Int) -> [Int] {
        // A min-heap of size k under the order (value, then higher index = smaller), so the
        // root is the element to evict: among tied minima, the highest index.
        var heap: [(Float, Int)] = []
        heap.reserveCapacity(k)
        @inline(__always) func less(_ a: (Float, Int), _ b: (Float, Int)) -> Bool {
            a.0 < b.0 || (a.0 == b.0 && a.1 > b.1)
        }
        func siftDown(_ i0: Int) {
            var i = i0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count && less(heap[l], heap[m]) { m = l }
                if r < heap.count && less(heap[r], heap[m]) { m = r }
                if m == i { return }
                heap.swapAt(i, m)
                i = m
            }
        }
        for (i, x) in v.enumerated() {
            if heap.count < k {
                heap.append((x, i))
                var c = heap.count - 1
                while c > 0 {
                    let p = (c - 1) / 2
                    if !less(heap[c], heap[p]) { break }
                    heap.swapAt(p, c)
                    c = p
                }
            } else if x > heap[0].0 {
                // (an equal value has a higher index than every element kept: never replaces)
                heap[0] = (x, i)
                siftDown(0)
            }
        }
        return heap.sorted { $0.0 > $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }.map { $0.1 }
    }
}
