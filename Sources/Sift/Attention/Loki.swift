#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Loki (Singhania et al., "Loki: Low-Rank Keys for Efficient Sparse Attention", 2024): keys
/// live near a low-dimensional subspace, found offline by PCA (`LokiConfig`, post-RoPE keys,
/// per layer and KV head). With P_r the top r principal directions of one KV head:
///
///     label_j = P_rᵀ K_j                              r values per token, f16 (the label cache)
///     ŝ_j     = (P_rᵀ Σ_{h ∈ group} q_h) · label_j    = Σ_h q_h · P_r P_rᵀ K_j
///     S       = top-k_j ŝ_j                           k = budget(L)
///     o_h     = softmax_{j ∈ S}(q_h · K_j · scale) · V_S   exact, full head_dim, selected rows only
///
/// With r = head_dim, P_r is orthogonal and ŝ_j is the exact score (up to the labels' f16).
/// GQA: one selection per KV head from the group's summed query, as Double Sparsity shares it
/// (Loki was described for multi-head attention; sharing keeps the rows read at k per KV head).
/// Default r = head_dim / 4 (the paper's d_f = 0.25). Sliding-window layers stay dense.
public final class LokiAttention: SparseAwareAttention, @unchecked Sendable {
    public let name = "loki"
    public let cache: KVCache
    public let labels: LabelCache
    public let options: AttentionOptions
    public let rank: Int
    /// P_rᵀ per layer * kvHeads + kvHead: r rows of head_dim floats (principal directions).
    let projections: [[Float]]
    let pool: ThreadPool
    public let recall: RecallMeter?
    public var sparsePrefill: Bool

    static func make(cache: KVCache, model: LanguageModel, options: AttentionOptions, pool: ThreadPool) throws -> LokiAttention {
        let path = try LokiConfig.resolvePath(options)
        let config = try LokiConfig.load(path: path)
        try config.model.check(against: model.config, fileSHA256: options.modelSHA256, path: path)
        return try LokiAttention(cache: cache, config: config, rank: options.lokiRank ?? config.defaultRank ?? max(1, cache.headDim / 4),
                                 options: options, pool: pool)
    }

    public init(cache: KVCache, config: LokiConfig, rank r: Int, options: AttentionOptions, pool: ThreadPool) throws {
        guard r >= 1 && r <= cache.headDim else {
            throw ModelError.invalid("--loki-rank must be in 1...\(cache.headDim), got \(r)")
        }
        guard config.components.count == cache.layerCount, config.components.allSatisfy({ $0.count == cache.kvHeads }),
              config.model.headDim == cache.headDim else {
            throw ModelError.invalid("the Loki calibration's shape (layers, kv_heads, head_dim) does not match the KV cache")
        }
        self.cache = cache
        self.options = options
        self.pool = pool
        rank = r
        let d = cache.headDim
        projections = config.components.flatMap { $0.map { Array($0.prefix(r * d)) } }
        labels = LabelCache(layers: cache.layerCount, kvHeads: cache.kvHeads, channels: r, capacity: cache.capacity)
        sparsePrefill = options.sparsePrefill
        recall = options.measureRecall ? RecallMeter(layers: cache.layerCount) : nil
    }

    public func append(layer: Int, k: Tensor, v: Tensor, start: Int) {
        cache.store(layer: layer, k: k, v: v, start: start)
        let d = cache.headDim, r = rank
        for h in 0..<cache.kvHeads {
            projections[layer * cache.kvHeads + h].withUnsafeBufferPointer { p in
                let dst = labels.labels(layer, h)
                for t in 0..<k.rows {
                    let key = k.row(t) + h * d, row = dst + (start + t) * r
                    for c in 0..<r { row[c] = Float16(Kernels.dot(p.baseAddress! + c * d, key, d)) }
                }
            }
        }
    }

    public func attend(layer: Int, q: Tensor, k: Tensor, v: Tensor, start: Int, shape: AttentionShape, out: Tensor) {
        append(layer: layer, k: k, v: v, start: start)
        out.rows = q.rows
        let sparseRows = (q.rows == 1 || sparsePrefill) && shape.window == 0
        let g = shape.groupSize, d = shape.headDim
        shape.forEachGroupRow(q: q, out: out, start: start, budget: options.budget, pool: pool) { r in
            let kvh = r.kvh, first = r.first, visible = r.visible, budget = r.budget, qg = r.q, og = r.out
            let keys = cache.keys(layer, kvh), values = cache.values(layer, kvh)
            if r.isDense(sparse: sparseRows, denseBelow: options.denseBelow) {
                r.attendDensely(cache: cache, layer: layer, shape: shape)
                recall?.add(layer: layer, kept: Double(g), total: Double(g))
                return
            }
            withUnsafeTemporaryAllocation(of: Float.self, capacity: visible) { scoreBuf in
                withUnsafeTemporaryAllocation(of: Int32.self, capacity: budget) { pickedBuf in
                    let scores = scoreBuf.baseAddress!, picked = pickedBuf.baseAddress!
                    approximateScores(layer: layer, kvHead: kvh, q: qg, heads: g, first: first, count: visible, into: scores)
                    options.pin(scores, first: first, visible: visible, budget: budget, defaultRecent: 0)
                    TopK.select(scores, count: visible, k: budget, base: first, into: picked)
                    DenseAttention.attendGroup(q: qg, groupSize: g, keys: keys, values: values, first: 0, count: budget,
                                               rows: picked, headDim: d, scale: shape.scale, out: og)
                    if let recall {
                        var one = shape
                        one.heads = g * shape.kvHeads
                        recall.measure(layer: layer, q: qg, shape: one, keys: keys, first: first, count: visible,
                                       picked: UnsafeBufferPointer(start: picked, count: budget))
                    }
                }
            }
        }
    }

    /// ŝ_j for the visible tokens first..<first+count of one KV head: the group's summed query,
    /// projected onto the top r principal directions, dotted with each token's label.
    func approximateScores(layer: Int, kvHead: Int, q: UnsafePointer<Float>, heads: Int,
                           first: Int, count: Int, into scores: UnsafeMutablePointer<Float>) {
        let d = cache.headDim, r = rank
        withUnsafeTemporaryAllocation(of: Float.self, capacity: d + r) { buf in
            let qs = buf.baseAddress!, qp = qs + d
            for c in 0..<d {
                var s: Float = 0
                for h in 0..<heads { s += q[h * d + c] }
                qs[c] = s
            }
            projections[layer * cache.kvHeads + kvHead].withUnsafeBufferPointer { p in
                for c in 0..<r { qp[c] = Kernels.dot(p.baseAddress! + c * d, qs, d) }
            }
            Kernels.labelScores(qp, labels.labels(layer, kvHead) + first * r, r, count, scores)
        }
    }

    public func truncate(to n: Int) { cache.setLength(min(n, cache.length)) }
}
