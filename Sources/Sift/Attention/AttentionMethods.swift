/// The attention methods selectable by name (`--attention NAME`). Adding a method = one file
/// in Attention/ plus one line here.
public enum AttentionMethods {
    typealias Factory = (KVCache, LanguageModel, AttentionOptions) throws -> AttentionMethod

    static let factories: [String: Factory] = [
        "dense": { cache, model, _ in DenseAttention(cache: cache, pool: try cpuPool(model)) },
        "double-sparse": { cache, model, options in
            let path = try DoubleSparsityConfig.resolvePath(options)
            let config = try DoubleSparsityConfig.load(path: path)
            try config.check(against: model.config, fileSHA256: options.modelSHA256, path: path)
            return try DoubleSparseAttention(cache: cache, config: config,
                                             channels: options.dsChannels ?? config.defaultChannels ?? max(1, cache.headDim / 16),
                                             options: options, pool: try cpuPool(model))
        },
        "tidal": { cache, model, options in try TidalAttention(cache: cache, options: options, pool: cpuPool(model)) },
        "loki": { cache, model, options in try LokiAttention.make(cache: cache, model: model, options: options, pool: cpuPool(model)) },
        "streaming": { cache, model, options in StreamingLLMAttention(cache: cache, options: options, pool: try cpuPool(model)) },
        "h2o": { cache, model, options in H2OAttention(cache: cache, options: options, pool: try cpuPool(model)) },
        "quest": { cache, model, options in try QuestAttention(cache: cache, options: options, pool: cpuPool(model)) },
        "sparq": { cache, model, options in
            try SparQAttention(cache: cache, rank: options.sparqRank ?? max(1, cache.headDim / 8), options: options, pool: cpuPool(model))
        },
    ]

    public static var names: [String] { factories.keys.sorted() }

    public static func make(_ name: String, cache: KVCache, model: LanguageModel,
                            options: AttentionOptions = AttentionOptions()) throws -> AttentionMethod {
        guard let f = factories[name] else {
            throw ModelError.invalid("unknown attention method '\(name)' (known: \(names.joined(separator: ", ")))")
        }
        return try f(cache, model, options)
    }

    static func cpuPool(_ model: LanguageModel) throws -> ThreadPool {
        guard let cpu = model.backend as? CPUBackend else {
            throw ModelError.invalid("these attention methods run on the CPU backend; on \(model.backend.name) use CUDAAttentionMethods (\(CUDAAttentionMethods.names.joined(separator: ", ")))")
        }
        return cpu.pool
    }
}
