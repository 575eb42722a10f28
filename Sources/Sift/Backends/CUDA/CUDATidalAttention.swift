/// TidalDecode on the GPU (the CPU definition and flags: Attention/Tidal.swift). Layers below
/// `--tidal-dense-layers` attend densely; the token-selection layer and the re-selection layer
/// (`--tidal-reselect`) attend densely and pick, per KV head, the k = budget(L) positions with the
/// most softmax mass summed over the head's query group (the first `--sinks` always); every
/// other full-attention layer of the same decode step attends over those positions only
/// (Kernels/sparse_select.cu, the split-KV kernel's index-list mode). Sliding-window layers stay
/// dense and neither select nor reuse. Prefill chunks are dense, as on the CPU outside
/// sparse-aware perplexity; `--tidal-correct` works through `Session` as on the CPU.
public final class CUDATidalAttention: CorrectingAttention, @unchecked Sendable {
    public let name = "tidal"
    public var kv: KVStorage { dense.gpuCache }
    public let options: AttentionOptions
    public let denseLayers: Int
    public let reselectLayer: Int
    public let correctionInterval: Int
    public var denseOverride = false
    let dense: CUDADenseAttention
    let backend: CUDABackend
    let tidal: CUDAAttentionKernels.Tidal

    /// The current selection: made at layer `selectedAt` for the pass at `selectionStart`;
    /// `selectionDense`: that step's budget covered the context, so the reuse layers attend densely.
    private(set) var selectedAt = -1
    private var selectionStart = -1, selectionDense = false

    public init(cache: CUDAKVCache, model: LanguageModel, options: AttentionOptions, backend: CUDABackend) throws {
        let layers = cache.layerCount
        let d = options.tidalDenseLayers
        guard d >= 0 && d < layers else {
            throw ModelError.invalid("--tidal-dense-layers must be in 0..<\(layers) (the model's layers), got \(d)")
        }
        let r = options.tidalReselect ?? TidalAttention.defaultReselectLayer(layers: layers)
        guard r >= 0 && r < layers else {
            throw ModelError.invalid("--tidal-reselect must be a layer in 0..<\(layers), got \(r)")
        }
        guard options.tidalCorrect >= 0 else {
            throw ModelError.invalid("--tidal-correct must be ≥ 0 (0 = no KV-cache correction), got \(options.tidalCorrect)")
        }
        if options.measureRecall { throw CUDAError.invalid("--measure-recall is not implemented for tidal on the GPU (use the CPU)") }
        if options.sparsePrefill { throw CUDAError.invalid("sparse-aware prefill is not implemented for tidal on the GPU (use the CPU)") }
        let c = model.config
        try CUDAAttentionKernels.validate(heads: c.headCount, kvHeads: c.kvHeadCount, headDim: c.headDim, pageSize: cache.pageSize)
        dense = try CUDADenseAttention(cache: cache, backend: backend)
        self.backend = backend
        self.options = options
        denseLayers = d
        reselectLayer = r
        correctionInterval = options.tidalCorrect
        tidal = try CUDAAttentionKernels.Tidal(kernels: dense.fast, batch: 1, heads: c.headCount, kvHeads: c.kvHeadCount,
                                               headDim: c.headDim, maxLength: cache.capacity)
    }

    enum Role { case dense, select, reuse }

    /// What `layer` does in a pass of `rows` rows from `start` (the CPU's rule, one sequence).
    func role(layer: Int, rows: Int, start: Int, shape: AttentionShape) -> Role {
        if rows != 1 || denseOverride || layer < denseLayers || !dense.fastShape(shape) { selectedAt = -1; return .dense }
        if shape.window > 0 { return .dense }
        let samePass = selectedAt >= 0 && layer > selectedAt && start == selectionStart
        if !samePass || (layer >= reselectLayer && selectedAt < reselectLayer) { return .select }
        return .reuse
    }

    public func append(layer: Int, k: Tensor, v: Tensor, start: Int) { dense.append(layer: layer, k: k, v: v, start: start) }

    public func attend(layer: Int, q: Tensor, k: Tensor, v: Tensor, start: Int, shape: AttentionShape, out: Tensor) {
        let role = role(layer: layer, rows: q.rows, start: start, shape: shape)
        let visible = start + 1
        if role == .select {
            selectedAt = layer
            selectionStart = start
            let budget = options.budget.count(visible: visible)
            selectionDense = budget >= visible || visible < options.denseBelow
        }
        if role == .dense || selectionDense {
            dense.attend(layer: layer, q: q, k: k, v: v, start: start, shape: shape, out: out)
            return
        }
        dense.append(layer: layer, k: k, v: v, start: start)
        out.rows = q.rows
        let c = dense.gpuCache
        backend.run {
            if role == .select {
                try tidal.select(q: CUDABackend.address(q), qF32: true, keys: c.keys(layer), values: c.values(layer),
                                 pageTable: c.pageTable.address, pageSize: c.pageSize, maxPages: c.pageCount,
                                 length: visible, k: options.budget.count(visible: visible), sinks: options.sinks,
                                 out: CUDABackend.address(out), outF32: true)
            } else {
                try tidal.reuse(q: CUDABackend.address(q), qF32: true, keys: c.keys(layer), values: c.values(layer),
                                pageTable: c.pageTable.address, pageSize: c.pageSize, maxPages: c.pageCount,
                                out: CUDABackend.address(out), outF32: true)
            }
        }
    }

    /// The positions picked by the last selection, per KV head; empty when it attended densely.
    public func lastSelection() throws -> [[Int32]] {
        selectionDense ? Array(repeating: [], count: tidal.kvHeads) : try tidal.selectedHost()
    }

    public func truncate(to n: Int) {
        dense.truncate(to: n)
        selectedAt = -1
    }
}
