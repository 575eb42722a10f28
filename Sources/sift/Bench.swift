import ArgumentParser
import Sift

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Prefill and decode speed, as llama-bench measures it.",
        discussion: """
        pp: one forward pass over P random tokens; tg: N single-token decode steps. Both run \
        after DEPTH tokens are already in the KV cache (filled once, untimed). Each test is \
        repeated REPS times; the table shows mean ± standard deviation in tokens/s. \
        --attention takes a comma-separated list (e.g. dense,double-sparse) to measure methods \
        side by side in one run; --fill random fills the depth with random keys and values \
        instead of a real prefill (the work per decode step is the same; use it for long \
        depths on small CPUs).
        """)

    @OptionGroup var options: ModelOptions

    @Option(name: [.short, .customLong("n-prompt")], help: "Prompt tokens for the prefill test (0 = skip).")
    var p: Int = 512

    @Option(name: [.short, .customLong("n-gen")], help: "Tokens for the decode test (0 = skip).")
    var n: Int = 128

    @Option(name: [.short, .customLong("depth")], parsing: .singleValue,
            help: "Context depth(s) already in the cache; repeat or comma-separate (e.g. -d 0,4096).")
    var depth: [String] = ["0"]

    @Option(name: [.short, .customLong("repetitions")], help: "Repetitions per test.")
    var reps: Int = 3

    @Option(name: .customLong("batch"), help: "Tokens per forward pass in prefill.")
    var batch: Int = 512

    @Option(help: "How to fill the context depth: model (a real prefill of random tokens) or random (random keys and values).")
    var fill: String = "model"

    @Option(help: "GPU only: a model of this shape with random weights made on the GPU instead of -m (\(SyntheticModels.names.joined(separator: ", "))).")
    var synthetic: String?

    @Flag(help: "JSON on stdout.")
    var json = false

    var depths: [Int] {
        depth.flatMap { $0.split(separator: ",") }.compactMap { Int($0.filter { $0 != " " }) }
    }

    func validate() throws {
        guard p >= 0, n >= 0, p + n > 0 else { throw ValidationError("-p and -n must be ≥ 0, not both 0") }
        guard reps >= 1 else { throw ValidationError("-r must be ≥ 1") }
        guard fill == "model" || fill == "random" else { throw ValidationError("--fill must be model or random, not '\(fill)'") }
        let all = depth.flatMap { $0.split(separator: ",") }
        guard !all.isEmpty, all.allSatisfy({ Int($0.filter { $0 != " " }).map { $0 >= 0 } ?? false }) else {
            throw ValidationError("-d takes non-negative integers, e.g. -d 0,4096")
        }
    }

    struct Row: Encodable {
        var attention: String
        var test: String
        var depth: Int
        var tokens: Int
        var tokensPerS: Double
        var stddev: Double
        var samples: [Double]
        enum CodingKeys: String, CodingKey {
            case attention, test, depth, tokens, stddev, samples
            case tokensPerS = "tokens_per_s"
        }
    }

    struct Output: Encodable {
        var model: String
        var attention: String
        var threads: Int
        var results: [Row]
        /// Depth-0 figures (or the first depth's), for scripts that want one number each.
        var prefillTokensPerS: Double?
        var decodeTokensPerS: Double?
        var fill: String
        enum CodingKeys: String, CodingKey {
            case model, attention, threads, results, fill
            case prefillTokensPerS = "prefill_tokens_per_s", decodeTokensPerS = "decode_tokens_per_s"
        }
    }

    func run() throws {
        let model: LanguageModel
        let modelPath: String
        var loaded: LoadedModel?
        if let synthetic {
            guard case .cuda(let ordinal) = try DeviceSpec(parsing: options.device) else {
                throw ValidationError("--synthetic makes its weights on the GPU: add --device cuda")
            }
            let gpu = try CUDABackend(ordinal: ordinal, threads: options.threads)
            gpu.syntheticWeights = true
            gpu.kvMemoryBytes = try options.kvMemoryBytes()
            model = try Architectures.load(SyntheticModels.file(synthetic), backend: gpu, maxBatch: batch)
            modelPath = "synthetic:\(synthetic)"
        } else {
            let m = try options.load(maxBatch: batch)
            model = m.model
            modelPath = m.path
            loaded = m
        }
        let maxDepth = depths.max() ?? 0
        let needed = maxDepth + max(p, n)
        guard needed <= model.config.contextLength else {
            throw ValidationError("depth \(maxDepth) + \(max(p, n)) tokens exceeds the model's context \(model.config.contextLength)")
        }
        let methods = options.attention.split(separator: ",").map { String($0.filter { $0 != " " }) }
        var sessions: [Session] = []
        for method in methods {
            if let loaded {
                sessions.append(try loaded.session(contextLength: needed, attention: method, options: options.attentionOptions()))
            } else {
                sessions.append(try Session(model: model, contextLength: needed, attention: method, options: options.attentionOptions()))
            }
        }
        var rng = Xoshiro256(seed: 42)
        let vocab = model.config.vocabSize
        func randomTokens(_ count: Int) -> [Int32] {
            (0..<count).map { _ in Int32(truncatingIfNeeded: rng.next() % UInt64(vocab)) }
        }
        let clock = ContinuousClock()
        func seconds(_ d: Duration) -> Double {
            Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
        }
        var rows: [Row] = []
        let label = "\(model.config.name) (\(model.config.architecture))"
        if !json {
            print("| model | \(options.device == "cpu" ? "threads" : "device") | attention | test | t/s |")
            print("| --- | ---: | --- | ---: | ---: |")
        }
        for d in depths {
            for (method, session) in zip(methods, sessions) {
                session.reset()
                if d > 0 {
                    if !json { progressLine("\(method): filling depth \(d)…") }
                    if fill == "random" {
                        try session.appendSyntheticPositions(d, seed: 7)
                    } else {
                        _ = try session.evaluate(randomTokens(d), logits: .none)
                    }
                }
                // One untimed warm-up pass (page faults of the weights, thread start-up; on a
                // GPU a full prompt, so cuBLAS has chosen its kernels for that shape).
                _ = try session.evaluate(randomTokens(options.device == "cpu" ? 1 : max(1, min(p, batch))), logits: .last)
                session.truncate(to: d)
                for (test, count) in [("pp", p), ("tg", n)] where count > 0 {
                    var samples: [Double] = []
                    for r in 0..<reps {
                        if !json { progressLine("\(method): \(test)\(count) @ d\(d): repetition \(r + 1)/\(reps)") }
                        session.truncate(to: d)
                        let t0 = clock.now
                        if test == "pp" {
                            _ = try session.evaluate(randomTokens(count), logits: .last)
                        } else {
                            var next = randomTokens(1)
                            for _ in 0..<count {
                                let logits = try session.evaluate(next, logits: .last)[0]
                                next = [Sampler.argmax(logits)]
                            }
                        }
                        samples.append(Double(count) / seconds(clock.now - t0))
                    }
                    session.truncate(to: d)
                    let mean = samples.reduce(0, +) / Double(samples.count)
                    let sd = samples.count > 1
                        ? (samples.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(samples.count - 1)).squareRoot() : 0
                    let row = Row(attention: method, test: "\(test)\(count)", depth: d, tokens: count, tokensPerS: mean,
                                  stddev: sd, samples: samples)
                    rows.append(row)
                    if !json {
                        progressLine("")
                        let name = d > 0 ? "\(row.test) @ d\(d)" : row.test
                        var ratio = ""
                        let baseline: String = methods[0]
                        if method != baseline {
                            let base: Row? = rows.first { (r: Row) -> Bool in r.attention == baseline && r.test == row.test && r.depth == d }
                            if let base { ratio = " (" + fixed(mean / base.tokensPerS, 2) + "× " + baseline + ")" }
                        }
                        print("| \(label) | \(options.device == "cpu" ? "\(options.threads)" : model.backend.name) | \(method) | \(name) | \(fixed(mean, 2)) ± \(fixed(sd, 2))\(ratio) |")
                    }
                }
            }
        }
        if json {
            let firstDepth = depths.first ?? 0
            try printJSON(Output(
                model: modelPath, attention: options.attention, threads: options.threads, results: rows,
                prefillTokensPerS: rows.first { $0.test.hasPrefix("pp") && $0.depth == firstDepth }?.tokensPerS,
                decodeTokensPerS: rows.first { $0.test.hasPrefix("tg") && $0.depth == firstDepth }?.tokensPerS,
                fill: fill))
        }
    }
}
