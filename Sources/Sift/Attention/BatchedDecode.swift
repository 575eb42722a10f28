/// An attention method that holds several sequences (one KV cache each, of equal capacity)
/// and can run a decode step of all of them in one forward pass: row i of the pass is the new
/// token of sequence i, at that sequence's own position (lengths may differ).
///
/// The single-sequence members of `AttentionMethod` (`attend`, `append`, `truncate`, `kv`)
/// act on `activeSequence` (0 unless changed), so prefill stays one sequence at a time and a
/// method with one sequence behaves exactly as before. `BatchSession` drives it.
public protocol BatchedDecodeAttention: AttentionMethod {
    /// Sequences the method holds.
    var sequenceCount: Int { get }
    /// The sequence the single-sequence members act on.
    var activeSequence: Int { get set }
    /// One decode step of sequences `0..<q.rows`: stores row i of `k` and `v` at position
    /// `positions[i]` of sequence i (for `layer`) and writes into row i of `out` the
    /// attention of query row i over positions `0...positions[i]` of sequence i (the window
    /// of `shape` applied). Lengths are not changed (the engine sets them after the pass).
    func attendBatch(layer: Int, q: Tensor, k: Tensor, v: Tensor, positions: [Int32], shape: AttentionShape, out: Tensor)
}

extension BatchedDecodeAttention {
    /// Runs `body` with `activeSequence` set to `sequence`, then restores it.
    public func withSequence<T>(_ sequence: Int, _ body: () throws -> T) rethrows -> T {
        precondition(sequence >= 0 && sequence < sequenceCount, "sequence \(sequence) of \(sequenceCount)")
        let saved = activeSequence
        activeSequence = sequence
        defer { activeSequence = saved }
        return try body()
    }

    /// Filled length of `sequence`.
    public func length(of sequence: Int) -> Int { withSequence(sequence) { kv.length } }
}
