import ArgumentParser
import Sift
#if canImport(Glibc)
import Glibc
#endif

/// `-m MODEL` and `-t THREADS`, shared by every command that runs a model.
struct ModelOptions: ParsableArguments {
    @Option(name: [.short, .customLong("model")],
            help: "Model name (\(ModelHub.knownNames.joined(separator: ", "))) or .gguf path; pulled on first use.")
    var model: String = ModelHub.defaultModel

    @Option(name: [.short, .customLong("threads")], help: "CPU threads (default: all cores).")
    var threads: Int = ThreadPool.processorCount

    @Option(help: "Where the model runs: cpu, cuda (GPU 0) or cuda:N.")
    var device: String = "cpu"

    @Option(name: .customLong("kv-memory"), help: "GPU KV cache size, e.g. 8G or 512M (default: from free GPU memory).")
    var kvMemory: String?

    /// --kv-memory in bytes.
    func kvMemoryBytes() throws -> Int? {
        guard let s = kvMemory?.uppercased() else { return nil }
        let units: [(String, Int)] = [("GIB", 1 << 30), ("MIB", 1 << 20), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10), ("", 1)]
        for (suffix, mult) in units where s.hasSuffix(suffix) {
            if let v = Double(s.dropLast(suffix.count)), v > 0 { return Int(v * Double(mult)) }
        }
        throw ValidationError("--kv-memory takes a size such as 8G, 512M or a byte count, not '\(kvMemory!)'")
    }

    @Option(name: .customLong("attention"),
            help: ArgumentHelp("Attention method (\(AttentionMethods.names.joined(separator: ", "))).",
                               discussion: """
                               streaming: attention sinks + recent window (StreamingLLM). h2o: heavy hitters by accumulated \
                               attention + recent window, half and half (H2O); it evicts, but on the CPU eviction is logical: \
                               evicted rows stay in the f16 cache unread, and `run` reports the KV bytes a compacting cache \
                               would free. quest: top pages by a min/max key bound (Quest; first two layers dense). \
                               sparq: top-r query channels, top-k tokens, mean-value reallocation (SparQ). See docs/baselines.md.
                               """))
    var attention: String = "dense"

    @Option(name: .customLong("budget"),
            help: "Tokens a sparse method attends per step: N, a fraction (1/16) or all.")
    var budget: String?

    @Option(name: .customLong("ds-tokens"), help: "Double Sparsity token budget (same as --budget).")
    var dsTokens: String?

    @Option(name: .customLong("ds-config"), help: "Double Sparsity calibration (default: the cached one from `sift calibrate`).")
    var dsConfig: String?

    @Option(name: .customLong("ds-channels"), help: "Double Sparsity label channels per head (default head_dim/16).")
    var dsChannels: Int?

    @Option(name: .customLong("ds-label-bits"), help: "Double Sparsity label cache encoding: 16 (f16; bf16 on the GPU) or 4 (4-bit codes, per-token scale and offset, normalised per channel by the calibration's key_mean/key_std when present).")
    var dsLabelBits: Int = 16

    @Option(name: .customLong("ds-label-scale"), help: "With --ds-label-bits 4: token (a f16 scale and offset per token, 4 + r/2 bytes) or channel (one fixed grid per channel in units of the calibrated σ, r/2 bytes: half the label bytes at r = 8; pins the first token unless --sinks is given).")
    var dsLabelScale: String = "token"

    @Option(name: [.customLong("ds-dense-below"), .customLong("dense-below")], help: "Attend densely while fewer tokens are visible.")
    var denseBelow: Int = 0

    @Option(help: "Attention sinks: the first N tokens are always selected by sparse methods (streaming: 4 unless given; double-sparse with --ds-label-scale channel: 1).")
    var sinks: Int?

    @Option(help: "Recent window of double-sparse and loki: the last N tokens are always selected (at most half the budget left after the sinks; default: double-sparse 64, loki 0).")
    var recent: Int?

    @Option(name: .customLong("quest-page"), help: "Quest page size in tokens.")
    var questPage: Int = 16

    @Option(name: .customLong("gqa"), help: "GQA for quest and sparq: shared (one selection per KV head) or per-head (default: quest shared, sparq per-head).")
    var gqa: String?

    @Option(name: .customLong("sparq-r"), help: "SparQ query channels r per step (default head_dim/8).")
    var sparqR: Int?

    @Option(name: .customLong("ds-group"), help: "GQA: shared (one token selection per KV head, from the summed group query), soft (one selection from the sum of each head's softmax of its approximate scores; CPU only) or per-head (one selection per query head: up to G× the label and row reads).")
    var dsGroup: String = "shared"

    @Flag(name: .customLong("ds-residual"), help: "Double Sparsity: add back the unselected tokens' share of the attention, estimated from the label scores (their approximate softmax mass relative to the selection's), as their mean value; reads no more of the cache (CPU only).")
    var dsResidual = false

    @Option(name: .customLong("tidal-dense-layers"), help: "TidalDecode: layers attended densely before the token-selection layer.")
    var tidalDenseLayers: Int = 2

    @Option(name: .customLong("tidal-reselect"), help: "TidalDecode: the re-selection layer (default: 13/32 of the depth).")
    var tidalReselect: Int?

    @Option(name: .customLong("tidal-correct"), help: "TidalDecode: recompute the last S tokens' KV densely every S decode steps (0 = never).")
    var tidalCorrect: Int = 0

    @Option(name: .customLong("loki-config"), help: "Loki PCA calibration (default: the cached one from `sift calibrate --method loki`).")
    var lokiConfig: String?

    @Option(name: .customLong("loki-rank"), help: "Loki: principal components per KV head for the approximate scores (default head_dim/4).")
    var lokiRank: Int?

    /// The attention settings these flags describe.
    func attentionOptions() throws -> AttentionOptions {
        var o = AttentionOptions()
        if let b = dsTokens ?? budget { o.budget = try TokenBudget(parsing: b) }
        o.dsConfigPath = dsConfig
        o.dsChannels = dsChannels
        guard dsLabelBits == 16 || dsLabelBits == 4 else { throw ValidationError("--ds-label-bits must be 16 or 4, not \(dsLabelBits)") }
        o.dsLabelBits = dsLabelBits
        guard let scale = LabelScale(rawValue: dsLabelScale) else {
            throw ValidationError("--ds-label-scale must be token or channel, not \(dsLabelScale)")
        }
        if scale == .channel {
            guard dsLabelBits == 4 else { throw ValidationError("--ds-label-scale channel needs --ds-label-bits 4") }
            o.dsLabelScale = scale
            // The first token's key is the attention sink and lies far outside the grid (up to
            // 13σ on Qwen 1.5B), where the grid clamps it: pin it unless --sinks says otherwise.
            if sinks == nil { o.sinks = 1 }
        }
        o.denseBelow = denseBelow
        guard tidalDenseLayers >= 0 else { throw ValidationError("--tidal-dense-layers must be ≥ 0") }
        if let tidalReselect, tidalReselect < 0 { throw ValidationError("--tidal-reselect must be ≥ 0") }
        guard tidalCorrect >= 0 else { throw ValidationError("--tidal-correct must be ≥ 0") }
        if let lokiRank, lokiRank < 1 { throw ValidationError("--loki-rank must be ≥ 1") }
        o.tidalDenseLayers = tidalDenseLayers
        o.tidalReselect = tidalReselect
        o.tidalCorrect = tidalCorrect
        o.lokiConfigPath = lokiConfig
        o.lokiRank = lokiRank
        if let sinks {
            guard sinks >= 0 else { throw ValidationError("--sinks must be ≥ 0") }
            o.sinks = sinks
            o.sinksGiven = true
        }
        if let recent {
            guard recent >= 0 else { throw ValidationError("--recent must be ≥ 0") }
            o.recent = recent
        }
        guard questPage >= 1 && questPage <= 4096 else { throw ValidationError("--quest-page must be in 1...4096") }
        o.questPage = questPage
        switch gqa {
        case nil: o.gqaPerHead = nil
        case "shared": o.gqaPerHead = false
        case "per-head": o.gqaPerHead = true
        default: throw ValidationError("--gqa must be shared or per-head, not '\(gqa!)'")
        }
        if let sparqR, sparqR < 1 { throw ValidationError("--sparq-r must be ≥ 1") }
        o.sparqRank = sparqR
        if dsResidual { o.dsResidual = true }
        switch dsGroup {
        case "shared": o.dsPerHead = false
        case "per-head": o.dsPerHead = true
        case "soft": o.dsSoftGroup = true
        default: throw ValidationError("--ds-group must be shared, soft or per-head, not '\(dsGroup)'")
        }
        return o
    }

    func validate() throws {
        if let budget, let dsTokens, budget != dsTokens {
            throw ValidationError("--budget \(budget) and --ds-tokens \(dsTokens) disagree (they are the same setting)")
        }
        if let dsChannels, dsChannels < 1 { throw ValidationError("--ds-channels must be ≥ 1") }
        guard denseBelow >= 0 else { throw ValidationError("--ds-dense-below must be ≥ 0") }
        _ = try attentionOptions()
        guard threads >= 1 else { throw ValidationError("-t/--threads must be at least 1") }
        do { _ = try DeviceSpec(parsing: device) } catch { throw ValidationError("\(error)") }
        _ = try kvMemoryBytes()
        // `bench` takes a comma-separated list; the other commands one name.
        for name in attention.split(separator: ",").map({ String($0.filter { $0 != " " }) })
        where !AttentionMethods.names.contains(name) {
            throw ValidationError("unknown attention method '\(name)' (known: \(AttentionMethods.names.joined(separator: ", ")))")
        }
    }

    /// `maxBatch`: tokens per forward pass in prefill (nil: 512 on the CPU, 8192 on a GPU).
    func load(maxBatch: Int? = nil) throws -> LoadedModel {
        let path = try ModelHub.resolve(model)
        return try LoadedModel(path: path, threads: threads, maxBatch: maxBatch,
                               device: DeviceSpec(parsing: device), kvMemoryBytes: kvMemoryBytes())
    }
}

/// Writes a line to standard error (progress and diagnostics; stdout stays machine-readable).
func note(_ s: String) {
    fputs(s + "\n", stderr)
}

/// Rewrites the current stderr line (progress bars).
func progressLine(_ s: String) {
    fputs("\r\u{1B}[K" + s, stderr)
}
