import ArgumentParser
import Sift
#if canImport(Glibc)
import Glibc
#endif

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text after a prompt (-p, or standard input).")

    @OptionGroup var options: ModelOptions

    @Option(name: [.short, .customLong("prompt")], help: "Prompt text (default: read standard input).")
    var prompt: String?

    @Option(name: [.short, .customLong("n-predict")], help: "Tokens to generate at most.")
    var n: Int = 128

    @Option(name: [.short, .customLong("ctx")], help: "Context length (default: the model's).")
    var ctx: Int?

    @Option(name: .customLong("temp"), help: "Temperature; 0 = greedy.")
    var temperature: Float = 0.8

    @Option(name: .customLong("top-k"), help: "Keep the K most likely tokens (0 = all).")
    var topK: Int = 40

    @Option(name: .customLong("top-p"), help: "Nucleus sampling threshold (1 = off).")
    var topP: Float = 0.95

    @Option(name: .customLong("min-p"), help: "Drop tokens below this fraction of the top probability (0 = off).")
    var minP: Float = 0.05

    @Option(help: "Random seed (default: random).")
    var seed: UInt64?

    @Flag(help: "Treat the prompt as a user message in the model's chat format.")
    var chat = false

    @Option(help: "System message for --chat.")
    var system: String?

    @Flag(help: "One JSON object on stdout instead of streamed text.")
    var json = false

    func validate() throws {
        guard n >= 0 else { throw ValidationError("-n must be ≥ 0") }
        guard temperature >= 0 else { throw ValidationError("--temp must be ≥ 0") }
        guard topP > 0 && topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
        guard minP >= 0 && minP < 1 else { throw ValidationError("--min-p must be in [0, 1)") }
        if let ctx, ctx < 1 { throw ValidationError("-c must be ≥ 1") }
    }

    struct Output: Encodable {
        struct Timings: Encodable {
            var prefillTokensPerS: Double
            var decodeTokensPerS: Double
            var prefillSeconds: Double
            var decodeSeconds: Double
            enum CodingKeys: String, CodingKey {
                case prefillTokensPerS = "prefill_tokens_per_s", decodeTokensPerS = "decode_tokens_per_s"
                case prefillSeconds = "prefill_seconds", decodeSeconds = "decode_seconds"
            }
        }
        var model: String
        var attention: String
        var promptTokens: [Int32]
        var tokens: [Int32]
        var text: String
        var stoppedAtEnd: Bool
        var seed: UInt64
        var timings: Timings
        enum CodingKeys: String, CodingKey {
            case model, attention, tokens, text, seed, timings
            case promptTokens = "prompt_tokens", stoppedAtEnd = "stopped_at_end"
        }
    }

    func run() throws {
        var text = prompt ?? readStandardInput()
        let m = try options.load()
        if chat {
            guard let template = m.chatTemplate else {
                throw ValidationError("\(m.path) has no chat template sift knows; run without --chat")
            }
            var messages: [ChatMessage] = []
            if let system { messages.append(ChatMessage(role: "system", content: system)) }
            messages.append(ChatMessage(role: "user", content: text))
            text = template.format(messages, addGenerationPrompt: true)
        }
        let promptIds = m.tokenizer.encode(text, addSpecial: true, parseSpecial: true)
        guard !promptIds.isEmpty else { throw ValidationError("the prompt is empty") }
        let contextLength = ctx ?? m.config.contextLength
        if promptIds.count + n > contextLength {
            throw ValidationError("the prompt has \(promptIds.count) tokens; with -n \(n) it needs \(promptIds.count + n) positions but the context holds \(contextLength) (model: \(m.config.contextLength))")
        }
        let session = try m.session(contextLength: contextLength, attention: options.attention, options: options.attentionOptions())
        let seedValue = seed ?? UInt64.random(in: 0...UInt64.max)
        let params = SamplingParams(temperature: temperature, topK: topK, topP: topP, minP: minP, seed: seedValue)
        let generator = Generator(session: session, sampling: params, stopTokens: m.tokenizer.endOfGeneration)
        let stream = m.tokenizer.streamingDecoder()
        let result = try generator.generate(prompt: promptIds, maxTokens: n) { id in
            if !json {
                print(stream.append(id), terminator: "")
                fflush(stdout)
            }
            return true
        }
        let t = result.timings
        if json {
            try printJSON(Output(
                model: m.path, attention: options.attention, promptTokens: promptIds, tokens: result.tokens,
                text: m.tokenizer.decode(result.tokens), stoppedAtEnd: result.stoppedAtEnd, seed: seedValue,
                timings: .init(prefillTokensPerS: t.prefillTokensPerSecond, decodeTokensPerS: t.decodeTokensPerSecond,
                               prefillSeconds: t.prefillSeconds, decodeSeconds: t.decodeSeconds)))
        } else {
            print(stream.flush())
            fflush(stdout)
            note("prompt \(t.promptTokens) tokens, \(fixed(t.prefillTokensPerSecond, 1)) tok/s; generated \(t.generatedTokens) tokens, \(fixed(t.decodeTokensPerSecond, 1)) tok/s")
            // Evicting methods: eviction is logical on the CPU (rows stay in the f16 cache, unread).
            let evicted = (session.attention as? H2OAttention)?.evictedBytes ?? (session.attention as? StreamingLLMAttention)?.evictedBytes
            if let evicted {
                note("\(options.attention): evicted rows hold \(fixed(Double(evicted) / 1_048_576, 2)) MiB of KV (not freed on the CPU: a compacting cache would free them)")
            }
        }
    }
}

/// All of standard input as text.
func readStandardInput() -> String {
    var s = ""
    while let line = readLine(strippingNewline: false) { s += line }
    return s
}
