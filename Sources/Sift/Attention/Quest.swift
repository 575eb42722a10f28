/// Quest (Tang et al., "Quest: Query-Aware Sparsity for Efficient Long-Context LLM Inference",
/// ICML 2024): the cache is cut into pages of P tokens (`--quest-page`, 16); each page keeps
/// the channel-wise minimum and maximum of its keys. For a query q the score of any token of a
/// page is bounded above by
///
///     U(q, page) = Σ_c max(q_c · min_c, q_c · max_c)          (≥ q · K_j for every j in the page)
///
/// The top ⌊k / P⌋ pages by U (at least one) are selected and attended exactly, softmax over
/// their tokens. The first two layers stay dense, as in the paper.
///
/// GQA (`--gqa`): `shared` (default) selects one page set per KV head by the sum of the
/// group's bounds, Σ_h U(q_h, page) (itself an upper bound of the group's summed scores), so
/// the rows read stay k per KV head; `per-head` lets every query head pick its own pages
/// (up to G× the rows). The paper's models are multi-head, so it has no rule of its own.
///
/// Bounds are kept (f32, exact over the f16 keys) for complete pages; the page that holds the
/// query's own position is bounded on the fly from its visible keys. That makes the
/// sparse-aware perplexity exact: a row never sees bounds of keys after it.
public final class QuestAttention: SparseAwareAttention, RecallReporting, @unchecked Sendable {
    public let name = "quest"
    public let cache: KVCache
    public let options: AttentionOptions
    public let pageSize: Int
    public let perHead: Bool
    /// Layers below this attend densely.
    public let denseLayers = 2
    let pool: ThreadPool
    public var sparsePrefill: Bool
    public let recall: RecallMeter?
    /// Per (layer, KV head, page): headDim minima then headDim maxima.
    let bounds: UnsafeMutablePointer<Float>
    let pagesPerHead: Int

    public init(cache: KVCache, options: AttentionOptions, pool: ThreadPool) throws {
        let page = options.questPage
        guard page >= 1 && page <= 4096 else {
            throw ModelError.invalid("--quest-page must be in 1...4096, got \(page)")
        }
        self.cache = cache
        self.options = options
        self.pool = pool
        pageSize = page
        perHead = options.gqaPerHead ?? false
        sparsePrefill = options.sparsePrefill
        recall = options.measureRecall ? RecallMeter(layers: cache.layerCount) : nil
        pagesPerHead = (cache.capacity + page - 1) / page
        let n = max(1, cache.layerCount * cache.kvHeads * pagesPerHead * 2 * cache.headDim)
        bounds = .allocate(capacity: n)
        bounds.initialize(repeating: 0, count: n)
    }

    deinit {
        bounds.deallocate()
        recorded?.deallocate()
    }

    /// When set, each decode step's sparse layers record the positions every KV head attended
    /// to (shared GQA), read back with `lastSelection` (tests: the GPU method's selection vs this one).
    public var recordSelection = false {
        didSet {
            if recordSelection && recorded == nil {
                recorded = .allocate(capacity: cache.kvHeads * (cache.capacity + 1))
                recordedCounts = Array(repeating: 0, count: cache.kvHeads)
            }
        }
    }
    private var recorded: UnsafeMutablePointer<Int32>?
    private var recordedCounts: [Int] = []

    /// The positions KV head `kvHead` attended to in the last sparse decode layer (`recordSelection`).
    public func lastSelection(kvHead: Int) -> [Int32] {
        guard let recorded, kvHead < recordedCounts.count else { return [] }
        let base = recorded + kvHead * (cache.capacity + 1)
        return Array(UnsafeBufferPointer(start: base + 1, count: Int(base[0])))
    }

    @inline(__always) func pageBounds(_ layer: Int, _ kvh: Int, _ page: Int) -> UnsafeMutablePointer<Float> {
        bounds + ((layer * cache.kvHeads + kvh) * pagesPerHead + page) * 2 * cache.headDim
    }

    /// Channel-wise min (into `out[0..<d]`) and max (`out[d..<2d]`) of keys `first..<first+count`.
    static func computeBounds(keys: UnsafePointer<Float16>, first: Int, count: Int, headDim d: Int,
                              into out: UnsafeMutablePointer<Float>) {
        for c in 0..<d { out[c] = .infinity; out[d + c] = -.infinity }
        for j in first..<(first + count) {
            let k = keys + j * d
            for c in 0..<d {
                let x = Float(k[c])
                out[c] = min(out[c], x)
                out[d + c] = max(out[d + c], x)
            }
        }
    }

    /// U(q, page) for `heads` consecutive query heads, summed.
    @inline(__always)
    static func upperBound(q: UnsafePointer<Float>, heads: Int, headDim d: Int, bounds b: UnsafePointer<Float>) -> Float {
        var u: Float = 0
        for h in 0..<heads {
            let qh = q + h * d
            for c in 0..<d { u += max(qh[c] * b[c], qh[c] * b[d + c]) }
        }
        return u
    }

    public func append(layer: Int, k: Tensor, v: Tensor, start: Int) {
        cache.store(layer: layer, k: k, v: v, start: start)
        // Bounds of every page completed by these rows.
        let end = start + k.rows
        var page = start / pageSize
        while (page + 1) * pageSize <= end {
            for kvh in 0..<cache.kvHeads {
                QuestAttention.computeBounds(keys: cache.keys(layer, kvh), first: page * pageSize, count: pageSize,
                                             headDim: cache.headDim, into: pageBounds(layer, kvh, page))
            }
            page += 1
        }
    }

    public func attend(layer: Int, q: Tensor, k: Tensor, v: Tensor, start: Int, shape: AttentionShape, out: Tensor) {
        append(layer: layer, k: k, v: v, start: start)
        out.rows = q.rows
        let sparseRows = (q.rows == 1 || sparsePrefill) && shape.window == 0 && layer >= denseLayers
        let g = shape.groupSize, d = shape.headDim, P = pageSize
        shape.forEachGroupRow(q: q, out: out, start: start, budget: options.budget, pool: pool) { r in
            let kvh = r.kvh, visible = r.visible, qg = r.q, og = r.out
            let pages = (visible + P - 1) / P
            let select = max(1, r.budget / P)
            if r.isDense(sparse: sparseRows, denseBelow: options.denseBelow) || select >= pages {
                r.attendDensely(cache: cache, layer: layer, shape: shape)
                return
            }
            let keys = cache.keys(layer, kvh)
            let selections = perHead ? g : 1, heads = perHead ? 1 : g
            withUnsafeTemporaryAllocation(of: Float.self, capacity: pages + 2 * d) { buf in
                withUnsafeTemporaryAllocation(of: Int32.self, capacity: select + select * P) { idx in
                    let scores = buf.baseAddress!, partial = scores + pages
                    let picked = idx.baseAddress!, rows = picked + select
                    // The query's own page: bounds of its visible keys only.
                    let last = pages - 1
                    QuestAttention.computeBounds(keys: keys, first: last * P, count: visible - last * P, headDim: d, into: partial)
                    for sel in 0..<selections {
                        let qh = qg + sel * heads * d
                        for p in 0..<pages {
                            scores[p] = QuestAttention.upperBound(q: qh, heads: heads, headDim: d,
                                                                  bounds: p == last ? partial : pageBounds(layer, kvh, p))
                        }
                        TopK.select(scores, count: pages, k: select, base: 0, into: picked)
                        var n = 0
                        for i in 0..<select {
                            let p = Int(picked[i])
                            for j in (p * P)..<min(visible, (p + 1) * P) { rows[n] = Int32(j); n += 1 }
                        }
                        DenseAttention.attendGroup(q: qh, groupSize: heads, keys: keys, values: cache.values(layer, kvh),
                                                   first: 0, count: n, rows: rows, headDim: d, scale: shape.scale,
                                                   out: og + sel * heads * d)
                        if let rec = recorded, q.rows == 1, !perHead {   // one item per KV head: no races
                            let base = rec + kvh * (cache.capacity + 1)
                            base[0] = Int32(n)
                            (base + 1).update(from: rows, count: n)
                        }
                        var one = shape
                        one.heads = heads * shape.kvHeads
                        recall?.measure(layer: layer, q: qh, shape: one, keys: keys, first: 0, count: visible,
                                        picked: UnsafeBufferPointer(start: rows, count: n))
                    }
                }
            }
        }
    }

    public func truncate(to n: Int) { cache.setLength(min(n, cache.length)) }
}
