#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Offline channel calibration for Double Sparsity: runs the model densely over calibration
/// text and, per layer and query head, accumulates a per-channel statistic of the post-RoPE
/// queries and keys (see `ChannelStatistic`); channels are then ranked per KV head by the sum
/// of the statistic over the group's query heads.
public final class ChannelCalibrator: AttentionMethod, @unchecked Sendable {
    public let name = "calibrate"
    public var cache: KVCache { dense.cache }
    let dense: DenseAttention
    let statistic: ChannelStatistic
    /// [layer][query head * headDim + channel] running sums, and the token count per layer.
    private(set) var sums: [[Double]]
    /// Σk_c and Σk_c² per [layer][query head * headDim + channel] (every statistic: `qkCentered`
    /// ranks by them, and the key moments normalise 4-bit labels, `DoubleSparsityConfig.keyMean`).
    private(set) var keySums: [[Double]], keySquares: [[Double]]
    private(set) var tokens: [Int]
    let heads: Int, kvHeads: Int, headDim: Int

    public init(cache: KVCache, heads: Int, statistic: ChannelStatistic, pool: ThreadPool) {
        dense = DenseAttention(cache: cache, pool: pool)
        self.statistic = statistic
        self.heads = heads
        kvHeads = cache.kvHeads
        headDim = cache.headDim
        sums = Array(repeating: Array(repeating: 0, count: heads * cache.headDim), count: cache.layerCount)
        keySums = sums
        keySquares = keySums
        tokens = Array(repeating: 0, count: cache.layerCount)
    }

    public func attend(layer: Int, q: Tensor, k: Tensor, v: Tensor, start: Int, shape: AttentionShape, out: Tensor) {
        let d = headDim, g = heads / kvHeads
        sums[layer].withUnsafeMutableBufferPointer { acc in
            for t in 0..<q.rows {
                let qr = q.row(t), kr = k.row(t)
                for h in 0..<heads {
                    let qh = qr + h * d, kh = kr + (h / g) * d
                    let a = acc.baseAddress! + h * d
                    switch statistic {
                    case .qk: for c in 0..<d { a[c] += Double(abs(qh[c] * kh[c])) }
                    case .q: for c in 0..<d { a[c] += Double(abs(qh[c])) }
                    case .k: for c in 0..<d { a[c] += Double(abs(kh[c])) }
                    case .qkCentered: for c in 0..<d { a[c] += Double(abs(qh[c])) }
                    }
                }
            }
        }
        for t in 0..<k.rows {
            let kr = k.row(t)
            for h in 0..<heads {
                let kh = kr + (h / g) * d
                for c in 0..<d {
                    let x = Double(kh[c])
                    keySums[layer][h * d + c] += x
                    keySquares[layer][h * d + c] += x * x
                }
            }
        }
        tokens[layer] += q.rows
        dense.attend(layer: layer, q: q, k: k, v: v, start: start, shape: shape, out: out)
    }

    public func truncate(to n: Int) { dense.truncate(to: n) }

    /// Mean statistic per [layer][query head][channel].
    public var means: [[[Double]]] {
        sums.enumerated().map { l, s in
            let n = Double(max(1, tokens[l]))
            return (0..<heads).map { h in
                (0..<headDim).map { c in
                    let i = h * headDim + c
                    guard statistic == .qkCentered else { return s[i] / n }
                    // E|q_c| · σ(k_c): how much channel c moves the score between tokens.
                    let mean = keySums[l][i] / n
                    return s[i] / n * max(0, keySquares[l][i] / n - mean * mean).squareRoot()
                }
            }
        }
    }

    /// Mean and standard deviation of every post-RoPE key channel, per [layer][KV head][channel]
    /// (over all calibration tokens; the key of a KV head is the same for its query heads).
    public var keyMoments: (mean: [[[Double]]], std: [[[Double]]]) {
        let g = heads / kvHeads
        var mean = [[[Double]]](), std = [[[Double]]]()
        for l in 0..<keySums.count {
            let n = Double(max(1, tokens[l]))
            var ml = [[Double]](), sl = [[Double]]()
            for kvh in 0..<kvHeads {
                let base = kvh * g * headDim
                let m = (0..<headDim).map { keySums[l][base + $0] / n }
                ml.append(m)
                sl.append((0..<headDim).map { max(0, keySquares[l][base + $0] / n - m[$0] * m[$0]).squareRoot() })
            }
            mean.append(ml)
            std.append(sl)
        }
        return (mean, std)
    }

    /// Channels of every [layer][KV head], most important first (ties: lower channel first).
    public var ranking: [[[Int]]] {
        let g = heads / kvHeads
        return means.map { layer in
            (0..<kvHeads).map { kvh in
                var score = [Double](repeating: 0, count: headDim)
                for h in (kvh * g)..<((kvh + 1) * g) { for c in 0..<headDim { score[c] += layer[h][c] } }
                return (0..<headDim).sorted { score[$0] > score[$1] || (score[$0] == score[$1] && $0 < $1) }
            }
        }
    }

    /// Runs `model` over `tokens` in samples of `sampleLength` (each from an empty cache) and
    /// returns the channel ranking.
    public static func calibrate(model: LanguageModel, tokens: [Int32], sampleLength: Int, statistic: ChannelStatistic,
                                 pool: ThreadPool, progress: (Int, Int) -> Void = { _, _ in }) throws -> [[[Int]]] {
        try calibrateWithMoments(model: model, tokens: tokens, sampleLength: sampleLength, statistic: statistic,
                                 pool: pool, progress: progress).ranking
    }

    /// As `calibrate`, also returning the key channel moments (`keyMoments`).
    public static func calibrateWithMoments(model: LanguageModel, tokens: [Int32], sampleLength: Int, statistic: ChannelStatistic,
                                            pool: ThreadPool, progress: (Int, Int) -> Void = { _, _ in }) throws
        -> (ranking: [[[Int]]], mean: [[[Double]]], std: [[[Double]]]) {
        let c = model.config
        guard sampleLength >= 2 else { throw ModelError.invalid("calibration sample length must be ≥ 2") }
        let samples = tokens.count / sampleLength
        guard samples >= 1 else {
            throw ModelError.invalid("calibration needs at least \(sampleLength) tokens, the text has \(tokens.count)")
        }
        let cache = KVCache(layers: c.layerCount, kvHeads: c.kvHeadCount, headDim: c.headDim, capacity: sampleLength)
        let calibrator = ChannelCalibrator(cache: cache, heads: c.headCount, statistic: statistic, pool: pool)
        let session = Session(model: model, attention: calibrator)
        for s in 0..<samples {
            session.reset()
            _ = try session.evaluate(Array(tokens[(s * sampleLength)..<((s + 1) * sampleLength)]), logits: .none)
            progress(s + 1, samples)
        }
        let m = calibrator.keyMoments
        return (calibrator.ranking, m.mean, m.std)
    }
}

/// Peak resident memory of this process so far (VmHWM), in bytes; 0 where unknown.
public func peakResidentBytes() -> Int {
    guard let text = try? readStreamFile("/proc/self/status") else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let digits = line.filter { $0.isNumber }
        return (Int(String(digits)) ?? 0) * 1024
    }
    return 0
}
