/// The attention geometry of one layer.
public struct AttentionShape: Sendable, Equatable {
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    /// Multiplies q·k before the softmax.
    public var scale: Float
    /// A query at position p sees keys at positions > p - window; 0 = the whole prefix.
    public var window: Int

    public init(heads: Int, kvHeads: Int, headDim: Int, scale: Float, window: Int = 0) {
        self.heads = heads
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.scale = scale
        self.window = window
    }

    public var groupSize: Int { heads / kvHeads }

    /// First key position visible to a query at `position`.
    @inline(__always) public func firstVisible(_ position: Int) -> Int {
        window > 0 ? max(0, position - window + 1) : 0
    }
}

/// One way of computing attention over the KV cache: dense, or one of the sparse methods.
///
/// The model calls `attend` once per layer per forward pass with the batch's queries, keys
/// and values (keys already rotated by RoPE). The method stores the keys and values (and
/// whatever side data it keeps: label cache, page bounds, accumulated scores) and writes
/// one output row of `heads * headDim` values per query row.
public protocol AttentionMethod: AnyObject {
    /// Short name used by `--attention`.
    var name: String { get }
    /// The host KV cache the method reads and writes (CPU methods).
    var cache: KVCache { get }
    /// The method's KV cache wherever it lives (host or GPU); the engine uses only this.
    /// Defaults to `cache`.
    var kv: KVStorage { get }
    /// Stores `k`, `v` (rows at positions `start..<start + q.rows`) for `layer` and computes
    /// causal attention for each query row into `out`.
    func attend(layer: Int, q: Tensor, k: Tensor, v: Tensor, start: Int, shape: AttentionShape, out: Tensor)
    /// Forgets positions ≥ n (0 clears the sequence).
    func truncate(to n: Int)
    /// Stores keys and values for positions `start..<start + k.rows` of `layer` (and the
    /// method's side data for them) without attending: importing a prefix computed elsewhere.
    func append(layer: Int, k: Tensor, v: Tensor, start: Int)
}

extension AttentionMethod {
    public var kv: KVStorage { cache }

    /// GPU methods keep no host cache; they implement `kv` instead.
    public var cache: KVCache {
        preconditionFailure("attention method \(name) keeps its KV cache on the GPU (use kv)")
    }

    public func append(layer: Int, k: Tensor, v: Tensor, start: Int) {
        cache.store(layer: layer, k: k, v: v, start: start)
    }
}

/// A sparse method that can also apply its selection inside a forward pass of many rows, so
/// that a perplexity run sees what decode would: each scored position attends only to the
/// tokens the method picks from its prefix. Perplexity turns it on for the scored rows only
/// (the context rows are a dense prefill, as in serving).
public protocol SparseAwareAttention: AttentionMethod {
    var sparsePrefill: Bool { get set }
}

/// A method whose decode steps write keys and values computed through sparse attention, and
/// that has them recomputed densely every `correctionInterval` decode steps (TidalDecode's
/// KV-cache correction). `Session` drives it: after that many single-token steps it re-runs
/// the last `correctionInterval` tokens with `denseOverride` set, which overwrites their KV.
public protocol CorrectingAttention: AttentionMethod {
    /// Decode steps between corrections; 0 = never.
    var correctionInterval: Int { get }
    /// Attend densely in every layer (set only while the session recomputes).
    var denseOverride: Bool { get set }
}
