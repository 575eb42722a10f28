/// Exact softmax attention on the GPU over the paged bf16 cache: GQA, causal prefill chunks,
/// sliding windows. Decode steps run the split-KV flash-decoding kernel and prefill chunks the
/// tensor-core prefill kernel (CUDAAttentionKernels, docs/cuda-attention.md) when the shape is
/// one they are built for (head_dim 64/128/256, 1...8 query heads per KV head); otherwise the
/// simple `sift_attention_dense` kernel (one block per query head and row).
///
/// With a cache of several sequences it decodes them together (`attendBatch`): one store
/// kernel for the batch's new keys and values, then the split-KV kernel over the batch with
/// the lengths on the device (`CUDAKVCache.seqLens`) and one page-table row per sequence.
public final class CUDADenseAttention: BatchedDecodeAttention, @unchecked Sendable {
    public let name = "dense"
    public let gpuCache: CUDAKVCache
    public var kv: KVStorage { gpuCache }
    public var sequenceCount: Int { gpuCache.sequenceCount }
    public var activeSequence: Int {
        get { gpuCache.activeSequence }
        set { gpuCache.activeSequence = newValue }
    }
    let backend: CUDABackend

    public init(cache: CUDAKVCache, backend: CUDABackend) throws {
        guard cache.headDim <= 256 && cache.headDim % 2 == 0 else {
            throw CUDAError.invalid("CUDA dense attention supports head_dim ≤ 256, not \(cache.headDim)")
        }
        gpuCache = cache
        self.backend = backend
        fast = CUDAAttentionKernels(context: backend.context)
    }

    let fast: CUDAAttentionKernels
    private var scratch: CUDAAttentionKernels.Scratch?
    private var batchScratch: CUDAAttentionKernels.Scratch?

    /// Whether the fast kernels take this shape.
    func fastShape(_ shape: AttentionShape) -> Bool {
        (try? CUDAAttentionKernels.validate(heads: shape.heads, kvHeads: shape.kvHeads, headDim: shape.headDim,
                                             pageSize: gpuCache.pageSize)) != nil
    }

    /// Stores rows of k and v (device tensors) at positions start... of `layer`.
    public func append(layer: Int, k: Tensor, v: Tensor, start: Int) {
        let c = gpuCache
        precondition(start + k.rows <= c.capacity, "GPU KV cache full")
        backend.run {
            try backend.context.launch(backend.kKVStore, grid: (k.rows, 1, 1), block: (128, 1, 1),
                                       [.ptr(k.pointer), .ptr(v.pointer), .pointer(c.keys(layer)), .pointer(c.values(layer)),
                                        .pointer(c.activePageTable), .int(start), .int(c.kvHeads), .int(c.headDim), .int(c.pageSize)])
        }
    }

    public func attend(layer: Int, q: Tensor, k: Tensor, v: Tensor, start: Int, shape: AttentionShape, out: Tensor) {
        append(layer: layer, k: k, v: v, start: start)
        attendStored(layer: layer, q: q, start: start, shape: shape, out: out)
    }

    /// Attention of the rows of `q` at positions start... over the cache, which already holds
    /// their keys and values (methods that store side data compose this: CUDADoubleSparsity).
    func attendStored(layer: Int, q: Tensor, start: Int, shape: AttentionShape, out: Tensor) {
        out.rows = q.rows
        let c = gpuCache
        if fastShape(shape) {
            backend.run {
                if q.rows == 1 {
                    try decodeRow(layer: layer, q: CUDABackend.address(q), out: CUDABackend.address(out),
                                  length: start + 1, shape: shape)
                } else {
                    try fast.prefill(q: CUDABackend.address(q), qF32: true, keys: c.keys(layer), values: c.values(layer),
                                     pageTable: c.activePageTable, pageSize: c.pageSize, rows: q.rows, start: start,
                                     heads: shape.heads, kvHeads: shape.kvHeads, headDim: shape.headDim,
                                     window: shape.window, out: CUDABackend.address(out), outF32: true)
                }
            }
            return
        }
        backend.run {
            try backend.context.launch(backend.kAttention, grid: (shape.heads, q.rows, 1), block: (128, 1, 1),
                                       [.ptr(q.pointer), .ptr(out.pointer), .pointer(c.keys(layer)), .pointer(c.values(layer)),
                                        .pointer(c.activePageTable), .int(start), .int(shape.heads), .int(shape.kvHeads),
                                        .int(shape.headDim), .int(c.pageSize), .int(shape.window), .float(shape.scale)])
        }
    }

    /// Split-KV decode of one query row (f32, `heads × headDim` at `q`) over the first `length`
    /// cached positions of `layer` (a fast shape only), into `out` (f32).
    func decodeRow(layer: Int, q: CUdeviceptr, out: CUdeviceptr, length: Int, shape: AttentionShape) throws {
        let c = gpuCache
        if scratch == nil || scratch!.heads != shape.heads {
            // Splits never exceed one wave (2 per SM) over the KV heads, plus one.
            scratch = try CUDAAttentionKernels.Scratch(context: backend.context, batch: 1, heads: shape.heads,
                                                       headDim: shape.headDim,
                                                       maxSplits: 2 * backend.context.multiprocessors + 1)
        }
        try fast.decode(q: q, qF32: true, keys: c.keys(layer), values: c.values(layer),
                        pageTable: c.activePageTable, pageSize: c.pageSize, maxPages: c.pageCount,
                        lengths: .fixed(length), batch: 1, heads: shape.heads, kvHeads: shape.kvHeads,
                        headDim: shape.headDim, window: shape.window, out: out, outF32: true, scratch: scratch!)
    }

    public func attendBatch(layer: Int, q: Tensor, k: Tensor, v: Tensor, positions: [Int32], shape: AttentionShape,
                            out: Tensor) {
        let c = gpuCache, b = q.rows
        precondition(b == positions.count && b <= c.sequenceCount, "batch of \(b) rows, \(c.sequenceCount) sequences")
        precondition(positions.allSatisfy { Int($0) < c.capacity }, "GPU KV cache full")
        out.rows = b
        storeBatch(layer: layer, k: k, v: v, positions: positions)
        attendBatchStored(layer: layer, q: q, positions: positions, shape: shape, out: out)
    }

    /// The batch's new keys and values (row i at `positions[i]` of sequence i); uploads the
    /// lengths `positions + 1` to `seqLens`.
    func storeBatch(layer: Int, k: Tensor, v: Tensor, positions: [Int32]) {
        let c = gpuCache, b = k.rows
        backend.run {
            try c.uploadLengths(positions.map { $0 + 1 })
            try backend.context.launch(backend.kKVStoreBatch, grid: (b, 1, 1), block: (128, 1, 1),
                                       [.ptr(k.pointer), .ptr(v.pointer), .pointer(c.keys(layer)), .pointer(c.values(layer)),
                                        .ptr(c.pageTable), .ptr(c.seqLens), .int(c.pageCount), .int(c.kvHeads),
                                        .int(c.headDim), .int(c.pageSize)])
        }
    }

    /// Dense decode of the batch over the stored cache (after `storeBatch`).
    func attendBatchStored(layer: Int, q: Tensor, positions: [Int32], shape: AttentionShape, out: Tensor) {
        let c = gpuCache, b = q.rows
        out.rows = b
        backend.run {
            if fastShape(shape) {
                if batchScratch == nil || batchScratch!.heads != shape.heads || batchScratch!.batch < b {
                    batchScratch = try CUDAAttentionKernels.Scratch(context: backend.context, batch: c.sequenceCount,
                                                                    heads: shape.heads, headDim: shape.headDim,
                                                                    maxSplits: 2 * backend.context.multiprocessors + 1)
                }
                try fast.decode(q: CUDABackend.address(q), qF32: true, keys: c.keys(layer), values: c.values(layer),
                                pageTable: c.pageTable.address, pageSize: c.pageSize, maxPages: c.pageCount,
                                lengths: .device(c.seqLens.address, maxLength: Int(positions.max()!) + 1), batch: b,
                                heads: shape.heads, kvHeads: shape.kvHeads, headDim: shape.headDim, window: shape.window,
                                out: CUDABackend.address(out), outF32: true, scratch: batchScratch!)
                return
            }
            // Other shapes: the simple kernel, one launch per sequence.
            let width = UInt64(q.cols * 4)
            for (i, p) in positions.enumerated() {
                try backend.context.launch(backend.kAttention, grid: (shape.heads, 1, 1), block: (128, 1, 1),
                                           [.pointer(CUDABackend.address(q) + UInt64(i) * width),
                                            .pointer(CUDABackend.address(out) + UInt64(i) * width),
                                            .pointer(c.keys(layer)), .pointer(c.values(layer)),
                                            .pointer(c.pageTable(sequence: i)), .int(Int(p)), .int(shape.heads),
                                            .int(shape.kvHeads), .int(shape.headDim), .int(c.pageSize), .int(shape.window),
                                            .float(shape.scale)])
            }
        }
    }

    public func truncate(to n: Int) { gpuCache.setLength(min(n, gpuCache.length)) }
}
