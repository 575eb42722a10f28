/// How rotary position embedding pairs up the channels of a head.
public enum RoPEStyle: Sendable {
    /// Channel i pairs with i + d/2 (GPT-NeoX, Qwen2, Gemma).
    case neox
    /// Channel 2i pairs with 2i + 1 (original Llama / GPT-J layout of GGUF llama models).
    case interleaved
}

/// Hyperparameters of a transformer, read from GGUF metadata (`<arch>.*` keys).
public struct ModelConfig: Sendable, Equatable {
    public var architecture: String
    public var name: String
    public var vocabSize: Int
    public var dim: Int
    public var layerCount: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headDim: Int
    public var ffnDim: Int
    public var contextLength: Int
    public var normEps: Float
    public var ropeBase: Float
    public var ropeStyle: RoPEStyle
    /// Linear RoPE scaling factor (positions are divided by it), 1 when absent.
    public var ropeScale: Float
    /// Scale applied to q·k (1/√headDim unless the architecture says otherwise).
    public var attentionScale: Float

    // Gemma 3 specifics (neutral values for other architectures).
    /// Local (sliding-window) layers see the last `slidingWindow` positions; 0 = none.
    public var slidingWindow: Int
    /// Every `slidingPattern`-th layer is global; the others are local. 0 = all global.
    public var slidingPattern: Int
    /// RoPE base of the local layers.
    public var ropeBaseLocal: Float

    /// Whether layer `l` uses sliding-window attention.
    public func isSlidingLayer(_ l: Int) -> Bool {
        slidingWindow > 0 && slidingPattern > 0 && (l + 1) % slidingPattern != 0
    }

    public var kvDim: Int { kvHeadCount * headDim }
    public var qDim: Int { headCount * headDim }
    public var groupSize: Int { headCount / kvHeadCount }

    public init(gguf f: GGUFFile) throws {
        let arch = try f.architecture()
        func key(_ k: String) -> String { "\(arch).\(k)" }
        architecture = arch
        name = f["general.name"]?.string ?? arch
        dim = try f.int(key("embedding_length"))
        layerCount = try f.int(key("block_count"))
        headCount = try f.int(key("attention.head_count"))
        kvHeadCount = f[key("attention.head_count_kv")]?.int ?? headCount
        headDim = f[key("attention.key_length")]?.int ?? (dim / max(headCount, 1))
        ffnDim = try f.int(key("feed_forward_length"))
        contextLength = f[key("context_length")]?.int ?? 4096
        normEps = Float(f[key("attention.layer_norm_rms_epsilon")]?.double ?? 1e-6)
        ropeBase = Float(f[key("rope.freq_base")]?.double ?? 10_000)
        ropeScale = 1
        if f[key("rope.scaling.type")]?.string == "linear", let factor = f[key("rope.scaling.factor")]?.double, factor > 0 {
            ropeScale = Float(factor)
        }
        if let tokens = f["tokenizer.ggml.tokens"]?.array {
            vocabSize = tokens.count
        } else {
            vocabSize = f[key("vocab_size")]?.int ?? 0
        }
        slidingWindow = 0
        slidingPattern = 0
        ropeBaseLocal = ropeBase
        attentionScale = 1 / Float(headDim).squareRoot()

        switch arch {
        case "qwen2", "qwen2moe", "gemma3", "gemma2", "gemma":
            ropeStyle = .neox
        default:
            ropeStyle = .interleaved
        }
        if arch == "gemma3" {
            slidingWindow = f[key("attention.sliding_window")]?.int ?? 512
            slidingPattern = 6
            ropeBaseLocal = 10_000
        }

        let field = "\(f.path): \(arch)"
        guard dim > 0, layerCount > 0, headCount > 0, kvHeadCount > 0, headDim > 0, ffnDim > 0 else {
            throw ModelError.invalid("\(field): non-positive size in metadata")
        }
        guard headCount % kvHeadCount == 0 else {
            throw ModelError.invalid("\(field): head_count \(headCount) is not a multiple of head_count_kv \(kvHeadCount)")
        }
        guard headDim % 2 == 0 else {
            throw ModelError.invalid("\(field): key_length \(headDim) must be even for RoPE")
        }
    }
}

public enum ModelError: Error, CustomStringConvertible {
    case invalid(String)
    case unsupportedArchitecture(String, path: String)
    case missingTensor(String, path: String)
    case badTensor(String, path: String, reason: String)
    case contextOverflow(needed: Int, limit: Int)

    public var description: String {
        switch self {
        case .invalid(let s): return s
        case .unsupportedArchitecture(let a, let path):
            return "\(path): unsupported architecture '\(a)' (sift runs: \(Architectures.supported.joined(separator: ", ")))"
        case .missingTensor(let n, let path): return "\(path): missing tensor '\(n)'"
        case .badTensor(let n, let path, let reason): return "\(path): tensor '\(n)': \(reason)"
        case .contextOverflow(let needed, let limit):
            return "the prompt and generation need \(needed) tokens but the context holds \(limit) (raise -c/--ctx up to the model's context length, or shorten the prompt)"
        }
    }
}
