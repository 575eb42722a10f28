#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Dot products of quantized weight rows with activation rows.
///
/// A matrix-vector product with quantized weights first converts the activation row once
/// (`quantizeActivation`), then calls `dot` (or `dotTile`) for each weight row. Integer
/// formats multiply 8-bit quants exactly in integers and apply the block scales in f32;
/// float formats (F32, F16, BF16) keep the activations in f32.
///
/// On x86-64 the kernels use AVX2 (see QuantDotAVX2.swift); elsewhere the portable Swift
/// versions in `PortableDot` run.
public enum QuantDot {
    /// The format activations are quantized to before a dot with weights of `type`
    /// (.q8_0 for Q4_0/Q5_0/Q8_0, .q8_1 for Q4_1/Q5_1, .q8_K for K-quants, .f32 for F32/F16/BF16).
    public static func activationType(for type: GGMLType) -> GGMLType {
        switch type {
        case .f32, .f16, .bf16: return .f32
        case .q4_0, .q5_0, .q8_0: return .q8_0
        case .q4_1, .q5_1: return .q8_1
        case .q4_K, .q5_K, .q6_K: return .q8_K
        default: preconditionFailure("QuantDot: \(type) is not supported")
        }
    }

    /// Bytes one activation row of `count` values takes in activationType(for: type).
    public static func activationRowBytes(for type: GGMLType, count: Int) -> Int {
        let a = activationType(for: type)
        precondition(count % a.blockSize == 0, "\(count) values are not a whole number of \(a) blocks")
        return count / a.blockSize * a.bytesPerBlock
    }

    /// Quantizes `count` floats into the activation format for weights of `type` (a plain copy for .f32).
    public static func quantizeActivation(_ x: UnsafePointer<Float>, count: Int, for type: GGMLType, into dst: UnsafeMutableRawPointer) {
        switch activationType(for: type) {
        case .f32: dst.copyMemory(from: x, byteCount: 4 * count)
        case .q8_0: Q8Activations.quantizeQ8_0(x, count: count, into: dst, withSum: false)
        case .q8_1: Q8Activations.quantizeQ8_0(x, count: count, into: dst, withSum: true)
        default: Q8Activations.quantizeQ8K(x, count: count, into: dst)
        }
    }

    /// Dot product of one weight row of `type` with one activation row prepared by quantizeActivation.
    ///
    /// `count` must be a multiple of `type.blockSize`. Pure function of its inputs, safe to call
    /// from any number of threads; no alignment is required.
    public static func dot(_ type: GGMLType, _ weightRow: UnsafeRawPointer, _ activation: UnsafeRawPointer, count: Int) -> Float {
        precondition(count % type.blockSize == 0, "\(type) row of \(count) values is not a whole number of blocks")
        let blocks = count / type.blockSize
        #if arch(x86_64)
        switch type {
        case .q4_0: return AVX2Dot.q4_0(weightRow, activation, blocks)
        case .q4_1: return AVX2Dot.q4_1(weightRow, activation, blocks)
        case .q5_0: return AVX2Dot.q5_0(weightRow, activation, blocks)
        case .q5_1: return AVX2Dot.q5_1(weightRow, activation, blocks)
        case .q8_0: return AVX2Dot.q8_0(weightRow, activation, blocks)
        case .q4_K: return AVX2Dot.q4K(weightRow, activation, blocks)
        case .q5_K: return AVX2Dot.q5K(weightRow, activation, blocks)
        case .q6_K: return AVX2Dot.q6K(weightRow, activation, blocks)
        default: break
        }
        #endif
        return PortableDot.dot(type, weightRow, activation, count: count)
    }

    /// A small block of dot products: `out[c * outStride + r]` = dot of weight row `r`
    /// (at `weights + r * weightStride`) with activation row `c` (at
    /// `activations + c * activationStride`), for r < rows ≤ 4 and c < cols ≤ 4.
    ///
    /// Equal to calling `dot` per pair (bit for bit). For Q4_0, Q5_0, Q8_0 and the K formats
    /// each weight block is loaded and unpacked once for all `cols` activation rows (AVX2:
    /// 1.4-1.9x faster than per-pair `dot` for 4 columns); the float formats read a weight row
    /// once per two activation rows (up to 1.3x); Q4_1/Q5_1, and any single column, call `dot`.
    /// No alignment is required of any pointer or stride.
    public static func dotTile(_ type: GGMLType, weights: UnsafeRawPointer, weightStride: Int, rows: Int,
                               activations: UnsafeRawPointer, activationStride: Int, cols: Int,
                               count: Int, out: UnsafeMutablePointer<Float>, outStride: Int) {
        precondition((1...4).contains(rows) && (1...4).contains(cols), "dotTile takes 1...4 rows and columns")
        precondition(count % type.blockSize == 0, "\(type) row of \(count) values is not a whole number of blocks")
        switch type {
        case .f32, .f16, .bf16:
            let kind: PortableDot.FloatKind = type == .f32 ? .f32 : type == .f16 ? .f16 : .bf16
            PortableDot.floatTile(kind, weights: weights, weightStride: weightStride, rows: rows,
                                  activations: activations, activationStride: activationStride, cols: cols,
                                  count: count, out: out, outStride: outStride)
            return
        default: break
        }
        #if arch(x86_64)
        if AVX2Tile.run(type, weights: weights, weightStride: weightStride, rows: rows,
                        activations: activations, activationStride: activationStride, cols: cols,
                        count: count, out: out, outStride: outStride) {
            return
        }
        #endif
        for c in 0..<cols {
            for r in 0..<rows {
                out[c * outStride + r] = dot(type, weights + r * weightStride, activations + c * activationStride, count: count)
            }
        }
    }

    /// Whether `repackToQ8_0` accepts `type`.
    public static func repacksToQ8_0(_ type: GGMLType) -> Bool { type == .q4_0 || type == .q5_0 }

    /// Rewrites a Q4_0 or Q5_0 row of `count` values as a Q8_0 row with the same values and
    /// scales (dots with it are bit for bit those with the original row).
    public static func repackToQ8_0(_ type: GGMLType, _ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutableRawPointer) {
        precondition(repacksToQ8_0(type) && count % 32 == 0)
        #if arch(x86_64)
        AVX2Tile.repackToQ8_0(type, src, blocks: count / 32, into: dst)
        #else
        var tmp = [Float](repeating: 0, count: 32)
        for b in 0..<count / 32 {
            let wb = src + type.bytesPerBlock * b
            tmp.withUnsafeMutableBufferPointer { Dequantize.row(type, wb, $0.baseAddress!, count: 32) }
            let d = Float(Float16(bitPattern: wb.loadUnaligned(as: UInt16.self)))
            let out = dst + 34 * b
            out.storeBytes(of: wb.loadUnaligned(as: UInt16.self), as: UInt16.self)
            for j in 0..<32 { out.storeBytes(of: Int8(d == 0 ? 0 : (tmp[j] / d).rounded()), toByteOffset: 2 + j, as: Int8.self) }
        }
        #endif
    }
}

/// Portable Swift dot kernels: exact integer sums per block, scales applied in f32. Used
/// where no SIMD intrinsics path exists, and by the tests as a second implementation.
enum PortableDot {
    static func dot(_ type: GGMLType, _ w: UnsafeRawPointer, _ a: UnsafeRawPointer, count: Int) -> Float {
        let blocks = count / type.blockSize
        switch type {
        case .f32: return f32(w, a, count)
        case .f16: return f16(w, a, count)
        case .bf16: return bf16(w, a, count)
        case .q4_0, .q4_1, .q5_0, .q5_1: return legacy(type, w, a, blocks)
        case .q8_0: return q8_0(w, a, blocks)
        case .q4_K, .q5_K: return q45K(type, w, a, blocks)
        case .q6_K: return q6K(w, a, blocks)
        default: preconditionFailure("QuantDot: \(type) is not supported")
        }
    }

    /// How a float format's weights are read.
    enum FloatKind { case f32, f16, bf16 }

    @inline(__always)
    static func weights8(_ kind: FloatKind, _ w: UnsafeRawPointer, _ j: Int) -> SIMD8<Float> {
        switch kind {
        case .f32: return w.loadUnaligned(fromByteOffset: 4 * j, as: SIMD8<Float>.self)
        case .f16:
            #if arch(x86_64)
            return _mm256_cvtph_ps(w.loadUnaligned(fromByteOffset: 2 * j, as: __m128i.self))
            #else
            // Lane by lane: the generic SIMD8<Float>(SIMD8<Float16>) can be outlined into a call.
            let h = w.loadUnaligned(fromByteOffset: 2 * j, as: SIMD8<Float16>.self)
            return SIMD8<Float>(Float(h[0]), Float(h[1]), Float(h[2]), Float(h[3]),
                                Float(h[4]), Float(h[5]), Float(h[6]), Float(h[7]))
            #endif
        case .bf16:
            let h = w.loadUnaligned(fromByteOffset: 2 * j, as: SIMD8<UInt16>.self)
            return unsafeBitCast(SIMD8<UInt32>(truncatingIfNeeded: h) &<< 16, to: SIMD8<Float>.self)
        }
    }

    @inline(__always)
    static func weight(_ kind: FloatKind, _ w: UnsafeRawPointer, _ j: Int) -> Float {
        switch kind {
        case .f32: return w.loadUnaligned(fromByteOffset: 4 * j, as: Float.self)
        case .f16: return loadHalf(w, 2 * j)
        case .bf16: return Float(bitPattern: UInt32(w.loadUnaligned(fromByteOffset: 2 * j, as: UInt16.self)) << 16)
        }
    }

    /// Dots of one float weight row with one or (when `two`) two f32 rows, 32 values per step
    /// in four 8-lane accumulators per row. `dot` and `dotTile` both use it, so a tile gives
    /// the same bits as single dots while reading (and converting) the weights once.
    @inline(__always)
    static func floatDots(_ kind: FloatKind, _ w: UnsafeRawPointer, _ x: UnsafeRawPointer, _ y: UnsafeRawPointer,
                          two: Bool, _ n: Int) -> (Float, Float) {
        var a0 = SIMD8<Float>(), a1 = a0, a2 = a0, a3 = a0
        var b0 = a0, b1 = a0, b2 = a0, b3 = a0
        @inline(__always) func x8(_ p: UnsafeRawPointer, _ j: Int) -> SIMD8<Float> {
            p.loadUnaligned(fromByteOffset: 4 * j, as: SIMD8<Float>.self)
        }
        @inline(__always) func x1(_ p: UnsafeRawPointer, _ j: Int) -> Float {
            p.loadUnaligned(fromByteOffset: 4 * j, as: Float.self)
        }
        var i = 0
        while i + 32 <= n {
            let w0 = weights8(kind, w, i), w1 = weights8(kind, w, i + 8)
            let w2 = weights8(kind, w, i + 16), w3 = weights8(kind, w, i + 24)
            a0.addProduct(w0, x8(x, i)); a1.addProduct(w1, x8(x, i + 8))
            a2.addProduct(w2, x8(x, i + 16)); a3.addProduct(w3, x8(x, i + 24))
            if two {
                b0.addProduct(w0, x8(y, i)); b1.addProduct(w1, x8(y, i + 8))
                b2.addProduct(w2, x8(y, i + 16)); b3.addProduct(w3, x8(y, i + 24))
            }
            i += 32
        }
        while i + 8 <= n {
            let w0 = weights8(kind, w, i)
            a0.addProduct(w0, x8(x, i))
            if two { b0.addProduct(w0, x8(y, i)) }
            i += 8
        }
        var s = ((a0 + a1) + (a2 + a3)).sum()
        var t = two ? ((b0 + b1) + (b2 + b3)).sum() : 0
        while i < n {
            let wi = weight(kind, w, i)
            s += wi * x1(x, i)
            if two { t += wi * x1(y, i) }
            i += 1
        }
        return (s, t)
    }

    static func f32(_ w: UnsafeRawPointer, _ a: UnsafeRawPointer, _ n: Int) -> Float {
        floatDots(.f32, w, a, a, two: false, n).0
    }

    static func f16(_ w: UnsafeRawPointer, _ a: UnsafeRawPointer, _ n: Int) -> Float {
        floatDots(.f16, w, a, a, two: false, n).0
    }

    static func bf16(_ w: UnsafeRawPointer, _ a: UnsafeRawPointer, _ n: Int) -> Float {
        floatDots(.bf16, w, a, a, two: false, n).0
    }

    /// `QuantDot.dotTile` for the float formats: each weight row against activation rows in pairs.
    static func floatTile(_ kind: FloatKind, weights: UnsafeRawPointer, weightStride: Int, rows: Int,
                          activations: UnsafeRawPointer, activationStride: Int, cols: Int,
                          count: Int, out: UnsafeMutablePointer<Float>, outStride: Int) {
        // One copy of the loop per format, so that the weight conversion is not a runtime switch.
        switch kind {
        case .f32: floatTile(.f32, weights, weightStride, rows, activations, activationStride, cols, count, out, outStride)
        case .f16: floatTile(.f16, weights, weightStride, rows, activations, activationStride, cols, count, out, outStride)
        case .bf16: floatTile(.bf16, weights, weightStride, rows, activations, activationStride, cols, count, out, outStride)
        }
    }

    @inline(__always)
    static func floatTile(_ kind: FloatKind, _ weights: UnsafeRawPointer, _ weightStride: Int, _ rows: Int,
                          _ activations: UnsafeRawPointer, _ activationStride: Int, _ cols: Int,
                          _ count: Int, _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
        for r in 0..<rows {
            let w = weights + r * weightStride
            var c = 0
            while c < cols {
                let x = activations + c * activationStride
                if c + 1 < cols {
                    let (s, t) = floatDots(kind, w, x, activations + (c + 1) * activationStride, two: true, count)
                    out[c * outStride + r] = s
                    out[(c + 1) * outStride + r] = t
                    c += 2
                } else {
                    out[c * outStride + r] = floatDots(kind, w, x, x, two: false, count).0
                    c += 1
                }
            }
        }
    }

    /// Σ q·y over 16 quants (|q| ≤ 128) and the 16 activation bytes at `a + offset`, exactly
    /// (each product fits in 16 bits).
    @inline(__always)
    static func dot16(_ q: SIMD16<Int16>, _ a: UnsafeRawPointer, _ offset: Int) -> Int32 {
        let y = SIMD16<Int16>(truncatingIfNeeded: a.loadUnaligned(fromByteOffset: offset, as: SIMD16<Int8>.self))
        return SIMD16<Int32>(truncatingIfNeeded: q &* y).wrappedSum()
    }

    @inline(__always)
    static func wide(_ q: SIMD16<UInt8>) -> SIMD16<Int16> { SIMD16<Int16>(truncatingIfNeeded: q) }

    @inline(__always)
    static func i8(_ p: UnsafeRawPointer, _ i: Int) -> Int32 { Int32(p.load(fromByteOffset: i, as: Int8.self)) }
    @inline(__always)
    static func u8(_ p: UnsafeRawPointer, _ i: Int) -> Int32 { Int32(p.load(fromByteOffset: i, as: UInt8.self)) }

    /// Q4_0/Q5_0 (× Q8_0) and Q4_1/Q5_1 (× Q8_1). (Plain scalar loops: on x86-64 they ran 2-3x
    /// faster than the 16-lane version used for the K formats, whose lane conversions are
    /// not inlined.)
    static func legacy(_ type: GGMLType, _ w: UnsafeRawPointer, _ a: UnsafeRawPointer, _ blocks: Int) -> Float {
        let hasMin = type == .q4_1 || type == .q5_1
        let hasHigh = type == .q5_0 || type == .q5_1
        let center: Int32 = hasMin ? 0 : (hasHigh ? 16 : 8)
        let qhOffset = hasMin ? 4 : 2
        let qsOffset = qhOffset + (hasHigh ? 4 : 0)
        let wbs = type.bytesPerBlock, aStride = hasMin ? 36 : 34, aq = hasMin ? 4 : 2
        var sum: Float = 0
        for b in 0..<blocks {
            let wb = w + b * wbs, ab = a + b * aStride
            let qh = hasHigh ? wb.loadUnaligned(fromByteOffset: qhOffset, as: UInt32.self) : 0
            var dotq: Int32 = 0, suma: Int32 = 0
            for j in 0..<16 {
                let byte = u8(wb, qsOffset + j)
                let lo = (byte & 0xF) | Int32((qh >> UInt32(j)) & 1) << 4
                let hi = (byte >> 4) | Int32((qh >> UInt32(j + 16)) & 1) << 4
                let a0 = i8(ab, aq + j), a1 = i8(ab, aq + 16 + j)
                dotq += (lo - center) * a0 + (hi - center) * a1
                suma += a0 + a1
            }
            let da = loadHalf(ab, 0)
            sum += loadHalf(wb, 0) * da * Float(dotq)
            if hasMin { sum += loadHalf(wb, 2) * da * Float(suma) }
        }
        return sum
    }

    static func q8_0(_ w: UnsafeRawPointer, _ a: UnsafeRawPointer, _ blocks: Int) -> Float {
        var sum: Float = 0
        for b in 0..<blocks {
            let wb = w + b * 34, ab = a + b * 34
            var dotq: Int32 = 0
            for j in 0..<32 { dotq += i8(wb, 2 + j) * i8(ab, 2 + j) }
            sum += loadHalf(wb, 0) * loadHalf(ab, 0) * Float(dotq)
        }
        return sum
    }

    /// Q4_K/Q5_K × Q8_K: Σ_s d·sc[s]·Σ q·a − dmin·m[s]·Σ a, the last sum read from bsums.
    static func q45K(_ type: GGMLType, _ w: UnsafeRawPointer, _ a: UnsafeRawPointer, _ blocks: Int) -> Float {
        let five = type == .q5_K
        let wbs = type.bytesPerBlock, qsOffset = five ? 48 : 16
        var sum: Float = 0
        for b in 0..<blocks {
            let wb = w + b * wbs, ab = a + b * 292
            let (sc, mn) = KQuants.unpackScales(wb + 4)
            @inline(__always) func byte(_ packed: UInt64, _ s: Int) -> Int32 { Int32(UInt8(truncatingIfNeeded: packed >> UInt64(8 * s))) }
            var dotq: Int32 = 0, dotm: Int32 = 0
            for c in 0..<4 {  // sub-blocks 2c (low nibbles) and 2c+1 (high nibbles)
                var partLo: Int32 = 0, partHi: Int32 = 0
                for half in 0..<2 {
                    let q = loadBytes16(wb, qsOffset + 32 * c + 16 * half)
                    var lo = q & 0xF, hi = q &>> 4
                    if five {
                        let qh = loadBytes16(wb, 16 + 16 * half)
                        lo |= ((qh &>> UInt8(2 * c)) & 1) &<< 4
                        hi |= ((qh &>> UInt8(2 * c + 1)) & 1) &<< 4
                    }
                    partLo += dot16(wide(lo), ab, 4 + 64 * c + 16 * half)
                    partHi += dot16(wide(hi), ab, 36 + 64 * c + 16 * half)
                }
                dotq += byte(sc, 2 * c) * partLo + byte(sc, 2 * c + 1) * partHi
            }
            for s in 0..<8 {
                let bsum = Int32(ab.loadUnaligned(fromByteOffset: 260 + 4 * s, as: Int16.self))
                    + Int32(ab.loadUnaligned(fromByteOffset: 262 + 4 * s, as: Int16.self))
                dotm += byte(mn, s) * bsum
            }
            let da = ab.loadUnaligned(as: Float.self)
            sum += da * loadHalf(wb, 0) * Float(dotq) - da * loadHalf(wb, 2) * Float(dotm)
        }
        return sum
    }

    static func q6K(_ w: UnsafeRawPointer, _ a: UnsafeRawPointer, _ blocks: Int) -> Float {
        var sum: Float = 0
        for b in 0..<blocks {
            let wb = w + b * 210, ab = a + b * 292
            var dotq: Int32 = 0
            for h in 0..<2 {
                for l in stride(from: 0, to: 32, by: 16) {  // 16 values of each group share a scale
                    let x = loadBytes16(wb, 64 * h + l), y = loadBytes16(wb, 64 * h + 32 + l)
                    let hb = loadBytes16(wb, 128 + 32 * h + l)
                    @inline(__always) func group(_ q: SIMD16<UInt8>, _ start: Int) {
                        let scale = Int32(wb.load(fromByteOffset: 192 + 8 * h + (start + l) / 16, as: Int8.self))
                        dotq += scale * dot16(wide(q) &- 32, ab, 4 + 128 * h + start + l)
                    }
                    group((x & 0xF) | (hb & 3) &<< 4, 0)
                    group((y & 0xF) | ((hb &>> 2) & 3) &<< 4, 32)
                    group((x &>> 4) | ((hb &>> 4) & 3) &<< 4, 64)
                    group((y &>> 4) | (hb &>> 6) &<< 4, 96)
                }
            }
            sum += ab.loadUnaligned(as: Float.self) * loadHalf(wb, 208) * Float(dotq)
        }
        return sum
    }
}
