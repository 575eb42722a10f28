/// Which positions of a forward pass need logits.
public enum LogitRows: Sendable {
    case none
    case last
    case all
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

    /// Loads the model in `file` for `backend`; `maxBatch` tokens are processed per pass.
    public static func load(_ file: GGUFFile, backend: Backend, maxBatch: Int = 512) throws -> LanguageModel {
        let arch = try file.architecture()
        guard let loader = loaders[arch] else {
            throw ModelError.unsupportedArchitecture(arch, path: file.path)
        }
        return try loader(file, backend, maxBatch)
    }
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
