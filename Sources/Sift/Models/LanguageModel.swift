/// Which positions of a forward pass need logits.
public enum LogitRows: Sendable {
    case none
    case last
    case all
    /// The last row, left on the backend in `LanguageModel.logitsOnBackend` (1 row) instead
    /// of read back (GPU-side sampling); `forward` returns no rows.
    case lastOnBackend
}

/// A decoder-only transformer: token ids in, logits out. Attention is delegated to an
/// `AttentionMethod`, everything else to a `Backend`.
public protocol LanguageModel: AnyObject {
    var config: ModelConfig { get }
    var backend: Backend { get }
    /// The attention geometry of layer `l`.
    func attentionShape(layer l: Int) -> AttentionShape
    /// Runs `tokens` at positions `start..<start + tokens.count` (the cache must hold the
    /// positions before `start`) and returns logits for the rows asked for.
    func forward(_ tokens: [Int32], start: Int, attention: AttentionMethod, logits: LogitRows) -> [[Float]]
    /// One decode step of several sequences in one forward pass: `tokens[i]` is the next token
    /// of sequence i of `attention`, at position `positions[i]` (the cache of sequence i must
    /// hold the positions before it). Returns the logits of every row; sets each sequence's
    /// length to `positions[i] + 1`. At most `chunkSize` rows.
    /// `readLogits` false: returns no rows and leaves the logits in `logitsOnBackend`.
    func forwardBatch(_ tokens: [Int32], positions: [Int32], attention: BatchedDecodeAttention, readLogits: Bool) -> [[Float]]
    /// The logits (rows × vocab, f32) of the last pass that kept them on the backend
    /// (`LogitRows.lastOnBackend`, `forwardBatch(readLogits: false)`).
    var logitsOnBackend: Tensor { get }
    /// Rows per forward pass (the prefill chunk; also the largest decode batch).
    var chunkSize: Int { get }
}

extension LanguageModel {
    public func forwardBatch(_ tokens: [Int32], positions: [Int32], attention: BatchedDecodeAttention) -> [[Float]] {
        forwardBatch(tokens, positions: positions, attention: attention, readLogits: true)
    }
}

/// The architectures sift runs, by `general.architecture`. Adding one = one model file plus
/// one line here.
public enum Architectures {
    typealias Loader = (GGUFFile, Backend, Int) throws -> LanguageModel

    static let loaders: [String: Loader] = [
        "llama": { try LlamaModel(file: $0, backend: $1, maxBatch: $2) },
        "mistral": { try LlamaModel(file: $0, backend: $1, maxBatch: $2) },
        "qwen2": { try LlamaModel(file: $0, backend: $1, maxBatch: $2) },
        "gemma3": { try Gemma3Model(file: $0, backend: $1, maxBatch: $2) },
    ]

    public static var supported: [String] { loaders.keys.sorted() }

    /// Loads the model in `file` for `backend`; `maxBatch` tokens are processed per pass
    /// (default: `PrefillChunk.default(for: backend)`).
    public static func load(_ file: GGUFFile, backend: Backend, maxBatch: Int? = nil) throws -> LanguageModel {
        let arch = try file.architecture()
        guard let loader = loaders[arch] else {
            throw ModelError.unsupportedArchitecture(arch, path: file.path)
        }
        let chunk = maxBatch ?? PrefillChunk.default(for: backend)
        guard chunk >= 1 else { throw ModelError.invalid("tokens per forward pass must be ≥ 1, not \(chunk)") }
        return try loader(file, backend, chunk)
    }
}

/// Tokens per forward pass in prefill (the activation buffers hold this many rows).
///
/// On the CPU 512 is enough to keep the threads busy. A GPU needs much larger passes: on an
/// H100 (synthetic qwen2.5-1.5b, 32K-token prompt) prefill ran at 9.9K tok/s in chunks of
/// 512, 29.4K in 2048, 28.8K in 4096 and 30.6K in 8192 (docs/benchmarks.md). The buffers grow
/// with the chunk (about chunk × (3·dim + 2·qDim + 2·kvDim + 2·ffnDim) floats: ~1.7 GiB for an
/// 8B model at 8192, ~0.9 GiB for a 1.5B one), so the GPU default is 8192; lower it
/// (`--chunk`) on a small GPU.
public enum PrefillChunk {
    public static let cpu = 512
    public static let gpu = 8192

    public static func `default`(for backend: Backend) -> Int { backend is CUDABackend ? gpu : cpu }
    public static func `default`(for device: DeviceSpec) -> Int { device == .cpu ? cpu : gpu }
}

/// Looks up weights by name with shape checks, for the model files.
struct WeightLoader {
    let file: GGUFFile
    let backend: Backend

    func callAsFunction(_ name: String, _ shape: [Int]) throws -> Weight {
        guard let info = file.tensorsByName[name] else {
            throw ModelError.missingTensor(name, path: file.path)
        }
        guard info.shape == shape || (shape.count == 2 && info.shape == [shape[0], shape[1], 1]) else {
            throw ModelError.badTensor(name, path: file.path, reason: "shape \(info.shape), expected \(shape)")
        }
        return try backend.loadWeight(info, from: file)
    }

    func optional(_ name: String, _ shape: [Int]) throws -> Weight? {
        file.tensorsByName[name] == nil ? nil : try self(name, shape)
    }
}
