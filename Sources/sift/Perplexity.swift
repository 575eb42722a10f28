import ArgumentParser
import Sift

struct PerplexityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ppl",
        abstract: "Perplexity of a text, computed as llama.cpp's llama-perplexity does.",
        discussion: """
        The text is tokenized (BOS as the model adds it), cut into non-overlapping chunks of CTX \
        tokens, each evaluated from an empty cache with its first token replaced by BOS; the \
        first half of every chunk is context only and the second half is scored. \
        -f pg50k uses the golden text: the first 50,000 bytes of the Paul Graham essays \
        (downloaded once).
        """)

    @OptionGroup var options: ModelOptions

    @Option(name: [.short, .customLong("file")], help: "Text file to score, or 'pg50k' (golden text) or 'heldout' (the essays never calibrated on).")
    var file: String

    @Option(name: [.short, .customLong("ctx")], help: "Chunk length in tokens.")
    var ctx: Int = 512

    @Option(help: "Score at most this many chunks (default: all).")
    var chunks: Int?

    @Option(name: [.customLong("chunk"), .customLong("batch")],
            help: "Tokens per forward pass (default: 512 on the CPU, 8192 on a GPU; at most -c).")
    var chunk: Int?

    @Flag(help: "One JSON object on stdout.")
    var json = false

    @Flag(help: "Also measure, per layer, the share of the exact attention mass the selected tokens keep.")
    var recall = false

    func validate() throws {
        guard ctx >= 4 else { throw ValidationError("-c must be at least 4") }
        if let chunks, chunks < 1 { throw ValidationError("--chunks must be ≥ 1") }
        if let chunk, chunk < 1 { throw ValidationError("--chunk must be ≥ 1") }
    }

    struct Output: Encodable {
        var model: String
        var attention: String
        var ppl: Double
        var tokensScored: Int
        var ctx: Int
        var chunks: Int
        var running: [Double]
        var seconds: Double
        var budget: String
        var recallPerLayer: [Double]?
        enum CodingKeys: String, CodingKey {
            case model, attention, ppl, ctx, chunks, running, seconds, budget
            case recallPerLayer = "recall_per_layer"
            case tokensScored = "tokens_scored"
        }
    }

    func run() throws {
        let text = file == "pg50k" ? try Haystack.pg50k() : file == "heldout" ? try EssaySplit.heldOutText() : try readTextFile(file)
        let device = try DeviceSpec(parsing: options.device)
        let m = try options.load(maxBatch: min(chunk ?? PrefillChunk.default(for: device), ctx))
        guard ctx <= m.config.contextLength else {
            throw ValidationError("-c \(ctx) exceeds the model's context length \(m.config.contextLength)")
        }
        let tokens = m.tokenizer.encode(text, addSpecial: true, parseSpecial: false)
        // Sparse-aware: every scored position attends only to what the method would pick.
        var attentionOptions = try options.attentionOptions()
        attentionOptions.measureRecall = recall
        let session = try m.session(contextLength: ctx, attention: options.attention, options: attentionOptions)
        let clock = ContinuousClock()
        let t0 = clock.now
        let r = try Perplexity.compute(
            tokens: tokens, bos: m.tokenizer.addsBOS ? m.tokenizer.bos : nil, ctx: ctx, maxChunks: chunks,
            session: session
        ) { done, total, ppl in
            if !json { progressLine("chunk \(done)/\(total): running ppl \(fixed(ppl, 4))") }
        }
        let seconds = Double((clock.now - t0).components.seconds) + Double((clock.now - t0).components.attoseconds) * 1e-18
        let recallPerLayer = (session.attention as? RecallReporting)?.recall?.perLayer
        if json {
            try printJSON(Output(model: m.path, attention: options.attention, ppl: r.ppl, tokensScored: r.tokensScored,
                                 ctx: r.ctx, chunks: r.chunks, running: r.running, seconds: seconds,
                                 budget: "\(attentionOptions.budget)", recallPerLayer: recallPerLayer))
        } else {
            note("")
            print("ppl \(fixed(r.ppl, 4)) over \(r.tokensScored) tokens (\(r.chunks) chunks of \(r.ctx), \(options.attention) attention, \(fixed(seconds, 1)) s)")
            print("running: " + r.running.map { fixed($0, 4) }.joined(separator: ", "))
            if let recallPerLayer {
                print("attention recall per layer: " + recallPerLayer.map { fixed($0, 3) }.joined(separator: " "))
            }
        }
    }
}
