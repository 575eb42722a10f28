import XCTest
@testable import Sift

/// Per-channel normalisation of Double Sparsity's 4-bit labels (LabelCache, DoubleSparsityConfig
/// key_mean/key_std, ChannelCalibrator.keyMoments) against float64 definitions written here.
final class DoubleSparsityLabelNormTests: XCTestCase {
    var rng = Xoshiro256(seed: UInt64.random(in: 0...UInt64.max))

    func uniform() -> Double { Double(rng.next() >> 11) * 0x1.0p-53 * 2 - 1 }
    func h16(_ x: Double) -> Double { Double(Float(Float16(Float(x)))) }

    /// Keys `[n][kvHeads*d]` with channel c of head h drawn as μ + σ·z, z uniform in [-√3, √3].
    func plantedKeys(n: Int, kvHeads: Int, d: Int, mean: [[Double]], std: [[Double]]) -> Tensor {
        let t = Tensor(rows: n, cols: kvHeads * d)
        for j in 0..<n {
            for h in 0..<kvHeads {
                for c in 0..<d { t.row(j)[h * d + c] = Float(mean[h][c] + std[h][c] * 3.0.squareRoot() * uniform()) }
            }
        }
        return t
    }

    /// Scores of every stored position against `q` (r floats over the label channels).
    func scores(_ labels: LabelCache, head: Int, q: [Float], count: Int) -> [Float] {
        var out = [Float](repeating: .nan, count: count)
        q.withUnsafeBufferPointer { qp in
            out.withUnsafeMutableBufferPointer { labels.scores(layer: 0, head: head, q: qp.baseAddress!, first: 0, count: count, into: $0.baseAddress!) }
        }
        return out
    }

    /// The stored offset, scale and codes of one 4-bit record.
    func decode(_ rec: [UInt8], r: Int) -> (m: Double, s: Double, u: [Int]) {
        let s = Double(Float(Float16(bitPattern: UInt16(rec[0]) | UInt16(rec[1]) << 8)))
        let m = Double(Float(Float16(bitPattern: UInt16(rec[2]) | UInt16(rec[3]) << 8)))
        return (m, s, (0..<r).map { c in Int(rec[4 + c / 2] >> UInt8((c % 2) * 4)) & 15 })
    }

    func testNormalizedEncodingMatchesDefinition() throws {
        for r in [8, 5, 16] {
            let kvHeads = 2, d = 32, n = 40
            let mean = (0..<kvHeads).map { _ in (0..<d).map { _ in 20 * uniform() } }
            let std = (0..<kvHeads).map { _ in (0..<d).map { _ in exp(3 * uniform()) } }   // 0.05 ... 20
            let channels = (0..<kvHeads).map { _ in Array(Array(0..<d).shuffled(using: &rng).prefix(r)) }
            let selMean = (0..<kvHeads).map { h in channels[h].map { Float(mean[h][$0]) } }
            let selStd = (0..<kvHeads).map { h in channels[h].map { Float(std[h][$0]) } }
            let labels = LabelCache(layers: 1, kvHeads: kvHeads, channels: r, capacity: 64, bits: 4, mean: [selMean], std: [selStd])
            let keys = plantedKeys(n: n, kvHeads: kvHeads, d: d, mean: mean, std: std)
            labels.store(layer: 0, k: keys, start: 0, headDim: d, select: channels.map { $0.map { Int32($0) } })
            for h in 0..<kvHeads {
                let q = (0..<r).map { _ in Float(2 * uniform()) }
                let got = scores(labels, head: h, q: q, count: n)
                for j in 0..<n {
                    // Definition: x_c = (k_c − μ_c)/σ_c, m = f16(min x), s = f16((max x − m)/15),
                    // u_c = clamp(round((x_c − m)/s), 0, 15); label_c = μ_c + σ_c·(m + s·u_c).
                    let k = channels[h].map { Double(keys.row(j)[h * d + $0]) }
                    let mu = selMean[h].map(Double.init), sd = selStd[h].map(Double.init)
                    let x = (0..<r).map { (k[$0] - mu[$0]) / sd[$0] }
                    let (m, s, u) = decode(labels.record(layer: 0, head: h, position: j), r: r)
                    let mRef = h16(x.min()!)
                    // The code computes x in f32: its f16 offset and scale may be one f16 step off.
                    XCTAssertEqual(m, mRef, accuracy: abs(mRef) * 0x1p-10 + 1e-7, "r \(r) j \(j) offset")
                    let sRef = h16((x.max()! - m) / 15)
                    XCTAssertEqual(s, sRef, accuracy: sRef * 0x1p-10 + 1e-7, "r \(r) j \(j) scale")
                    for c in 0..<r {
                        let exact = (x[c] - m) / s
                        let uRef = min(15, max(0, exact.rounded()))
                        let nearHalf = abs(exact - exact.rounded(.down) - 0.5) < 1e-3
                        XCTAssertLessThanOrEqual(abs(Double(u[c]) - uRef), nearHalf ? 1 : 0, "r \(r) j \(j) c \(c): \(exact)")
                    }
                    // Decoded label within half a step (in key units) of the key.
                    let dec = labels.label(layer: 0, head: h, position: j).map(Double.init)
                    for c in 0..<r {
                        XCTAssertEqual(dec[c], k[c], accuracy: sd[c] * (s * 0.51 + 1e-3 * (abs(m) + 15 * s)) + 1e-5 * (abs(mu[c]) + abs(k[c])), "r \(r) j \(j) c \(c)")
                    }
                    // Score: Σ q_c·σ_c·(m + s·u_c) = q·label − q·μ.
                    let want = (0..<r).reduce(0.0) { $0 + Double(q[$1]) * sd[$1] * (m + s * Double(u[$1])) }
                    XCTAssertEqual(Double(got[j]), want, accuracy: 1e-4 * (1 + abs(want)), "r \(r) j \(j) score")
                }
            }
        }
    }

    /// Planted unequal channels (two near-constant large "bias" channels, the others of spread
    /// 0.2...2 around small offsets): normalised 4-bit labels must find the true top-k (float64
    /// q·k over the label channels) far better than plain 4-bit ones, whose per-token range the
    /// bias channels set.
    func testNormalizationRanksFarBetterThanPlainFourBit() throws {
        let r = 8, d = 16, n = 1024, topK = 64
        var mean = (0..<d).map { _ in 3 * uniform() }, std = (0..<d).map { _ in 0.2 + 1.8 * abs(uniform()) }
        mean[0] = 40; std[0] = 0.05
        mean[1] = -30; std[1] = 0.05
        let keys = plantedKeys(n: n, kvHeads: 1, d: d, mean: [mean], std: [std])
        let sel = [Int32](0..<Int32(r))
        let plain = LabelCache(layers: 1, kvHeads: 1, channels: r, capacity: n, bits: 4)
        // The moments as calibration would estimate them: from the keys themselves.
        let estMean = (0..<r).map { c in (0..<n).reduce(0.0) { $0 + Double(keys.row($1)[c]) } / Double(n) }
        let estStd = (0..<r).map { c in
            ((0..<n).reduce(0.0) { $0 + pow(Double(keys.row($1)[c]) - estMean[c], 2) } / Double(n)).squareRoot()
        }
        let normed = LabelCache(layers: 1, kvHeads: 1, channels: r, capacity: n, bits: 4,
                                mean: [[estMean.map { Float($0) }]], std: [[estStd.map { Float($0) }]])
        for l in [plain, normed] { l.store(layer: 0, k: keys, start: 0, headDim: d, select: [sel]) }
        func top(_ s: [Double]) -> Set<Int> {
            Set((0..<s.count).sorted { s[$0] > s[$1] || (s[$0] == s[$1] && $0 < $1) }.prefix(topK))
        }
        var recallPlain = 0.0, recallNormed = 0.0
        let queries = 16
        for _ in 0..<queries {
            let q = (0..<r).map { _ in Float(uniform()) }
            let truth = top((0..<n).map { j in (0..<r).reduce(0.0) { $0 + Double(q[$1]) * Double(keys.row(j)[$1]) } })
            recallPlain += Double(truth.intersection(top(scores(plain, head: 0, q: q, count: n).map(Double.init))).count) / Double(topK)
            recallNormed += Double(truth.intersection(top(scores(normed, head: 0, q: q, count: n).map(Double.init))).count) / Double(topK)
        }
        recallPlain /= Double(queries)
        recallNormed /= Double(queries)
        XCTAssertGreaterThan(recallNormed, 0.75, "normalised 4-bit recall \(recallNormed), plain \(recallPlain)")
        XCTAssertGreaterThan(recallNormed, recallPlain + 0.3, "normalised 4-bit recall \(recallNormed), plain \(recallPlain)")
    }

    /// Keys on the 4-bit grid of their normalisation (k_c = μ_c + σ_c·z_c, z_c integers 0...15 with
    /// 0 and 15 in every token, σ_c powers of two, queries on a 1/8 grid: every value and sum
    /// exact in f32): the normalised 4-bit score equals the f16 label score minus q·μ exactly, so
    /// Double Sparsity selects the same tokens and gives the same output with either label cache.
    func testNormalizedFourBitEqualsF16WhereQuantizationIsExact() throws {
        let heads = 4, kvHeads = 2, d = 16, r = 8, n = 60
        let g = heads / kvHeads
        let channels = (0..<kvHeads).map { _ in Array(0..<d).shuffled(using: &rng) }
        let mean = (0..<kvHeads).map { _ in (0..<d).map { _ in (32 * uniform()).rounded() / 4 } }     // multiples of 1/4 in [-8, 8]
        let std = (0..<kvHeads).map { _ in (0..<d).map { _ in pow(2.0, Double(Int(rng.next() % 5)) - 2) } }   // 1/4 ... 4
        let keys = Tensor(rows: n, cols: kvHeads * d)
        for j in 0..<n {
            for h in 0..<kvHeads {
                var z = (0..<d).map { _ in Double(rng.next() % 16) }
                let lo = Int(rng.next() % UInt64(r))
                z[channels[h][lo]] = 0
                z[channels[h][(lo + 1 + Int(rng.next() % UInt64(r - 1))) % r]] = 15
                for c in 0..<d { keys.row(j)[h * d + c] = Float(mean[h][c] + std[h][c] * z[c]) }
            }
        }
        let values = Tensor(rows: n, cols: kvHeads * d)
        for i in 0..<(n * kvHeads * d) { values.floats[i] = Float(uniform()) }
        let q = Tensor(rows: 1, cols: heads * d)
        for i in 0..<(heads * d) { q.floats[i] = Float((16 * uniform()).rounded() / 8) }
        var outputs = [[Float]]()
        for bits in [16, 4] {
            let cache = KVCache(layers: 1, kvHeads: kvHeads, headDim: d, capacity: 64)
            var o = AttentionOptions()
            o.dsLabelBits = bits
            o.budget = .fraction(1.0 / 8)
            let config = DoubleSparsityConfig(
                model: .init(config: try TestModels.attentionConfig(heads: heads, kvHeads: kvHeads, headDim: d), fileSHA256: nil),
                statistic: .qk, calibration: .init(text: "t", tokens: 0, sampleLength: 1, seconds: 0, peakMemoryBytes: 0),
                channels: [channels], keyMean: [mean], keyStd: [std])
            let method = try DoubleSparseAttention(cache: cache, config: config, channels: r, options: o, pool: ThreadPool(threads: 2))
            let shape = AttentionShape(heads: heads, kvHeads: kvHeads, headDim: d, scale: 1 / Float(d).squareRoot())
            method.append(layer: 0, k: keys, v: values, start: 0)
            method.truncate(to: n - 1)
            let lastK = Tensor(rows: 1, cols: kvHeads * d), lastV = Tensor(rows: 1, cols: kvHeads * d)
            lastK.floats.update(from: keys.row(n - 1), count: kvHeads * d)
            lastV.floats.update(from: values.row(n - 1), count: kvHeads * d)
            let out = Tensor(rows: 1, cols: heads * d)
            method.attend(layer: 0, q: q, k: lastK, v: lastV, start: n - 1, shape: shape, out: out)
            outputs.append(Array(UnsafeBufferPointer(start: out.row(0), count: heads * d)))
            // The scores themselves: f16 labels give q·k, normalised 4-bit q·k − q·μ, exactly.
            for h in 0..<kvHeads {
                let ch = channels[h].prefix(r)
                let qs = ch.map { c in (0..<g).reduce(Float(0)) { $0 + q.row(0)[(h * g + $1) * d + c] } }
                let got = scores(method.labels, head: h, q: qs, count: n)
                let qmu = zip(qs, ch).reduce(0.0) { $0 + Double($1.0) * mean[h][$1.1] }
                for j in 0..<n {
                    let qk = zip(qs, ch).reduce(0.0) { $0 + Double($1.0) * Double(keys.row(j)[h * d + $1.1]) }
                    XCTAssertEqual(Double(got[j]), bits == 16 ? qk : qk - qmu, "bits \(bits) head \(h) j \(j)")
                }
            }
        }
        XCTAssertEqual(outputs[0], outputs[1])
    }

    func testConfigKeyMomentsLoadAndValidate() throws {
        let layers = 1, heads = 4, kvHeads = 2, d = 16
        let mc = try TestModels.attentionConfig(heads: heads, kvHeads: kvHeads, headDim: d)
        let channels = (0..<layers).map { _ in (0..<kvHeads).map { _ in Array(0..<d).shuffled(using: &rng) } }
        let mean = (0..<layers).map { _ in (0..<kvHeads).map { _ in (0..<d).map { _ in uniform() } } }
        let std = (0..<layers).map { _ in (0..<kvHeads).map { _ in (0..<d).map { _ in 0.5 + abs(uniform()) } } }
        let base = DoubleSparsityConfig(model: .init(config: mc, fileSHA256: nil), statistic: .qkCentered,
                                        calibration: .init(text: "t", tokens: 1, sampleLength: 1, seconds: 0, peakMemoryBytes: 0),
                                        channels: channels)
        var config = base
        config.keyMean = mean
        config.keyStd = std
        let dir = NSTemporaryDirectory() + "sift-dsnorm-\(rng.next())"
        try makeDirectories(dir)
        let path = dir + "/c.json"
        try writeFile(path, config.encoded())
        let loaded = try DoubleSparsityConfig.load(path: path)
        XCTAssertEqual(loaded, config)
        // The normalisation of the first r ranked channels, in rank order.
        let norm = loaded.labelNormalization(channels: 3)
        for l in 0..<layers {
            for h in 0..<kvHeads {
                XCTAssertEqual(norm.mean[l][h], channels[l][h].prefix(3).map { Float(mean[l][h][$0]) })
                XCTAssertEqual(norm.std[l][h], channels[l][h].prefix(3).map { Float(std[l][h][$0]) })
            }
        }
        // An older config (no moments) loads as μ = 0, σ = 1.
        try writeFile(path, base.encoded())
        let old = try DoubleSparsityConfig.load(path: path)
        XCTAssertNil(old.keyMean)
        let oldNorm = old.labelNormalization(channels: 4)
        XCTAssertTrue(oldNorm.mean.allSatisfy { $0.allSatisfy { $0 == [0, 0, 0, 0] } })
        XCTAssertTrue(oldNorm.std.allSatisfy { $0.allSatisfy { $0 == [1, 1, 1, 1] } })
        // Malformed moments: errors name the field.
        func refused(_ edit: (inout DoubleSparsityConfig) -> Void, _ field: String) throws {
            var bad = config
            edit(&bad)
            try writeFile(path, bad.encoded())
            XCTAssertThrowsError(try DoubleSparsityConfig.load(path: path)) { XCTAssertTrue("\($0)".contains(field), "want \(field): \($0)") }
        }
        try refused({ $0.keyStd![0][0][3] = -1 }, "key_std[0][0][3]")
        try refused({ $0.keyStd![0][1][0] = 0 }, "key_std[0][1][0]")
        try refused({ $0.keyMean![0][1].removeLast() }, "key_mean[0][1]")
        try refused({ $0.keyMean!.removeLast() }, "key_mean has 0 layers")
        try refused({ $0.keyStd![0].append([1]) }, "key_std[0] has 3 heads")
        try refused({ $0.keyStd = nil }, "key_mean is given without key_std")
        try refused({ $0.keyMean = nil }, "key_std is given without key_mean")
        // Not numbers at all: the decoder's error names the field.
        let text = String(decoding: try config.encoded(), as: UTF8.self)
        let i = text.range(of: "\"key_mean\":[[[")!.upperBound
        try writeFile(path, Array((String(text[..<i]) + "\"x\"," + String(text[i...])).utf8))
        XCTAssertThrowsError(try DoubleSparsityConfig.load(path: path)) { XCTAssertTrue("\($0)".contains("key_mean"), "\($0)") }
    }

    /// The calibrator's key moments = float64 mean and standard deviation of the keys it saw,
    /// per layer, KV head and channel (whatever the ranking statistic).
    func testCalibratorKeyMomentsMatchDefinition() throws {
        let heads = 4, kvHeads = 2, d = 8, layers = 2
        for stat in ChannelStatistic.allCases {
            let cache = KVCache(layers: layers, kvHeads: kvHeads, headDim: d, capacity: 64)
            let cal = ChannelCalibrator(cache: cache, heads: heads, statistic: stat, pool: ThreadPool(threads: 2))
            let shape = AttentionShape(heads: heads, kvHeads: kvHeads, headDim: d, scale: 1)
            var seen = [[[Double]]](repeating: [], count: layers)   // [layer][token] → kvHeads*d
            for chunk in [5, 7] {
                for l in 0..<layers {
                    let q = Tensor(rows: chunk, cols: heads * d), k = Tensor(rows: chunk, cols: kvHeads * d)
                    let v = Tensor(rows: chunk, cols: kvHeads * d), out = Tensor(rows: chunk, cols: heads * d)
                    for i in 0..<(chunk * heads * d) { q.floats[i] = Float(uniform()) }
                    for t in 0..<chunk {
                        var row = [Double]()
                        for i in 0..<(kvHeads * d) {
                            k.row(t)[i] = Float(Double(i) + 3 * uniform())
                            v.row(t)[i] = Float(uniform())
                            row.append(Double(k.row(t)[i]))
                        }
                        seen[l].append(row)
                    }
                    cal.attend(layer: l, q: q, k: k, v: v, start: chunk == 5 ? 0 : 5, shape: shape, out: out)
                }
            }
            let m = cal.keyMoments
            for l in 0..<layers {
                for h in 0..<kvHeads {
                    for c in 0..<d {
                        let xs = seen[l].map { $0[h * d + c] }
                        let mu = xs.reduce(0, +) / Double(xs.count)
                        let sd = (xs.reduce(0) { $0 + ($1 - mu) * ($1 - mu) } / Double(xs.count)).squareRoot()
                        XCTAssertEqual(m.mean[l][h][c], mu, accuracy: 1e-9 * (1 + abs(mu)), "\(stat)")
                        XCTAssertEqual(m.std[l][h][c], sd, accuracy: 1e-6 * (1 + abs(mu)), "\(stat)")
                    }
                }
            }
        }
    }

    /// `LabelScale.channel`: codes alone (⌈r/2⌉ bytes), u_c = clamp(⌊x_c/Δ + 8⌋, 0, 15) with
    /// x_c = (k_c − μ_c)/σ_c, decoded as μ_c + σ_c·(u_c − 7.5)·Δ, scored as Σ q_c·σ_c·(u_c − 7.5)·Δ;
    /// against float64 on keys that reach past the grid's ends (clamped codes).
    func testChannelScaleEncodingMatchesDefinition() throws {
        let delta = Double(LabelScale.step)
        for r in [8, 5, 16] {
            let kvHeads = 2, d = 24, n = 50
            let mean = (0..<kvHeads).map { _ in (0..<d).map { _ in 10 * uniform() } }
            let std = (0..<kvHeads).map { _ in (0..<d).map { _ in exp(2 * uniform()) } }
            let channels = (0..<kvHeads).map { _ in Array(Array(0..<d).shuffled(using: &rng).prefix(r)) }
            let selMean = (0..<kvHeads).map { h in channels[h].map { Float(mean[h][$0]) } }
            let selStd = (0..<kvHeads).map { h in channels[h].map { Float(std[h][$0]) } }
            let labels = LabelCache(layers: 1, kvHeads: kvHeads, channels: r, capacity: 64, bits: 4, mean: [selMean],
                                    std: [selStd], scale: .channel)
            XCTAssertEqual(labels.recordBytes, (r + 1) / 2)
            // Spread ±3.5σ (uniform ±√3 scaled by 2): some values clamp at either end.
            let keys = plantedKeys(n: n, kvHeads: kvHeads, d: d, mean: mean, std: std.map { $0.map { 2 * $0 } })
            labels.store(layer: 0, k: keys, start: 0, headDim: d, select: channels.map { $0.map { Int32($0) } })
            var clamped = 0
            for h in 0..<kvHeads {
                let q = (0..<r).map { _ in Float(2 * uniform()) }
                let got = scores(labels, head: h, q: q, count: n)
                let mu = selMean[h].map(Double.init), sd = selStd[h].map(Double.init)
                for j in 0..<n {
                    let rec = labels.record(layer: 0, head: h, position: j)
                    XCTAssertEqual(rec.count, (r + 1) / 2)
                    let u = (0..<r).map { c in Int(rec[c / 2] >> UInt8((c % 2) * 4)) & 15 }
                    let dec = labels.label(layer: 0, head: h, position: j).map(Double.init)
                    for c in 0..<r {
                        let k = Double(keys.row(j)[h * d + channels[h][c]])
                        let t = (k - mu[c]) / sd[c] / delta + 8
                        let uRef = min(15, max(0, t.rounded(.down)))
                        if t < 0 || t >= 16 { clamped += 1 }
                        let nearEdge = abs(t - t.rounded()) < 1e-4
                        XCTAssertLessThanOrEqual(abs(Double(u[c]) - uRef), nearEdge ? 1 : 0, "r \(r) j \(j) c \(c): \(t)")
                        XCTAssertEqual(dec[c], mu[c] + sd[c] * (Double(u[c]) - 7.5) * delta,
                                       accuracy: 1e-5 * (abs(mu[c]) + 8 * sd[c]), "r \(r) j \(j) c \(c) decoded")
                        if t >= 0.5 && t < 15.5 {   // inside the grid: within half a step of the key
                            XCTAssertEqual(dec[c], k, accuracy: sd[c] * delta * 0.501 + 1e-5 * abs(k), "r \(r) j \(j) c \(c)")
                        }
                    }
                    let want = (0..<r).reduce(0.0) { $0 + Double(q[$1]) * sd[$1] * (Double(u[$1]) - 7.5) * delta }
                    XCTAssertEqual(Double(got[j]), want, accuracy: 1e-4 * (1 + abs(want)), "r \(r) j \(j) score")
                }
            }
            XCTAssertGreaterThan(clamped, 0, "the test keys should reach past the grid")
        }
    }

    /// The option needs 4-bit labels and key moments, with errors that say so.
    func testChannelScaleNeedsFourBitsAndMoments() throws {
        let mc = try TestModels.attentionConfig(heads: 1, kvHeads: 1, headDim: 8)
        var config = DoubleSparsityConfig(model: .init(config: mc, fileSHA256: nil), statistic: .qk,
                                          calibration: .init(text: "t", tokens: 1, sampleLength: 1, seconds: 0, peakMemoryBytes: 0),
                                          channels: [[Array(0..<8)]])
        var o = AttentionOptions()
        o.dsLabelScale = .channel
        XCTAssertThrowsError(try config.labelScale(o)) { XCTAssertTrue("\($0)".contains("--ds-label-bits 4"), "\($0)") }
        o.dsLabelBits = 4
        XCTAssertThrowsError(try config.labelScale(o)) { XCTAssertTrue("\($0)".contains("key_mean"), "\($0)") }
        config.keyMean = [[[Double](repeating: 0, count: 8)]]
        config.keyStd = [[[Double](repeating: 1, count: 8)]]
        XCTAssertEqual(try config.labelScale(o), .channel)
        o.dsLabelScale = nil
        XCTAssertEqual(try config.labelScale(o), .token)
    }

}
