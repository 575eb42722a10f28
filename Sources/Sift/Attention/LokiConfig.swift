#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Loki's offline calibration, as `sift calibrate --method loki` writes it (JSON):
///
///     {
///       "format": "sift.loki", "version": 1,
///       "model": { …as in the Double Sparsity config, with file_sha256… },
///       "keys": "post-rope",
///       "calibration": { "text": "…", "tokens": 8192, "sample_length": 512,
///                        "seconds": 12.3, "peak_memory_bytes": 1234567 },
///       "components": [[[…]]],      // [layer][kv head] → head_dim × head_dim floats, row-major:
///                                   // row i = the i-th principal direction (unit length), by
///                                   // decreasing variance
///       "eigenvalues": [[[…]]],     // [layer][kv head] → the variance along each direction
///       "mean": [[[…]]],            // [layer][kv head] → the mean key (head_dim floats)
///       "default_rank": 64          // optional: r when --loki-rank is not given
///     }
///
/// PCA of the post-RoPE keys (the keys the cache holds; Loki's default), per layer and KV head:
/// the eigenvectors of the keys' covariance (centred: the mean adds the same amount to every
/// token's score, so it cannot change a ranking). At run time the first r rows are used.
public struct LokiConfig: Codable, Sendable, Equatable {
    public static let formatName = "sift.loki"

    public var format = LokiConfig.formatName
    public var version = 1
    public var model: DoubleSparsityConfig.ModelIdentity
    public var keys = "post-rope"
    public var calibration: DoubleSparsityConfig.Calibration
    public var components: [[[Float]]]
    public var eigenvalues: [[[Double]]]
    public var mean: [[[Float]]]
    public var defaultRank: Int?

    enum CodingKeys: String, CodingKey {
        case format, version, model, keys, calibration, components, eigenvalues, mean
        case defaultRank = "default_rank"
    }

    public init(model: DoubleSparsityConfig.ModelIdentity, calibration: DoubleSparsityConfig.Calibration,
                pca: [[KeyPCA]], defaultRank: Int? = nil) {
        self.model = model
        self.calibration = calibration
        components = pca.map { $0.map(\.components) }
        eigenvalues = pca.map { $0.map(\.variances) }
        mean = pca.map { $0.map(\.mean) }
        self.defaultRank = defaultRank
    }

    /// Where `sift calibrate --method loki` caches the calibration of a model file by default.
    public static func cachedPath(modelSHA256: String) -> String {
        ModelHub.cacheDirectory + "/calibration/" + modelSHA256 + ".loki.json"
    }

    static func resolvePath(_ options: AttentionOptions) throws -> String {
        if let p = options.lokiConfigPath { return p }
        guard let sha = options.modelSHA256 else {
            throw ModelError.invalid("loki attention needs a PCA calibration: pass --loki-config FILE or run `sift calibrate --method loki -m MODEL`")
        }
        let p = cachedPath(modelSHA256: sha)
        guard fileExists(p) else {
            throw ModelError.invalid("no Loki calibration for this model (looked for \(p)): run `sift calibrate --method loki -m MODEL` first, or pass --loki-config FILE")
        }
        return p
    }

    public func encoded() throws -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return Array(try e.encode(self))
    }

    /// Reads and validates a config file; errors name the file and what is wrong.
    public static func load(path: String) throws -> LokiConfig {
        let text = try readTextFile(path)
        let c: LokiConfig
        do {
            c = try JSONDecoder().decode(LokiConfig.self, from: Data(text.utf8))
        } catch {
            // Name another sift format plainly (a Double Sparsity config passed by mistake).
            struct Header: Decodable { var format: String? }
            if let f = (try? JSONDecoder().decode(Header.self, from: Data(text.utf8)))?.format, f != formatName {
                throw ModelError.invalid("\(path): format '\(f)', expected '\(formatName)' (a Loki calibration from `sift calibrate --method loki`)")
            }
            throw ModelError.invalid("\(path): not a Loki config (\(error))")
        }
        guard c.format == formatName, c.version == 1 else {
            throw ModelError.invalid("\(path): format '\(c.format)' version \(c.version), expected '\(formatName)' version 1")
        }
        try c.validateShape(path: path)
        return c
    }

    func validateShape(path: String) throws {
        let m = model, d = m.headDim
        for (name, n) in [("components", components.count), ("eigenvalues", eigenvalues.count), ("mean", mean.count)] where n != m.layers {
            throw ModelError.invalid("\(path): \(name) has \(n) layers, model.layers says \(m.layers)")
        }
        for l in 0..<m.layers {
            guard components[l].count == m.kvHeads, eigenvalues[l].count == m.kvHeads, mean[l].count == m.kvHeads else {
                throw ModelError.invalid("\(path): layer \(l) must have kv_heads = \(m.kvHeads) entries in components, eigenvalues and mean")
            }
            for h in 0..<m.kvHeads {
                let p = components[l][h]
                guard p.count == d * d, eigenvalues[l][h].count == d, mean[l][h].count == d else {
                    throw ModelError.invalid("\(path): components[\(l)][\(h)] must hold head_dim² = \(d * d) values (has \(p.count)), eigenvalues and mean head_dim = \(d)")
                }
                // Orthonormal rows: the approximate scores assume P_rᵀ P_r = I.
                for i in 0..<d {
                    for j in i..<d {
                        var s = 0.0
                        for c in 0..<d { s += Double(p[i * d + c]) * Double(p[j * d + c]) }
                        guard abs(s - (i == j ? 1 : 0)) < 1e-3 else {
                            throw ModelError.invalid("\(path): components[\(l)][\(h)] are not orthonormal (rows \(i), \(j): dot \(s))")
                        }
                    }
                }
            }
        }
        if let r = defaultRank, !(1...d).contains(r) {
            throw ModelError.invalid("\(path): default_rank is \(r), must be in 1...\(d)")
        }
    }
}

extension DoubleSparsityConfig.ModelIdentity {
    /// Refuses a calibration made for another model.
    public func check(against c: ModelConfig, fileSHA256: String?, path: String) throws {
        let want = Self(config: c, fileSHA256: fileSHA256)
        func mismatch(_ field: String, _ a: Any, _ b: Any) -> ModelError {
            .invalid("\(path): calibrated for another model: \(field) is \(a) in the config, \(b) in the model (re-run `sift calibrate`)")
        }
        if architecture != want.architecture { throw mismatch("architecture", architecture, want.architecture) }
        if layers != want.layers { throw mismatch("layers", layers, want.layers) }
        if heads != want.heads { throw mismatch("heads", heads, want.heads) }
        if kvHeads != want.kvHeads { throw mismatch("kv_heads", kvHeads, want.kvHeads) }
        if headDim != want.headDim { throw mismatch("head_dim", headDim, want.headDim) }
        if let a = self.fileSHA256, let b = fileSHA256, a != b { throw mismatch("file_sha256", a, b) }
    }
}

/// The principal components of one KV head's keys.
public struct KeyPCA: Sendable {
    /// head_dim × head_dim, row i = the i-th principal direction (decreasing variance).
    public var components: [Float]
    public var variances: [Double]
    public var mean: [Float]
}

/// Offline PCA calibration for Loki: runs the model densely over calibration text and
/// accumulates, per layer and KV head, Σk and Σk·kᵀ of the post-RoPE keys (float64); `pca`
/// turns them into the covariance's eigenvectors.
public final class KeyPCACalibrator: AttentionMethod, @unchecked Sendable {
    public let name = "calibrate-pca"
    public var cache: KVCache { dense.cache }
    let dense: DenseAttention
    let pool: ThreadPool
    let kvHeads: Int, headDim: Int
    /// [layer * kvHeads + kvHead]: the moments of the keys seen.
    private var moments: [SecondMoments]

    public init(cache: KVCache, pool: ThreadPool) {
        dense = DenseAttention(cache: cache, pool: pool)
        self.pool = pool
        kvHeads = cache.kvHeads
        headDim = cache.headDim
        moments = Array(repeating: SecondMoments(dimension: cache.headDim), count: cache.layerCount * cache.kvHeads)
    }

    public func attend(layer: Int, q: Tensor, k: Tensor, v: Tensor, start: Int, shape: AttentionShape, out: Tensor) {
        accumulate(layer: layer, keys: k)
        dense.attend(layer: layer, q: q, k: k, v: v, start: start, shape: shape, out: out)
    }

    /// Adds the keys (rows of kvHeads × headDim floats) of `layer` to the sums.
    func accumulate(layer: Int, keys k: Tensor) {
        let d = headDim, n = k.rows
        let kd = UnsafeMutablePointer<Double>.allocate(capacity: max(1, n * d))
        defer { kd.deallocate() }
        for h in 0..<kvHeads {
            // This head's keys in float64, one contiguous row per token.
            for t in 0..<n { let key = k.row(t) + h * d; for c in 0..<d { kd[t * d + c] = Double(key[c]) } }
            moments[layer * kvHeads + h].add(kd, count: n, stride: d, pool: pool)
        }
    }

    public func truncate(to n: Int) { dense.truncate(to: n) }

    /// The principal components of every [layer][KV head] (covariance of the keys seen).
    public func pca() -> [[KeyPCA]] {
        let d = headDim, layers = moments.count / kvHeads
        var flat = [KeyPCA?](repeating: nil, count: layers * kvHeads)
        flat.withUnsafeMutableBufferPointer { out in
            // One eigen-decomposition per (layer, KV head), in parallel.
            pool.parallelFor(layers * kvHeads) { i in
                let (values, vectors) = SymmetricEigen.decompose(moments[i].covariance, n: d)
                out[i] = KeyPCA(components: vectors.map { Float($0) }, variances: values, mean: moments[i].mean.map { Float($0) })
            }
        }
        return (0..<layers).map { l in (0..<kvHeads).map { flat[l * kvHeads + $0]! } }
    }

    /// Runs `model` over `tokens` in samples of `sampleLength` (each from an empty cache) and
    /// returns the keys' principal components per layer and KV head.
    public static func calibrate(model: LanguageModel, tokens: [Int32], sampleLength: Int, pool: ThreadPool,
                                 progress: (Int, Int) -> Void = { _, _ in }) throws -> [[KeyPCA]] {
        let c = model.config
        guard sampleLength >= 2 else { throw ModelError.invalid("calibration sample length must be ≥ 2") }
        let samples = tokens.count / sampleLength
        guard samples >= 1 else {
            throw ModelError.invalid("calibration needs at least \(sampleLength) tokens, the text has \(tokens.count)")
        }
        let cache = KVCache(layers: c.layerCount, kvHeads: c.kvHeadCount, headDim: c.headDim, capacity: sampleLength)
        let calibrator = KeyPCACalibrator(cache: cache, pool: pool)
        let session = Session(model: model, attention: calibrator)
        for s in 0..<samples {
            session.reset()
            _ = try session.evaluate(Array(tokens[(s * sampleLength)..<((s + 1) * sampleLength)]), logits: .none)
            progress(s + 1, samples)
        }
        return calibrator.pca()
    }
}

/// Eigen-decomposition of a real symmetric matrix by cyclic Jacobi rotations (float64).
enum SymmetricEigen {
    /// `a`: n × n symmetric, row-major. Returns the eigenvalues in decreasing order and the
    /// eigenvectors as the rows of an n × n row-major matrix, in the same order.
    static func decompose(_ a: [Double], n: Int) -> (values: [Double], vectors: [Double]) {
        var m = a
        // v: columns are the eigenvectors as rotations accumulate (stored transposed: row j = column j).
        var v = [Double](repeating: 0, count: n * n)
        for i in 0..<n { v[i * n + i] = 1 }
        m.withUnsafeMutableBufferPointer { mb in
            v.withUnsafeMutableBufferPointer { vb in
                let m = mb.baseAddress!, v = vb.baseAddress!
                var total = 0.0
                for i in 0..<(n * n) { total += m[i] * m[i] }
                for _ in 0..<100 {
                    var off = 0.0
                    for p in 0..<n { for q in (p + 1)..<max(p + 1, n) { off += m[p * n + q] * m[p * n + q] } }
                    if off <= 1e-24 * max(total, 1e-300) { break }
                    for p in 0..<n {
                        for q in (p + 1)..<max(p + 1, n) {
                            let apq = m[p * n + q]
                            if abs(apq) < 1e-300 { continue }
                            // Rotation angle that zeroes m[p][q].
                            let theta = (m[q * n + q] - m[p * n + p]) / (2 * apq)
                            let t = (theta >= 0 ? 1.0 : -1.0) / (abs(theta) + (theta * theta + 1).squareRoot())
                            let c = 1 / (t * t + 1).squareRoot(), s = t * c
                            // m ← Jᵀ m J on rows/columns p and q.
                            for k in 0..<n {
                                let mkp = m[k * n + p], mkq = m[k * n + q]
                                m[k * n + p] = c * mkp - s * mkq
                                m[k * n + q] = s * mkp + c * mkq
                            }
                            for k in 0..<n {
                                let mpk = m[p * n + k], mqk = m[q * n + k]
                                m[p * n + k] = c * mpk - s * mqk
                                m[q * n + k] = s * mpk + c * mqk
                            }
                            // Rows p, q of v hold eigenvector columns p, q.
                            for k in 0..<n {
                                let vp = v[p * n + k], vq = v[q * n + k]
                                v[p * n + k] = c * vp - s * vq
                                v[q * n + k] = s * vp + c * vq
                            }
                        }
                    }
                }
            }
        }
        let order = (0..<n).sorted { m[$0 * n + $0] > m[$1 * n + $1] || (m[$0 * n + $0] == m[$1 * n + $1] && $0 < $1) }
        var vectors = [Double](repeating: 0, count: n * n)
        for (r, j) in order.enumerated() { for k in 0..<n { vectors[r * n + k] = v[j * n + k] } }
        return (order.map { m[$0 * n + $0] }, vectors)
    }
}
