#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// SparQ attention (Ribar et al., "SparQ Attention: Bandwidth-Efficient LLM Inference",
/// ICML 2024). Per decode step, for a query head q over the L visible tokens:
///
///     i1 = top-r_c |q_c|                                   r = `--sparq-r`, default head_dim/8
///     γ  = sqrt(Σ_{c∈i1} |q_c| / Σ_c |q_c|)                 temperature correction
///     ŝ  = softmax_j(q[i1] · K_j[i1] · scale / γ)          approximate scores (r of d channels)
///     i2 = top-k_j ŝ_j ,  α = Σ_{j∈i2} ŝ_j                 k = budget(L)
///     y  = α · softmax_{j∈i2}(q · K_j · scale) · V_i2 + (1 − α) · v̄      v̄ = mean of all visible V
///
/// (With scale = 1/√d the softmax temperature is √d·γ, the paper's τ.) The default r = d/8 with
/// k = L/16 is the paper's 1/8-compression setting. sift keeps a transposed copy of K
/// ([channel][position], f16, the paper's "store K twice") so the approximate pass reads r
/// contiguous channel rows instead of gathering from every key, and a running sum of V for v̄.
///
/// GQA (`--gqa`): `per-head` (default, as the authors' code, which repeats K over the group)
/// gives every query head its own i1, i2 and α; `shared` picks i1 by the group's summed |q|
/// and i2 by the group's summed ŝ (one token set per KV head), each head keeping its own γ and α.
///
/// Sparse-aware perplexity is exact: row p uses only keys ≤ p and the mean of V over 0…p.
public final class SparQAttention: SparseAwareAttention, RecallReporting, @unchecked Sendable {
    public let name = "sparq"
    public let cache: KVCache
    public let options: AttentionOptions
    public let rank: Int
    public let perHead: Bool
    let pool: ThreadPool
    public var sparsePrefill: Bool
    public let recall: RecallMeter?
    /// Per (layer, KV head): K transposed, headDim rows of `capacity` f16 values.
    let keysT: UnsafeMutablePointer<Float16>
    /// Per (layer, KV head): Σ V over positions 0..<summed[layer] (f64).
    let vSum: UnsafeMutablePointer<Double>
    let summed: UnsafeMutablePointer<Int>

    public init(cache: KVCache, rank r: Int, options: AttentionOptions, pool: ThreadPool) throws {
        guard r >= 1 && r <= cache.headDim else {
            throw ModelError.invalid("--sparq-r must be in 1...\(cache.headDim), got \(r)")
        }
        self.cache = cache
        self.options = options
        self.pool = pool
        rank = r
        perHead = options.gqaPerHead ?? true
        sparsePrefill = options.sparsePrefill
        recall = options.measureRecall ? RecallMeter(layers: cache.layerCount) : nil
        let n = max(1, cache.layerCount * cache.kvHeads * cache.headDim * cache.capacity)
        keysT = .allocate(capacity: n)
        let m = max(1, cache.layerCount * cache.kvHeads * cache.headDim)
        vSum = .allocate(capacity: m)
        vSum.initialize(repeating: 0, count: m)
        summed = .allocate(capacity: max(1, cache.layerCount))
        summed.initialize(repeating: 0, count: max(1, cache.layerCount))
    }

    deinit {
        keysT.deallocate()
        vSum.deallocate()
        summed.deallocate()
    }

    @inline(__always) func transposed(_ layer: Int, _ kvh: Int) -> UnsafeMutablePointer<Float16> {
        keysT + (layer * cache.kvHeads + kvh) * cache.headDim * cache.capacity
    }
    @inline(__always) func valueSum(_ layer: Int, _ kvh: Int) -> UnsafeMutablePointer<Double> {
        vSum + (layer * cache.kvHeads + kvh) * cache.headDim
    }

    public func append(layer: Int, k: Tensor, v: Tensor, start: Int) {
        cache.store(layer: layer, k: k, v: v, start: start)
        let d = cache.headDim, cap = cache.capacity
        for kvh in 0..<cache.kvHeads {
            let src = cache.keys(layer, kvh), dst = transposed(layer, kvh)
            for j in start..<(start + k.rows) {
                for c in 0..<d { dst[c * cap + j] = src[j * d + c] }
            }
        }
        syncSum(layer, start)
        for kvh in 0..<cache.kvHeads {
            let s = valueSum(layer, kvh), vals = cache.values(layer, kvh)
            for j in start..<(start + k.rows) { for c in 0..<d { s[c] += Double(vals[j * d + c]) } }
        }
        summed[layer] = start + k.rows
    }

    /// Makes the running Σ V of `layer` cover exactly positions 0..<n (recomputed from the
    /// cache after a truncation).
    func syncSum(_ layer: Int, _ n: Int) {
        guard summed[layer] != n else { return }
        let d = cache.headDim
        for kvh in 0..<cache.kvHeads {
            let s = valueSum(layer, kvh), vals = cache.values(layer, kvh)
            for c in 0..<d { s[c] = 0 }
            for j in 0..<n { for c in 0..<d { s[c] += Double(vals[j * d + c]) } }
        }
        summed[layer] = n
    }

    public func attend(layer: Int, q: Tensor, k: Tensor, v: Tensor, start: Int, shape: AttentionShape, out: Tensor) {
        let sparseRows = (q.rows == 1 || sparsePrefill) && shape.window == 0
        let g = shape.groupSize, d = shape.headDim
        // Σ V before this batch, per KV head, for the per-row means.
        syncSum(layer, start)
        var before = [Double](repeating: 0, count: shape.kvHeads * d)
        for kvh in 0..<shape.kvHeads { for c in 0..<d { before[kvh * d + c] = valueSum(layer, kvh)[c] } }
        append(layer: layer, k: k, v: v, start: start)
        out.rows = q.rows
        // Mean of V over 0…p for every row: prefix sums of this batch on top of `before`.
        let means = UnsafeMutablePointer<Float>.allocate(capacity: max(1, sparseRows ? q.rows * shape.kvHeads * d : 1))
        defer { means.deallocate() }
        if sparseRows {
            for kvh in 0..<shape.kvHeads {
                let vals = cache.values(layer, kvh)
                var s = Array(before[(kvh * d)..<((kvh + 1) * d)])
                for t in 0..<q.rows {
                    let p = start + t
                    let m = means + (t * shape.kvHeads + kvh) * d
                    for c in 0..<d {
                        s[c] += Double(vals[p * d + c])
                        m[c] = Float(s[c] / Double(p + 1))
                    }
                }
            }
        }
        shape.forEachGroupRow(q: q, out: out, start: start, budget: options.budget, pool: pool) { r in
            if r.isDense(sparse: sparseRows, denseBelow: options.denseBelow) {
                r.attendDensely(cache: cache, layer: layer, shape: shape)
                return
            }
            decodeStep(layer: layer, kvh: r.kvh, q: r.q, groupSize: g, visible: r.visible, budget: r.budget, headDim: d,
                       scale: shape.scale, mean: means + (r.t * shape.kvHeads + r.kvh) * d, out: r.out)
        }
    }

    /// One SparQ step for the group of one KV head over positions 0..<visible.
    func decodeStep(layer: Int, kvh: Int, q: UnsafePointer<Float>, groupSize g: Int, visible L: Int, budget k: Int,
                    headDim d: Int, scale: Float, mean: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>) {
        let r = rank, cap = cache.capacity
        let kt = transposed(layer, kvh)
        let selections = perHead ? g : 1, heads = perHead ? 1 : g
        withUnsafeTemporaryAllocation(of: Float.self, capacity: (heads + 1) * L + 2 * d) { buf in
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: r + k) { ibuf in
                let approx = buf.baseAddress!, total = approx + heads * L, absq = total + L
                let channels = ibuf.baseAddress!, picked = channels + r
                for sel in 0..<selections {
                    let qs = q + sel * heads * d, os = out + sel * heads * d
                    // i1: the r largest |q_c| (summed over the heads that share the selection).
                    for c in 0..<d {
                        var a: Float = 0
                        for h in 0..<heads { a += abs(qs[h * d + c]) }
                        absq[c] = a
                    }
                    TopK.select(absq, count: d, k: r, base: 0, into: channels)
                    for j in 0..<L { total[j] = 0 }
                    for h in 0..<heads {
                        let qh = qs + h * d, s = approx + h * L
                        var all: Float = 0, part: Float = 0
                        for c in 0..<d { all += abs(qh[c]) }
                        for i in 0..<r { part += abs(qh[Int(channels[i])]) }
                        let gamma = all > 0 ? (part / all).squareRoot() : 1
                        let factor = gamma > 0 ? scale / gamma : scale
                        for j in 0..<L { s[j] = 0 }
                        for i in 0..<r {
                            let c = Int(channels[i])
                            SparQAttention.axpyRow(qh[c], kt + c * cap, s, L)
                        }
                        var m = -Float.infinity
                        for j in 0..<L { s[j] *= factor; m = max(m, s[j]) }
                        var z: Float = 0
                        for j in 0..<L { let e = expf(s[j] - m); s[j] = e; z += e }
                        let inv = 1 / z
                        for j in 0..<L { s[j] *= inv; total[j] += s[j] }
                    }
                    TopK.select(total, count: L, k: k, base: 0, into: picked)
                    DenseAttention.attendGroup(q: qs, groupSize: heads, keys: cache.keys(layer, kvh),
                                               values: cache.values(layer, kvh), first: 0, count: k, rows: picked,
                                               headDim: d, scale: scale, out: os)
                    if let recall {
                        let one = AttentionShape(heads: heads, kvHeads: 1, headDim: d, scale: scale)
                        recall.measure(layer: layer, q: qs, shape: one, keys: cache.keys(layer, kvh), first: 0, count: L,
                                       picked: UnsafeBufferPointer(start: picked, count: k))
                    }
                    for h in 0..<heads {
                        var alpha: Float = 0
                        let s = approx + h * L
                        for i in 0..<k { alpha += s[Int(picked[i])] }
                        let o = os + h * d
                        for c in 0..<d { o[c] = alpha * o[c] + (1 - alpha) * mean[c] }
                    }
                }
            }
        }
    }

    /// y[0..<n] += a · x[0..<n] (x f16).
    @inline(__always)
    static func axpyRow(_ a: Float, _ x: UnsafePointer<Float16>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        Kernels.axpy(a, x, y, n)
    }

    public func truncate(to n: Int) { cache.setLength(min(n, cache.length)) }
}
