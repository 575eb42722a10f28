/// The attention methods selectable by name (`--attention NAME`). Adding a method = one file
/// in Attention/ plus one line here.
public enum AttentionMethods {
    typealias Factory = (KVCache, LanguageModel) throws -> AttentionMethod

    static let factories: [String: Factory] = [
        "dense": { cache, model in DenseAttention(cache: cache, pool: (model.backend as! CPUBackend).pool) },
    ]

    public static var names: [String] { factories.keys.sorted() }

    public static func make(_ name: String, cache: KVCache, model: LanguageModel) throws -> AttentionMethod {
        guard let f = factories[name] else {
            throw ModelError.invalid("unknown attention method '\(name)' (known: \(names.joined(separator: ", ")))")
        }
        return try f(cache, model)
    }
}
