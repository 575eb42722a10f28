/// Runs eval samples on a model: greedy decoding of a few dozen tokens after each prompt.
///
/// Cells of one length differ only after the first needle, so the session keeps its cache
/// between samples and each new prompt re-evaluates only from the first token where it differs
/// from what the cache holds (`Session.truncate`); the logits for a position depend only on the
/// tokens before it, so the output is the same as from an empty cache.
public final class EvalEngine {
    public let model: LoadedModel
    public let format: EvalPromptFormat
    let attention: String
    let options: AttentionOptions
    var session: Session?
    /// Reuse the cached common prefix (on by default).
    public var reusePrefix = true
    /// Prompt tokens evaluated and reused so far (for the report of what prefix reuse saved).
    public private(set) var tokensEvaluated = 0
    public private(set) var tokensReused = 0

    public init(model: LoadedModel, attention: String, options: AttentionOptions) {
        self.model = model
        self.attention = attention
        self.options = options
        format = EvalPromptFormat(tokenizer: model.tokenizer, template: model.chatTemplate)
    }

    /// A session whose cache holds `length` positions (a new one when the current is smaller).
    func session(for length: Int) throws -> Session {
        if let s = session, s.contextLength >= length { return s }
        session = nil
        let s = try model.session(contextLength: length, attention: attention, options: options)
        session = s
        return s
    }

    /// The model's answer to a sample, and the prompt's token count.
    public func answer(_ sample: EvalSample, length: Int, maxNewTokens: Int) throws -> (output: String, promptTokens: Int) {
        let prompt = format.tokens(sample)
        guard prompt.count + maxNewTokens <= length || length <= 0 else {
            throw EvalError.invalid("internal: a prompt of \(prompt.count) tokens + \(maxNewTokens) exceeds the cell length \(length)")
        }
        let s = try session(for: max(length, prompt.count + maxNewTokens))
        var keep = 0
        if reusePrefix {
            let cached = s.tokens
            let n = min(cached.count, prompt.count - 1)
            while keep < n && cached[keep] == prompt[keep] { keep += 1 }
        }
        s.truncate(to: keep)
        tokensReused += keep
        tokensEvaluated += prompt.count - keep
        let generator = Generator(session: s, sampling: .greedy, stopTokens: model.tokenizer.endOfGeneration)
        let r = try generator.generate(prompt: Array(prompt[keep...]), maxTokens: maxNewTokens)
        return (model.tokenizer.decode(r.tokens), prompt.count)
    }
}
