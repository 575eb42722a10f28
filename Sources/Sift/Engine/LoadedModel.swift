/// Everything needed to run one GGUF model file: the mapped file, its weights on a backend,
/// its tokenizer and chat format. Two `LoadedModel`s in one process share nothing.
public final class LoadedModel {
    public let path: String
    public let file: GGUFFile
    public let backend: Backend
    public let model: LanguageModel
    public let tokenizer: Tokenizer
    /// The chat format from `tokenizer.chat_template`, when the file has one sift knows.
    public let chatTemplate: ChatTemplate?

    public var config: ModelConfig { model.config }

    private var cachedSHA256: String?
    /// The model file's sha256 (cached beside the models, keyed by path, size and mtime).
    public func sha256() throws -> String {
        if let s = cachedSHA256 { return s }
        let s = try ModelHub.fileSHA256(path)
        cachedSHA256 = s
        return s
    }

    /// - Parameters:
    ///   - threads: CPU worker threads (default: every core).
    ///   - maxBatch: tokens per forward pass in prefill (default: `PrefillChunk`, 512 on the
    ///     CPU, 8192 on a GPU).
    ///   - device: where the model runs (weights are uploaded to a GPU once).
    ///   - kvMemoryBytes: GPU KV cache size limit (nil: from free memory).
    public init(path: String, threads: Int = ThreadPool.processorCount, maxBatch: Int? = nil,
                device: DeviceSpec = .cpu, kvMemoryBytes: Int? = nil) throws {
        self.path = path
        file = try GGUFFile(path: path)
        switch device {
        case .cpu:
            backend = CPUBackend(threads: max(1, threads))
        case .cuda(let ordinal):
            let gpu = try CUDABackend(ordinal: ordinal, threads: max(1, threads))
            gpu.kvMemoryBytes = kvMemoryBytes
            backend = gpu
        }
        model = try Architectures.load(file, backend: backend, maxBatch: maxBatch)
        tokenizer = try Tokenizer(gguf: file)
        chatTemplate = try? ChatTemplate(gguf: file)
    }

    /// A fresh sequence with a cache of `contextLength` positions (default: the model's
    /// trained context) and the named attention method.
    public func session(contextLength: Int? = nil, attention: String = "dense",
                        options: AttentionOptions = AttentionOptions()) throws -> Session {
        let n = contextLength ?? config.contextLength
        guard n > 0 else { throw ModelError.invalid("context length must be positive, got \(n)") }
        var o = options
        o.modelPath = path
        if attention != "dense" && o.modelSHA256 == nil { o.modelSHA256 = try sha256() }
        return try Session(model: model, contextLength: n, attention: attention, options: o)
    }
}
