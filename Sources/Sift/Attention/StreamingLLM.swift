/// StreamingLLM (Xiao et al., "Efficient Streaming Language Models with Attention Sinks",
/// ICLR 2024): a query attends to the first S tokens (attention sinks, S = `--sinks`, 4 when
/// not given) and the most recent W tokens, W = budget − S; everything between is evicted.
///
/// For a query at position p with budget k (k < p + 1):
///
///     kept = {0, …, S'−1} ∪ {p − (k − S') + 1, …, p}      S' = min(S, k)
///     o_h  = softmax_{j ∈ kept}(q_h · K_j · scale) · V_kept
///
/// The kept set depends only on p and k, so the sparse-aware perplexity
/// (`sparsePrefill`) is exact: each scored row sees the state a decode step would.
///
/// Differences from the paper, on purpose: keys stay rotated at their original positions (the
/// paper re-assigns positions inside the rolling cache; sift's cache stores post-RoPE keys),
/// and eviction is logical: the evicted rows stay in the f16 cache, unread. `evictedRows`
/// reports how many rows a compacting cache would have freed at the last step.
public final class StreamingLLMAttention: SparseAwareAttention, RecallReporting, @unchecked Sendable {
    public let name = "streaming"
    public let cache: KVCache
    public let options: AttentionOptions
    public let sinks: Int
    let pool: ThreadPool
    public var sparsePrefill: Bool
    let evicted: EvictionCounter
    public let recall: RecallMeter?

    public init(cache: KVCache, options: AttentionOptions, pool: ThreadPool) {
        self.cache = cache
        self.options = options
        self.pool = pool
        sinks = options.sinksGiven ? options.sinks : 4
        sparsePrefill = options.sparsePrefill
        evicted = EvictionCounter(layers: cache.layerCount)
        recall = options.measureRecall ? RecallMeter(layers: cache.layerCount) : nil
    }

    /// Rows (summed over layers and KV heads) outside the kept sets at each layer's last step.
    public var evictedRows: Int { evicted.total * cache.kvHeads }
    /// KV bytes (f16 K and V) those rows take: what a compacting cache would free.
    public var evictedBytes: Int { evictedRows * 2 * cache.headDim * MemoryLayout<Float16>.size }

    /// Positions kept at `position` (ascending), written into `out`; returns their count.
    @inline(__always)
    static func kept(position: Int, budget: Int, sinks: Int, into out: UnsafeMutablePointer<Int32>) -> Int {
        let s = min(sinks, budget)
        for j in 0..<s { out[j] = Int32(j) }
        let window = budget - s
        for i in 0..<window { out[s + i] = Int32(position - window + 1 + i) }
        return budget
    }

    public func attend(layer: Int, q: Tensor, k: Tensor, v: Tensor, start: Int, shape: AttentionShape, out: Tensor) {
        cache.store(layer: layer, k: k, v: v, start: start)
        out.rows = q.rows
        let sparseRows = (q.rows == 1 || sparsePrefill) && shape.window == 0
        let g = shape.groupSize, d = shape.headDim
        shape.forEachGroupRow(q: q, out: out, start: start, budget: options.budget, pool: pool) { r in
            let kvh = r.kvh, t = r.t, first = r.first, visible = r.visible, budget = r.budget, qg = r.q, og = r.out
            if r.isDense(sparse: sparseRows, denseBelow: options.denseBelow) {
                r.attendDensely(cache: cache, layer: layer, shape: shape)
                if kvh == 0 && t == q.rows - 1 { evicted.set(layer: layer, 0) }
                return
            }
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: budget) { picked in
                let n = StreamingLLMAttention.kept(position: r.position, budget: budget, sinks: sinks, into: picked.baseAddress!)
                DenseAttention.attendGroup(q: qg, groupSize: g, keys: cache.keys(layer, kvh), values: cache.values(layer, kvh),
                                           first: 0, count: n, rows: picked.baseAddress!, headDim: d, scale: shape.scale, out: og)
                recall?.measure(layer: layer, q: qg, shape: shape, keys: cache.keys(layer, kvh), first: first, count: visible,
                                picked: UnsafeBufferPointer(start: picked.baseAddress!, count: n))
            }
            if kvh == 0 && t == q.rows - 1 { evicted.set(layer: layer, visible - budget) }
        }
    }

    public func truncate(to n: Int) { cache.setLength(min(n, cache.length)) }
}

/// Per-layer count of evicted rows (per KV head) at the layer's last step, for the methods that
/// evict (StreamingLLM, H2O).
final class EvictionCounter: @unchecked Sendable {
    private let perLayer: UnsafeMutablePointer<Int>
    private let layers: Int
    init(layers: Int) {
        self.layers = layers
        perLayer = .allocate(capacity: max(1, layers))
        perLayer.initialize(repeating: 0, count: max(1, layers))
    }
    deinit { perLayer.deallocate() }
    /// Written by one work item per layer per forward pass (no two threads share a layer).
    func set(layer: Int, _ n: Int) { perLayer[layer] = n }
    var total: Int { (0..<layers).reduce(0) { $0 + perLayer[$1] } }
}
