/// One sequence being processed by a model: its KV cache, its attention method and the
/// tokens already in the cache.
public final class Session {
    public let model: LanguageModel
    public let attention: AttentionMethod
    /// Tokens whose keys and values are in the cache, in order.
    public private(set) var tokens: [Int32] = []
    public var contextLength: Int { attention.cache.capacity }

    public init(model: LanguageModel, attention: AttentionMethod) {
        self.model = model
        self.attention = attention
    }

    /// A session with dense attention on the CPU and a cache of `contextLength` positions.
    public convenience init(model: LanguageModel, contextLength: Int, attention name: String = "dense",
                            options: AttentionOptions = AttentionOptions()) throws {
        let c = model.config
        let cache = KVCache(layers: c.layerCount, kvHeads: c.kvHeadCount, headDim: c.headDim, capacity: contextLength)
        try self.init(model: model, attention: AttentionMethods.make(name, cache: cache, model: model, options: options))
    }

    /// Appends `new` tokens to the sequence and returns the logits asked for.
    public func evaluate(_ new: [Int32], logits: LogitRows = .last) throws -> [[Float]] {
        guard tokens.count + new.count <= contextLength else {
            throw ModelError.contextOverflow(needed: tokens.count + new.count, limit: contextLength)
        }
        let vocab = model.config.vocabSize
        if let bad = new.first(where: { $0 < 0 || Int($0) >= vocab }) {
            throw ModelError.invalid("token id \(bad) is outside the vocabulary (0..<\(vocab))")
        }
        if new.isEmpty { return [] }
        let out = model.forward(new, start: tokens.count, attention: attention, logits: logits)
        tokens += new
        return out
    }

    /// Forgets every token from position `n` on.
    public func truncate(to n: Int) {
        let keep = min(n, tokens.count)
        tokens.removeLast(tokens.count - keep)
        attention.truncate(to: keep)
    }

    public func reset() { truncate(to: 0) }
}
