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
    /// `recall` only: the query positions (within a sample) whose queries are kept, and per layer
    /// the data of each sample so far (nil for sliding-window layers, which Double Sparsity
    /// leaves dense), with the layer's softmax scale.
    let recallPositions: [Int]
    private(set) var recallSamples: [[RecallCalibration.Problem.Sample]?]
    private(set) var recallScale: [Float]
    /// `qk-svd` only: per [layer * kvHeads + kvHead] the moments of the post-RoPE keys and of the
    /// group's post-RoPE queries (each query head's vector counted once).
    private var keyMoments2: [SecondMoments], queryMoments2: [SecondMoments]
    let pool: ThreadPool

    public init(cache: KVCache, heads: Int, statistic: ChannelStatistic, pool: ThreadPool, recallPositions: [Int] = []) {
        dense = DenseAttention(cache: cache, pool: pool)
        self.statistic = statistic
        self.heads = heads
        kvHeads = cache.kvHeads
        headDim = cache.headDim
        sums = Array(repeating: Array(repeating: 0, count: heads * cache.headDim), count: cache.layerCount)
        keySums = sums
        keySquares = keySums
        tokens = Array(repeating: 0, count: cache.layerCount)
        self.recallPositions = recallPositions
        recallSamples = Array(repeating: [], count: statistic == .recall ? cache.layerCount * cache.kvHeads : 0)
        recallScale = Array(repeating: 1, count: cache.layerCount)
        let pairs = statistic == .qkSVD ? cache.layerCount * cache.kvHeads : 0
        keyMoments2 = Array(repeating: SecondMoments(dimension: cache.headDim), count: pairs)
        queryMoments2 = keyMoments2
        self.pool = pool
    }

    /// `qk-svd`: adds the layer's keys and queries, per KV head, to the second moments.
    private func accumulateProjectionMoments(layer: Int, q: Tensor, k: Tensor) {
        let d = headDim, g = heads / kvHeads, n = q.rows
        let buf = UnsafeMutablePointer<Double>.allocate(capacity: max(1, n * g * d))
        defer { buf.deallocate() }
        for kvh in 0..<kvHeads {
            let i = layer * kvHeads + kvh
            for t in 0..<n { let key = k.row(t) + kvh * d; for c in 0..<d { buf[t * d + c] = Double(key[c]) } }
            keyMoments2[i].add(buf, count: n, stride: d, pool: pool)
            // The group's G query heads are contiguous in a row: G·n vectors of d.
            for t in 0..<n { let qr = q.row(t) + kvh * g * d; for x in 0..<(g * d) { buf[t * g * d + x] = Double(qr[x]) } }
            queryMoments2[i].add(buf, count: n * g, stride: d, pool: pool)
        }
    }

    /// `qk-svd`: the label projection of every layer and KV head (`LabelProjection.solve` on the
    /// moments seen, the first `rank` rows), with the label channels' mean and standard
    /// deviation as [layer][KV head][head_dim] (channels past `rank`: 0 and 1).
    public func labelProjection(rank r: Int) -> (projection: LabelProjection, mean: [[[Double]]], std: [[[Double]]]) {
        let d = headDim, layers = tokens.count
        typealias Solved = (key: [Float], query: [Float], captured: [Double], mean: [Double], std: [Double])
        var flat = [Solved?](repeating: nil, count: layers * kvHeads)
        flat.withUnsafeMutableBufferPointer { out in
            pool.parallelFor(layers * kvHeads) { i in
                out[i] = LabelProjection.solve(keyCovariance: keyMoments2[i].covariance,
                                               querySecondMoment: queryMoments2[i].secondMoment,
                                               keyMean: keyMoments2[i].mean, headDim: d, rank: r)
            }
        }
        let per = (0..<layers).map { l in (0..<kvHeads).map { flat[l * kvHeads + $0]! } }
        let pad = { (v: [Double], fill: Double) in v + Array(repeating: fill, count: d - v.count) }
        return (LabelProjection(rank: r, keys: per.map { $0.map(\.key) }, queries: per.map { $0.map(\.query) },
                                captured: per.map { $0.map(\.captured) }),
                per.map { $0.map { pad($0.mean, 0) } },
                // A label channel the keys never move in gets the same floor as a constant key channel.
                per.map { $0.map { s in pad(s.std.map { max($0, max(s.std.max() ?? 0, 1e-20) * 1e-3) }, 1) } })
    }

    /// Keeps the keys (rounded to f16, as the cache holds them) and the recorded queries of each
    /// KV head of a full-attention layer; a forward pass starting at position 0 opens a new sample.
    private func record(layer: Int, q: Tensor, k: Tensor, start: Int, shape: AttentionShape) {
        let d = headDim, g = heads / kvHeads
        recallScale[layer] = shape.scale
        for kvh in 0..<kvHeads {
            let i = layer * kvHeads + kvh
            guard shape.window == 0 else { recallSamples[i] = nil; continue }
            guard var samples = recallSamples[i] else { continue }
            recallSamples[i] = []  // no copy-on-write while appending
            if start == 0 { samples.append(.init(keys: [], positions: [], queries: [])) }
            guard !samples.isEmpty else { recallSamples[i] = samples; continue }
            let last = samples.count - 1
            for t in 0..<k.rows {
                let kr = k.row(t) + kvh * d
                for c in 0..<d { samples[last].keys.append(Float(Float16(kr[c]))) }
            }
            for t in 0..<q.rows where recallPositions.contains(start + t) {
                samples[last].positions.append(start + t)
                let qr = q.row(t) + kvh * g * d
                for x in 0..<(g * d) { samples[last].queries.append(qr[x]) }
            }
            recallSamples[i] = samples
        }
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
                    case .qkCentered, .recall, .qkSVD: for c in 0..<d { a[c] += Double(abs(qh[c])) }
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
        if statistic == .qkSVD { accumulateProjectionMoments(layer: layer, q: q, k: k) }
        if statistic == .recall { record(layer: layer, q: q, k: k, start: start, shape: shape) }
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
                    guard statistic == .qkCentered || statistic == .recall else { return s[i] / n }
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

    /// Channels of every [layer][KV head], most important first (ties: lower channel first);
    /// `recall` ranks here by `qk-centered` (its greedy part is `recallRanking`).
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

    /// `recall`: per layer and KV head, the greedy channels (`RecallCalibration.greedy`, `steps` of
    /// them) followed by the remaining channels in `qk-centered` order, and the greedy recall
    /// curve (empty for sliding-window layers, which keep the `qk-centered` order).
    /// `baseline[layer][kv head]` is the recall of the first head_dim / 16 `qk-centered` channels
    /// on the same data (nil for sliding-window layers).
    public func recallRanking(settings: RecallSettings, pool: ThreadPool)
        -> (ranking: [[[Int]]], curve: [[[Double]]], baseline: [[Double?]]) {
        let base = ranking, g = heads / kvHeads
        let steps = settings.greedyChannels ?? min(headDim, 2 * max(1, headDim / 16))
        var rank = base, curve = base.map { $0.map { _ in [Double]() } }
        var baseline = base.map { $0.map { _ -> Double? in nil } }
        for l in 0..<base.count {
            for kvh in 0..<kvHeads {
                guard let samples = recallSamples[l * kvHeads + kvh], !samples.isEmpty else { continue }
                let problem = RecallCalibration.Problem(headDim: headDim, groupSize: g, scale: recallScale[l], samples: samples)
                let greedy = RecallCalibration.greedy(problem, steps: steps, perHead: settings.perHead,
                                                      options: settings.options, pool: pool)
                let picked = Set(greedy.channels)
                rank[l][kvh] = greedy.channels + base[l][kvh].filter { !picked.contains($0) }
                curve[l][kvh] = greedy.recall
                baseline[l][kvh] = RecallCalibration.meanRecall(problem, channels: Array(base[l][kvh].prefix(max(1, headDim / 16))),
                                                                perHead: settings.perHead, options: settings.options)
                settings.progress(l * kvHeads + kvh + 1, base.count * kvHeads)
            }
        }
        return (rank, curve, baseline)
    }

    /// Runs `model` over `tokens` in samples of `sampleLength` (each from an empty cache) and
    /// returns the channel ranking.
    public static func calibrate(model: LanguageModel, tokens: [Int32], sampleLength: Int, statistic: ChannelStatistic,
                                 pool: ThreadPool, progress: (Int, Int) -> Void = { _, _ in }) throws -> [[[Int]]] {
        try calibrateWithMoments(model: model, tokens: tokens, sampleLength: sampleLength, statistic: statistic,
                                 pool: pool, progress: progress).ranking
    }

    /// What `calibrateWithMoments` found.
    public struct Result {
        /// [layer][KV head]: the channels, most important first (`qk-svd`: 0..<head_dim, the
        /// projected label channels in order).
        public var ranking: [[[Int]]]
        /// [layer][KV head][channel]: mean and standard deviation of each post-RoPE key channel
        /// (`qk-svd`: of each projected label channel).
        public var mean: [[[Double]]], std: [[[Double]]]
        public var recallCurve: [[[Double]]]?, recallBaseline: [[Double?]]?
        /// `qk-svd` only.
        public var projection: LabelProjection?
    }

    /// As `calibrate`, also returning the key channel moments (`keyMoments`), and for `qk-svd`
    /// the label projection with `projectionRank` rows.
    public static func calibrateWithMoments(model: LanguageModel, tokens: [Int32], sampleLength: Int, statistic: ChannelStatistic,
                                            pool: ThreadPool, recall: RecallSettings = RecallSettings(), projectionRank: Int? = nil,
                                            progress: (Int, Int) -> Void = { _, _ in }) throws -> Result {
        let c = model.config
        guard sampleLength >= 2 else { throw ModelError.invalid("calibration sample length must be ≥ 2") }
        let samples = tokens.count / sampleLength
        guard samples >= 1 else {
            throw ModelError.invalid("calibration needs at least \(sampleLength) tokens, the text has \(tokens.count)")
        }
        let cache = KVCache(layers: c.layerCount, kvHeads: c.kvHeadCount, headDim: c.headDim, capacity: sampleLength)
        let positions = statistic == .recall
            ? RecallCalibration.queryPositions(sampleLength: sampleLength, count: recall.queriesPerSample) : []
        let calibrator = ChannelCalibrator(cache: cache, heads: c.headCount, statistic: statistic, pool: pool,
                                           recallPositions: positions)
        let session = Session(model: model, attention: calibrator)
        for s in 0..<samples {
            session.reset()
            _ = try session.evaluate(Array(tokens[(s * sampleLength)..<((s + 1) * sampleLength)]), logits: .none)
            progress(s + 1, samples)
        }
        let m = calibrator.keyMoments
        switch statistic {
        case .recall:
            let r = calibrator.recallRanking(settings: recall, pool: pool)
            return Result(ranking: r.ranking, mean: m.mean, std: m.std, recallCurve: r.curve, recallBaseline: r.baseline)
        case .qkSVD:
            let rank = min(c.headDim, max(1, projectionRank ?? c.headDim / 8))
            let p = calibrator.labelProjection(rank: rank)
            let identity = Array(repeating: Array(repeating: Array(0..<c.headDim), count: c.kvHeadCount), count: c.layerCount)
            return Result(ranking: identity, mean: p.mean, std: p.std, projection: p.projection)
        default:
            return Result(ranking: calibrator.ranking, mean: m.mean, std: m.std)
        }
    }
}

/// Settings of the `recall` statistic: which selection it optimises (the run's --ds-group,
/// --budget, --sinks, --recent), how many queries per sample it keeps, how many channels it
/// picks greedily (nil = 2 × head_dim / 16).
public struct RecallSettings {
    public var perHead = false
    public var options = AttentionOptions()
    public var queriesPerSample = 32
    public var greedyChannels: Int?
    /// Called after each (layer, KV head) with (done, total).
    public var progress: (Int, Int) -> Void = { _, _ in }
    public init() {}
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
