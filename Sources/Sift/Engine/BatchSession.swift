/// Several sequences of one model decoding together: each `decode` step is ONE forward pass of
/// B rows, one new token per sequence (sequences may have different lengths). Prefill stays
/// one sequence at a time (`prefill(sequence:_:)`), through the same batched attention method.
///
/// The method must conform to `BatchedDecodeAttention` (dense on the CPU and on the GPU).
public final class BatchSession {
    public let model: LanguageModel
    public let attention: BatchedDecodeAttention
    /// Tokens in the cache, per sequence.
    public private(set) var tokens: [[Int32]]
    /// Positions each sequence can hold.
    public var contextLength: Int { attention.kv.capacity }
    public var sequenceCount: Int { attention.sequenceCount }

    public init(model: LanguageModel, attention: BatchedDecodeAttention) throws {
        guard attention.sequenceCount <= model.chunkSize else {
            throw ModelError.invalid("a batch of \(attention.sequenceCount) sequences exceeds the \(model.chunkSize) rows of one forward pass (raise the prefill chunk)")
        }
        self.model = model
        self.attention = attention
        tokens = Array(repeating: [], count: attention.sequenceCount)
    }

    /// `sequences` sequences of `contextLength` positions each, with the named method (dense),
    /// on the model's backend (GPU caches when it is CUDA).
    public convenience init(model: LanguageModel, sequences: Int, contextLength: Int, attention name: String = "dense",
                            options: AttentionOptions = AttentionOptions()) throws {
        guard sequences >= 1 else { throw ModelError.invalid("a batch needs at least one sequence, not \(sequences)") }
        guard contextLength >= 1 else { throw ModelError.invalid("context length must be positive, got \(contextLength)") }
        let method: AttentionMethod
        if let gpu = model.backend as? CUDABackend {
            method = try gpu.makeAttention(name, model: model, contextLength: contextLength, options: options,
                                           sequences: sequences)
        } else {
            guard name == "dense" else {
                throw ModelError.invalid("attention method '\(name)' cannot decode a batch of sequences (batched: dense)")
            }
            let c = model.config
            let caches = (0..<sequences).map { _ in
                KVCache(layers: c.layerCount, kvHeads: c.kvHeadCount, headDim: c.headDim, capacity: contextLength)
            }
            method = DenseAttention(caches: caches, pool: try AttentionMethods.cpuPool(model))
        }
        guard let batched = method as? BatchedDecodeAttention, batched.sequenceCount == sequences else {
            throw ModelError.invalid("attention method '\(name)' cannot decode a batch of sequences")
        }
        try self.init(model: model, attention: batched)
    }

    private func check(_ sequence: Int) throws {
        guard sequence >= 0 && sequence < sequenceCount else {
            throw ModelError.invalid("sequence \(sequence) out of range (batch of \(sequenceCount))")
        }
    }

    private func checkTokens(_ new: [Int32]) throws {
        let vocab = model.config.vocabSize
        if let bad = new.first(where: { $0 < 0 || Int($0) >= vocab }) {
            throw ModelError.invalid("token id \(bad) is outside the vocabulary (0..<\(vocab))")
        }
    }

    /// Appends `new` tokens to sequence `sequence` (a prefill of that sequence alone) and
    /// returns the logits asked for.
    public func prefill(sequence: Int, _ new: [Int32], logits: LogitRows = .last) throws -> [[Float]] {
        try check(sequence)
        let have = tokens[sequence].count
        guard have + new.count <= contextLength else { throw attention.kv.overflowError(needed: have + new.count) }
        try checkTokens(new)
        if new.isEmpty { return [] }
        let out = attention.withSequence(sequence) {
            model.forward(new, start: have, attention: attention, logits: logits)
        }
        try model.backend.checkError()
        tokens[sequence] += new
        return out
    }

    /// Checks a decode step's tokens and returns the position each row is written at.
    private func stepPositions(_ next: [Int32]) throws -> [Int32] {
        guard !next.isEmpty, next.count <= sequenceCount else {
            throw ModelError.invalid("a decode step takes 1...\(sequenceCount) tokens, not \(next.count)")
        }
        try checkTokens(next)
        for i in next.indices where tokens[i].count + 1 > contextLength {
            throw attention.withSequence(i) { attention.kv.overflowError(needed: tokens[i].count + 1) }
        }
        return next.indices.map { Int32(tokens[$0].count) }
    }

    /// One decode step: `next[i]` is appended to sequence i (for i < next.count; fewer tokens
    /// than sequences decode the first ones only). Returns the logits of each row.
    public func decode(_ next: [Int32]) throws -> [[Float]] {
        let positions = try stepPositions(next)
        let out = model.forwardBatch(next, positions: positions, attention: attention)
        try model.backend.checkError()
        for (i, t) in next.enumerated() { tokens[i].append(t) }
        return out
    }

    /// A greedy decode step: appends `next[i]` to sequence i and returns each row's argmax
    /// (lowest id among ties) — computed on the GPU when the backend is CUDA, so only the ids
    /// come back.
    public func decodeGreedy(_ next: [Int32]) throws -> [Int32] {
        guard let gpu = model.backend as? CUDABackend else { return try decode(next).map { Sampler.argmax($0) } }
        let positions = try stepPositions(next)
        _ = model.forwardBatch(next, positions: positions, attention: attention, readLogits: false)
        try model.backend.checkError()
        for (i, t) in next.enumerated() { tokens[i].append(t) }
        return try gpu.sampling().argmax(logits: CUDABackend.address(model.logitsOnBackend), rows: next.count,
                                         vocab: model.config.vocabSize)
    }

    /// Appends `count` positions of random keys and values to `sequence` (speed benchmarks at
    /// depth; see `Session.appendSyntheticPositions`). Their token ids are recorded as 0.
    public func appendSyntheticPositions(sequence: Int, _ count: Int, seed: UInt64, scale: Float = 2) throws {
        try check(sequence)
        let have = tokens[sequence].count
        guard have + count <= contextLength else { throw attention.kv.overflowError(needed: have + count) }
        try attention.withSequence(sequence) {
            try Session.appendRandomKV(count, at: have, model: model, attention: attention, seed: seed, scale: scale)
            attention.kv.setLength(have + count)
        }
        tokens[sequence] += Array(repeating: 0, count: count)
    }

    /// Forgets the tokens of `sequence` from position `n` on.
    public func truncate(sequence: Int, to n: Int) {
        let keep = min(max(0, n), tokens[sequence].count)
        tokens[sequence].removeLast(tokens[sequence].count - keep)
        attention.withSequence(sequence) { attention.truncate(to: keep) }
    }

    /// Clears every sequence.
    public func reset() { for i in 0..<sequenceCount { truncate(sequence: i, to: 0) } }
}
