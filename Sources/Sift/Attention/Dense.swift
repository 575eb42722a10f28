#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Exact softmax attention over every visible cached token (the reference the sparse methods
/// are measured against).
public final class DenseAttention: AttentionMethod, @unchecked Sendable {
    public let name = "dense"
    public let cache: KVCache
    let pool: ThreadPool

    public init(cache: KVCache, pool: ThreadPool) {
        self.cache = cache
        self.pool = pool
    }

    public func attend(layer: Int, q: Tensor, k: Tensor, v: Tensor, start: Int, shape: AttentionShape, out: Tensor) {
        cache.store(layer: layer, k: k, v: v, start: start)
        out.rows = q.rows
        let g = shape.groupSize
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
        withUnsafeTemporaryAllocation(of: Float.self, capacity: n * g) { scores in
            let s = scores.baseAddress!
            for j in 0..<n {
                let key = keys + (rows.map { Int($0[j]) } ?? first + j) * d
                for h in 0..<g {
                    s[h * n + j] = Kernels.dot(q + h * d, key, d) * scale
                }
            }
            for h in 0..<g {
                let row = s + h * n
                var m = -Float.infinity
                for j in 0..<n { m = max(m, row[j]) }
                var sum: Float = 0
                for j in 0..<n { let e = expf(row[j] - m); row[j] = e; sum += e }
                let inv = 1 / sum
                let o = out + h * d
                o.initialize(repeating: 0, count: d)
                for j in 0..<n {
                    Kernels.axpy(row[j] * inv, values + (rows.map { Int($0[j]) } ?? first + j) * d, o, d)
                }
            }
        }
    }

    public func truncate(to n: Int) { cache.setLength(min(n, cache.length)) }
}
