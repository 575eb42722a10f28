/// Exact softmax attention on the GPU over the paged bf16 cache (`sift_attention_dense`):
/// GQA, causal prefill chunks, sliding windows. A simple kernel: one block per (query head,
/// query row); the fast split-KV kernels replace it.
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
        out.rows = q.rows
        let c = gpuCache
        backend.run {
            try backend.context.launch(backend.kAttention, grid: (shape.heads, q.rows, 1), block: (128, 1, 1),
                                       [.ptr(q.pointer), .ptr(out.pointer), .pointer(c.keys(layer)), .pointer(c.values(layer)),
                                        .ptr(c.pageTable), .int(start), .int(shape.heads), .int(shape.kvHeads),
                                        .int(shape.headDim), .int(c.pageSize), .int(shape.window), .float(shape.scale)])
        }
    }

    public func truncate(to n: Int) { gpuCache.setLength(min(n, gpuCache.length)) }
}
