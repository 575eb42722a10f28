/// Attention methods that run on the GPU, by `--attention` name. Adding one = one file in
/// Backends/CUDA plus one line here.
public enum CUDAAttentionMethods {
    typealias Factory = (CUDAKVCache, LanguageModel, AttentionOptions, CUDABackend) throws -> AttentionMethod

    static let factories: [String: Factory] = [
        "dense": { cache, _, _, backend in try CUDADenseAttention(cache: cache, backend: backend) },
        "double-sparse": { cache, model, options, backend in
            try CUDADoubleSparseAttention.make(cache: cache, model: model, options: options, backend: backend)
        },
        "quest": { cache, model, options, backend in try CUDAQuestAttention(cache: cache, model: model, options: options, backend: backend) },
        "tidal": { cache, model, options, backend in try CUDATidalAttention(cache: cache, model: model, options: options, backend: backend) },
    ]

    public static var names: [String] { factories.keys.sorted() }
}
