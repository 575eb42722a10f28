/// Quest on the GPU (the CPU definition: Attention/Quest.swift). Per Quest page (`--quest-page`,
/// 16 tokens) and KV head the channel-wise min and max of the post-RoPE keys are kept (bf16:
/// exact, the GPU cache holds bf16 keys), recomputed for the pages an append touches (so the
/// page holding the newest position is bounded by its stored keys, as the CPU bounds it on the
/// fly). A decode step scores every page by U = Σ_{h∈group} Σ_c max(q_hc·min_c, q_hc·max_c)
/// (GQA `shared`, the CPU's default), takes the top max(1, ⌊k/P⌋) pages exactly and attends
/// over their tokens (Kernels/sparse_select.cu). The first two layers, sliding-window layers,
/// prefill chunks and steps whose budget covers the context (or below `--dense-below`) are dense.
public final class CUDAQuestAttention: AttentionMethod, @unchecked Sendable {
    public let name = "quest"
    public var kv: KVStorage { dense.gpuCache }
    public let options: AttentionOptions
    public let pageSize: Int
    /// Layers below this attend densely.
    public let denseLayers = 2
    let dense: CUDADenseAttention
    let backend: CUDABackend
    let quest: CUDAAttentionKernels.Quest
    /// Per layer: [maxQPages][kvHeads][2][headDim] bf16 (layers < denseLayers have none).
    let bounds: [DeviceBuffer?]

    public init(cache: CUDAKVCache, model: LanguageModel, options: AttentionOptions, backend: CUDABackend) throws {
        if options.gqaPerHead == true {
            throw CUDAError.invalid("quest on the GPU selects one page set per KV head (--gqa shared); --gqa per-head runs on the CPU")
        }
        if options.measureRecall { throw CUDAError.invalid("--measure-recall is not implemented for quest on the GPU (use the CPU)") }
        if options.sparsePrefill { throw CUDAError.invalid("sparse-aware prefill is not implemented for quest on the GPU (use the CPU)") }
        let c = model.config
        dense = try CUDADenseAttention(cache: cache, backend: backend)
        self.backend = backend
        self.options = options
        pageSize = options.questPage
        try CUDAAttentionKernels.validate(heads: c.headCount, kvHeads: c.kvHeadCount, headDim: c.headDim, pageSize: cache.pageSize)
        quest = try CUDAAttentionKernels.Quest(kernels: dense.fast, batch: 1, heads: c.headCount, kvHeads: c.kvHeadCount,
                                               headDim: c.headDim, questPage: options.questPage, maxLength: cache.capacity)
        let bytes = quest.boundsBytes
        bounds = try (0..<cache.layerCount).map { l in l < 2 ? nil : try backend.context.allocate(bytes: bytes) }
    }

    public func append(layer: Int, k: Tensor, v: Tensor, start: Int) {
        dense.append(layer: layer, k: k, v: v, start: start)
        updateBounds(layer: layer, from: start, rows: k.rows)
    }

    func updateBounds(layer: Int, from start: Int, rows: Int) {
        guard let b = bounds[layer] else { return }
        let c = dense.gpuCache
        backend.run {
            try quest.updateBounds(keys: c.keys(layer), pageTable: c.pageTable.address, pageSize: c.pageSize,
                                   maxPages: c.pageCount, bounds: b.address, from: start, length: start + rows)
        }
    }

    public func attend(layer: Int, q: Tensor, k: Tensor, v: Tensor, start: Int, shape: AttentionShape, out: Tensor) {
        let visible = start + 1
        let budget = options.budget.count(visible: visible)
        let pages = (visible + pageSize - 1) / pageSize
        let select = max(1, budget / pageSize)
        let sparse = q.rows == 1 && shape.window == 0 && layer >= denseLayers && dense.fastShape(shape)
            && budget < visible && visible >= options.denseBelow && select < pages
        if !sparse {
            dense.attend(layer: layer, q: q, k: k, v: v, start: start, shape: shape, out: out)
            updateBounds(layer: layer, from: start, rows: q.rows)
            return
        }
        append(layer: layer, k: k, v: v, start: start)
        out.rows = q.rows
        let c = dense.gpuCache
        backend.run {
            try quest.run(q: CUDABackend.address(q), qF32: true, keys: c.keys(layer), values: c.values(layer),
                          pageTable: c.pageTable.address, pageSize: c.pageSize, maxPages: c.pageCount,
                          bounds: bounds[layer]!.address, length: visible, kPages: select,
                          out: CUDABackend.address(out), outF32: true)
        }
    }

    /// The positions the last sparse step attended to, per KV head (checks, tools).
    public func lastSelection() throws -> [[Int32]] { try quest.selectedHost() }

    public func truncate(to n: Int) { dense.truncate(to: n) }
}
