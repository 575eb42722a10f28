#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Exact softmax attention over every visible cached token (the reference the sparse methods
/// are measured against). It can hold several sequences (one f16 cache each) and decode them
/// together (`BatchedDecodeAttention`); the single-sequence calls act on `activeSequence`.
public final class DenseAttention: BatchedDecodeAttention, @unchecked Sendable {
    public let name = "dense"
    /// One cache per sequence.
    public let caches: [KVCache]
    /// The cache of the active sequence.
    public var cache: KVCache { caches[activeSequence] }
    public var sequenceCount: Int { caches.count }
    public var activeSequence = 0 {
        didSet { precondition(activeSequence >= 0 && activeSequence < caches.count, "no sequence \(activeSequence)") }
    }
    let pool: ThreadPool

    public init(cache: KVCache, pool: ThreadPool) {
        caches = [cache]
        self.pool = pool
    }

    /// A method holding `caches.count` sequences (caches of the same geometry).
    public init(caches: [KVCache], pool: ThreadPool) {
        precondition(!caches.isEmpty)
        self.caches = caches
        self.pool = pool
    }

    public func attendBatch(layer: Int, q: Tensor, k: Tensor, v: Tensor, positions: [Int32], shape: AttentionShape,
                            out: Tensor) {
        precondition(q.rows == positions.count && q.rows <= caches.count, "batch of \(q.rows) rows, \(caches.count) sequences")
        for (i, p) in positions.enumerated() {
            caches[i].storeRow(layer: layer, k: k.row(i), v: v.row(i), position: Int(p))
        }
        out.rows = q.rows
        let g = shape.groupSize
        pool.parallelFor(shape.kvHeads * q.rows) { item in
            let kvh = item % shape.kvHeads, t = item / shape.kvHeads
            let position = Int(positions[t]), c = caches[t]
            DenseAttention.attendGroup(
                q: q.row(t) + kvh * g * shape.headDim, groupSize: g,
                keys: c.keys(layer, kvh), values: c.values(layer, kvh),
                positions: shape.firstVisible(position)...position, headDim: shape.headDim, scale: shape.scale,
                out: out.row(t) + kvh * g * shape.headDim)
        }
    }

    public func attend(layer: Int, q: Tensor, k: Tensor, v: Tensor, start: Int, shape: AttentionShape, out: Tensor) {
        cache.store(layer: layer, k: k, v: v, start: start)
        out.rows = q.rows
        let g = shape.groupSize
        if q.rows == 1 && shape.kvHeads < pool.threadCount {
            let first = shape.firstVisible(start)
            if start + 1 - first >= 256 {
                attendSplit(layer: layer, q: q.row(0), positions: first...start, shape: shape, out: out.row(0))
                return
            }
        }
        // One work item per (KV head, query row): the group's query heads share each key read.
        pool.parallelFor(shape.kvHeads * q.rows) { item in
            let kvh = item % shape.kvHeads, t = item / shape.kvHeads
            let position = start + t
            let first = shape.firstVisible(position)
            DenseAttention.attendGroup(
                q: q.row(t) + kvh * g * shape.headDim, groupSize: g,
                keys: cache.keys(layer, kvh), values: cache.values(layer, kvh),
                positions: first...position, headDim: shape.headDim, scale: shape.scale,
                out: out.row(t) + kvh * g * shape.headDim)
        }
    }

    /// One decode step with fewer KV heads than threads (Gemma 3 has one): the visible rows
    /// are split into parts attended in parallel, each keeping its own softmax maximum and
    /// sum, then merged exactly (the split-K form of softmax attention).
    func attendSplit(layer: Int, q: UnsafePointer<Float>, positions: ClosedRange<Int>, shape: AttentionShape,
                     out: UnsafeMutablePointer<Float>) {
        let g = shape.groupSize, d = shape.headDim
        let parts = min(4 * pool.threadCount, positions.count / 64)
        let per = (positions.count + parts - 1) / parts
        // Per (KV head, part): g maxima, g sums, g·d unnormalised outputs.
        let stride = g * (d + 2)
        let buf = UnsafeMutablePointer<Float>.allocate(capacity: shape.kvHeads * parts * stride)
        defer { buf.deallocate() }
        pool.parallelFor(shape.kvHeads * parts) { item in
            let kvh = item / parts, p = item % parts
            let lo = positions.lowerBound + p * per, hi = min(positions.upperBound + 1, lo + per)
            let slot = buf + item * stride
            DenseAttention.attendGroupPartial(
                q: q + kvh * g * d, groupSize: g, keys: cache.keys(layer, kvh), values: cache.values(layer, kvh),
                first: lo, count: max(0, hi - lo), headDim: d, scale: shape.scale,
                maxima: slot, sums: slot + g, out: slot + 2 * g)
        }
        for kvh in 0..<shape.kvHeads {
            for h in 0..<g {
                var m = -Float.infinity
                for p in 0..<parts { m = max(m, buf[(kvh * parts + p) * stride + h]) }
                var total: Float = 0
                let o = out + (kvh * g + h) * d
                o.initialize(repeating: 0, count: d)
                for p in 0..<parts {
                    let slot = buf + (kvh * parts + p) * stride
                    guard slot[h] > -Float.infinity else { continue }
                    let w = expf(slot[h] - m)
                    total += w * slot[g + h]
                    let src = slot + 2 * g + h * d
                    for i in 0..<d { o[i] += w * src[i] }
                }
                Kernels.scale(o, 1 / total, d)
            }
        }
    }

    /// Unnormalised attention of `groupSize` query heads over `count` cached rows of one KV
    /// head — `rows[0..<count]` when given (sparse methods' selections), else
    /// `first..<first + count`: per head the score maximum, Σ exp(score − max), and
    /// Σ exp(score − max)·v.
    static func attendGroupPartial(q: UnsafePointer<Float>, groupSize g: Int,
                                   keys: UnsafePointer<Float16>, values: UnsafePointer<Float16>,
                                   first: Int, count n: Int, rows: UnsafePointer<Int32>? = nil,
                                   headDim d: Int, scale: Float,
                                   maxima: UnsafeMutablePointer<Float>, sums: UnsafeMutablePointer<Float>,
                                   out: UnsafeMutablePointer<Float>) {
        out.initialize(repeating: 0, count: g * d)
        guard n > 0 else {
            maxima.initialize(repeating: -Float.infinity, count: g)
            sums.initialize(repeating: 0, count: g)
            return
        }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: n * g) { scores in
            let s = scores.baseAddress!
            for j in 0..<n {
                let key = keys + (rows.map { Int($0[j]) } ?? first + j) * d
                for h in 0..<g { s[h * n + j] = Kernels.dot(q + h * d, key, d) * scale }
            }
            for h in 0..<g {
                let row = s + h * n
                var m = -Float.infinity
                for j in 0..<n { m = max(m, row[j]) }
                var sum: Float = 0
                for j in 0..<n { let e = expf(row[j] - m); row[j] = e; sum += e }
                maxima[h] = m
                sums[h] = sum
                let o = out + h * d
                for j in 0..<n { Kernels.axpy(row[j], values + (rows.map { Int($0[j]) } ?? first + j) * d, o, d) }
            }
        }
    }

    /// Attention of `groupSize` consecutive query heads over the cached rows `positions` of one
    /// KV head. Shared with sparse methods' dense layers and fallbacks.
    static func attendGroup(q: UnsafePointer<Float>, groupSize g: Int,
                            keys: UnsafePointer<Float16>, values: UnsafePointer<Float16>,
                            positions: ClosedRange<Int>, headDim d: Int, scale: Float,
                            out: UnsafeMutablePointer<Float>) {
        attendGroup(q: q, groupSize: g, keys: keys, values: values, first: positions.lowerBound,
                    count: positions.count, rows: nil, headDim: d, scale: scale, out: out)
    }

    /// Attention of `groupSize` query heads over `count` cached rows of one KV head: the rows
    /// `rows[0..<count]` when given (sparse methods' selections), else `first..<first + count`.
    static func attendGroup(q: UnsafePointer<Float>, groupSize g: Int,
                            keys: UnsafePointer<Float16>, values: UnsafePointer<Float16>,
                            first: Int, count n: Int, rows: UnsafePointer<Int32>?,
                            headDim d: Int, scale: Float, out: UnsafeMutablePointer<Float>) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * g) { stats in
            let maxima = stats.baseAddress!, sums = maxima + g
            attendGroupPartial(q: q, groupSize: g, keys: keys, values: values, first: first, count: n, rows: rows,
                               headDim: d, scale: scale, maxima: maxima, sums: sums, out: out)
            for h in 0..<g where n > 0 { Kernels.scale(out + h * d, 1 / sums[h], d) }
        }
    }

    public func truncate(to n: Int) { cache.setLength(min(n, cache.length)) }
}
