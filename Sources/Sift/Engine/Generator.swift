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
    /// On a CUDA backend, pick greedy and top-k (k ≤ 64) tokens on the GPU: only the id, or
    /// the k candidates, come back instead of the whole vocabulary's logits (top-p, min-p and
    /// temperature then run on the host over the candidates, as `Sampler` does).
    public var deviceSampling = true

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
        let gpu = deviceSampling ? Generator.deviceSampler(session.model, sampling) : nil
        /// Runs `tokens` and samples the next token.
        func step(_ tokens: [Int32]) throws -> Int32 {
            if let gpu {
                _ = try session.evaluate(tokens, logits: .lastOnBackend)
                let logits = CUDABackend.address(session.model.logitsOnBackend), vocab = session.model.config.vocabSize
                if sampling.temperature <= 0 { return try gpu.argmax(logits: logits, rows: 1, vocab: vocab)[0] }
                let c = try gpu.topK(logits: logits, rows: 1, vocab: vocab, k: sampling.topK)[0]
                return sampler.sample(candidates: c.ids, logits: c.values)
            }
            return sampler.sample(try session.evaluate(tokens, logits: .last)[0])
        }
        var timings = GenerationTimings()
        let clock = ContinuousClock()
        let t0 = clock.now
        var next = try step(prompt)
        timings.promptTokens = prompt.count
        timings.prefillSeconds = (clock.now - t0).seconds
        var out: [Int32] = []
        var stopped = false
        let t1 = clock.now
        while out.count < maxTokens {
            if stopTokens.contains(next) { stopped = true; break }
            out.append(next)
            if !onToken(next) || out.count == maxTokens { break }
            next = try step([next])
        }
        timings.generatedTokens = out.count
        timings.decodeSeconds = (clock.now - t1).seconds
        return GenerationResult(tokens: out, stoppedAtEnd: stopped, timings: timings)
    }
}

extension Generator {
    /// The GPU sampler when `model` runs on CUDA and `params` are greedy or top-k with
    /// 1 ≤ k ≤ 64 (k = 0, all tokens, stays on the host).
    static func deviceSampler(_ model: LanguageModel, _ params: SamplingParams) -> CUDASampling? {
        guard let gpu = model.backend as? CUDABackend else { return nil }
        let vocab = model.config.vocabSize
        guard params.temperature <= 0 || ((1...CUDASampling.maxK).contains(params.topK) && params.topK <= vocab) else {
            return nil
        }
        return try? gpu.sampling()
    }
}
