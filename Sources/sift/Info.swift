import ArgumentParser
import Sift

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a model's architecture, sizes, context length and tensor types.")

    @Argument(help: "Model name or .gguf path.")
    var model: String = ModelHub.defaultModel

    @Flag(help: "One JSON object on stdout.")
    var json = false

    struct TypeCount: Encodable {
        var type: String
        var tensors: Int
        var bytes: Int
    }

    struct Report: Encodable {
        var path: String
        var name: String
        var architecture: String
        var ggufVersion: Int
        var fileBytes: Int
        var parameters: Int
        var layers: Int
        var embeddingDim: Int
        var heads: Int
        var kvHeads: Int
        var headDim: Int
        var ffnDim: Int
        var vocabSize: Int
        var contextLength: Int
        var ropeBase: Double
        var slidingWindow: Int
        var tokenizer: String
        var chatFormat: String?
        var tensorTypes: [TypeCount]

        enum CodingKeys: String, CodingKey {
            case path, name, architecture, parameters, layers, heads, tokenizer
            case ggufVersion = "gguf_version", fileBytes = "file_bytes", embeddingDim = "embedding_dim"
            case kvHeads = "kv_heads", headDim = "head_dim", ffnDim = "ffn_dim", vocabSize = "vocab_size"
            case contextLength = "context_length", ropeBase = "rope_base", slidingWindow = "sliding_window"
            case chatFormat = "chat_format", tensorTypes = "tensor_types"
        }
    }

    func run() throws {
        let path = try ModelHub.resolve(model)
        let f = try GGUFFile(path: path)
        let c = try ModelConfig(gguf: f)
        var byType: [String: TypeCount] = [:]
        for t in f.tensors {
            let k = "\(t.type)"
            byType[k, default: TypeCount(type: k, tensors: 0, bytes: 0)].tensors += 1
            byType[k]!.bytes += t.byteCount
        }
        let r = Report(
            path: path, name: c.name, architecture: c.architecture, ggufVersion: Int(f.version),
            fileBytes: f.file.bytes.count, parameters: f.tensors.reduce(0) { $0 + $1.elementCount },
            layers: c.layerCount, embeddingDim: c.dim, heads: c.headCount, kvHeads: c.kvHeadCount,
            headDim: c.headDim, ffnDim: c.ffnDim, vocabSize: c.vocabSize, contextLength: c.contextLength,
            ropeBase: Double(c.ropeBase), slidingWindow: c.slidingWindow,
            tokenizer: f["tokenizer.ggml.model"]?.string ?? "none",
            chatFormat: (try? ChatTemplate(gguf: f)).map { "\($0.kind)" },
            tensorTypes: byType.values.sorted { $0.bytes > $1.bytes })
        if json { try printJSON(r); return }
        let mib = Double(r.fileBytes) / 1_048_576
        print("""
        path            \(r.path)
        name            \(r.name)
        architecture    \(r.architecture) (GGUF v\(r.ggufVersion))
        file size       \(fixed(mib, 2)) MiB
        parameters      \(fixed(Double(r.parameters) / 1e6, 2)) M
        layers          \(r.layers)
        embedding dim   \(r.embeddingDim)
        heads / kv      \(r.heads) / \(r.kvHeads) (head_dim \(r.headDim))
        ffn dim         \(r.ffnDim)
        vocabulary      \(r.vocabSize) (\(r.tokenizer))
        context length  \(r.contextLength)
        rope base       \(fixed(r.ropeBase, 0))\(r.slidingWindow > 0 ? "\nsliding window  \(r.slidingWindow) (local layers), local rope base \(fixed(Double(c.ropeBaseLocal), 0))" : "")
        chat format     \(r.chatFormat ?? "none")
        tensor types:
        """)
        for t in r.tensorTypes {
            print("  \(padRight(t.type, 6)) \(padLeft("\(t.tensors)", 4)) tensors  \(padLeft(fixed(Double(t.bytes) / 1_048_576, 2), 9)) MiB")
        }
    }
}
