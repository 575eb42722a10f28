import XCTest
@testable import Sift

/// Dequantization and quantized dot products against float64 references written here from
/// the ggml block definitions (independently of Sources/Sift/Quant).
final class QuantTests: XCTestCase {
    static let weightTypes: [GGMLType] = [.f32, .f16, .bf16, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K]

    // MARK: Random data

    struct Rng {
        var x: Xoshiro256
        init(_ seed: UInt64) { x = Xoshiro256(seed: seed) }
        mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: x.next() >> 56) }
        /// Uniform in [0, 1).
        mutating func unit() -> Double { Double(x.next() >> 11) * 0x1.0p-53 }
        /// ±exp(uniform(log lo, log hi)).
        mutating func magnitude(_ lo: Double, _ hi: Double, signed: Bool = true) -> Double {
            let v = exp(log(lo) + unit() * (log(hi) - log(lo)))
            return signed && x.next() & 1 == 1 ? -v : v
        }
        mutating func normal() -> Double {
            (-2 * log(1 - unit())).squareRoot() * cos(2 * Double.pi * unit())
        }
    }

    /// Positions of the f16 scale fields in one block (byte offsets).
    static func halfFields(_ t: GGMLType) -> [Int] {
        switch t {
        case .q4_0, .q5_0, .q8_0: return [0]
        case .q4_1, .q5_1, .q4_K, .q5_K: return [0, 2]
        case .q6_K: return [208]
        default: return []
        }
    }

    /// A random row: random quant bytes, f16 scales of random sign and magnitude 2^-12...2^-2.
    static func randomRow(_ t: GGMLType, count: Int, _ rng: inout Rng) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count / t.blockSize * t.bytesPerBlock)
        func put16(_ v: UInt16, _ at: Int) { bytes[at] = UInt8(v & 0xFF); bytes[at + 1] = UInt8(v >> 8) }
        switch t {
        case .f32:
            for i in 0..<count {
                let v = Float(rng.normal()).bitPattern
                for k in 0..<4 { bytes[4 * i + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) }
            }
        case .f16:
            for i in 0..<count { put16(Float16(rng.normal()).bitPattern, 2 * i) }
        case .bf16:
            for i in 0..<count { put16(UInt16(Float(rng.normal()).bitPattern >> 16), 2 * i) }
        default:
            for i in bytes.indices { bytes[i] = rng.byte() }
            for b in 0..<count / t.blockSize {
                for f in halfFields(t) {
                    put16(Float16(rng.magnitude(0x1p-12, 0x1p-2)).bitPattern, b * t.bytesPerBlock + f)
                }
            }
        }
        return bytes
    }

    static func randomActivations(_ count: Int, _ rng: inout Rng) -> [Float] {
        // Blocks of very different magnitude, some all zero.
        (0..<count).map { i in
            let block = i / 32
            if block % 7 == 3 { return 0 }
            return Float(rng.normal() * pow(4, Double(block % 5) - 2))
        }
    }

    // MARK: float64 reference decoding

    static func u16(_ b: [UInt8], _ at: Int) -> UInt16 { UInt16(b[at]) | UInt16(b[at + 1]) << 8 }
    static func half(_ b: [UInt8], _ at: Int) -> Double { Double(Float16(bitPattern: u16(b, at))) }

    /// The scale d stored in block `block` of an activation row.
    static func storedScale(_ t: GGMLType, _ b: [UInt8], block: Int) -> Double {
        switch t {
        case .q8_0: return half(b, block * 34)
        case .q8_1: return half(b, block * 36)
        default:
            let o = block * 292
            return Double(Float(bitPattern: UInt32(u16(b, o)) | UInt32(u16(b, o + 2)) << 16))
        }
    }
    static func i8(_ b: [UInt8], _ at: Int) -> Double { Double(Int8(bitPattern: b[at])) }

    /// Reference values with, per value, a bound on the magnitude of the partial products the
    /// format adds (the f32 rounding budget of a dequantizer).
    static func reference(_ t: GGMLType, _ b: [UInt8], count: Int) -> (values: [Double], scale: [Double]) {
        var y = [Double](), mag = [Double]()
        func emit(_ v: Double, _ m: Double) { y.append(v); mag.append(m) }
        let bs = t.bytesPerBlock
        for blk in 0..<count / t.blockSize {
            let o = blk * bs
            switch t {
            case .f32:
                let bits = UInt32(u16(b, o)) | UInt32(u16(b, o + 2)) << 16
                emit(Double(Float(bitPattern: bits)), 0)
            case .f16:
                emit(half(b, o), 0)
            case .bf16:
                emit(Double(Float(bitPattern: UInt32(u16(b, o)) << 16)), 0)
            case .q4_0, .q4_1, .q5_0, .q5_1:
                let hasMin = t == .q4_1 || t == .q5_1, five = t == .q5_0 || t == .q5_1
                let d = half(b, o), m = hasMin ? half(b, o + 2) : 0
                let qhAt = o + (hasMin ? 4 : 2), qsAt = qhAt + (five ? 4 : 0)
                for i in 0..<32 {
                    let byte = b[qsAt + i % 16]
                    var q = Int(i < 16 ? byte & 15 : byte >> 4)
                    if five { q += Int((b[qhAt + i / 8] >> (i % 8)) & 1) * 16 }
                    if !hasMin { q -= five ? 16 : 8 }
                    emit(d * Double(q) + m, abs(d * Double(q)) + abs(m))
                }
            case .q8_0:
                let d = half(b, o)
                for i in 0..<32 { emit(d * i8(b, o + 2 + i), 0) }
            case .q4_K, .q5_K:
                let d = half(b, o), dmin = half(b, o + 2)
                let scales = Array(b[(o + 4)..<(o + 16)])
                func scaleMin(_ j: Int) -> (Int, Int) {
                    if j < 4 { return (Int(scales[j] & 63), Int(scales[j + 4] & 63)) }
                    return (Int(scales[j + 4] & 15) | Int(scales[j - 4] >> 6) << 4,
                            Int(scales[j + 4] >> 4) | Int(scales[j] >> 6) << 4)
                }
                let five = t == .q5_K
                let qsAt = o + (five ? 48 : 16)
                for i in 0..<256 {
                    let sub = i / 32, l = i % 32
                    let byte = b[qsAt + 32 * (i / 64) + l]
                    var q = Int(sub % 2 == 0 ? byte & 15 : byte >> 4)
                    if five { q += Int((b[o + 16 + l] >> sub) & 1) * 16 }
                    let (sc, mn) = scaleMin(sub)
                    let a = d * Double(sc) * Double(q), c = dmin * Double(mn)
                    emit(a - c, abs(a) + abs(c))
                }
            case .q6_K:
                let d = half(b, o + 208)
                for i in 0..<256 {
                    let h = i / 128, r = i % 128, g = r / 32, l = r % 32
                    let lowByte = b[o + 64 * h + 32 * (g % 2) + l]
                    let low = Int(g < 2 ? lowByte & 15 : lowByte >> 4)
                    let high = Int((b[o + 128 + 32 * h + l] >> (2 * g)) & 3)
                    let scale = i8(b, o + 192 + 8 * h + r / 16)
                    emit(d * scale * Double(low + 16 * high - 32), 0)
                }
            default:
                fatalError("no reference for \(t)")
            }
        }
        return (y, mag)
    }

    /// Reference decoding of an activation row, with the per-value rounding bound of its block
    /// and a check of the redundant fields (Q8_1's s, Q8_K's bsums).
    static func referenceActivation(_ t: GGMLType, _ b: [UInt8], count: Int) -> (values: [Double], bound: [Double]) {
        var y = [Double](), bound = [Double]()
        switch t {
        case .f32:
            for i in 0..<count {
                let bits = UInt32(u16(b, 4 * i)) | UInt32(u16(b, 4 * i + 2)) << 16
                y.append(Double(Float(bitPattern: bits))); bound.append(0)
            }
        case .q8_0, .q8_1:
            let bs = t == .q8_0 ? 34 : 36, qsAt = t == .q8_0 ? 2 : 4
            for blk in 0..<count / 32 {
                let o = blk * bs, d = half(b, o)
                var sum = 0.0
                for i in 0..<32 {
                    let q = i8(b, o + qsAt + i)
                    XCTAssert(abs(q) <= 127, "\(t) quant \(q) out of range")
                    sum += q
                    // Rounded from x·127/amax while d is stored as f16 (relative error ≤ 2⁻¹¹),
                    // as ggml defines the format: half a step plus the scale's rounding.
                    y.append(d * q); bound.append(0.5 * d * (1 + 1e-6) + abs(q) * d * 0x1p-11)
                }
                if t == .q8_1 {
                    let s = half(b, o + 2)
                    XCTAssertLessThanOrEqual(abs(s - d * sum), 1e-3 * abs(d * sum) + 1e-7, "Q8_1 s field")
                }
            }
        case .q8_K:
            for blk in 0..<count / 256 {
                let o = blk * 292
                let bits = UInt32(u16(b, o)) | UInt32(u16(b, o + 2)) << 16
                let d = Double(Float(bitPattern: bits))
                for g in 0..<16 {
                    var sum = 0
                    for i in 0..<16 {
                        let q = i8(b, o + 4 + 16 * g + i)
                        XCTAssert(abs(q) <= 127, "Q8_K quant \(q) out of range")
                        sum += Int(q)
                        y.append(d * q); bound.append(0.5 * d * (1 + 1e-5))
                    }
                    XCTAssertEqual(Int(Int16(bitPattern: u16(b, o + 260 + 2 * g))), sum, "Q8_K bsums[\(g)]")
                }
            }
        default:
            fatalError("no activation reference for \(t)")
        }
        return (y, bound)
    }

    // MARK: Helpers calling the code under test

    static func dequantize(_ t: GGMLType, _ bytes: [UInt8], count: Int) -> [Float] {
        var out = [Float](repeating: .nan, count: count)
        bytes.withUnsafeBytes { src in out.withUnsafeMutableBufferPointer { Dequantize.row(t, src.baseAddress!, $0.baseAddress!, count: count) } }
        return out
    }

    static func quantizeActivation(_ x: [Float], for t: GGMLType) -> [UInt8] {
        var a = [UInt8](repeating: 0xA5, count: QuantDot.activationRowBytes(for: t, count: x.count))
        x.withUnsafeBufferPointer { xp in a.withUnsafeMutableBytes { QuantDot.quantizeActivation(xp.baseAddress!, count: x.count, for: t, into: $0.baseAddress!) } }
        return a
    }

    static func dot(_ t: GGMLType, _ w: [UInt8], _ a: [UInt8], count: Int, portable: Bool = false) -> Float {
        w.withUnsafeBytes { wp in
            a.withUnsafeBytes { ap in
                portable ? PortableDot.dot(t, wp.baseAddress!, ap.baseAddress!, count: count)
                         : QuantDot.dot(t, wp.baseAddress!, ap.baseAddress!, count: count)
            }
        }
    }

    static func counts(_ t: GGMLType) -> [Int] {
        switch t.blockSize {
        case 1: return [1, 7, 8, 33, 100, 1031]
        case 32: return [32, 96, 224, 1184]
        default: return [256, 768, 1280]
        }
    }

    // MARK: Tests

    func testDequantizeMatchesReference() {
        var rng = Rng(1)
        for t in Self.weightTypes {
            for count in Self.counts(t) {
                let bytes = Self.randomRow(t, count: count, &rng)
                let (ref, mag) = Self.reference(t, bytes, count: count)
                let got = Self.dequantize(t, bytes, count: count)
                var bad = 0
                for i in 0..<count where abs(Double(got[i]) - ref[i]) > 0x1p-21 * mag[i] + 0x1p-22 * abs(ref[i]) {
                    if bad < 3 { XCTFail("\(t) count \(count) value \(i): \(got[i]) vs \(ref[i])") }
                    bad += 1
                }
            }
        }
    }

    func testActivationRoundTrip() {
        var rng = Rng(2)
        for t in Self.weightTypes {
            let at = QuantDot.activationType(for: t)
            for count in Self.counts(t) {
                let x = Self.randomActivations(count, &rng)
                let a = Self.quantizeActivation(x, for: t)
                XCTAssertEqual(a.count, count / at.blockSize * at.bytesPerBlock)
                let (y, bound) = Self.referenceActivation(at, a, count: count)
                for i in 0..<count where abs(Double(x[i]) - y[i]) > bound[i] {
                    XCTFail("\(at) count \(count) value \(i): \(x[i]) → \(y[i]) (bound \(bound[i]))")
                    break
                }
                // The block scale must come from the block maximum: error bound ≤ max|x|/254 + f16 rounding.
                let bs = at.blockSize
                if at != .f32 {
                    for blk in 0..<count / bs {
                        let amax = x[blk * bs ..< (blk + 1) * bs].map { abs(Double($0)) }.max()!
                        XCTAssertLessThanOrEqual(Self.storedScale(at, a, block: blk),
                                                 amax / 127 * (1 + 0x1p-10) + 1e-30, "\(at) scale of block \(blk)")
                    }
                }
                // Dequantize.row decodes the activation formats too.
                if at != .f32 {
                    let got = Self.dequantize(at, a, count: count)
                    for i in 0..<count where abs(Double(got[i]) - y[i]) > 0x1p-23 * abs(y[i]) { XCTFail("\(at) dequantize value \(i)"); break }
                }
            }
        }
    }

    func testDotMatchesFloat64() {
        var rng = Rng(3)
        for t in Self.weightTypes {
            for count in Self.counts(t) + [4096] {
                let w = Self.randomRow(t, count: count, &rng)
                let (wv, _) = Self.reference(t, w, count: count)
                let x = Self.randomActivations(count, &rng)
                let a = Self.quantizeActivation(x, for: t)
                let (av, _) = Self.referenceActivation(QuantDot.activationType(for: t), a, count: count)
                var ref = 0.0, terms = 0.0
                for i in 0..<count { ref += wv[i] * av[i]; terms += abs(wv[i] * av[i]) }
                let tol = 1e-5 * terms + 1e-30
                let got = Double(Self.dot(t, w, a, count: count))
                XCTAssertLessThanOrEqual(abs(got - ref), tol, "\(t) dot count \(count): \(got) vs \(ref)")
                let portable = Double(Self.dot(t, w, a, count: count, portable: true))
                XCTAssertLessThanOrEqual(abs(portable - ref), tol, "\(t) portable dot count \(count): \(portable) vs \(ref)")
            }
        }
    }

    func testQuantDotSignedExtremes() {
        // Q8_0 weights of −128 and activations at ±127 are where 8-bit sign tricks overflow.
        var rng = Rng(4)
        var w = Self.randomRow(.q8_0, count: 64, &rng)
        for i in 2..<34 { w[i] = 0x80 }
        for i in 36..<68 { w[i] = i % 2 == 0 ? 0x80 : 0x7F }
        let x: [Float] = (0..<64).map { $0 % 3 == 0 ? -1 : 1 }
        let a = Self.quantizeActivation(x, for: .q8_0)
        let (wv, _) = Self.reference(.q8_0, w, count: 64)
        let (av, _) = Self.referenceActivation(.q8_0, a, count: 64)
        let ref = zip(wv, av).reduce(0) { $0 + $1.0 * $1.1 }
        XCTAssertEqual(Double(Self.dot(.q8_0, w, a, count: 64)), ref, accuracy: 1e-6 * abs(ref))
    }

    func testTileEqualsPerPairDot() {
        var rng = Rng(5)
        for t in Self.weightTypes {
            // Odd block counts exercise the kernels' tails; odd strides unaligned rows.
            for count in t.blockSize == 1 ? [8, 100] : [t.blockSize, 7 * t.blockSize] {
                checkTile(t, count: count, &rng)
            }
        }
    }

    /// Every tile shape of 4 random weight rows × 4 activation rows must give exactly the
    /// per-pair `dot` results and write nothing else.
    func checkTile(_ t: GGMLType, count: Int, _ rng: inout Rng) {
        let wBytes = count / t.blockSize * t.bytesPerBlock, wStride = wBytes + 3
        let aBytes = QuantDot.activationRowBytes(for: t, count: count), aStride = aBytes + 5
        var w = [UInt8](repeating: 0, count: 4 * wStride)
        var a = [UInt8](repeating: 0, count: 4 * aStride)
        for r in 0..<4 {
            w.replaceSubrange(r * wStride ..< r * wStride + wBytes, with: Self.randomRow(t, count: count, &rng))
            let q = Self.quantizeActivation(Self.randomActivations(count, &rng), for: t)
            a.replaceSubrange(r * aStride ..< r * aStride + aBytes, with: q)
        }
        w.withUnsafeBytes { wb in
            a.withUnsafeBytes { ab in
                let wp = wb.baseAddress!, ap = ab.baseAddress!
                for rows in 1...4 {
                    for cols in 1...4 {
                        let outStride = 6
                        var out = [Float](repeating: .nan, count: 4 * outStride)
                        QuantDot.dotTile(t, weights: wp, weightStride: wStride, rows: rows,
                                         activations: ap, activationStride: aStride, cols: cols,
                                         count: count, out: &out, outStride: outStride)
                        for c in 0..<4 {
                            for r in 0..<outStride {
                                let v = out[c * outStride + r], shape = "\(t) count \(count) tile \(rows)×\(cols)"
                                if r < rows && c < cols {
                                    let expected = QuantDot.dot(t, wp + r * wStride, ap + c * aStride, count: count)
                                    XCTAssertEqual(v, expected, "\(shape) at r\(r) c\(c)")
                                } else {
                                    XCTAssert(v.isNaN, "\(shape) wrote outside at r\(r) c\(c)")
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Prints single-threaded throughput in GB/s of weight bytes (and GMAC/s). Asserts nothing.
    ///   cold: 4096×4096 weights (bigger than L2) × 1 vector, `dot` per row
    ///   hot:  the same on 32 rows (L2-resident), repeated
    ///   4 vectors: per-pair `dot` for 4 activation rows vs `dotTile` 4×4, on the cold matrix
    func testQuantDotThroughput() {
        var rng = Rng(6)
        let n = 4096, m = 4096, hotRows = 32
        func seconds(_ reps: Int, _ body: () -> Void) -> Double {
            var best = Double.infinity
            for _ in 0..<reps {
                let t0 = DispatchTime.now().uptimeNanoseconds
                body()
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
            }
            return best
        }
        var report: [String] = []
        for t in Self.weightTypes {
            let rowBytes = n / t.blockSize * t.bytesPerBlock
            let wm = UnsafeMutableRawPointer.allocate(byteCount: m * rowBytes, alignment: 64)
            defer { wm.deallocate() }
            // A few random rows tiled over the matrix keeps the setup cheap; the size is what matters.
            for r in 0..<8 {
                Self.randomRow(t, count: n, &rng).withUnsafeBytes { (wm + r * rowBytes).copyMemory(from: $0.baseAddress!, byteCount: rowBytes) }
            }
            for r in 8..<m { (wm + r * rowBytes).copyMemory(from: wm + (r % 8) * rowBytes, byteCount: rowBytes) }
            var a4 = [UInt8]()
            for _ in 0..<4 { a4 += Self.quantizeActivation(Self.randomActivations(n, &rng), for: t) }
            let aStride = a4.count / 4
            var out = [Float](repeating: 0, count: 4 * m)
            var sink: Float = 0
            let (cold, hot, pairs, tile) = a4.withUnsafeBytes { ap in
                out.withUnsafeMutableBufferPointer { op in
                    let a = ap.baseAddress!, o = op.baseAddress!
                    let cold = seconds(9) { for r in 0..<m { o[r] = QuantDot.dot(t, wm + r * rowBytes, a, count: n) } }
                    let hot = seconds(9) {
                        for rep in 0..<m / hotRows { for r in 0..<hotRows { sink += QuantDot.dot(t, wm + r * rowBytes, a + (rep & 0) * aStride, count: n) } }
                    }
                    let pairs = seconds(7) {
                        for r in 0..<m { for c in 0..<4 { o[c * m + r] = QuantDot.dot(t, wm + r * rowBytes, a + c * aStride, count: n) } }
                    }
                    let tile = seconds(7) {
                        for r in stride(from: 0, to: m, by: 4) {
                            QuantDot.dotTile(t, weights: wm + r * rowBytes, weightStride: rowBytes, rows: 4,
                                             activations: a, activationStride: aStride, cols: 4,
                                             count: n, out: o + r, outStride: m)
                        }
                    }
                    return (cold, hot, pairs, tile)
                }
            }
            XCTAssert(sink.isFinite || !sink.isFinite)  // keeps the hot loop's results alive
            let gb = Double(m * rowBytes) / 1e9, gmac = Double(m * n) / 1e9
            let name = t.description.padding(toLength: 5, withPad: " ", startingAt: 0)
            report.append(name + String(format: " cold %6.2f GB/s %6.2f GMAC/s | hot %6.2f GB/s | 4 vectors: per-pair %6.2f, tile %6.2f GMAC/s (%.2fx)",
                                        gb / cold, gmac / cold, gb / hot, 4 * gmac / pairs, 4 * gmac / tile, pairs / tile))
        }
        print("QuantDot throughput, 1 thread, \(m)×\(n) weights:\n" + report.joined(separator: "\n"))
    }
}
