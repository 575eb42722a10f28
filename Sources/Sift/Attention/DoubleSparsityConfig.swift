#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Double Sparsity's offline calibration, as `sift calibrate` writes it (JSON):
///
///     {
///       "format": "sift.double-sparsity", "version": 1,
///       "model": { "architecture": "qwen2", "name": "…", "layers": 28, "heads": 12,
///                  "kv_heads": 2, "head_dim": 128, "file_sha256": "…" },
///       "statistic": "qk",                       // qk | q | k | qk-centered | recall | qk-svd
///       "calibration": { "text": "…", "tokens": 8192, "sample_length": 512,
///                        "seconds": 61.2, "peak_memory_bytes": 1234567 },
///       "channels": [[[17, 3, …], […]], …],       // [layer][kv head] → all head_dim channels,
///                                                 // most important first
///       "key_mean": [[[0.12, …], […]], …],        // optional: [layer][kv head][channel] mean and
///       "key_std":  [[[1.7, …], […]], …],         // standard deviation of the post-RoPE key
///                                                 // channel (indexed by channel, not rank)
///       "recall": { "group": "per-head", "budget": "1/16", "sinks": 0, "recent": 64,
///                   "queries_per_sample": 32, "greedy_channels": 16,
///                   "curve": [[[0.41, 0.63, …], […]], …],
///                   "qk_centered_recall": [[0.52, …], …] }   // optional, statistic "recall" only
///     }
///
/// `recall` (statistic `recall` only, absent elsewhere; configs without it load as before)
/// records what the greedy channel choice optimised: the token selection of `--ds-group`
/// `group` (shared or per-head) at that budget, sinks and recent window, on `queries_per_sample`
/// queries per calibration sample; the first `greedy_channels` of each list are greedy and
/// `curve[layer][kv head][i]` is the mean calibration recall with the first i + 1 of them
/// (empty for sliding-window layers, which Double Sparsity keeps dense and which keep the
/// `qk-centered` order); `qk_centered_recall[layer][kv head]` is the recall of the first
/// head_dim / 16 `qk-centered` channels on the same queries (null for sliding-window layers).
///
/// `key_mean`/`key_std` (written by `sift calibrate` since the 4-bit label normalisation) let
/// 4-bit labels quantise (k_c − μ_c)/σ_c instead of k_c, so that channels of very different
/// magnitude (Qwen2's key biases) share one per-token scale without losing the small ones.
/// Configs without them load as μ = 0, σ = 1 (plain 4-bit labels).
///
/// `label_projection` (statistic `qk-svd` only; `LabelProjection`): { "rank": R, "keys": [layer]
/// [kv head] → R × head_dim floats, "queries": same, "captured": [layer][kv head][R] }. The label
/// channel c of a token is then row c of `keys` dotted with its key, the query's is row c of
/// `queries` dotted with the query; `channels` is 0..<head_dim and `key_mean`/`key_std` give the
/// label channels' moments (first R entries; 0 and 1 after them).
///
/// Channels are ranked per KV head: the statistic is summed over the query heads of the GQA
/// group, because the group shares one label cache and one token selection (see DoubleSparsity).
/// At run time the first r channels of each list are used.
public struct DoubleSparsityConfig: Codable, Sendable, Equatable {
    public struct ModelIdentity: Codable, Sendable, Equatable {
        public var architecture: String
        public var name: String
        public var layers: Int
        public var heads: Int
        public var kvHeads: Int
        public var headDim: Int
        public var fileSHA256: String?
        enum CodingKeys: String, CodingKey {
            case architecture, name, layers, heads
            case kvHeads = "kv_heads", headDim = "head_dim", fileSHA256 = "file_sha256"
        }

        public init(config c: ModelConfig, fileSHA256: String?) {
            architecture = c.architecture
            name = c.name
            layers = c.layerCount
            heads = c.headCount
            kvHeads = c.kvHeadCount
            headDim = c.headDim
            self.fileSHA256 = fileSHA256
        }
    }

    public struct Calibration: Codable, Sendable, Equatable {
        public var text: String
        public var tokens: Int
        public var sampleLength: Int
        public var seconds: Double
        public var peakMemoryBytes: Int
        enum CodingKeys: String, CodingKey {
            case text, tokens, seconds
            case sampleLength = "sample_length", peakMemoryBytes = "peak_memory_bytes"
        }
        public init(text: String, tokens: Int, sampleLength: Int, seconds: Double, peakMemoryBytes: Int) {
            self.text = text
            self.tokens = tokens
            self.sampleLength = sampleLength
            self.seconds = seconds
            self.peakMemoryBytes = peakMemoryBytes
        }
    }

    public static let formatName = "sift.double-sparsity"

    public var format = DoubleSparsityConfig.formatName
    public var version = 1
    public var model: ModelIdentity
    public var statistic: ChannelStatistic
    public var calibration: Calibration
    public var channels: [[[Int]]]
    /// Label channels to use when `--ds-channels` is not given (`sift calibrate --channels R`);
    /// nil = head_dim / 16.
    public var defaultChannels: Int?
    /// Mean and standard deviation of each post-RoPE key channel, [layer][KV head][channel]
    /// (optional; both or neither; every σ > 0).
    public var keyMean: [[[Double]]]?
    public var keyStd: [[[Double]]]?
    /// What the `recall` statistic optimised (nil for the other statistics).
    public var recall: RecallInfo?
    /// `qk-svd` only: the label projection (nil: labels are key channels).
    public var labelProjection: LabelProjection?

    public struct RecallInfo: Codable, Sendable, Equatable {
        /// "shared" or "per-head".
        public var group: String
        public var budget: String
        public var sinks: Int
        public var recent: Int
        public var queriesPerSample: Int
        public var greedyChannels: Int
        public var curve: [[[Double]]]
        /// [layer][kv head]: the calibration recall of the first head_dim / 16 channels in
        /// `qk-centered` order, for comparison with curve[…][head_dim / 16 − 1] (nil: not measured).
        public var qkCenteredRecall: [[Double?]]?
        enum CodingKeys: String, CodingKey {
            case group, budget, sinks, recent, curve
            case queriesPerSample = "queries_per_sample", greedyChannels = "greedy_channels"
            case qkCenteredRecall = "qk_centered_recall"
        }
        public init(group: String, budget: String, sinks: Int, recent: Int, queriesPerSample: Int, greedyChannels: Int,
                    curve: [[[Double]]], qkCenteredRecall: [[Double?]]? = nil) {
            self.qkCenteredRecall = qkCenteredRecall
            self.group = group
            self.budget = budget
            self.sinks = sinks
            self.recent = recent
            self.queriesPerSample = queriesPerSample
            self.greedyChannels = greedyChannels
            self.curve = curve
        }
    }

    enum CodingKeys: String, CodingKey {
        case format, version, model, statistic, calibration, channels, recall
        case defaultChannels = "default_channels", keyMean = "key_mean", keyStd = "key_std"
        case labelProjection = "label_projection"
    }

    public init(model: ModelIdentity, statistic: ChannelStatistic, calibration: Calibration, channels: [[[Int]]],
                defaultChannels: Int? = nil, keyMean: [[[Double]]]? = nil, keyStd: [[[Double]]]? = nil,
                recall: RecallInfo? = nil, labelProjection: LabelProjection? = nil) {
        self.recall = recall
        self.labelProjection = labelProjection
        self.model = model
        self.statistic = statistic
        self.calibration = calibration
        self.channels = channels
        self.defaultChannels = defaultChannels
        self.keyMean = keyMean
        self.keyStd = keyStd
    }

    /// The label normalisation of the first `r` ranked channels, per [layer][KV head]: μ and σ of
    /// each selected channel in rank order (μ = 0, σ = 1 when the config has no key moments).
    public func labelNormalization(channels r: Int) -> (mean: [[[Float]]], std: [[[Float]]]) {
        let mean = channels.enumerated().map { l, heads in
            heads.enumerated().map { h, list in list.prefix(r).map { c in Float(keyMean?[l][h][c] ?? 0) } }
        }
        let std = channels.enumerated().map { l, heads in
            heads.enumerated().map { h, list in list.prefix(r).map { c in Float(keyStd?[l][h][c] ?? 1) } }
        }
        return (mean, std)
    }

    /// The 4-bit label scale `options` ask for, checked against the label bits and this
    /// calibration: a per-channel grid is in units of the calibrated σ, so it needs key moments.
    public func labelScale(_ options: AttentionOptions) throws -> LabelScale {
        let scale = options.dsLabelScale ?? .token
        guard scale == .channel else { return scale }
        guard options.dsLabelBits == 4 else {
            throw ModelError.invalid("--ds-label-scale channel quantises 4-bit labels: add --ds-label-bits 4")
        }
        guard keyMean != nil, keyStd != nil else {
            throw ModelError.invalid("--ds-label-scale channel needs the calibration's key moments (key_mean, key_std), which this config lacks: re-run `sift calibrate`")
        }
        return scale
    }

    /// Where `sift calibrate` caches the calibration of a model file by default.
    public static func cachedPath(modelSHA256: String) -> String {
        ModelHub.cacheDirectory + "/calibration/" + modelSHA256 + ".double-sparsity.json"
    }

    /// The config to use: the one given, else the cached one for the model file.
    static func resolvePath(_ options: AttentionOptions) throws -> String {
        if let p = options.dsConfigPath { return p }
        guard let sha = options.modelSHA256 else {
            throw ModelError.invalid("double-sparse attention needs a calibration: pass --ds-config FILE or run `sift calibrate -m MODEL`")
        }
        let p = cachedPath(modelSHA256: sha)
        guard fileExists(p) else {
            throw ModelError.invalid("no Double Sparsity calibration for this model (looked for \(p)): run `sift calibrate -m MODEL` first, or pass --ds-config FILE")
        }
        return p
    }

    public func encoded() throws -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return Array(try e.encode(self))
    }

    /// Reads and validates a config file; errors name the file and what is wrong.
    public static func load(path: String) throws -> DoubleSparsityConfig {
        let text = try readTextFile(path)
        let c: DoubleSparsityConfig
        do {
            c = try JSONDecoder().decode(DoubleSparsityConfig.self, from: Data(text.utf8))
        } catch {
            throw ModelError.invalid("\(path): not a Double Sparsity config (\(error))")
        }
        guard c.format == formatName, c.version == 1 else {
            throw ModelError.invalid("\(path): format '\(c.format)' version \(c.version), expected '\(formatName)' version 1")
        }
        try c.validateShape(path: path)
        return c
    }

    func validateShape(path: String) throws {
        let m = model
        guard channels.count == m.layers else {
            throw ModelError.invalid("\(path): channels has \(channels.count) layers, model.layers says \(m.layers)")
        }
        for (l, heads) in channels.enumerated() {
            guard heads.count == m.kvHeads else {
                throw ModelError.invalid("\(path): channels[\(l)] has \(heads.count) heads, expected kv_heads = \(m.kvHeads)")
            }
            for (h, list) in heads.enumerated() {
                guard list.count == m.headDim, Set(list).count == m.headDim, list.allSatisfy({ $0 >= 0 && $0 < m.headDim }) else {
                    throw ModelError.invalid("\(path): channels[\(l)][\(h)] must be a permutation of 0..<\(m.headDim)")
                }
            }
        }
        switch (keyMean, keyStd) {
        case (nil, nil): break
        case (.some, nil): throw ModelError.invalid("\(path): key_mean is given without key_std")
        case (nil, .some): throw ModelError.invalid("\(path): key_std is given without key_mean")
        case let (.some(mean), .some(std)):
            for (name, v) in [("key_mean", mean), ("key_std", std)] {
                guard v.count == m.layers else {
                    throw ModelError.invalid("\(path): \(name) has \(v.count) layers, model.layers says \(m.layers)")
                }
                for (l, heads) in v.enumerated() {
                    guard heads.count == m.kvHeads else {
                        throw ModelError.invalid("\(path): \(name)[\(l)] has \(heads.count) heads, expected kv_heads = \(m.kvHeads)")
                    }
                    for (h, list) in heads.enumerated() {
                        guard list.count == m.headDim else {
                            throw ModelError.invalid("\(path): \(name)[\(l)][\(h)] has \(list.count) values, expected head_dim = \(m.headDim)")
                        }
                        for (c, x) in list.enumerated() {
                            // Float range: the labels use them in f32.
                            let ok = x.isFinite && abs(x) < 1e30 && (name == "key_mean" || x > 1e-30)
                            guard ok else {
                                throw ModelError.invalid("\(path): \(name)[\(l)][\(h)][\(c)] is \(x), must be \(name == "key_std" ? "a finite number > 0" : "a finite number")")
                            }
                        }
                    }
                }
            }
        }
        if let r = recall {
            guard r.group == "shared" || r.group == "per-head" else {
                throw ModelError.invalid("\(path): recall.group is '\(r.group)', must be shared or per-head")
            }
            guard (0...m.headDim).contains(r.greedyChannels) else {
                throw ModelError.invalid("\(path): recall.greedy_channels is \(r.greedyChannels), must be in 0...\(m.headDim)")
            }
        }
        if let r = defaultChannels, !(1...m.headDim).contains(r) {
            throw ModelError.invalid("\(path): default_channels is \(r), must be in 1...\(m.headDim)")
        }
        switch (statistic, labelProjection) {
        case (.qkSVD, nil): throw ModelError.invalid("\(path): statistic qk-svd needs label_projection")
        case (.qkSVD, let p?):
            try p.validate(layers: m.layers, kvHeads: m.kvHeads, headDim: m.headDim, path: path)
            if let r = defaultChannels, r > p.rank {
                throw ModelError.invalid("\(path): default_channels is \(r), more than label_projection.rank \(p.rank)")
            }
        case (_, nil): break
        case (_, .some): throw ModelError.invalid("\(path): label_projection is given with statistic \(statistic.rawValue), only with qk-svd")
        }
    }

    /// Refuses a config calibrated for another model.
    public func check(against c: ModelConfig, fileSHA256: String?, path: String) throws {
        let want = ModelIdentity(config: c, fileSHA256: fileSHA256)
        let have = model
        func mismatch(_ field: String, _ a: Any, _ b: Any) -> ModelError {
            .invalid("\(path): calibrated for another model: \(field) is \(a) in the config, \(b) in the model (re-run `sift calibrate`)")
        }
        if have.architecture != want.architecture { throw mismatch("architecture", have.architecture, want.architecture) }
        if have.layers != want.layers { throw mismatch("layers", have.layers, want.layers) }
        if have.heads != want.heads { throw mismatch("heads", have.heads, want.heads) }
        if have.kvHeads != want.kvHeads { throw mismatch("kv_heads", have.kvHeads, want.kvHeads) }
        if have.headDim != want.headDim { throw mismatch("head_dim", have.headDim, want.headDim) }
        if let a = have.fileSHA256, let b = fileSHA256, a != b { throw mismatch("file_sha256", a, b) }
    }
}

/// What calibration ranks key channels by (per layer and head, averaged over tokens).
public enum ChannelStatistic: String, Codable, Sendable, CaseIterable {
    /// mean |q_c · k_c| of each token's query and its own key, post-RoPE (default).
    case qk
    /// mean |q_c|
    case q
    /// mean |k_c|
    case k
    /// mean |q_c| times the standard deviation of k_c over tokens: the spread a channel adds
    /// to the scores of different tokens. Unlike `qk` it ignores channels that are large but
    /// nearly constant (Qwen2's key biases), which cannot help rank tokens. sift's addition,
    /// not in the paper.
    case qkCentered = "qk-centered"
    /// Greedy forward selection per layer and KV head of the channels whose approximate scores
    /// keep the most exact attention mass in the top-k selection, on calibration queries
    /// (RecallCalibration); the first 2 × head_dim / 16 channels greedy, then `qk-centered` order.
    /// sift's addition, not in the paper.
    case recall
    /// Projected labels (`LabelProjection`): the label channels are the top eigenvectors of
    /// Σ_k^{1/2} Σ_q Σ_k^{1/2}, the basis in which r numbers per token best approximate q·k; the
    /// config carries the projections and `channels` lists 0..<head_dim (the projected channels
    /// in order). sift's addition, not in the paper.
    case qkSVD = "qk-svd"
}
