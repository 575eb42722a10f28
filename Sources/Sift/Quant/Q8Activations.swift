// Quantization of f32 activations to the 8-bit formats the integer dot products consume.
//
//   Q8_0  34 bytes per 32 values: f16 d | i8 qs[32]
//   Q8_1  36 bytes per 32 values: f16 d | f16 s | i8 qs[32], s = d·Σqs (ggml's layout; the
//         dots in this module recompute Σqs exactly instead of reading the rounded s)
//   Q8_K  292 bytes per 256 values: f32 d | i8 qs[256] | i16 bsums[16], bsums[k] = Σ qs[16k..<16k+16]
//
// Each block is scaled so that its largest magnitude maps to ±127 (never −128, which the
// AVX2 kernels rely on: they negate activations with `sign`), and rounded to nearest even.
// Q8_0/Q8_1 round with the reciprocal of the stored f16 scale, so |x − d·q| ≤ d/2 for the
// d actually stored.

enum Q8Activations {
    /// Quantizes `count` (a multiple of 32) floats to Q8_0 blocks, or Q8_1 blocks when `withSum`.
    static func quantizeQ8_0(_ x: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer, withSum: Bool) {
        precondition(count % 32 == 0, "Q8_0/Q8_1 activations need a multiple of 32 values, got \(count)")
        let bs = withSum ? 36 : 34
        let qsOffset = withSum ? 4 : 2
        for b in 0..<count / 32 {
            let v = UnsafeRawPointer(x + 32 * b).loadUnaligned(as: SIMD32<Float>.self)
            let out = dst + b * bs
            let amax = pointwiseMax(v, -v).max()
            let d = storeHalf(amax / 127, out, 0)
            let q = quantize(v, inverseScale: d == 0 ? 0 : 1 / d)
            out.storeBytes(of: q, toByteOffset: qsOffset, as: SIMD32<Int8>.self)
            if withSum {
                storeHalf(d * Float(SIMD32<Int32>(truncatingIfNeeded: q).wrappedSum()), out, 2)
            }
        }
    }

    /// Quantizes `count` (a multiple of 256) floats to Q8_K blocks.
    static func quantizeQ8K(_ x: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer) {
        precondition(count % 256 == 0, "Q8_K activations need a multiple of 256 values, got \(count)")
        for b in 0..<count / 256 {
            let src = UnsafeRawPointer(x + 256 * b)
            let out = dst + b * 292
            var m = SIMD32<Float>()
            for i in 0..<8 {
                let v = src.loadUnaligned(fromByteOffset: 128 * i, as: SIMD32<Float>.self)
                m = pointwiseMax(m, pointwiseMax(v, -v))
            }
            let amax = m.max()
            let d = amax / 127
            out.storeBytes(of: d, as: Float.self)
            let inv: Float = amax == 0 ? 0 : 127 / amax
            for i in 0..<8 {
                let q = quantize(src.loadUnaligned(fromByteOffset: 128 * i, as: SIMD32<Float>.self), inverseScale: inv)
                out.storeBytes(of: q, toByteOffset: 4 + 32 * i, as: SIMD32<Int8>.self)
                let wide = SIMD32<Int16>(truncatingIfNeeded: q)
                let lo = wide.lowHalf.wrappedSum(), hi = wide.highHalf.wrappedSum()
                out.storeBytes(of: lo, toByteOffset: 260 + 4 * i, as: Int16.self)
                out.storeBytes(of: hi, toByteOffset: 262 + 4 * i, as: Int16.self)
            }
        }
    }

    /// round(v·inverseScale) clamped to ±127.
    @inline(__always)
    static func quantize(_ v: SIMD32<Float>, inverseScale: Float) -> SIMD32<Int8> {
        let r = (v * inverseScale).rounded(.toNearestOrEven)
        let clamped = r.clamped(lowerBound: SIMD32(repeating: -127), upperBound: SIMD32(repeating: 127))
        return SIMD32<Int8>(truncatingIfNeeded: SIMD32<Int32>(clamped))
    }
}
