import ArgumentParser
import Sift

struct Calibrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Offline calibration: Double Sparsity channel ranking, or Loki key PCA (--method loki).",
        discussion: """
        Runs the model densely over calibration text in samples of --sample-length tokens and \
        ranks, per layer and KV head, the key channels by a statistic of the post-RoPE queries \
        and keys (qk: mean |q_c·k_c|, default; q: mean |q_c|; k: mean |k_c|), summed over the \
        query heads of each GQA group. Default text: the Paul Graham essays minus the held-out \
        fifth (every fifth essay by file name), which `sift ppl -f heldout` scores. \
        --statistic qk-svd records projected labels instead of channels: per layer and KV head the \
        --rank directions (default head_dim/8) in which a few numbers per token best approximate \
        q·k (docs/double-sparsity.md). Without -o the config is cached for the model file, where \
        --attention double-sparse finds it. --method loki instead records the principal components \
        of each layer's and KV head's post-RoPE keys (PCA of their covariance), cached where \
        --attention loki finds it.
        """)

    @Option(help: "What to calibrate: double-sparsity (channel ranking, default) or loki (key PCA).")
    var method: String = "double-sparsity"

    @Option(name: .customLong("rank"), help: "Loki: principal components to record as this config's default rank (default: head_dim/4 at run time). qk-svd: projected label channels to store (default head_dim/8, at least --channels).")
    var rank: Int?

    @OptionGroup var options: ModelOptions

    @Option(name: .customLong("data"), help: "Calibration text file (default: the essays' calibration part).")
    var data: String?

    @Option(help: "Statistic: qk (the paper's), q, k, qk-centered (E|q_c|·σ(k_c), sift's) recall (greedy channels that maximise the attention recall of the selection they induce, for the --ds-group (shared or per-head), --budget, --sinks and --recent given; sift's) or qk-svd (projected labels: the basis that best approximates q·k; sift's).")
    var statistic: String = "qk"

    @Option(name: .customLong("recall-queries"), help: "recall: query positions kept per sample, spread over its second half.")
    var recallQueries: Int = 32

    @Option(name: .customLong("recall-greedy"), help: "recall: channels chosen greedily (default 2 × head_dim/16); the rest follow in qk-centered order.")
    var recallGreedy: Int?

    @Option(name: .customLong("channels"), help: "Label channels per head to record as the default for this config (default: head_dim/16 at run time).")
    var channels: Int?

    @Option(help: "Calibration tokens (a multiple of --sample-length is used).")
    var tokens: Int = 8192

    @Option(name: .customLong("sample-length"), help: "Tokens per calibration sample (default 512; recall: 2048; qk-svd: 4096).")
    var sampleLengthOption: Int?

    var sampleLength: Int { sampleLengthOption ?? (statistic == "recall" ? 2048 : statistic == "qk-svd" ? 4096 : 512) }

    @Option(name: [.short, .customLong("output")], help: "Config file to write (default: the model's cached calibration).")
    var output: String?

    @Flag(help: "Print the written config's summary as JSON.")
    var json = false

    func validate() throws {
        guard ChannelStatistic(rawValue: statistic) != nil else {
            throw ValidationError("--statistic must be one of \(ChannelStatistic.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard tokens >= 2, sampleLength >= 2 else { throw ValidationError("--tokens and --sample-length must be ≥ 2") }
        if let channels, channels < 1 { throw ValidationError("--channels must be ≥ 1") }
        guard ["double-sparsity", "loki"].contains(method) else {
            throw ValidationError("--method must be double-sparsity or loki, not '\(method)'")
        }
        if let rank, rank < 1 { throw ValidationError("--rank must be ≥ 1") }
        if rank != nil && method != "loki" && statistic != "qk-svd" {
            throw ValidationError("--rank is a Loki or --statistic qk-svd setting")
        }
        if let rank, let channels, statistic == "qk-svd", channels > rank {
            throw ValidationError("--channels \(channels) exceeds --rank \(rank): qk-svd stores --rank projected channels")
        }
        guard recallQueries >= 1 else { throw ValidationError("--recall-queries must be ≥ 1") }
        if let recallGreedy, recallGreedy < 0 { throw ValidationError("--recall-greedy must be ≥ 0") }
        if method == "loki" && (channels != nil || statistic != "qk") {
            throw ValidationError("--channels and --statistic are Double Sparsity settings; Loki takes --rank")
        }
    }

    struct Summary: Encodable {
        var path: String
        var tokens: Int
        var seconds: Double
        var peakMemoryBytes: Int
        enum CodingKeys: String, CodingKey {
            case path, tokens, seconds
            case peakMemoryBytes = "peak_memory_bytes"
        }
    }

    func run() throws {
        let stat = ChannelStatistic(rawValue: statistic)!
        let m = try options.load(maxBatch: sampleLength)
        let text = try data.map { try readTextFile($0) } ?? EssaySplit.calibrationText()
        var ids = m.tokenizer.encode(text, addSpecial: false, parseSpecial: false)
        let usable = min(ids.count, tokens) / sampleLength * sampleLength
        guard usable >= sampleLength else {
            throw ValidationError("the calibration text has \(ids.count) tokens, fewer than one sample of \(sampleLength)")
        }
        ids = Array(ids[0..<usable])
        if let channels, channels > m.config.headDim {
            throw ValidationError("--channels \(channels) exceeds the model's head_dim \(m.config.headDim)")
        }
        let clock = ContinuousClock()
        let t0 = clock.now
        guard let cpu = m.backend as? CPUBackend else {
            throw ValidationError("calibration runs on the CPU: use --device cpu")
        }
        let pool = cpu.pool
        if method == "loki" {
            try calibrateLoki(m, ids: ids, pool: pool, clock: clock, t0: t0)
            return
        }
        var recall = RecallSettings()
        if stat == .recall {
            let o = try options.attentionOptions()
            guard o.dsSoftGroup != true else {
                throw ValidationError("--statistic recall optimises the shared or the per-head selection; --ds-group soft is not supported")
            }
            recall.perHead = o.dsPerHead
            recall.options = o
            recall.queriesPerSample = recallQueries
            if let g = recallGreedy, g > m.config.headDim {
                throw ValidationError("--recall-greedy \(g) exceeds the model's head_dim \(m.config.headDim)")
            }
            recall.greedyChannels = recallGreedy
            let json = json
            recall.progress = { done, total in if !json { progressLine("recall greedy: head \(done)/\(total)") } }
        }
        if stat == .qkSVD, let r = rank ?? channels, r > m.config.headDim {
            throw ValidationError("--rank \(r) exceeds the model's head_dim \(m.config.headDim)")
        }
        let result = try ChannelCalibrator.calibrateWithMoments(
            model: m.model, tokens: ids, sampleLength: sampleLength, statistic: stat, pool: pool, recall: recall,
            projectionRank: rank ?? channels.map { max($0, m.config.headDim / 8) }
        ) { done, total in
            if !json { progressLine("calibrating: sample \(done)/\(total)") }
        }
        let d = clock.now - t0
        let seconds = Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
        let sha = try m.sha256()
        let config = DoubleSparsityConfig(
            model: .init(config: m.config, fileSHA256: sha), statistic: stat,
            calibration: .init(text: data ?? "paul-graham-essays (calibration split)", tokens: usable,
                               sampleLength: sampleLength, seconds: seconds, peakMemoryBytes: peakResidentBytes()),
            channels: result.ranking, defaultChannels: channels, keyMean: result.mean,
            // A channel constant over the calibration text (σ = 0) gets a floor of 1/1000 of its
            // head's largest σ, so that its normalised label stays finite.
            keyStd: result.std.map { $0.map { head in
                let floor = max(head.max() ?? 0, 1e-20) * 1e-3
                return head.map { max($0, floor) }
            } },
            recall: result.recallCurve.map { curve in
                let o = recall.options
                return .init(group: recall.perHead ? "per-head" : "shared", budget: o.budget.description, sinks: o.sinks,
                             recent: o.recent ?? AttentionOptions.doubleSparsityRecent, queriesPerSample: recall.queriesPerSample,
                             greedyChannels: recall.greedyChannels ?? min(m.config.headDim, 2 * max(1, m.config.headDim / 16)),
                             curve: curve, qkCenteredRecall: result.recallBaseline)
            },
            labelProjection: result.projection)
        let path = output ?? DoubleSparsityConfig.cachedPath(modelSHA256: sha)
        if output == nil { try makeDirectories(ModelHub.cacheDirectory + "/calibration") }
        try writeFile(path, config.encoded())
        if json {
            try printJSON(Summary(path: path, tokens: usable, seconds: seconds, peakMemoryBytes: config.calibration.peakMemoryBytes))
        } else {
            progressLine("")
            print(path)
            note("calibrated on \(usable) tokens in \(fixed(seconds, 1)) s, peak memory \(fixed(Double(config.calibration.peakMemoryBytes) / 1_048_576, 0)) MiB")
            if let curve = result.recallCurve, let base = result.recallBaseline {
                let r = max(1, m.config.headDim / 16)
                var greedy = [Double](), centered = [Double]()
                for (l, heads) in curve.enumerated() {
                    for (h, c) in heads.enumerated() where c.count >= r {
                        greedy.append(c[r - 1])
                        if let b = base[l][h] { centered.append(b) }
                    }
                }
                if !greedy.isEmpty {
                    let mean = { (v: [Double]) in v.reduce(0, +) / Double(max(1, v.count)) }
                    note("calibration recall at \(r) channels (mean over \(greedy.count) full-attention layer×KV heads): recall \(fixed(mean(greedy), 4)), qk-centered \(fixed(mean(centered), 4))")
                }
            }
        }
    }

    func calibrateLoki(_ m: LoadedModel, ids: [Int32], pool: ThreadPool, clock: ContinuousClock, t0: ContinuousClock.Instant) throws {
        if let rank, rank > m.config.headDim {
            throw ValidationError("--rank \(rank) exceeds the model's head_dim \(m.config.headDim)")
        }
        let pca = try KeyPCACalibrator.calibrate(model: m.model, tokens: ids, sampleLength: sampleLength, pool: pool) { done, total in
            if !json { progressLine("calibrating (key PCA): sample \(done)/\(total)") }
        }
        let d = clock.now - t0
        let seconds = Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
        let sha = try m.sha256()
        let config = LokiConfig(
            model: .init(config: m.config, fileSHA256: sha),
            calibration: .init(text: data ?? "paul-graham-essays (calibration split)", tokens: ids.count,
                               sampleLength: sampleLength, seconds: seconds, peakMemoryBytes: peakResidentBytes()),
            pca: pca, defaultRank: rank)
        let path = output ?? LokiConfig.cachedPath(modelSHA256: sha)
        if output == nil { try makeDirectories(ModelHub.cacheDirectory + "/calibration") }
        try writeFile(path, config.encoded())
        if json {
            try printJSON(Summary(path: path, tokens: ids.count, seconds: seconds, peakMemoryBytes: config.calibration.peakMemoryBytes))
        } else {
            progressLine("")
            print(path)
            note("calibrated on \(ids.count) tokens in \(fixed(seconds, 1)) s, peak memory \(fixed(Double(config.calibration.peakMemoryBytes) / 1_048_576, 0)) MiB")
        }
    }
}
