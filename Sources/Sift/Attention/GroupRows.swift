/// One work item of a token-sparse method in a forward pass: query row `t` (at `position`) and
/// KV head `kvh`, with the group's queries and outputs, the visible range and the token budget.
struct GroupRow {
    let kvh: Int, t: Int, position: Int, first: Int
    let budget: Int
    /// The group's `groupSize × headDim` query values and output values of this row.
    let q: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>

    var visible: Int { position - first + 1 }
    var positions: ClosedRange<Int> { first...position }

    /// Whether this row attends densely: rows the method does not sparsify (`sparse` false:
    /// prefill rows, sliding-window layers), a budget that covers every visible token, or a
    /// context still shorter than `--dense-below`.
    func isDense(sparse: Bool, denseBelow: Int) -> Bool {
        !sparse || budget >= visible || visible < denseBelow
    }

    /// Exact attention of the group over all its visible tokens.
    func attendDensely(cache: KVCache, layer: Int, shape: AttentionShape) {
        DenseAttention.attendGroup(q: q, groupSize: shape.groupSize, keys: cache.keys(layer, kvh),
                                   values: cache.values(layer, kvh), positions: positions,
                                   headDim: shape.headDim, scale: shape.scale, out: out)
    }
}

extension AttentionShape {
    /// Runs `body` for every (query row, KV head) of a forward pass whose first row sits at
    /// `start`, spread over the pool: the loop every token-sparse CPU method shares.
    func forEachGroupRow(q: Tensor, out: Tensor, start: Int, budget: TokenBudget, pool: ThreadPool,
                         _ body: (GroupRow) -> Void) {
        let width = groupSize * headDim
        pool.parallelFor(kvHeads * q.rows) { item in
            let kvh = item % kvHeads, t = item / kvHeads
            let position = start + t
            let first = firstVisible(position)
            body(GroupRow(kvh: kvh, t: t, position: position, first: first,
                          budget: budget.count(visible: position - first + 1),
                          q: q.row(t) + kvh * width, out: out.row(t) + kvh * width))
        }
    }
}
