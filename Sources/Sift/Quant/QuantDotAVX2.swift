// AVX2 dot kernels for the integer formats (x86-64, Haswell and later).
//
// The core operation is `_mm256_maddubs_epi16(u, s)`: 32 unsigned bytes times 32 signed
// bytes, adjacent products summed to 16 int16. Weight quants are made unsigned (0...63 for
// the K formats) or, for signed formats, the sign is moved onto the activation with
// `_mm256_sign_epi8` (activations never hold −128, so that negation cannot overflow). With
// |a| ≤ 127 no int16 pair sum can saturate: 2·63·127 and 2·128·127 are below 32767.
// `_mm256_madd_epi16` then multiplies the int16 sums by 1 or by the sub-block scales and
// widens to int32; each block's integer total is converted to f32 once and scaled by the
// product of the weight and activation block scales.
#if arch(x86_64)
import _Builtin_intrinsics.intel

@inline(__always)
func load256(_ p: UnsafeRawPointer, _ offset: Int) -> __m256i {
    p.loadUnaligned(fromByteOffset: offset, as: __m256i.self)
}

@inline(__always)
func load128(_ p: UnsafeRawPointer, _ offset: Int) -> __m128i {
    p.loadUnaligned(fromByteOffset: offset, as: __m128i.self)
}

/// Σ of the 8 lanes.
@inline(__always)
func hsum(_ v: __m256) -> Float {
    let h = v.lowHalf + v.highHalf
    let q = h.lowHalf + h.highHalf
    return q[0] + q[1]
}

@inline(__always)
func hsum(_ v: __m128) -> Float {
    let q = v.lowHalf + v.highHalf
    return q[0] + q[1]
}

enum AVX2 {
    @inline(__always) static var ones16: __m256i { _mm256_set1_epi16(1) }
    @inline(__always) static var lowNibbles: __m256i { _mm256_set1_epi8(0x0F) }

    /// Σ x·y over adjacent groups of 4 signed bytes, as 8 int32 (x may hold −128; y may not).
    @inline(__always)
    static func dotSigned(_ x: __m256i, _ y: __m256i) -> __m256i {
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
        return _mm256_madd_epi16(p, ones16)
    }

    /// Σ u·y over adjacent groups of 4 bytes, u unsigned (≤ 128), y signed, as 8 int32.
    @inline(__always)
    static func dotUnsigned(_ u: __m256i, _ y: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), ones16)
    }

    /// Σ y over adjacent groups of 4 signed bytes, as 8 int32.
    @inline(__always)
    static func sumBytes(_ y: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), y), ones16)
    }

    /// The 32 nibbles of 16 bytes in ggml's block order: low nibbles in bytes 0..<16, high
    /// nibbles in bytes 16..<32.
    @inline(__always)
    static func nibbles(_ p: UnsafeRawPointer, _ offset: Int) -> __m256i {
        let q = load128(p, offset)
        return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), lowNibbles)
    }

    /// Byte j is 0xFF where bit j of `bits` is set, 0 elsewhere.
    @inline(__always)
    static func bitMask(_ bits: UInt32) -> __m256i {
        let v = _mm256_set1_epi32(Int32(bitPattern: bits))
        // Lane 0 spreads bytes 0 and 1 of the word over 8 bytes each, lane 1 bytes 2 and 3.
        let spread = _mm256_shuffle_epi8(v, _mm256_set_epi64x(0x0303_0303_0303_0303, 0x0202_0202_0202_0202,
                                                              0x0101_0101_0101_0101, 0))
        let select = _mm256_set1_epi64x(Int64(bitPattern: 0x8040_2010_0804_0201))
        return _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select)
    }
}

/// The f16 at `p + offset` converted to f32 in all 8 lanes.
///
/// Block scales are read this way rather than as a scalar Float16: LLVM turns a scalar f16
/// load into `vpinsrw` merging into an arbitrary register, often a loop's accumulator, which
/// makes each block wait for the previous one (measured 2x slower on Q8_0).
@inline(__always)
func halfBroadcast(_ p: UnsafeRawPointer, _ offset: Int) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16(p.loadUnaligned(fromByteOffset: offset, as: Int16.self)))
}

/// The f16 at `p + offset` converted to f32 in 4 lanes.
@inline(__always)
func halfBroadcast4(_ p: UnsafeRawPointer, _ offset: Int) -> __m128 {
    _mm_cvtph_ps(_mm_set1_epi16(p.loadUnaligned(fromByteOffset: offset, as: Int16.self)))
}

/// The product of the f16 values at `p` and `q`, in all 8 lanes.
///
/// Both halves go into one 32-bit move and one conversion (LLVM keeps the `vmovd` when two
/// halves are used), and the work stays mostly on the integer ports.
@inline(__always)
func halfProduct(_ p: UnsafeRawPointer, _ q: UnsafeRawPointer) -> __m256 {
    let bits = UInt32(p.loadUnaligned(as: UInt16.self)) | UInt32(q.loadUnaligned(as: UInt16.self)) << 16
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(Int32(bitPattern: bits)))
    return _mm256_set1_ps(v[0] * v[1])
}

/// acc += v·s
@inline(__always)
func fma(_ acc: inout __m256, _ t: (v: __m256, s: __m256)) {
    acc = _mm256_fmadd_ps(t.v, t.s, acc)
}

/// Σ over `blocks` of v·s from `block(b)`, even blocks on one FMA chain and odd blocks on
/// another (two chains hide the FMA latency); the tiles keep the same order.
@inline(__always)
func sumBlocks(_ blocks: Int, _ block: (Int) -> (__m256, __m256)) -> Float {
    var acc0 = __m256(), acc1 = __m256()
    var b = 0
    while b + 2 <= blocks {
        fma(&acc0, block(b))
        fma(&acc1, block(b + 1))
        b += 2
    }
    if b < blocks { fma(&acc0, block(b)) }
    return hsum(acc0 + acc1)
}

enum AVX2Dot {
    // MARK: 32-value formats

    static func q8_0(_ w: UnsafeRawPointer, _ a: UnsafeRawPointer, _ blocks: Int) -> Float {
        @inline(__always) func block(_ b: Int) -> (__m256, __m256) {
            let wb = w + 34 * b, ab = a + 34 * b
            let s = _mm256_cvtepi32_ps(AVX2.dotSigned(load256(wb, 2), load256(ab, 2)))
            return (s, halfProduct(wb, ab))
        }
        return sumBlocks(blocks, block)
    }

    static func q4_0(_ w: UnsafeRawPointer, _ a: UnsafeRawPointer, _ blocks: Int) -> Float {
        @inline(__always) func block(_ b: Int) -> (__m256, __m256) {
            let wb = w + 18 * b, ab = a + 34 * b
            let q = _mm256_sub_epi8(AVX2.nibbles(wb, 2), _mm256_set1_epi8(8))
            let s = _mm256_cvtepi32_ps(AVX2.dotSigned(q, load256(ab, 2)))
            return (s, halfProduct(wb, ab))
        }
        return sumBlocks(blocks, block)
    }

    /// Q5_0's quant minus 16 as a signed byte: the nibble where the fifth bit is set, the
    /// nibble − 16 (nibble | 0xF0) where it is clear.
    @inline(__always)
    static func q5_0Quants(_ wb: UnsafeRawPointer) -> __m256i {
        let high = AVX2.bitMask(wb.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
        return _mm256_or_si256(AVX2.nibbles(wb, 6), _mm256_andnot_si256(high, _mm256_set1_epi8(-16)))
    }

    static func q5_0(_ w: UnsafeRawPointer, _ a: UnsafeRawPointer, _ blocks: Int) -> Float {
        @inline(__always) func block(_ b: Int) -> (__m256, __m256) {
            let wb = w + 22 * b, ab = a + 34 * b
            let s = _mm256_cvtepi32_ps(AVX2.dotSigned(q5_0Quants(wb), load256(ab, 2)))
            return (s, halfProduct(wb, ab))
        }
        return sumBlocks(blocks, block)
    }

    /// Q4_1/Q5_1 × Q8_1 block: (Σq·a, Σa) as floats, q unsigned.
    @inline(__always)
    static func withMinBlock(_ q: __m256i, _ ab: UnsafeRawPointer) -> (__m256, __m256) {
        let y = load256(ab, 4)
        return (_mm256_cvtepi32_ps(AVX2.dotUnsigned(q, y)), _mm256_cvtepi32_ps(AVX2.sumBytes(y)))
    }

    /// Q4_1/Q5_1 × Q8_1: d·da·Σq·a + m·da·Σa.
    static func q4_1(_ w: UnsafeRawPointer, _ a: UnsafeRawPointer, _ blocks: Int) -> Float {
        var acc = __m256(), accMin = __m256()
        for b in 0..<blocks {
            let wb = w + 20 * b, ab = a + 36 * b
            let (qa, sa) = withMinBlock(AVX2.nibbles(wb, 4), ab)
            let da = halfBroadcast(ab, 0)
            fma(&acc, (qa, halfBroadcast(wb, 0) * da))
            fma(&accMin, (sa, halfBroadcast(wb, 2) * da))
        }
        return hsum(acc + accMin)
    }

    static func q5_1Quants(_ wb: UnsafeRawPointer) -> __m256i {
        let high = AVX2.bitMask(wb.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        return _mm256_or_si256(AVX2.nibbles(wb, 8), _mm256_and_si256(high, _mm256_set1_epi8(16)))
    }

    static func q5_1(_ w: UnsafeRawPointer, _ a: UnsafeRawPointer, _ blocks: Int) -> Float {
        var acc = __m256(), accMin = __m256()
        for b in 0..<blocks {
            let wb = w + 24 * b, ab = a + 36 * b
            let (qa, sa) = withMinBlock(q5_1Quants(wb), ab)
            let da = halfBroadcast(ab, 0)
            fma(&acc, (qa, halfBroadcast(wb, 0) * da))
            fma(&accMin, (sa, halfBroadcast(wb, 2) * da))
        }
        return hsum(acc + accMin)
    }

    // MARK: K formats

    /// Broadcasts int16 lane `k` (of 8, same in both 128-bit lanes) across all 16 lanes.
    @inline(__always)
    static func lane16(_ v: __m256i, _ k: Int) -> __m256i {
        _mm256_shuffle_epi8(v, _mm256_set1_epi16(Int16(2 * k) | Int16(2 * k + 1) << 8))
    }

    /// Eight packed bytes widened to int16 in both 128-bit lanes.
    @inline(__always)
    static func widenBoth(_ packed: UInt64) -> __m256i {
        let x = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(Int64(bitPattern: packed)))
        return _mm256_set_m128i(x, x)
    }

    /// The mins term of a Q4_K/Q5_K block as 4 int32 to be summed: Σ_s m[s]·(bsums[2s] + bsums[2s+1]).
    @inline(__always)
    static func minsTerm(_ mins: UInt64, _ ab: UnsafeRawPointer) -> __m128i {
        let m = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(Int64(bitPattern: mins)))
        let pairs = _mm_hadd_epi16(load128(ab, 260), load128(ab, 276))
        return _mm_madd_epi16(m, pairs)
    }

    static func q4K(_ w: UnsafeRawPointer, _ a: UnsafeRawPointer, _ blocks: Int) -> Float {
        var acc = __m256(), accMin = __m128()
        for b in 0..<blocks {
            let wb = w + 144 * b, ab = a + 292 * b
            let da = ab.loadUnaligned(as: Float.self)
            let (sc, mn) = KQuants.unpackScales(wb + 4)
            accMin = _mm_fmadd_ps(_mm_cvtepi32_ps(minsTerm(mn, ab)), halfBroadcast4(wb, 2) * da, accMin)
            let scales = widenBoth(sc)
            var sum = __m256i()
            for c in 0..<4 {
                let q = load256(wb, 16 + 32 * c)
                let lo = _mm256_and_si256(q, AVX2.lowNibbles)
                let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), AVX2.lowNibbles)
                let plo = _mm256_maddubs_epi16(lo, load256(ab, 4 + 64 * c))
                let phi = _mm256_maddubs_epi16(hi, load256(ab, 36 + 64 * c))
                sum = _mm256_add_epi32(sum, _mm256_add_epi32(_mm256_madd_epi16(plo, lane16(scales, 2 * c)),
                                                             _mm256_madd_epi16(phi, lane16(scales, 2 * c + 1))))
            }
            fma(&acc, (_mm256_cvtepi32_ps(sum), halfBroadcast(wb, 0) * da))
        }
        return hsum(acc) - hsum(accMin)
    }

    static func q5K(_ w: UnsafeRawPointer, _ a: UnsafeRawPointer, _ blocks: Int) -> Float {
        var acc = __m256(), accMin = __m128()
        let bit4 = _mm256_set1_epi8(0x10)
        for b in 0..<blocks {
            let wb = w + 176 * b, ab = a + 292 * b
            let da = ab.loadUnaligned(as: Float.self)
            let (sc, mn) = KQuants.unpackScales(wb + 4)
            accMin = _mm_fmadd_ps(_mm_cvtepi32_ps(minsTerm(mn, ab)), halfBroadcast4(wb, 2) * da, accMin)
            let scales = widenBoth(sc)
            var qh = load256(wb, 16)  // shifted right by 2 per chunk: bits 0 and 1 are chunk c's
            var sum = __m256i()
            for c in 0..<4 {
                let q = load256(wb, 48 + 32 * c)
                let lo = _mm256_or_si256(_mm256_and_si256(q, AVX2.lowNibbles),
                                         _mm256_and_si256(_mm256_slli_epi16(qh, 4), bit4))
                let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), AVX2.lowNibbles),
                                         _mm256_and_si256(_mm256_slli_epi16(qh, 3), bit4))
                qh = _mm256_srli_epi16(qh, 2)
                let plo = _mm256_maddubs_epi16(lo, load256(ab, 4 + 64 * c))
                let phi = _mm256_maddubs_epi16(hi, load256(ab, 36 + 64 * c))
                sum = _mm256_add_epi32(sum, _mm256_add_epi32(_mm256_madd_epi16(plo, lane16(scales, 2 * c)),
                                                             _mm256_madd_epi16(phi, lane16(scales, 2 * c + 1))))
            }
            fma(&acc, (_mm256_cvtepi32_ps(sum), halfBroadcast(wb, 0) * da))
        }
        return hsum(acc) - hsum(accMin)
    }

    /// Shuffle picking scale 2g of the half into the low 128-bit lane, 2g+1 into the high one
    /// (bytes 0..<16 and 16..<32 of a 32-value group use consecutive 16-value scales).
    @inline(__always)
    static func q6Scales(_ v: __m256i, _ g: Int) -> __m256i {
        let lo = Int16(4 * g) | Int16(4 * g + 1) << 8, hi = Int16(4 * g + 2) | Int16(4 * g + 3) << 8
        return _mm256_shuffle_epi8(v, _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo)))
    }

    static func q6K(_ w: UnsafeRawPointer, _ a: UnsafeRawPointer, _ blocks: Int) -> Float {
        var acc = __m256()
        let bits45 = _mm256_set1_epi8(0x30)
        for b in 0..<blocks {
            let wb = w + 210 * b, ab = a + 292 * b
            // Σ scale·(q − 32)·a = Σ scale·q·a − 32·Σ scale·bsum
            let allScales = _mm256_cvtepi8_epi16(load128(wb, 192))
            var sum = _mm256_sub_epi32(__m256i(), _mm256_slli_epi32(_mm256_madd_epi16(allScales, load256(ab, 260)), 5))
            for h in 0..<2 {
                let s8 = _mm_cvtepi8_epi16(_mm_cvtsi64_si128(wb.loadUnaligned(fromByteOffset: 192 + 8 * h, as: Int64.self)))
                let scales = _mm256_set_m128i(s8, s8)
                let ql0 = load256(wb, 64 * h), ql1 = load256(wb, 64 * h + 32), qh = load256(wb, 128 + 32 * h)
                let q0 = _mm256_or_si256(_mm256_and_si256(ql0, AVX2.lowNibbles), _mm256_and_si256(_mm256_slli_epi16(qh, 4), bits45))
                let q1 = _mm256_or_si256(_mm256_and_si256(ql1, AVX2.lowNibbles), _mm256_and_si256(_mm256_slli_epi16(qh, 2), bits45))
                let q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), AVX2.lowNibbles), _mm256_and_si256(qh, bits45))
                let q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), AVX2.lowNibbles), _mm256_and_si256(_mm256_srli_epi16(qh, 2), bits45))
                let y = ab + 4 + 128 * h
                let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(q0, load256(y, 0)), q6Scales(scales, 0))
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(q1, load256(y, 32)), q6Scales(scales, 1))
                let p2 = _mm256_madd_epi16(_mm256_maddubs_epi16(q2, load256(y, 64)), q6Scales(scales, 2))
                let p3 = _mm256_madd_epi16(_mm256_maddubs_epi16(q3, load256(y, 96)), q6Scales(scales, 3))
                sum = _mm256_add_epi32(sum, _mm256_add_epi32(_mm256_add_epi32(p0, p1), _mm256_add_epi32(p2, p3)))
            }
            fma(&acc, (_mm256_cvtepi32_ps(sum), halfBroadcast(wb, 208) * ab.loadUnaligned(as: Float.self)))
        }
        return hsum(acc)
    }
}

#endif
