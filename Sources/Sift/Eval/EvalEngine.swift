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
        if reusePrefix { keep = EvalEngine.reusable(s.tokens, prompt) }
        s.truncate(to: keep)
        tokensReused += keep
        tokensEvaluated += prompt.count - keep
        let generator = Generator(session: s, sampling: .greedy, stopTokens: model.tokenizer.endOfGeneration)
        let r = try generator.generate(prompt: Array(prompt[keep...]), maxTokens: maxNewTokens)
        return (model.tokenizer.decode(r.tokens), prompt.count)
    }

    /// How much of `prompt` the cache may keep: the common prefix, less at least two tokens,
    /// so that what is evaluated again is a prefill (a single new token would be a decode
    /// step, which sparse methods attend sparsely) and yields the prompt's last logits.
    static func reusable(_ cached: [Int32], _ prompt: [Int32]) -> Int {
        let n = min(cached.count, prompt.count - 2)
        var keep = 0
        while keep < n && cached[keep] == prompt[keep] { keep += 1 }
        return keep
    }

    /// The teacher-forced score of `sample.forcedAnswer` after the prompt and
    /// `sample.forcedPrefix`: per answer token, its log-probability and whether it is the
    /// greedy choice, each given the true tokens before it. The positions after the prompt are
    /// attended as decode steps would attend them: the prompt's last token as the prefill
    /// attends it (densely), every later one by the method's decode-time selection (batched
    /// through `SparseAwareAttention.sparsePrefill` where the method has it, else one token a
    /// step). Call after `answer` for the same sample: it reuses the prompt in the cache.
    public func forcedScore(_ sample: EvalSample, length: Int) throws -> ForcedScore? {
        guard let answer = sample.forcedAnswer else { return nil }
        let prompt = format.tokens(sample)
        let opening = model.tokenizer.encode(sample.forcedPrefix, addSpecial: false, parseSpecial: false)
        let target = model.tokenizer.encode(answer, addSpecial: false, parseSpecial: false)
        guard !target.isEmpty else { return nil }
        let forced = opening + target
        let s = try session(for: max(length, prompt.count + forced.count))
        // The prompt's last tokens run again (as prefill) to give the first row.
        // (Not counted in tokensReused / tokensEvaluated, which report reuse across prompts.)
        let keep = EvalEngine.reusable(s.tokens, prompt)
        s.truncate(to: keep)
        var rows = try s.evaluate(Array(prompt[keep...]), logits: .last)
        if let sparse = s.attention as? SparseAwareAttention {
            let was = sparse.sparsePrefill
            sparse.sparsePrefill = true
            defer { sparse.sparsePrefill = was }
            rows += try s.evaluate(Array(forced.dropLast()), logits: .all)
        } else {
            for t in forced.dropLast() { rows += try s.evaluate([t], logits: .last) }
        }
        var score = ForcedScore()
        for (j, t) in target.enumerated() {
            let row = rows[opening.count + j]
            score.logProbs.append(Perplexity.logSoftmax(row, at: Int(t)))
            score.greedy.append(Sampler.argmax(row) == t)
        }
        return score
    }
}

/// Per token of a forced answer: log-probability given the true tokens before it, and whether
/// it is the token greedy sampling picks (`Sampler.argmax`).
public struct ForcedScore: Sendable, Equatable {
    public var logProbs: [Double] = []
    public var greedy: [Bool] = []
    /// Every token the greedy choice: greedy decoding would copy the answer whole.
    public var copied: Bool { greedy.allSatisfy { $0 } }
}
