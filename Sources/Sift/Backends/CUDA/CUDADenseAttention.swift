/// Exact softmax attention on the GPU over the paged bf16 cache: GQA, causal prefill chunks,
/// sliding windows. Decode steps run the split-KV flash-decoding kernel and prefill chunks the
/// tensor-core prefill kernel (CUDAAttentionKernels, docs/cuda-attention.md) when the shape is
/// one they are built for (head_dim 64/128/256, 1...8 query heads per KV head); otherwise the
/// simple `sift_attention_dense` kernel (one block per query head and row).
public final class CUDADenseAttention: AttentionMethod, @unchecked Sendable {
    public let name = "dense"
    public let gpuCache: CUDAKVCache
    public var kv: KVStorage { gpuCache }
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
                                        .ptr(c.pageTable), .int(start), .int(c.kvHeads), .int(c.headDim), .int(c.pageSize)])
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
                                     pageTable: c.pageTable.address, pageSize: c.pageSize, rows: q.rows, start: start,
                                     heads: shape.heads, kvHeads: shape.kvHeads, headDim: shape.headDim,
                                     window: shape.window, out: CUDABackend.address(out), outF32: true)
                }
            }
            return
        }
        backend.run {
            try backend.context.launch(backend.kAttention, grid: (shape.heads, q.rows, 1), block: (128, 1, 1),
                                       [.ptr(q.pointer), .ptr(out.pointer), .pointer(c.keys(layer)), .pointer(c.values(layer)),
                                        .ptr(c.pageTable), .int(start), .int(shape.heads), .int(shape.kvHeads),
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
                        pageTable: c.pageTable.address, pageSize: c.pageSize, maxPages: c.pageCount,
                        lengths: .fixed(length), batch: 1, heads: shape.heads, kvHeads: shape.kvHeads,
                        headDim: shape.headDim, window: shape.window, out: out, outF32: true, scratch: scratch!)
    }

    public func truncate(to n: Int) { gpuCache.setLength(min(n, gpuCache.length)) }
}
