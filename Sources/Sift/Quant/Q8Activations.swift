// Quantization of f32 activations to the 8-bit formats the integer dot products consume.
//
//   Q8_0  34 bytes per 32 values: f16 d | i8 qs[32]
//   Q8_1  36 bytes per 32 values: f16 d | f16 s | i8 qs[32], s = d·Σqs (ggml's layout; the
//         dots in this module recompute Σqs exactly instead of reading the rounded s)
//   Q8_K  292 bytes per 256 values: f32 d | i8 qs[256] | i16 bsums[16], bsums[k] = Σ qs[16k..<16k+16]
//
// Each block is scaled by d = amax/127 and its values rounded (to nearest even) from
// x·127/amax, as ggml's reference quantizers define it, so no value is −128 (the AVX2
// kernels rely on that: they negate activations with `sign`). Q8_0/Q8_1 store d as f16.
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

enum Q8Activations {
    /// Quantizes `count` (a multiple of 32) floats to Q8_0 blocks, or Q8_1 blocks when `withSum`.
    static func quantizeQ8_0(_ x: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer, withSum: Bool) {
        precondition(count % 32 == 0, "Q8_0/Q8_1 activations need a multiple of 32 values, got \(count)")
        let bs = withSum ? 36 : 34
        let qsOffset = withSum ? 4 : 2
        for b in 0..<count / 32 {
            let src = x + 32 * b
            let out = dst + b * bs
            let amax = absMax(src, count: 32)
            let d = storeHalf(amax / 127, out, 0)
            let sum = quantize32(src, inverseScale: amax == 0 ? 0 : 127 / amax, into: out + qsOffset)
            if withSum { storeHalf(d * Float(sum), out, 2) }
        }
    }

    /// Quantizes `count` (a multiple of 256) floats to Q8_K blocks.
    static func quantizeQ8K(_ x: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer) {
        precondition(count % 256 == 0, "Q8_K activations need a multiple of 256 values, got \(count)")
        for b in 0..<count / 256 {
            let src = x + 256 * b
            let out = dst + b * 292
            let amax = absMax(src, count: 256)
            out.storeBytes(of: amax / 127, as: Float.self)
            let inv: Float = amax == 0 ? 0 : 127 / amax
            for i in 0..<16 {
                let s = quantize16(src + 16 * i, inverseScale: inv, into: out + 4 + 16 * i)
                out.storeBytes(of: Int16(truncatingIfNeeded: s), toByteOffset: 260 + 2 * i, as: Int16.self)
            }
        }
    }

    /// max |x[i]| over `count` (a multiple of 16) values.
    @inline(__always)
    static func absMax(_ x: UnsafePointer<Float>, count: Int) -> Float {
        #if arch(x86_64)
        let signBit = _mm256_set1_ps(-0.0)
        var m = _mm256_setzero_ps()
        let raw = UnsafeRawPointer(x)
        var i = 0
        while i < count {
            m = _mm256_max_ps(m, _mm256_andnot_ps(signBit, raw.loadUnaligned(fromByteOffset: 4 * i, as: __m256.self)))
            m = _mm256_max_ps(m, _mm256_andnot_ps(signBit, raw.loadUnaligned(fromByteOffset: 4 * i + 32, as: __m256.self)))
            i += 16
        }
        let h = _mm_max_ps(m.lowHalf, m.highHalf)
        let h2 = _mm_max_ps(h, _mm_movehl_ps(h, h))
        let h3 = _mm_max_ss(h2, _mm_movehdup_ps(h2))
        return h3[0]
        #else
        var m: Float = 0
        for i in 0..<count { m = max(m, abs(x[i])) }
        return m
        #endif
    }

    /// Stores round(x[i]·inverseScale) for 32 values as Int8 (the caller guarantees |·| ≤ 127.5
    /// before rounding; the result is clamped to ±127) and returns their sum.
    @inline(__always)
    static func quantize32(_ x: UnsafePointer<Float>, inverseScale: Float, into dst: UnsafeMutableRawPointer) -> Int {
        quantize16(x, inverseScale: inverseScale, into: dst) + quantize16(x + 16, inverseScale: inverseScale, into: dst + 16)
    }

    /// The same for 16 values.
    @inline(__always)
    static func quantize16(_ x: UnsafePointer<Float>, inverseScale: Float, into dst: UnsafeMutableRawPointer) -> Int {
        #if arch(x86_64)
        let s = _mm256_set1_ps(inverseScale)
        let raw = UnsafeRawPointer(x)
        // cvtps rounds to nearest even (the default MXCSR mode).
        let a = _mm256_cvtps_epi32(_mm256_mul_ps(raw.loadUnaligned(as: __m256.self), s))
        let b = _mm256_cvtps_epi32(_mm256_mul_ps(raw.loadUnaligned(fromByteOffset: 32, as: __m256.self), s))
        // Saturating packs keep lane order per 128-bit half: a0..3 b0..3 | a4..7 b4..7.
        let w = _mm256_packs_epi32(a, b)
        let lo = w.lowHalf, hi = w.highHalf
        // lo = a0..3 b0..3, hi = a4..7 b4..7 (int16) -> a0..7 b0..7.
        let ordered16 = _mm_unpacklo_epi64(lo, hi)
        let ordered16b = _mm_unpackhi_epi64(lo, hi)
        // ordered16 = a0..3 a4..7, ordered16b = b0..3 b4..7.
        let bytes = _mm_packs_epi16(ordered16, ordered16b)
        let clamped = _mm_max_epi8(bytes, _mm_set1_epi8(-127))
        dst.storeBytes(of: clamped, as: __m128i.self)
        let sums = _mm_sad_epu8(_mm_xor_si128(clamped, _mm_set1_epi8(-128)), _mm_setzero_si128())
        // Σ(q+128) over 16 bytes, in two 64-bit halves.
        return Int(sums[0] + sums[1]) - 16 * 128
        #else
        var total = 0
        for j in 0..<16 {
            var r = (x[j] * inverseScale).rounded(.toNearestOrEven)
            r = min(max(r, -127), 127)
            let q = Int8(r)
            dst.storeBytes(of: q, toByteOffset: j, as: Int8.self)
            total += Int(q)
        }
        return total
        #endif
    }
}
