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
        depths on small CPUs). --batch B (a list, e.g. 1,8,32) decodes B sequences together: \
        each tg step is one forward pass of B rows, one new token per sequence, every sequence \
        at DEPTH; the table shows the aggregate tokens/s (B tokens per step) and the \
        per-sequence rate. B > 1 runs the decode test only (prefill stays one sequence at a \
        time). On a GPU the KV cache must hold B × (DEPTH + N) positions (--kv-memory); a \
        combination that does not fit is reported and skipped.
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

    @Option(name: .customLong("chunk"),
            help: "Tokens per forward pass in prefill (default: 512 on the CPU, 8192 on a GPU).")
    var chunk: Int?

    @Option(name: .customLong("batch"), parsing: .singleValue,
            help: "Sequences decoding together (one forward pass of B rows per step); comma-separate, e.g. 1,8,32.")
    var batch: [String] = ["1"]

    @Option(help: "How to fill the context depth: model (a real prefill of random tokens) or random (random keys and values).")
    var fill: String = "model"

    @Option(help: "GPU only: a model of this shape with random weights made on the GPU instead of -m (\(SyntheticModels.names.joined(separator: ", "))).")
    var synthetic: String?

    @Flag(help: "JSON on stdout.")
    var json = false

    @Flag(help: "GPU decode at batch 1: also print, per step, the host time spent issuing the step's launches and the time then spent waiting for the GPU (a wait near 0 means the step is bound by the host's launches, not by the GPU).")
    var hostTime = false

    var depths: [Int] {
        depth.flatMap { $0.split(separator: ",") }.compactMap { Int($0.filter { $0 != " " }) }
    }

    var batches: [Int] {
        batch.flatMap { $0.split(separator: ",") }.compactMap { Int($0.filter { $0 != " " }) }
    }

    func validate() throws {
        guard p >= 0, n >= 0, p + n > 0 else { throw ValidationError("-p and -n must be ≥ 0, not both 0") }
        guard reps >= 1 else { throw ValidationError("-r must be ≥ 1") }
        guard fill == "model" || fill == "random" else { throw ValidationError("--fill must be model or random, not '\(fill)'") }
        let all = depth.flatMap { $0.split(separator: ",") }
        guard !all.isEmpty, all.allSatisfy({ Int($0.filter { $0 != " " }).map { $0 >= 0 } ?? false }) else {
            throw ValidationError("-d takes non-negative integers, e.g. -d 0,4096")
        }
        let bs = batch.flatMap { $0.split(separator: ",") }
        guard !bs.isEmpty, bs.allSatisfy({ Int($0.filter { $0 != " " }).map { $0 >= 1 } ?? false }) else {
            throw ValidationError("--batch takes positive integers (sequences decoding together), e.g. --batch 1,8,32")
        }
        if let chunk, chunk < 1 { throw ValidationError("--chunk must be ≥ 1") }
        if batches.contains(where: { $0 > 1 }) && n == 0 {
            throw ValidationError("--batch > 1 measures decode: give -n > 0")
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
        /// Sequences decoding together (tokens/s is the aggregate over them).
        var batch: Int = 1
        var perSequenceTokensPerS: Double?
        enum CodingKeys: String, CodingKey {
            case attention, test, depth, tokens, stddev, samples, batch
            case tokensPerS = "tokens_per_s"
            case perSequenceTokensPerS = "per_sequence_tokens_per_s"
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
        var chunk: Int
        var skipped: [String]
        enum CodingKeys: String, CodingKey {
            case model, attention, threads, results, fill, chunk, skipped
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
            model = try Architectures.load(SyntheticModels.file(synthetic), backend: gpu,
                                           maxBatch: max(chunk ?? PrefillChunk.gpu, batches.max() ?? 1))
            modelPath = "synthetic:\(synthetic)"
        } else {
            let device = try DeviceSpec(parsing: options.device)
            let m = try options.load(maxBatch: max(chunk ?? PrefillChunk.default(for: device), batches.max() ?? 1))
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
        for method in methods where batches.contains(1) {
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
        for d in depths where batches.contains(1) {
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
                _ = try session.evaluate(randomTokens(options.device == "cpu" ? 1 : max(1, min(p, model.chunkSize))), logits: .last)
                session.truncate(to: d)
                for (test, count) in [("pp", p), ("tg", n)] where count > 0 {
                    var samples: [Double] = []
                    var issue = 0.0, wait = 0.0   // GPU tg: host seconds issuing steps, then waiting (--host-time)
                    (model.backend as? CUDABackend)?.context.hostStats = CUDAContext.HostStats()
                    for r in 0..<reps {
                        if !json { progressLine("\(method): \(test)\(count) @ d\(d): repetition \(r + 1)/\(reps)") }
                        session.truncate(to: d)
                        let t0 = clock.now
                        if test == "pp" {
                            _ = try session.evaluate(randomTokens(count), logits: .last)
                        } else {
                            var next = randomTokens(1)
                            for _ in 0..<count {
                                if let gpu = model.backend as? CUDABackend {
                                    // Greedy on the GPU: only the id comes back (as in batched decode).
                                    gpu.context.profileHost = hostTime
                                    defer { gpu.context.profileHost = false }
                                    let i0 = clock.now
                                    _ = try session.evaluate(next, logits: .lastOnBackend)
                                    let i1 = clock.now
                                    if hostTime { try gpu.synchronize() }
                                    issue += seconds(i1 - i0); wait += seconds(clock.now - i1)
                                    next = try gpu.sampling().argmax(logits: CUDABackend.address(model.logitsOnBackend), rows: 1,
                                                                     vocab: model.config.vocabSize)
                                } else {
                                    next = [Sampler.argmax(try session.evaluate(next, logits: .last)[0])]
                                }
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
                        if hostTime && test == "tg" && issue + wait > 0 {
                            let steps = Double(count * reps)
                            let h = (model.backend as? CUDABackend)?.context.hostStats ?? CUDAContext.HostStats()
                            print("|   host time per step | | \(method) | \(name) | issue \(fixed(1e3 * issue / steps, 3)) ms "
                                  + "(\(fixed(Double(h.launches) / steps, 0)) kernel launches \(fixed(1e3 * h.launchSeconds / steps, 3)) ms, "
                                  + "\(fixed(Double(h.blasCalls) / steps, 0)) cuBLAS calls \(fixed(1e3 * h.blasSeconds / steps, 3)) ms), "
                                  + "then wait for the GPU \(fixed(1e3 * wait / steps, 3)) ms |")
                        }
                    }
                }
            }
        }
        // Batched decode: B sequences at depth d, one forward pass of B rows per step.
        var skipped: [String] = []
        sessions.removeAll()  // give the single-sequence caches' memory back first
        for b in batches where b > 1 {
            for d in depths {
                for method in methods {
                    let batchSession: BatchSession
                    do {
                        batchSession = try BatchSession(model: model, sequences: b, contextLength: d + n, attention: method,
                                                        options: options.attentionOptions())
                    } catch {
                        let why = "\(method) batch \(b) @ d\(d): \(error)"
                        skipped.append(why)
                        if !json { progressLine(""); print("| \(label) | skipped: \(why) |") }
                        continue
                    }
                    for i in 0..<b where d > 0 {
                        if !json { progressLine("\(method) ×\(b): filling depth \(d) of sequence \(i + 1)/\(b)…") }
                        if fill == "random" {
                            try batchSession.appendSyntheticPositions(sequence: i, d, seed: 7 &+ UInt64(i))
                        } else {
                            _ = try batchSession.prefill(sequence: i, randomTokens(d), logits: .none)
                        }
                    }
                    func step(_ next: [Int32]) throws -> [Int32] {
                        try batchSession.decodeGreedy(next)
                    }
                    _ = try step(randomTokens(b))  // warm-up (cuBLAS picks its kernels for B rows)
                    var samples: [Double] = []
                    for r in 0..<reps {
                        if !json { progressLine("\(method) ×\(b): tg\(n) @ d\(d): repetition \(r + 1)/\(reps)") }
                        for i in 0..<b { batchSession.truncate(sequence: i, to: d) }
                        var next = randomTokens(b)
                        let t0 = clock.now
                        for _ in 0..<n { next = try step(next) }
                        samples.append(Double(n * b) / seconds(clock.now - t0))
                    }
                    let mean = samples.reduce(0, +) / Double(samples.count)
                    let sd = samples.count > 1
                        ? (samples.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(samples.count - 1)).squareRoot() : 0
                    let row = Row(attention: method, test: "tg\(n)", depth: d, tokens: n * b, tokensPerS: mean, stddev: sd,
                                  samples: samples, batch: b, perSequenceTokensPerS: mean / Double(b))
                    rows.append(row)
                    if !json {
                        progressLine("")
                        let name = (d > 0 ? "tg\(n) @ d\(d)" : "tg\(n)") + " ×\(b) seqs"
                        print("| \(label) | \(options.device == "cpu" ? "\(options.threads)" : model.backend.name) | \(method) | \(name) | \(fixed(mean, 2)) ± \(fixed(sd, 2)) (\(fixed(mean / Double(b), 2)) per sequence) |")
                    }
                }
            }
        }
        if json {
            let firstDepth = depths.first ?? 0
            try printJSON(Output(
                model: modelPath, attention: options.attention, threads: options.threads, results: rows,
                prefillTokensPerS: rows.first { $0.test.hasPrefix("pp") && $0.depth == firstDepth }?.tokensPerS,
                decodeTokensPerS: rows.first { $0.test.hasPrefix("tg") && $0.depth == firstDepth && $0.batch == 1 }?.tokensPerS,
                fill: fill, chunk: model.chunkSize, skipped: skipped))
        }
    }
}
