/// Timings of one generation, as llama.cpp reports them.
public struct GenerationTimings: Sendable {
    public var promptTokens = 0
    public var prefillSeconds = 0.0
    public var generatedTokens = 0
    public var decodeSeconds = 0.0

    public var prefillTokensPerSecond: Double { prefillSeconds > 0 ? Double(promptTokens) / prefillSeconds : 0 }
    /// Decode speed over the generated tokens after the first (the first comes from prefill).
    public var decodeTokensPerSecond: Double {
        decodeSeconds > 0 ? Double(max(0, generatedTokens - 1)) / decodeSeconds : 0
    }
}

public struct GenerationResult: Sendable {
    public var tokens: [Int32]
    public var stoppedAtEnd: Bool
    public var timings: GenerationTimings
}

extension Duration {
    var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) * 1e-18
    }
}

/// Generates tokens after a prompt: prefill the prompt in batches, then decode one token at a
/// time, sampling each from the last logits, until `maxTokens` or an end-of-generation token.
public struct Generator {
    public let session: Session
    public var sampling: SamplingParams
    /// Tokens that end generation (EOS, end of turn); they are not returned.
    public var stopTokens: Set<Int32>

    public init(session: Session, sampling: SamplingParams, stopTokens: Set<Int32>) {
        self.session = session
        self.sampling = sampling
        self.stopTokens = stopTokens
    }

    /// `onToken` is called with each new token as soon as it is sampled; returning false stops.
    public func generate(prompt: [Int32], maxTokens: Int,
                         onToken: (Int32) -> Bool = { _ in true }) throws -> GenerationResult {
        precondition(!prompt.isEmpty, "empty prompt")
        let needed = session.tokens.count + prompt.count + maxTokens
        if needed > session.contextLength {
            throw ModelError.contextOverflow(needed: needed, limit: session.contextLength)
        }
        var sampler = Sampler(sampling)
        var timings = GenerationTimings()
        let clock = ContinuousClock()
        let t0 = clock.now
        var logits = try session.evaluate(prompt, logits: .last)[0]
        timings.promptTokens = prompt.count
        timings.prefillSeconds = (clock.now - t0).seconds
        var out: [Int32] = []
        var stopped = false
        let t1 = clock.now
        while out.count < maxTokens {
            let next = sampler.sample(logits)
            if stopTokens.contains(next) { stopped = true; break }
            out.append(next)
            if !onToken(next) || out.count == maxTokens { break }
            logits = try session.evaluate([next], logits: .last)[0]
        }
        timings.generatedTokens = out.count
        timings.decodeSeconds = (clock.now - t1).seconds
        return GenerationResult(tokens: out, stoppedAtEnd: stopped, timings: timings)
    }
}
