#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Double Sparsity (Yang et al., arXiv 2408.07092): token sparsity found through channel
/// sparsity. For a query at position p over the L visible tokens of one KV head:
///
///     ŝ_j = Σ_{h ∈ group} q_h[C] · label_j          label_j = K_j[C], the r calibrated channels C
///     S   = top-k_j ŝ_j                              k = budget(L), e.g. L/16
///     o_h = softmax_{j ∈ S}(q_h · K_j · scale) · V_S  exact, full head_dim, selected rows only
///
/// GQA: the G query heads of a group share one channel list, one label cache and one selection
/// (their approximate scores are summed: Σ_h q_h[C]·label_j = (Σ_h q_h[C])·label_j, one r-dot per
/// token). This keeps the bytes read at L·r + 2·k·d per KV head, the method's limit; per-head
/// selections would read up to G× more rows.
///
/// With a `qk-svd` calibration the labels are projected instead (`LabelProjection`):
/// label_j = B K_j and the query side is A Σ_h q_h, r numbers each as with channels.
///
/// Prefill stores keys, values and labels and attends densely, unless `sparsePrefill` is set
/// (sparse-aware perplexity): then every row attends as a decode step at its position would.
public final class DoubleSparseAttention: SparseAwareAttention, @unchecked Sendable {
    public let name = "double-sparse"
    public let cache: KVCache
    public let labels: LabelCache
    public let options: AttentionOptions
    /// Label channels per layer and KV head (the first r of the calibrated order).
    let channels: [[[Int32]]]
    /// Projected labels: per layer * kvHeads + kvHead, the first r rows of B (keys) and A
    /// (queries), r × head_dim floats each (nil: labels are key channels).
    let keyProjection: [[Float]]?, queryProjection: [[Float]]?
    let pool: ThreadPool
    public let recall: RecallMeter?
    public var sparsePrefill: Bool
    /// `--ds-residual`: Σ v_j over positions 0..<summed[layer·kvHeads + kvHead] of each sparse
    /// layer, `[layer][kvHead][headDim]`.
    var valueTotals: [Float], summed: [Int]

    public init(cache: KVCache, config: DoubleSparsityConfig, channels r: Int, options: AttentionOptions, pool: ThreadPool) throws {
        guard r >= 1 && r <= cache.headDim else {
            throw ModelError.invalid("--ds-channels must be in 1...\(cache.headDim), got \(r)")
        }
        self.cache = cache
        self.options = options
        self.pool = pool
        channels = config.channels.map { $0.map { $0.prefix(r).map { Int32($0) } } }
        if let p = config.labelProjection {
            guard r <= p.rank else {
                throw ModelError.invalid("--ds-channels \(r) exceeds the calibration's projected label channels (label_projection.rank \(p.rank)): re-run `sift calibrate --statistic qk-svd --rank \(r)`")
            }
            let d = cache.headDim
            keyProjection = p.keys.flatMap { $0.map { Array($0.prefix(r * d)) } }
            queryProjection = p.queries.flatMap { $0.map { Array($0.prefix(r * d)) } }
        } else {
            keyProjection = nil
            queryProjection = nil
        }
        guard options.dsLabelBits == 16 || options.dsLabelBits == 4 else {
            throw ModelError.invalid("--ds-label-bits must be 16 or 4, got \(options.dsLabelBits)")
        }
        let norm = config.labelNormalization(channels: r)
        labels = LabelCache(layers: cache.layerCount, kvHeads: cache.kvHeads, channels: r, capacity: cache.capacity,
                            bits: options.dsLabelBits, mean: norm.mean, std: norm.std, scale: try config.labelScale(options))
        sparsePrefill = options.sparsePrefill
        valueTotals = [Float](repeating: 0, count: options.dsResidual == true ? cache.layerCount * cache.kvHeads * cache.headDim : 0)
        summed = [Int](repeating: 0, count: cache.layerCount * cache.kvHeads)
        recall = options.measureRecall ? RecallMeter(layers: cache.layerCount) : nil
    }

    public func append(layer: Int, k: Tensor, v: Tensor, start: Int) {
        cache.store(layer: layer, k: k, v: v, start: start)
        guard let keyProjection else {
            labels.store(layer: layer, k: k, start: start, headDim: cache.headDim, select: channels[layer])
            return
        }
        let d = cache.headDim, r = labels.channels
        var scratch = [Float](repeating: 0, count: r)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: r) { z in
            for h in 0..<cache.kvHeads {
                keyProjection[layer * cache.kvHeads + h].withUnsafeBufferPointer { b in
                    for t in 0..<k.rows {
                        let key = k.row(t) + h * d
                        for c in 0..<r { z[c] = Kernels.dot(b.baseAddress! + c * d, key, d) }
                        labels.store(layer: layer, head: h, position: start + t, values: z.baseAddress!, scratch: &scratch)
                    }
                }
            }
        }
    }

    /// The query side of the labels for `heads` query heads summed: q[C] (channels) or A·q
    /// (projected labels), r floats.
    @inline(__always)
    func labelQuery(layer: Int, kvHead: Int, q: UnsafePointer<Float>, heads: Int, headDim: Int,
                    into qs: UnsafeMutablePointer<Float>) {
        let r = labels.channels
        if let queryProjection {
            withUnsafeTemporaryAllocation(of: Float.self, capacity: headDim) { sum in
                for c in 0..<headDim {
                    var s: Float = 0
                    for h in 0..<heads { s += q[h * headDim + c] }
                    sum[c] = s
                }
                queryProjection[layer * cache.kvHeads + kvHead].withUnsafeBufferPointer { a in
                    for c in 0..<r { qs[c] = Kernels.dot(a.baseAddress! + c * headDim, sum.baseAddress!, headDim) }
                }
            }
            return
        }
        let ch = channels[layer][kvHead]
        for c in 0..<r {
            var s: Float = 0
            for h in 0..<heads { s += q[h * headDim + Int(ch[c])] }
            qs[c] = s
        }
    }

    public func attend(layer: Int, q: Tensor, k: Tensor, v: Tensor, start: Int, shape: AttentionShape, out: Tensor) {
        append(layer: layer, k: k, v: v, start: start)
        out.rows = q.rows
        // Sliding-window layers (Gemma 3's local layers) stay dense: their window already
        // bounds what they read, whatever the context length.
        let sparseRows = (q.rows == 1 || sparsePrefill) && shape.window == 0
        // `--ds-residual`: Σ v over each row's visible tokens, [row][kvHead][headDim] (empty when off).
        let valueSum = options.dsResidual == true && sparseRows ? valueSums(layer: layer, start: start, rows: q.rows) : []
        shape.forEachGroupRow(q: q, out: out, start: start, budget: options.budget, pool: pool) { r in
            let kvh = r.kvh, first = r.first, visible = r.visible, budget = r.budget, qg = r.q, og = r.out
            if r.isDense(sparse: sparseRows, denseBelow: options.denseBelow) {
                r.attendDensely(cache: cache, layer: layer, shape: shape)
                recall?.add(layer: layer, kept: Double(shape.groupSize), total: Double(shape.groupSize))
                return
            }
            // Shared: one selection for the whole group (summed queries). Per head: each query
            // head of the group selects and attends on its own.
            let selections = options.dsPerHead ? shape.groupSize : 1
            let heads = options.dsPerHead ? 1 : shape.groupSize
            var one = shape
            one.heads = heads * shape.kvHeads
            withUnsafeTemporaryAllocation(of: Float.self, capacity: visible) { scoreBuf in
                withUnsafeTemporaryAllocation(of: Int32.self, capacity: budget) { picked in
                    let scores = scoreBuf.baseAddress!
                    for sel in 0..<selections {
                        let qh = qg + sel * heads * shape.headDim, oh = og + sel * heads * shape.headDim
                        if heads > 1 && options.dsSoftGroup == true {
                            softGroupScores(layer: layer, kvHead: kvh, q: qh, heads: heads, headDim: shape.headDim,
                                            scale: shape.scale, first: first, count: visible, into: scores)
                        } else {
                            approximateScores(layer: layer, kvHead: kvh, q: qh, heads: heads, headDim: shape.headDim,
                                              first: first, count: visible, into: scores)
                        }
                        options.pin(scores, first: first, visible: visible, budget: budget,
                                    defaultRecent: AttentionOptions.doubleSparsityRecent)
                        TopK.select(scores, count: visible, k: budget, base: first, into: picked.baseAddress!)
                        if !valueSum.isEmpty {
                            // Keep each head's exact softmax mass over the selection for the correction.
                            withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * heads) { st in
                                let maxima = st.baseAddress!, mass = maxima + heads
                                DenseAttention.attendGroupPartial(q: qh, groupSize: heads, keys: cache.keys(layer, kvh),
                                                                  values: cache.values(layer, kvh), first: 0, count: budget,
                                                                  rows: picked.baseAddress!, headDim: shape.headDim, scale: shape.scale,
                                                                  maxima: maxima, sums: mass, out: oh)
                                for h in 0..<heads { Kernels.scale(oh + h * shape.headDim, 1 / mass[h], shape.headDim) }
                                valueSum.withUnsafeBufferPointer { sums in
                                    correctResidual(layer: layer, kvHead: kvh, q: qh, heads: heads, shape: shape, first: first,
                                                    count: visible, picked: picked.baseAddress!, k: budget,
                                                    pinned: options.pinned(visible: first + visible, budget: budget,
                                                                           defaultRecent: AttentionOptions.doubleSparsityRecent),
                                                    maxima: maxima, mass: mass,
                                                    visibleSum: sums.baseAddress! + (r.t * shape.kvHeads + kvh) * shape.headDim, out: oh)
                                }
                            }
                        } else {
                            DenseAttention.attendGroup(q: qh, groupSize: heads, keys: cache.keys(layer, kvh),
                                                       values: cache.values(layer, kvh), first: 0, count: budget,
                                                       rows: picked.baseAddress!, headDim: shape.headDim, scale: shape.scale, out: oh)
                        }
                        if let recall {
                            recall.measure(layer: layer, q: qh, shape: one, keys: cache.keys(layer, kvh), first: first,
                                           count: visible, picked: UnsafeBufferPointer(start: picked.baseAddress!, count: budget))
                        }
                    }
                }
            }
        }
    }

    /// `--ds-residual`: the share of the attention that the unselected tokens R carry, put back
    /// as their mean value. For query head h, with ŝ_hj = its own approximate score of token j
    /// (the labels with q_h alone), s_hj the exact one, τ the softmax scale, S' the selection less
    /// the pinned sinks and recent window (the labels did not choose them; they may score them
    /// badly, e.g. a sink's key clamped by the 4-bit grid):
    ///
    ///     R̂_h = Σ_{j∈R} e^{τŝ_hj} · Σ_{j∈S'} e^{τs_hj} / Σ_{j∈S'} e^{τŝ_hj}   (R's mass, on the exact scale)
    ///     f_h = R̂_h / Σ_{j∈S} e^{τs_hj}
    ///     o_h = (o_h^S + f_h · v̄_R) / (1 + f_h)        v̄_R = (Σ_{j visible} v_j − Σ_{j∈S} v_j) / |R|
    ///
    /// which is exact attention when the tokens in R all carry the value v̄_R and the exact
    /// scores exceed the approximate ones by the same factor in R as in S'. It reads no more of
    /// the cache than the selection does: the label scores are computed anyway, and Σ v_j over
    /// the visible tokens is a running sum (`valueSums`). `maxima`/`mass`: per head, the exact
    /// scores' maximum (scaled) and Σ_{j∈S} e^{τs_hj − max} (attendGroupPartial).
    func correctResidual(layer: Int, kvHead: Int, q: UnsafePointer<Float>, heads: Int, shape: AttentionShape,
                         first: Int, count: Int, picked: UnsafePointer<Int32>, k: Int, pinned: (sinks: Int, recent: Int),
                         maxima: UnsafePointer<Float>, mass: UnsafePointer<Float>,
                         visibleSum: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>) {
        guard k < count else { return }
        let d = shape.headDim
        let values = cache.values(layer, kvHead), keys = cache.keys(layer, kvHead)
        // Pinned positions, relative to first: ..<sinkEnd and recentStart..<count.
        let sinkEnd = min(count, max(0, pinned.sinks - first)), recentStart = max(sinkEnd, count - pinned.recent)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: count + d) { buf in
            withUnsafeTemporaryAllocation(of: Bool.self, capacity: count) { maskBuf in
                let s = buf.baseAddress!, vbar = s + count
                let selected = maskBuf.baseAddress!
                selected.initialize(repeating: false, count: count)
                vbar.update(from: visibleSum, count: d)
                for i in 0..<k {
                    let row = Int(picked[i])
                    selected[row - first] = true
                    let v = values + row * d
                    for c in 0..<d { vbar[c] -= Float(v[c]) }
                }
                Kernels.scale(vbar, 1 / Float(count - k), d)
                for h in 0..<heads {
                    approximateScores(layer: layer, kvHead: kvHead, q: q + h * d, heads: 1, headDim: d,
                                      first: first, count: count, into: s)
                    var m = -Float.infinity
                    for j in 0..<count { m = max(m, s[j]) }
                    var rest: Double = 0, kept: Double = 0
                    for j in 0..<count {
                        let e = Double(expf((s[j] - m) * shape.scale))
                        if !selected[j] { rest += e } else if j >= sinkEnd && j < recentStart { kept += e }
                    }
                    // The exact mass of S' relative to S's: S less the pinned tokens' exact mass.
                    var pinnedMass: Double = 0
                    for range in [0..<sinkEnd, recentStart..<count] {
                        for j in range {
                            pinnedMass += Double(expf(Kernels.dot(q + h * d, keys + (first + j) * d, d) * shape.scale - maxima[h]))
                        }
                    }
                    let total = Double(mass[h])
                    guard kept > 0, total > pinnedMass else { continue }
                    let f = Float(rest / kept * (total - pinnedMass) / total)
                    let o = out + h * d
                    for c in 0..<d { o[c] = (o[c] + f * vbar[c]) / (1 + f) }
                }
            }
        }
    }

    /// Σ_{j ≤ p} v_j for the rows p = start..<start+rows of a sparse layer, `[rows][kvHeads][headDim]`,
    /// from a running sum per layer and KV head over positions 0..<summed (brought up to date
    /// from the cache; rebuilt when the positions at or after `start` were summed before, i.e.
    /// the cache was rewound).
    func valueSums(layer: Int, start: Int, rows: Int) -> [Float] {
        let d = cache.headDim, kvh = cache.kvHeads
        var out = [Float](repeating: 0, count: rows * kvh * d)
        for h in 0..<kvh {
            let at = layer * kvh + h
            if summed[at] > start {
                summed[at] = 0
                for c in 0..<d { valueTotals[at * d + c] = 0 }
            }
            let values = cache.values(layer, h)
            valueTotals.withUnsafeMutableBufferPointer { tb in
                let run = tb.baseAddress! + at * d
                for p in summed[at]..<start { for c in 0..<d { run[c] += Float(values[p * d + c]) } }
                out.withUnsafeMutableBufferPointer { ob in
                    for t in 0..<rows {
                        let v = values + (start + t) * d
                        for c in 0..<d { run[c] += Float(v[c]) }
                        (ob.baseAddress! + (t * kvh + h) * d).update(from: run, count: d)
                    }
                }
            }
            summed[at] = start + rows
        }
        return out
    }

    /// ŝ_j for the visible tokens first..<first+count of one KV head.
    @inline(__always)
    func approximateScores(layer: Int, kvHead: Int, q: UnsafePointer<Float>, heads: Int, headDim: Int,
                           first: Int, count: Int, into scores: UnsafeMutablePointer<Float>) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: labels.channels) { qs in
            // The group's queries summed, on the label channels.
            labelQuery(layer: layer, kvHead: kvHead, q: q, heads: heads, headDim: headDim, into: qs.baseAddress!)
            labels.scores(layer: layer, head: kvHead, q: qs.baseAddress!, first: first, count: count, into: scores)
        }
    }

    /// `--ds-group soft`: the group's approximate attention, Σ_h softmax_j(scale · ŝ_hj), with
    /// ŝ_hj = q_h[C] · label_j each head's own approximate score. Same labels read as the summed
    /// query (G r-dots a token instead of one), but every head's distribution counts equally,
    /// instead of the head with the largest scores deciding for the group.
    func softGroupScores(layer: Int, kvHead: Int, q: UnsafePointer<Float>, heads: Int, headDim: Int, scale: Float,
                         first: Int, count: Int, into scores: UnsafeMutablePointer<Float>) {
        scores.update(repeating: 0, count: count)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: labels.channels) { qs in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: count) { buf in
                let s = buf.baseAddress!
                for h in 0..<heads {
                    labelQuery(layer: layer, kvHead: kvHead, q: q + h * headDim, heads: 1, headDim: headDim, into: qs.baseAddress!)
                    labels.scores(layer: layer, head: kvHead, q: qs.baseAddress!, first: first, count: count, into: s)
                    var m = -Float.infinity
                    for j in 0..<count { m = max(m, s[j]) }
                    var z: Float = 0
                    for j in 0..<count { s[j] = expf((s[j] - m) * scale); z += s[j] }
                    let inv = 1 / z
                    for j in 0..<count { scores[j] += s[j] * inv }
                }
            }
        }
    }

    public func truncate(to n: Int) { cache.setLength(min(n, cache.length)) }
}

/// Accumulates, per layer, the share of the exact attention mass (softmax over all visible
/// tokens, averaged over query heads) that a sparse selection keeps.
public final class RecallMeter: @unchecked Sendable {
    private var kept: [Double]
    private var total: [Double]
    private var lock = pthread_mutex_t()

    init(layers: Int) {
        kept = Array(repeating: 0, count: layers)
        total = Array(repeating: 0, count: layers)
        pthread_mutex_init(&lock, nil)
    }

    deinit { pthread_mutex_destroy(&lock) }

    func add(layer: Int, kept k: Double, total t: Double) {
        pthread_mutex_lock(&lock)
        kept[layer] += k
        total[layer] += t
        pthread_mutex_unlock(&lock)
    }

    /// Exact softmax of each query head of the group over the visible keys; adds the mass of `picked`.
    func measure(layer: Int, q: UnsafePointer<Float>, shape: AttentionShape, keys: UnsafePointer<Float16>,
                 first: Int, count n: Int, picked: UnsafeBufferPointer<Int32>) {
        var keptMass = 0.0
        withUnsafeTemporaryAllocation(of: Float.self, capacity: n) { buf in
            let s = buf.baseAddress!
            for h in 0..<shape.groupSize {
                var m = -Float.infinity
                for j in 0..<n {
                    s[j] = Kernels.dot(q + h * shape.headDim, keys + (first + j) * shape.headDim, shape.headDim) * shape.scale
                    m = max(m, s[j])
                }
                var sum = 0.0
                for j in 0..<n { sum += Double(expf(s[j] - m)) }
                var mass = 0.0
                for p in picked { mass += Double(expf(s[Int(p) - first] - m)) }
                keptMass += mass / sum
            }
        }
        add(layer: layer, kept: keptMass, total: Double(shape.groupSize))
    }

    /// Mean kept share per layer (1 where nothing was measured).
    public var perLayer: [Double] {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return zip(kept, total).map { $1 > 0 ? $0 / $1 : 1 }
    }

    public func reset() {
        pthread_mutex_lock(&lock)
        for i in kept.indices { kept[i] = 0; total[i] = 0 }
        pthread_mutex_unlock(&lock)
    }
}
