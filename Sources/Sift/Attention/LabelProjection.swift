/// Projected labels for Double Sparsity (`sift calibrate --statistic qk-svd`; sift's addition,
/// not in the paper). Instead of r of the key's own channels, a label holds r channels of a
/// calibrated basis, chosen for the query·key product the labels must approximate:
///
///     label_j = B K_j            B: r × d (key projection)
///     ŝ_j     = (A q) · label_j  A: r × d (query projection), so ŝ_j = qᵀ AᵀB K_j ≈ q·K_j
///
/// Per layer and KV head, with Σ_k the covariance of the post-RoPE keys (centred: a constant
/// added to every key shifts every score of a query equally, so it cannot change a ranking) and
/// Σ_q = Σ_{h ∈ group} E[q_h q_hᵀ] the second moment of the group's post-RoPE queries (not
/// centred: the mean query is what most of the score is made of), the mean squared score error
/// over queries and tokens,
///
///     E_q E_k (qᵀ(K − μ) − qᵀ AᵀB (K − μ))²,
///
/// is smallest when the label keeps the top r eigenvectors e_1…e_r of
///
///     N = Σ_k^{1/2} Σ_q Σ_k^{1/2}
///
/// with B = [e_i]ᵀ Σ_k^{-1/2} (whitened keys: each label channel has unit variance) and
/// A = [e_i]ᵀ Σ_k^{1/2}. (For a fixed B the best A is the regression of K on the label,
/// Σ_k Bᵀ(B Σ_k Bᵀ)⁻¹, the same for every query; substituting it leaves tr(Σ_q Σ_k) minus the
/// captured part tr(Cᵀ N C) with C = Σ_k^{1/2} Bᵀ orthonormalised, maximised by N's top
/// eigenvectors.) With Σ_q = I this is Loki's key PCA; with B a channel selection it is plain
/// Double Sparsity. At r = head_dim, AᵀB = I and ŝ_j is the exact score.
///
/// Bytes and arithmetic per token are those of r channels: the label is r values; the query
/// costs r · head_dim multiply-adds once per step, and storing a key r · head_dim once.
public struct LabelProjection: Codable, Sendable, Equatable {
    /// Rows stored per layer and KV head (the largest usable `--ds-channels`).
    public var rank: Int
    /// [layer][kv head] → rank × head_dim floats, row-major: row i is B's row i.
    public var keys: [[[Float]]]
    /// [layer][kv head] → rank × head_dim floats, row-major: row i is A's row i.
    public var queries: [[[Float]]]
    /// N's eigenvalue of each row (the score variance it captures), [layer][kv head][rank].
    public var captured: [[[Double]]]

    public init(rank: Int, keys: [[[Float]]], queries: [[[Float]]], captured: [[[Double]]]) {
        self.rank = rank
        self.keys = keys
        self.queries = queries
        self.captured = captured
    }

    /// The projection of one layer and KV head from the key covariance `keyCovariance` and the
    /// query second moment `querySecondMoment` (d × d, row-major, float64). Also returns the
    /// mean of each label channel (B μ, with `keyMean` = μ) and its standard deviation
    /// (√(B Σ_k Bᵀ)_ii, 1 up to rounding and the eigenvalue floor).
    static func solve(keyCovariance sk: [Double], querySecondMoment sq: [Double], keyMean mu: [Double], headDim d: Int,
                      rank r: Int) -> (key: [Float], query: [Float], captured: [Double], mean: [Double], std: [Double]) {
        // Σ_k^{±1/2} from Σ_k's eigen-decomposition; eigenvalues below 1e-8 of the largest
        // (directions the keys never move in) are floored so that Σ_k^{-1/2} stays finite: N is
        // ~0 there, so no label channel points along them.
        let (lambda, u) = SymmetricEigen.decompose(sk, n: d)
        let floor = max(lambda.first ?? 0, 1e-30) * 1e-8
        var half = [Double](repeating: 0, count: d * d), invHalf = half
        for i in 0..<d {
            let l = max(lambda[i], floor), s = l.squareRoot(), t = 1 / s
            for a in 0..<d {
                let ua = u[i * d + a]
                if ua == 0 { continue }
                for b in 0..<d {
                    half[a * d + b] += s * ua * u[i * d + b]
                    invHalf[a * d + b] += t * ua * u[i * d + b]
                }
            }
        }
        let n = multiply(multiply(half, sq, d), half, d)
        var nsym = n
        for a in 0..<d { for b in 0..<a { let m = (n[a * d + b] + n[b * d + a]) / 2; nsym[a * d + b] = m; nsym[b * d + a] = m } }
        let (values, e) = SymmetricEigen.decompose(nsym, n: d)
        var key = [Float](repeating: 0, count: r * d), query = key
        var mean = [Double](repeating: 0, count: r), std = mean
        for i in 0..<r {
            var bRow = [Double](repeating: 0, count: d)
            for b in 0..<d {
                var kb = 0.0, qb = 0.0
                // Σ^{±1/2} are symmetric: row i of [e]ᵀ Σ^{±1/2} is Σ^{±1/2} e_i.
                for a in 0..<d { kb += e[i * d + a] * invHalf[a * d + b]; qb += e[i * d + a] * half[a * d + b] }
                bRow[b] = kb
                key[i * d + b] = Float(kb)
                query[i * d + b] = Float(qb)
            }
            var m = 0.0, v = 0.0
            for a in 0..<d {
                m += bRow[a] * mu[a]
                var s = 0.0
                for b in 0..<d { s += sk[a * d + b] * bRow[b] }
                v += bRow[a] * s
            }
            mean[i] = m
            std[i] = max(v, 0).squareRoot()
        }
        return (key, query, Array(values.prefix(r)), mean, std)
    }

    private static func multiply(_ x: [Double], _ y: [Double], _ d: Int) -> [Double] {
        var z = [Double](repeating: 0, count: d * d)
        for a in 0..<d {
            for k in 0..<d {
                let xa = x[a * d + k]
                if xa == 0 { continue }
                for b in 0..<d { z[a * d + b] += xa * y[k * d + b] }
            }
        }
        return z
    }

    /// Checks the shapes against the model (layers, KV heads, head_dim) and that every value is
    /// finite; errors name the file and the field.
    func validate(layers: Int, kvHeads: Int, headDim d: Int, path: String) throws {
        guard rank >= 1 && rank <= d else {
            throw ModelError.invalid("\(path): label_projection.rank is \(rank), must be in 1...\(d)")
        }
        for (name, v) in [("keys", keys), ("queries", queries)] {
            guard v.count == layers else {
                throw ModelError.invalid("\(path): label_projection.\(name) has \(v.count) layers, model.layers says \(layers)")
            }
            for (l, heads) in v.enumerated() {
                guard heads.count == kvHeads else {
                    throw ModelError.invalid("\(path): label_projection.\(name)[\(l)] has \(heads.count) heads, expected kv_heads = \(kvHeads)")
                }
                for (h, m) in heads.enumerated() {
                    guard m.count == rank * d else {
                        throw ModelError.invalid("\(path): label_projection.\(name)[\(l)][\(h)] has \(m.count) values, expected rank × head_dim = \(rank * d)")
                    }
                    if let i = m.firstIndex(where: { !$0.isFinite }) {
                        throw ModelError.invalid("\(path): label_projection.\(name)[\(l)][\(h)][\(i)] is not a finite number")
                    }
                }
            }
        }
        guard captured.count == layers, captured.allSatisfy({ $0.count == kvHeads && $0.allSatisfy { $0.count == rank } }) else {
            throw ModelError.invalid("\(path): label_projection.captured must be [layers][kv_heads][rank]")
        }
    }
}

/// First and second moments of a stream of d-vectors (float64): Σx and the upper triangle of
/// Σx·xᵀ, row-major d × d. The key covariance of Loki's PCA and of the label projection, and
/// the query second moment of the label projection.
struct SecondMoments {
    let d: Int
    private(set) var sum: [Double]
    private(set) var products: [Double]
    private(set) var count = 0

    init(dimension d: Int) {
        self.d = d
        sum = Array(repeating: 0, count: d)
        products = Array(repeating: 0, count: d * d)
    }

    /// Adds `n` vectors: vector t is `rows[t * stride ..< t * stride + d]`.
    mutating func add(_ rows: UnsafePointer<Double>, count n: Int, stride: Int, pool: ThreadPool) {
        let d = self.d
        sum.withUnsafeMutableBufferPointer { s in
            for t in 0..<n { for c in 0..<d { s[c] += rows[t * stride + c] } }
        }
        products.withUnsafeMutableBufferPointer { pb in
            let p = pb.baseAddress!
            // One work item per row a of the upper triangle: row[a...] += x_a · x[a...].
            pool.parallelFor(d) { a in
                let row = p + a * d
                for t in 0..<n {
                    let x = rows + t * stride
                    let xa = x[a]
                    for b in a..<d { row[b] += xa * x[b] }
                }
            }
        }
        count += n
    }

    var mean: [Double] { sum.map { $0 / Double(max(1, count)) } }

    /// E[x xᵀ] (full symmetric matrix).
    var secondMoment: [Double] { symmetric(centered: false) }

    /// The covariance E[(x − μ)(x − μ)ᵀ] (full symmetric matrix).
    var covariance: [Double] { symmetric(centered: true) }

    private func symmetric(centered: Bool) -> [Double] {
        let n = Double(max(1, count)), m = mean
        var out = [Double](repeating: 0, count: d * d)
        for a in 0..<d {
            for b in a..<d {
                let c = products[a * d + b] / n - (centered ? m[a] * m[b] : 0)
                out[a * d + b] = c
                out[b * d + a] = c
            }
        }
        return out
    }
}
