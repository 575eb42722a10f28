/// One sequence being processed by a model: its KV cache, its attention method and the
/// tokens already in the cache.
public final class Session {
    public let model: LanguageModel
    public let attention: AttentionMethod
    /// Tokens whose keys and values are in the cache, in order.
    public private(set) var tokens: [Int32] = []
    public var contextLength: Int { attention.kv.capacity }
    /// Single-token steps since the last KV-cache correction (`CorrectingAttention`).
    private var stepsSinceCorrection = 0

    public init(model: LanguageModel, attention: AttentionMethod) {
        self.model = model
        self.attention = attention
    }

    /// A session with the named attention method and a cache of `contextLength` positions
    /// (on the GPU when the model's backend is CUDA).
    public convenience init(model: LanguageModel, contextLength: Int, attention name: String = "dense",
                            options: AttentionOptions = AttentionOptions()) throws {
        if let gpu = model.backend as? CUDABackend {
            try self.init(model: model, attention: gpu.makeAttention(name, model: model, contextLength: contextLength, options: options))
            return
        }
        let c = model.config
        let cache = KVCache(layers: c.layerCount, kvHeads: c.kvHeadCount, headDim: c.headDim, capacity: contextLength)
        try self.init(model: model, attention: AttentionMethods.make(name, cache: cache, model: model, options: options))
    }

    /// Appends `new` tokens to the sequence and returns the logits asked for.
    public func evaluate(_ new: [Int32], logits: LogitRows = .last) throws -> [[Float]] {
        guard tokens.count + new.count <= contextLength else {
            throw attention.kv.overflowError(needed: tokens.count + new.count)
        }
        let vocab = model.config.vocabSize
        if let bad = new.first(where: { $0 < 0 || Int($0) >= vocab }) {
            throw ModelError.invalid("token id \(bad) is outside the vocabulary (0..<\(vocab))")
        }
        if new.isEmpty { return [] }
        let out = model.forward(new, start: tokens.count, attention: attention, logits: logits)
        try model.backend.checkError()
        tokens += new
        if new.count == 1, let c = attention as? CorrectingAttention, c.correctionInterval > 0 {
            stepsSinceCorrection += 1
            if stepsSinceCorrection >= c.correctionInterval { correctCache(c) }
        }
        return out
    }

    /// Recomputes the keys and values of the last `correctionInterval` tokens with dense
    /// attention in every layer, overwriting what the sparse decode steps wrote.
    private func correctCache(_ c: CorrectingAttention) {
        let n = min(c.correctionInterval, tokens.count)
        c.denseOverride = true
        _ = model.forward(Array(tokens.suffix(n)), start: tokens.count - n, attention: c, logits: .none)
        c.denseOverride = false
        stepsSinceCorrection = 0
    }

    /// Forgets every token from position `n` on.
    public func truncate(to n: Int) {
        let keep = min(n, tokens.count)
        tokens.removeLast(tokens.count - keep)
        attention.truncate(to: keep)
        stepsSinceCorrection = 0
    }

    public func reset() { truncate(to: 0) }

    /// Appends `count` positions whose keys and values are random (uniform in ±`scale`)
    /// instead of computed by the model — for speed benchmarks at long context, where what
    /// the cache holds does not change the work, but filling it with a real prefill would
    /// take most of the run on a small CPU. Their token ids are recorded as 0.
    public func appendSyntheticPositions(_ count: Int, seed: UInt64, scale: Float = 2) throws {
        guard tokens.count + count <= contextLength else {
            throw ModelError.contextOverflow(needed: tokens.count + count, limit: contextLength)
        }
        try Session.appendRandomKV(count, at: tokens.count, model: model, attention: attention, seed: seed, scale: scale)
        tokens += Array(repeating: 0, count: count)
        attention.kv.setLength(tokens.count)
    }

    /// Stores `count` positions of random keys (uniform in ±`scale`) and values (±1) at
    /// positions `start...` of every layer of `attention`'s (active) sequence.
    static func appendRandomKV(_ count: Int, at start: Int, model: LanguageModel, attention: AttentionMethod,
                               seed: UInt64, scale: Float) throws {
        // The GPU dense cache is filled on the device (host random numbers for an 8B model at
        // 32K positions would take most of a benchmark).
        if let gpu = attention as? CUDADenseAttention, let backend = model.backend as? CUDABackend,
           start % gpu.gpuCache.pageSize == 0 {
            try gpu.gpuCache.fillRandom(sequence: gpu.activeSequence, start: start, count: count,
                                        seed: UInt32(truncatingIfNeeded: seed &* 0x9E37_79B9), kernels: gpu.fast)
            try backend.checkError()
            return
        }
        let c = model.config
        let width = c.kvHeadCount * c.headDim
        let chunk = 256
        let b = model.backend
        let hk = Tensor(rows: chunk, cols: width), hv = Tensor(rows: chunk, cols: width)
        let k = b.makeTensor(rows: chunk, cols: width), v = b.makeTensor(rows: chunk, cols: width)
        var rng = Xoshiro256(seed: seed)
        var done = 0
        while done < count {
            let n = min(chunk, count - done)
            hk.rows = n
            hv.rows = n
            for layer in 0..<c.layerCount {
                if let gpu = b as? CUDABackend {
                    // Made on the device: a host loop and upload per layer took minutes at 64K
                    // positions of an 8B shape.
                    let s = UInt32(truncatingIfNeeded: rng.next())
                    gpu.fillUniform(k, rows: n, seed: s, scale: scale)
                    gpu.fillUniform(v, rows: n, seed: s ^ 0x5bd1_e995, scale: 1)
                } else {
                    for i in 0..<(n * width) {
                        hk.floats[i] = (Float(rng.next() >> 40) * 0x1p-24 * 2 - 1) * scale
                        hv.floats[i] = Float(rng.next() >> 40) * 0x1p-24 * 2 - 1
                    }
                    b.write(hk.floats, rows: n, into: k)
                    b.write(hv.floats, rows: n, into: v)
                }
                attention.append(layer: layer, k: k, v: v, start: start + done)
            }
            done += n
        }
        try b.checkError()
    }
}
