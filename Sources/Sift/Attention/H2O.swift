#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// H2O, the heavy-hitter oracle (Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient
/// Generative Inference of Large Language Models", NeurIPS 2023). Each KV head keeps a set of
/// cached tokens of at most the budget k: the S sinks (`--sinks`, 0 by default), the R most
/// recent tokens, and the H tokens with the largest *accumulated attention* (the sum of the
/// softmax probabilities they received at every step they were kept), R + H = k − S, half and
/// half (R = ⌈(k−S)/2⌉). A token once evicted never returns.
///
/// One step at position p (its key already stored):
///
///     candidates = kept ∖ (sinks ∪ recent(p))                      recent(p) = the last R positions ≤ p
///     kept       = sinks ∪ recent(p) ∪ top-H_j∈candidates acc_j      (evict the rest, for good)
///     o_h        = softmax_{j ∈ kept}(q_h · K_j · scale) · V_kept
///     acc_j     += Σ_{h ∈ group} softmax_h(j)                        for j ∈ kept
///
/// The order is evict-then-attend, so a step reads exactly k rows (H2O's reference code attends
/// over k + 1 and evicts after; the difference is one row). A dense prefill attends to the
/// whole prefix and adds each row's probabilities to acc (the column sums H2O starts from);
/// the first sparse step then evicts down to the budget. GQA: one kept set per KV head (the
/// cache is per KV head), acc summed over the group's query heads.
///
/// Sparse-aware perplexity (`sparsePrefill`) is exact: inside a forward pass the rows of each
/// KV head are stepped in order, each evicting, attending and accumulating as its decode step
/// would (the state of a layer depends only on that layer's queries of earlier rows).
///
/// Memory: eviction is logical on the CPU. sift's f16 cache is one flat reservation, so the
/// evicted rows stay in it, unread; `evictedRows` / `evictedBytes` report what a compacting
/// cache would free.
public final class H2OAttention: SparseAwareAttention, RecallReporting, @unchecked Sendable {
    public let name = "h2o"
    public let cache: KVCache
    public let options: AttentionOptions
    let pool: ThreadPool
    public var sparsePrefill: Bool
    public let recall: RecallMeter?
    /// Per (layer, KV head): accumulated attention by position, and the kept positions
    /// (ascending) with their count.
    let acc: UnsafeMutablePointer<Float>
    let keptBuf: UnsafeMutablePointer<Int32>
    let keptCount: UnsafeMutablePointer<Int>
    let slots: Int

    public init(cache: KVCache, options: AttentionOptions, pool: ThreadPool) {
        self.cache = cache
        self.options = options
        self.pool = pool
        sparsePrefill = options.sparsePrefill
        recall = options.measureRecall ? RecallMeter(layers: cache.layerCount) : nil
        let n = cache.layerCount * cache.kvHeads * cache.capacity
        acc = .allocate(capacity: max(1, n))
        acc.initialize(repeating: 0, count: max(1, n))
        keptBuf = .allocate(capacity: max(1, n))
        slots = cache.layerCount * cache.kvHeads
        keptCount = .allocate(capacity: max(1, slots))
        keptCount.initialize(repeating: 0, count: max(1, slots))
    }

    deinit {
        acc.deallocate()
        keptBuf.deallocate()
        keptCount.deallocate()
    }

    @inline(__always) func slot(_ layer: Int, _ kvh: Int) -> Int { layer * cache.kvHeads + kvh }
    @inline(__always) func accumulated(_ layer: Int, _ kvh: Int) -> UnsafeMutablePointer<Float> {
        acc + slot(layer, kvh) * cache.capacity
    }
    @inline(__always) func keptList(_ layer: Int, _ kvh: Int) -> UnsafeMutablePointer<Int32> {
        keptBuf + slot(layer, kvh) * cache.capacity
    }

    /// The positions one KV head of one layer keeps now (ascending).
    public func kept(layer: Int, kvHead: Int) -> [Int] {
        (0..<keptCount[slot(layer, kvHead)]).map { Int(keptList(layer, kvHead)[$0]) }
    }

    /// Accumulated attention of a position (summed over the group's query heads).
    public func accumulatedAttention(layer: Int, kvHead: Int, position: Int) -> Float {
        accumulated(layer, kvHead)[position]
    }

    /// Cached rows (all layers and KV heads) that have been evicted: positions < length not kept.
    public var evictedRows: Int {
        var n = 0
        for i in 0..<slots where keptCount[i] > 0 { n += cache.length - keptCount[i] }
        return n
    }
    /// KV bytes (f16 K and V) of the evicted rows: what a compacting cache would free.
    public var evictedBytes: Int { evictedRows * 2 * cache.headDim * MemoryLayout<Float16>.size }

    /// Adds positions to a KV head's kept list with zero accumulated attention.
    func admit(_ layer: Int, _ kvh: Int, _ positions: Range<Int>) {
        let list = keptList(layer, kvh), a = accumulated(layer, kvh)
        var c = keptCount[slot(layer, kvh)]
        for p in positions {
            a[p] = 0
            list[c] = Int32(p)
            c += 1
        }
        keptCount[slot(layer, kvh)] = c
    }

    public func append(layer: Int, k: Tensor, v: Tensor, start: Int) {
        cache.store(layer: layer, k: k, v: v, start: start)
        for kvh in 0..<cache.kvHeads { admit(layer, kvh, start..<(start + k.rows)) }
    }

    public func attend(layer: Int, q: Tensor, k: Tensor, v: Tensor, start: Int, shape: AttentionShape, out: Tensor) {
        cache.store(layer: layer, k: k, v: v, start: start)
        out.rows = q.rows
        let g = shape.groupSize, d = shape.headDim
        if shape.window > 0 {
            // Sliding-window layers stay dense: the window already bounds what they keep.
            for kvh in 0..<shape.kvHeads { admit(layer, kvh, start..<(start + q.rows)) }
            pool.parallelFor(shape.kvHeads * q.rows) { item in
                let kvh = item % shape.kvHeads, t = item / shape.kvHeads
                DenseAttention.attendGroup(q: q.row(t) + kvh * g * d, groupSize: g, keys: cache.keys(layer, kvh),
                                           values: cache.values(layer, kvh),
                                           positions: shape.firstVisible(start + t)...(start + t), headDim: d,
                                           scale: shape.scale, out: out.row(t) + kvh * g * d)
            }
            return
        }
        if q.rows > 1 && !sparsePrefill {
            densePrefill(layer: layer, q: q, start: start, shape: shape, out: out)
            return
        }
        // Decode steps (or sparse-aware rows): each KV head steps its rows in order.
        pool.parallelFor(shape.kvHeads) { kvh in
            for t in 0..<q.rows {
                step(layer: layer, kvh: kvh, position: start + t, q: q.row(t) + kvh * g * d, shape: shape,
                     out: out.row(t) + kvh * g * d)
            }
        }
    }

    /// One decode step of one KV head: admit p, evict to the budget, attend, accumulate.
    func step(layer: Int, kvh: Int, position p: Int, q: UnsafePointer<Float>, shape: AttentionShape,
              out: UnsafeMutablePointer<Float>) {
        admit(layer, kvh, p..<(p + 1))
        let list = keptList(layer, kvh), a = accumulated(layer, kvh)
        let s = slot(layer, kvh)
        let n = keptCount[s]
        let budget = options.budget.count(visible: p + 1)
        if n > budget && p + 1 >= options.denseBelow {
            let sinks = min(options.sinks, budget)
            let rest = budget - sinks
            let recent = rest - rest / 2, heavy = rest / 2
            let recentFrom = max(sinks, p - recent + 1)
            // Candidates: kept positions that are neither sinks nor recent.
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: n) { candBuf in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: n) { scoreBuf in
                    withUnsafeTemporaryAllocation(of: Int32.self, capacity: n) { pickBuf in
                        let cand = candBuf.baseAddress!, scores = scoreBuf.baseAddress!, pick = pickBuf.baseAddress!
                        var c = 0
                        for i in 0..<n {
                            let j = Int(list[i])
                            if j >= sinks && j < recentFrom {
                                cand[c] = Int32(j)
                                scores[c] = a[j]
                                c += 1
                            }
                        }
                        let h = min(heavy, c)
                        TopK.select(scores, count: c, k: h, base: 0, into: pick)
                        // Rebuild the list in ascending order: sinks, heavy, recent.
                        var w = 0
                        for i in 0..<n where Int(list[i]) < sinks { list[w] = list[i]; w += 1 }
                        for i in 0..<h { list[w] = cand[Int(pick[i])]; w += 1 }
                        if recentFrom <= p { for j in recentFrom...p { list[w] = Int32(j); w += 1 } }
                        keptCount[s] = w
                    }
                }
            }
        }
        H2OAttention.attendAccumulate(q: q, groupSize: shape.groupSize, keys: cache.keys(layer, kvh),
                                      values: cache.values(layer, kvh), first: 0, count: keptCount[s], rows: list,
                                      headDim: shape.headDim, scale: shape.scale, out: out, acc: a)
        recall?.measure(layer: layer, q: q, shape: shape, keys: cache.keys(layer, kvh), first: 0, count: p + 1,
                        picked: UnsafeBufferPointer(start: list, count: keptCount[s]))
    }

    /// A dense prefill: every row attends to its whole prefix (as dense attention does) and the
    /// probabilities are summed per key position into acc. Rows are split into chunks, each with
    /// its own sums, merged after.
    func densePrefill(layer: Int, q: Tensor, start: Int, shape: AttentionShape, out: Tensor) {
        let g = shape.groupSize, d = shape.headDim
        let rows = q.rows, end = start + rows
        let chunks = min(rows, 2 * pool.threadCount)
        let per = (rows + chunks - 1) / chunks
        let sums = UnsafeMutablePointer<Float>.allocate(capacity: shape.kvHeads * chunks * end)
        defer { sums.deallocate() }
        sums.initialize(repeating: 0, count: shape.kvHeads * chunks * end)
        pool.parallelFor(shape.kvHeads * chunks) { item in
            let kvh = item % shape.kvHeads, c = item / shape.kvHeads
            let local = sums + item * end
            for t in (c * per)..<min(rows, (c + 1) * per) {
                let position = start + t
                H2OAttention.attendAccumulate(q: q.row(t) + kvh * g * d, groupSize: g, keys: cache.keys(layer, kvh),
                                              values: cache.values(layer, kvh), first: 0, count: position + 1, rows: nil,
                                              headDim: d, scale: shape.scale, out: out.row(t) + kvh * g * d, acc: local)
            }
        }
        for kvh in 0..<shape.kvHeads {
            admit(layer, kvh, start..<end)
            let a = accumulated(layer, kvh), list = keptList(layer, kvh)
            for i in 0..<keptCount[slot(layer, kvh)] {
                let j = Int(list[i])
                var total: Float = 0
                for c in 0..<chunks { total += sums[(c * shape.kvHeads + kvh) * end + j] }
                a[j] += total
            }
        }
    }

    /// Softmax attention of `groupSize` query heads over `count` rows (`rows[0..<count]`, else
    /// `first..<first+count`) of one KV head; adds each row's probability, summed over the
    /// heads, to `acc[position]`.
    static func attendAccumulate(q: UnsafePointer<Float>, groupSize g: Int,
                                 keys: UnsafePointer<Float16>, values: UnsafePointer<Float16>,
                                 first: Int, count n: Int, rows: UnsafePointer<Int32>?, headDim d: Int, scale: Float,
                                 out: UnsafeMutablePointer<Float>, acc: UnsafeMutablePointer<Float>) {
        out.initialize(repeating: 0, count: g * d)
        guard n > 0 else { return }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: n) { buf in
            let s = buf.baseAddress!
            for h in 0..<g {
                var m = -Float.infinity
                for j in 0..<n {
                    let pos = rows.map { Int($0[j]) } ?? first + j
                    s[j] = Kernels.dot(q + h * d, keys + pos * d, d) * scale
                    m = max(m, s[j])
                }
                var sum: Float = 0
                for j in 0..<n { let e = expf(s[j] - m); s[j] = e; sum += e }
                let inv = 1 / sum
                let o = out + h * d
                for j in 0..<n {
                    let pos = rows.map { Int($0[j]) } ?? first + j
                    let p = s[j] * inv
                    acc[pos] += p
                    Kernels.axpy(p, values + pos * d, o, d)
                }
            }
        }
    }

    public func truncate(to n: Int) {
        cache.setLength(min(n, cache.length))
        for layer in 0..<cache.layerCount {
            for kvh in 0..<cache.kvHeads {
                let list = keptList(layer, kvh), s = slot(layer, kvh)
                var w = 0
                for i in 0..<keptCount[s] where Int(list[i]) < n { list[w] = list[i]; w += 1 }
                keptCount[s] = w
            }
        }
    }
}
