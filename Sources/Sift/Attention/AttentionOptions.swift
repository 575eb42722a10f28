/// How many cached tokens a sparse method may attend to per step: a count, a fraction of the
/// visible context (`1/16`), or all of them. One convention for every method (`--budget`,
/// and Double Sparsity's `--ds-tokens`).
public enum TokenBudget: Sendable, Equatable, CustomStringConvertible {
    case all
    case tokens(Int)
    case fraction(Double)

    /// Parses `all`, `256`, `1/16` or `0.0625`.
    public init(parsing s: String) throws {
        let t = s.lowercased()
        func bad() -> ModelError {
            ModelError.invalid("bad token budget '\(s)': use a token count (256), a fraction (1/16 or 0.0625) or 'all'")
        }
        if t == "all" { self = .all; return }
        if let slash = t.firstIndex(of: "/") {
            guard let a = Double(t[..<slash]), let b = Double(t[t.index(after: slash)...]), a > 0, b > 0, a <= b else { throw bad() }
            self = .fraction(a / b)
            return
        }
        if let n = Int(t) {
            guard n > 0 else { throw bad() }
            self = .tokens(n)
            return
        }
        if let f = Double(t), f > 0, f <= 1 {
            self = .fraction(f)
            return
        }
        throw bad()
    }

    /// Tokens to keep out of `visible` (at least 1, at most `visible`).
    @inline(__always) public func count(visible: Int) -> Int {
        switch self {
        case .all: return visible
        case .tokens(let n): return min(visible, n)
        case .fraction(let f): return min(visible, max(1, Int((Double(visible) * f).rounded(.up))))
        }
    }

    public var description: String {
        switch self {
        case .all: return "all"
        case .tokens(let n): return "\(n)"
        case .fraction(let f):
            let inv = 1 / f
            return inv == inv.rounded() ? "1/\(Int(inv))" : "\(f)"
        }
    }
}

/// Settings shared by the attention methods (each reads the ones it uses).
public struct AttentionOptions: Sendable {
    /// Tokens attended per step by token-sparse methods.
    public var budget: TokenBudget = .fraction(1.0 / 16)
    /// Below this many visible tokens, sparse methods attend densely.
    public var denseBelow: Int = 0
    /// Apply the sparse selection to every query row of a forward pass, not only to decode
    /// steps: each position then attends only to the tokens the method would pick from its
    /// prefix at decode time (sparse-aware perplexity).
    public var sparsePrefill: Bool = false
    /// Record the share of the true attention mass that the selected tokens carry.
    public var measureRecall: Bool = false
    /// Attention sinks: the first N positions are always among a sparse method's selected
    /// tokens (they count against the budget).
    public var sinks: Int = 0
    /// Whether `sinks` was given (StreamingLLM uses 4 when it was not).
    public var sinksGiven: Bool = false
    /// Recent window of the top-k methods (double-sparse, loki): the last N visible positions
    /// are always selected, after the sinks, taking at most half of what the budget leaves after
    /// the sinks. nil = the method's default (double-sparse 64, loki 0).
    public var recent: Int?
    /// GQA for the methods that choose per group or per head (Quest, SparQ): true = every
    /// query head selects on its own, false = one selection per KV head; nil = the method's default.
    public var gqaPerHead: Bool?

    // Quest.
    /// Tokens per page (min/max key metadata per page).
    public var questPage: Int = 16

    // SparQ.
    /// Query channels r used for the approximate scores (nil = head_dim / 8).
    public var sparqRank: Int?

    // Double Sparsity.
    /// Calibration file (JSON written by `sift calibrate`); nil = the cached one for the model.
    public var dsConfigPath: String?
    /// Label channels per head (default head_dim / 16).
    public var dsChannels: Int?
    /// Each query head picks its own tokens (reads up to groupSize × budget rows per KV head)
    /// instead of one selection shared by the GQA group (summed group query; the default).
    public var dsPerHead: Bool = false
    /// `--ds-group soft`: one shared selection per KV group ranked by the sum of each head's
    /// softmax over its own approximate scores (DoubleSparsity.softGroupScores), CPU only.
    /// nil = off (kept optional so results recorded before it existed keep their labels).
    public var dsSoftGroup: Bool?
    /// `--ds-residual`: add the unselected tokens' share of the attention back, estimated from
    /// the label scores, as their mean value (DoubleSparseAttention.correctResidual; CPU only).
    /// nil = off (kept optional so results recorded before it existed keep their labels).
    public var dsResidual: Bool?
    /// Label encoding: 16 (f16) or 4 (4-bit codes with a per-token f16 scale and offset).
    public var dsLabelBits: Int = 16
    /// `--ds-label-scale`: how 4-bit codes are scaled (`LabelScale`); nil = per token.
    public var dsLabelScale: LabelScale?

    // TidalDecode.
    /// Layers attended densely before the token-selection layer (the paper: 2).
    public var tidalDenseLayers: Int = 2
    /// The re-selection layer; nil = 13/32 of the depth (layer 13 of 32, as the paper).
    public var tidalReselect: Int?
    /// Recompute the last S tokens' KV densely every S decode steps; 0 = never.
    public var tidalCorrect: Int = 0

    // Loki.
    /// PCA calibration file (JSON written by `sift calibrate --method loki`); nil = the cached one.
    public var lokiConfigPath: String?
    /// Principal components kept per KV head for the approximate scores (default head_dim / 4).
    public var lokiRank: Int?

    /// The model file and its sha256 (calibrations are tied to them).
    public var modelPath: String?
    public var modelSHA256: String?

    public init() {}
}

extension AttentionOptions {
    /// Double Sparsity's default recent window (tokens).
    public static let doubleSparsityRecent = 64

    /// How many of the first and of the last visible positions a top-k method always keeps:
    /// sinks = min(--sinks, visible, budget); recent = min(--recent, (budget − sinks) / 2,
    /// visible − sinks). Both count against the budget, so sinks + recent ≤ budget and the
    /// selection stays a top-k. The CUDA scores kernels apply the same rule on the device.
    public func pinned(visible: Int, budget: Int, defaultRecent: Int) -> (sinks: Int, recent: Int) {
        let s = max(0, min(sinks, visible, budget))
        let w = max(0, min(recent ?? defaultRecent, (budget - s) / 2, visible - s))
        return (s, w)
    }

    /// Marks the pinned positions of `scores` (the visible tokens first..<first+visible of a
    /// query at absolute positions; `first` > 0 only in windowed layers) with +inf.
    public func pin(_ scores: UnsafeMutablePointer<Float>, first: Int, visible: Int, budget: Int, defaultRecent: Int) {
        let (s, w) = pinned(visible: first + visible, budget: budget, defaultRecent: defaultRecent)
        for j in 0..<max(0, min(s - first, visible)) { scores[j] = .infinity }
        for j in max(0, visible - w)..<visible { scores[j] = .infinity }
    }
}
