#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// TidalDecode (Yang et al., ICLR 2025): position-persistent sparse attention. Consecutive
/// layers attend to largely the same tokens, so the tokens are chosen once and reused:
///
///     layers 0 ..< D                 dense                           (D = --tidal-dense-layers, 2)
///     token-selection layer (D)      dense, then S = top-k_j Σ_{h ∈ group} p_h(j)
///                                    p_h = softmax_j(q_h · K_j · scale), k = budget(L)
///     re-selection layer (R)         the same: dense, and a new S     (R = --tidal-reselect)
///     every other layer              o_h = softmax_{j ∈ S}(q_h · K_j · scale) · V_S
///
/// The selection is made in one layer and read by the next ones within the same forward pass
/// (per query row and KV head), so it is the method's cross-layer state.
///
/// GQA: one selection per KV head, shared by its G query heads, scored by the attention mass
/// the group puts on each token (the sum of the heads' softmax probabilities). Later layers
/// read the same k rows per KV head, which keeps the bytes read at 2·k·d per KV head. Query
/// heads are not selected separately: that would read up to G× more rows.
///
/// Sliding-window layers (Gemma 3's local layers) stay dense and neither select nor reuse:
/// their window already bounds what they read. The selection and re-selection layers are then
/// the first full-attention layers at index ≥ D and ≥ R.
///
/// KV-cache correction (`--tidal-correct S`): decode steps write keys and values computed
/// through sparse attention; every S decode steps `Session` recomputes the last S tokens with
/// dense attention (`denseOverride`), overwriting their KV (see `CorrectingAttention`).
public final class TidalAttention: SparseAwareAttention, CorrectingAttention, @unchecked Sendable {
    public let name = "tidal"
    public let cache: KVCache
    public let options: AttentionOptions
    public let denseLayers: Int
    public let reselectLayer: Int
    public let correctionInterval: Int
    public let recall: RecallMeter?
    public var sparsePrefill: Bool
    public var denseOverride = false
    let dense: DenseAttention
    let pool: ThreadPool

    /// The current selection: for each (query row, KV head) `width` slots, `counts` of them
    /// filled (0 = the row attends densely), made at layer `selectedAt` for the forward pass
    /// of `selectionRows` rows from `selectionStart`.
    private(set) var selection: [Int32] = []
    private(set) var counts: [Int] = []
    private(set) var selectedAt = -1
    private var selectionStart = -1, selectionRows = 0, width = 0

    /// The default re-selection layer: 13/32 of the depth (layer 13 of Llama-3-8B's 32, the paper's choice).
    public static func defaultReselectLayer(layers: Int) -> Int { Int((Double(layers) * 13 / 32).rounded()) }

    public init(cache: KVCache, options: AttentionOptions, pool: ThreadPool) throws {
        let layers = cache.layerCount
        let d = options.tidalDenseLayers
        guard d >= 0 && d < layers else {
            throw ModelError.invalid("--tidal-dense-layers must be in 0..<\(layers) (the model's layers), got \(d)")
        }
        let r = options.tidalReselect ?? Self.defaultReselectLayer(layers: layers)
        guard r >= 0 && r < layers else {
            throw ModelError.invalid("--tidal-reselect must be a layer in 0..<\(layers), got \(r)")
        }
        guard options.tidalCorrect >= 0 else {
            throw ModelError.invalid("--tidal-correct must be ≥ 0 (0 = no KV-cache correction), got \(options.tidalCorrect)")
        }
        self.cache = cache
        self.options = options
        self.pool = pool
        denseLayers = d
        reselectLayer = r
        correctionInterval = options.tidalCorrect
        dense = DenseAttention(cache: cache, pool: pool)
        sparsePrefill = options.sparsePrefill
        recall = options.measureRecall ? RecallMeter(layers: layers) : nil
    }

    enum Role { case dense, select, reuse }

    /// What `layer` does in the forward pass of `rows` rows from `start`.
    func role(layer: Int, rows: Int, start: Int, shape: AttentionShape) -> Role {
        let sparse = (rows == 1 || sparsePrefill) && !denseOverride
        if !sparse || layer < denseLayers { selectedAt = -1; return .dense }
        if shape.window > 0 { return .dense }
        let samePass = selectedAt >= 0 && layer > selectedAt && start == selectionStart && rows == selectionRows
        if !samePass || (layer >= reselectLayer && selectedAt < reselectLayer) { return .select }
        return .reuse
    }

    public func attend(layer: Int, q: Tensor, k: Tensor, v: Tensor, start: Int, shape: AttentionShape, out: Tensor) {
        let role = role(layer: layer, rows: q.rows, start: start, shape: shape)
        if role == .dense {
            dense.attend(layer: layer, q: q, k: k, v: v, start: start, shape: shape, out: out)
            if let recall { recall.add(layer: layer, kept: 1, total: 1) }
            return
        }
        cache.store(layer: layer, k: k, v: v, start: start)
        out.rows = q.rows
        if role == .select {
            let maxVisible = start + q.rows - shape.firstVisible(start + q.rows - 1)
            width = max(1, options.budget.count(visible: maxVisible))
            let n = q.rows * shape.kvHeads
            if selection.count < n * width { selection = Array(repeating: 0, count: n * width) }
            counts = Array(repeating: 0, count: n)
            selectedAt = layer
            selectionStart = start
            selectionRows = q.rows
        }
        let g = shape.groupSize, d = shape.headDim
        selection.withUnsafeMutableBufferPointer { selBuf in
            counts.withUnsafeMutableBufferPointer { cntBuf in
                let sel = selBuf.baseAddress!, cnt = cntBuf.baseAddress!
                pool.parallelFor(shape.kvHeads * q.rows) { item in
                    let kvh = item % shape.kvHeads, t = item / shape.kvHeads
                    let position = start + t
                    let first = shape.firstVisible(position)
                    let visible = position - first + 1
                    let budget = options.budget.count(visible: visible)
                    let qg = q.row(t) + kvh * g * d, og = out.row(t) + kvh * g * d
                    let keys = cache.keys(layer, kvh), values = cache.values(layer, kvh)
                    let slot = sel + item * width
                    if role == .select {
                        if budget >= visible || visible < options.denseBelow {
                            cnt[item] = 0
                            DenseAttention.attendGroup(q: qg, groupSize: g, keys: keys, values: values,
                                                       positions: first...position, headDim: d, scale: shape.scale, out: og)
                        } else {
                            Self.attendAndSelect(q: qg, groupSize: g, keys: keys, values: values, first: first, count: visible,
                                                 headDim: d, scale: shape.scale, sinks: options.sinks, budget: budget,
                                                 out: og, picked: slot)
                            cnt[item] = budget
                        }
                        recall?.add(layer: layer, kept: Double(g), total: Double(g))
                        return
                    }
                    // Reuse the positions picked at `selectedAt` for this row and KV head.
                    let n = cnt[item]
                    if n == 0 {
                        DenseAttention.attendGroup(q: qg, groupSize: g, keys: keys, values: values,
                                                   positions: first...position, headDim: d, scale: shape.scale, out: og)
                        recall?.add(layer: layer, kept: Double(g), total: Double(g))
                        return
                    }
                    DenseAttention.attendGroup(q: qg, groupSize: g, keys: keys, values: values, first: 0, count: n,
                                               rows: slot, headDim: d, scale: shape.scale, out: og)
                    if let recall {
                        var one = shape
                        one.heads = g * shape.kvHeads
                        recall.measure(layer: layer, q: qg, shape: one, keys: keys, first: first, count: visible,
                                       picked: UnsafeBufferPointer(start: slot, count: n))
                    }
                }
            }
        }
    }

    /// Full attention of the group's `g` query heads over rows first..<first+count, and the
    /// `budget` positions with the most attention mass summed over the group (the first
    /// `sinks` positions forced in), ascending, into `picked`.
    static func attendAndSelect(q: UnsafePointer<Float>, groupSize g: Int, keys: UnsafePointer<Float16>,
                                values: UnsafePointer<Float16>, first: Int, count n: Int, headDim d: Int, scale: Float,
                                sinks: Int, budget: Int, out: UnsafeMutablePointer<Float>, picked: UnsafeMutablePointer<Int32>) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: (g + 1) * n) { buf in
            let p = buf.baseAddress!, mass = p + g * n
            mass.initialize(repeating: 0, count: n)
            for j in 0..<n {
                let key = keys + (first + j) * d
                for h in 0..<g { p[h * n + j] = Kernels.dot(q + h * d, key, d) * scale }
            }
            for h in 0..<g {
                let row = p + h * n
                var m = -Float.infinity
                for j in 0..<n { m = max(m, row[j]) }
                var sum: Float = 0
                for j in 0..<n { let e = expf(row[j] - m); row[j] = e; sum += e }
                let inv = 1 / sum
                let o = out + h * d
                o.initialize(repeating: 0, count: d)
                for j in 0..<n {
                    let w = row[j] * inv
                    mass[j] += w
                    Kernels.axpy(w, values + (first + j) * d, o, d)
                }
            }
            for j in 0..<max(0, min(sinks - first, n, budget)) { mass[j] = .infinity }
            TopK.select(mass, count: n, k: budget, base: first, into: picked)
        }
    }

    /// The positions currently selected for query row `row` and KV head `kvHead` (tests, tools);
    /// empty where the row attends densely (its budget covers every visible token).
    public func selected(row: Int, kvHead: Int, kvHeads: Int) -> [Int32] {
        let item = row * kvHeads + kvHead
        guard item < counts.count else { return [] }
        return Array(selection[(item * width)..<(item * width + counts[item])])
    }

    public func truncate(to n: Int) {
        cache.setLength(min(n, cache.length))
        selectedAt = -1
    }
}
