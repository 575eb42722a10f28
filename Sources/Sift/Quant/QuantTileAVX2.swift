// AVX2 tiles of dot products (`QuantDot.dotTile`): up to 4 weight rows × up to 4 activation
// rows. Each weight block is loaded and unpacked (nibbles, high bits, scales) once and
// multiplied with the matching block of every activation row.
//
// Weight rows are taken one after the other (a row's blocks stream from memory in order,
// which the hardware prefetcher follows far better than 4 interleaved rows: measured 2x on
// Q6_K), while the activation rows stay in L1.
//
// The per-pair arithmetic is exactly that of the single-pair kernels in QuantDotAVX2.swift
// (same integer sums, same f32 products, same accumulation order), so a tile returns the
// same bits as `QuantDot.dot`.
#if arch(x86_64)
import _Builtin_intrinsics.intel

enum AVX2Tile {
    /// A tile's geometry: weight rows at `w + r·ws`, activation rows at `a + c·as`.
    struct Tile {
        let w: UnsafeRawPointer, ws: Int, rows: Int
        let a: UnsafeRawPointer, aStride: Int
        let blocks: Int
        let out: UnsafeMutablePointer<Float>, os: Int

        /// Activation row `c` (row 0 again for c ≥ cols, whose results are not stored).
        @inline(__always) func act(_ c: Int, cols: Int) -> UnsafeRawPointer { a + min(c, cols - 1) * aStride }
    }

    /// Runs the tile if there is a specialised kernel for `type`; false otherwise.
    static func run(_ type: GGMLType, weights: UnsafeRawPointer, weightStride: Int, rows: Int,
                    activations: UnsafeRawPointer, activationStride: Int, cols: Int,
                    count: Int, out: UnsafeMutablePointer<Float>, outStride: Int) -> Bool {
        // One activation row gains nothing from a tile: `dot` per row is as fast.
        guard cols > 1 else { return false }
        let t = Tile(w: weights, ws: weightStride, rows: rows, a: activations, aStride: activationStride,
                     blocks: count / type.blockSize, out: out, os: outStride)
        switch (type, cols) {
        case (.q4_K, 2): q45K(t, five: false, cols: 2)
        case (.q4_K, 3): q45K(t, five: false, cols: 3)
        case (.q4_K, _): q45K(t, five: false, cols: 4)
        case (.q5_K, 2): q45K(t, five: true, cols: 2)
        case (.q5_K, 3): q45K(t, five: true, cols: 3)
        case (.q5_K, _): q45K(t, five: true, cols: 4)
        case (.q6_K, 2): q6K(t, cols: 2)
        case (.q6_K, 3): q6K(t, cols: 3)
        case (.q6_K, _): q6K(t, cols: 4)
        case (.q8_0, 2): legacy(t, .q8_0, cols: 2)
        case (.q8_0, 3): legacy(t, .q8_0, cols: 3)
        case (.q8_0, _): q8_0x4(t)
        case (.q4_0, 2): legacy(t, .q4_0, cols: 2)
        case (.q4_0, 3): legacy(t, .q4_0, cols: 3)
        case (.q4_0, _): legacy(t, .q4_0, cols: 4)
        case (.q5_0, 2): legacy(t, .q5_0, cols: 2)
        case (.q5_0, 3): legacy(t, .q5_0, cols: 3)
        case (.q5_0, _): legacy(t, .q5_0, cols: 4)
        default: return false
        }
        return true
    }

    // MARK: Q4_K, Q5_K

    @inline(__always)
    static func q45K(_ t: Tile, five: Bool, cols: Int) {
        let wbs = five ? 176 : 144, qsOffset = five ? 48 : 16
        let bit4 = _mm256_set1_epi8(0x10)
        for r in 0..<t.rows {
            var acc0 = __m256(), acc1 = acc0, acc2 = acc0, acc3 = acc0
            var min0 = __m128(), min1 = min0, min2 = min0, min3 = min0
            for b in 0..<t.blocks {
                let a0 = t.act(0, cols: cols) + 292 * b, a1 = t.act(1, cols: cols) + 292 * b
                let a2 = t.act(2, cols: cols) + 292 * b, a3 = t.act(3, cols: cols) + 292 * b
                let wb = t.w + r * t.ws + wbs * b
                let (sc, mn) = KQuants.unpackScales(wb + 4)
                let scales = AVX2Dot.widenBoth(sc)
                var s0 = __m256i(), s1 = s0, s2 = s0, s3 = s0
                var qh = five ? load256(wb, 16) : __m256i()
                for c in 0..<4 {
                    let q = load256(wb, qsOffset + 32 * c)
                    var lo = _mm256_and_si256(q, AVX2.lowNibbles)
                    var hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), AVX2.lowNibbles)
                    if five {
                        lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(qh, 4), bit4))
                        hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(qh, 3), bit4))
                        qh = _mm256_srli_epi16(qh, 2)
                    }
                    let slo = AVX2Dot.lane16(scales, 2 * c), shi = AVX2Dot.lane16(scales, 2 * c + 1)
                    @inline(__always) func part(_ ab: UnsafeRawPointer) -> __m256i {
                        _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(lo, load256(ab, 4 + 64 * c)), slo),
                                         _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load256(ab, 36 + 64 * c)), shi))
                    }
                    s0 = _mm256_add_epi32(s0, part(a0))
                    s1 = _mm256_add_epi32(s1, part(a1))
                    if cols > 2 { s2 = _mm256_add_epi32(s2, part(a2)) }
                    if cols > 3 { s3 = _mm256_add_epi32(s3, part(a3)) }
                }
                let d = halfBroadcast(wb, 0), dmin = halfBroadcast4(wb, 2)
                @inline(__always) func finish(_ acc: inout __m256, _ accMin: inout __m128, _ s: __m256i, _ ab: UnsafeRawPointer) {
                    let da = ab.loadUnaligned(as: Float.self)
                    accMin = _mm_fmadd_ps(_mm_cvtepi32_ps(AVX2Dot.minsTerm(mn, ab)), dmin * da, accMin)
                    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d * da, acc)
                }
                finish(&acc0, &min0, s0, a0)
                finish(&acc1, &min1, s1, a1)
                if cols > 2 { finish(&acc2, &min2, s2, a2) }
                if cols > 3 { finish(&acc3, &min3, s3, a3) }
            }
            t.out[r] = hsum(acc0) - hsum(min0)
            t.out[t.os + r] = hsum(acc1) - hsum(min1)
            if cols > 2 { t.out[2 * t.os + r] = hsum(acc2) - hsum(min2) }
            if cols > 3 { t.out[3 * t.os + r] = hsum(acc3) - hsum(min3) }
        }
    }

    // MARK: Q6_K

    @inline(__always)
    static func q6K(_ t: Tile, cols: Int) {
        let bits45 = _mm256_set1_epi8(0x30)
        for r in 0..<t.rows {
            var acc0 = __m256(), acc1 = acc0, acc2 = acc0, acc3 = acc0
            for b in 0..<t.blocks {
                let a0 = t.act(0, cols: cols) + 292 * b, a1 = t.act(1, cols: cols) + 292 * b
                let a2 = t.act(2, cols: cols) + 292 * b, a3 = t.act(3, cols: cols) + 292 * b
                let wb = t.w + r * t.ws + 210 * b
                let allScales = _mm256_cvtepi8_epi16(load128(wb, 192))
                @inline(__always) func offset(_ ab: UnsafeRawPointer) -> __m256i {
                    _mm256_sub_epi32(__m256i(), _mm256_slli_epi32(_mm256_madd_epi16(allScales, load256(ab, 260)), 5))
                }
                var s0 = offset(a0), s1 = offset(a1)
                var s2 = cols > 2 ? offset(a2) : __m256i(), s3 = cols > 3 ? offset(a3) : __m256i()
                for h in 0..<2 {
                    let s8 = _mm_cvtepi8_epi16(_mm_cvtsi64_si128(wb.loadUnaligned(fromByteOffset: 192 + 8 * h, as: Int64.self)))
                    let scales = _mm256_set_m128i(s8, s8)
                    let ql0 = load256(wb, 64 * h), ql1 = load256(wb, 64 * h + 32), qh = load256(wb, 128 + 32 * h)
                    let m4 = AVX2.lowNibbles
                    // Two groups of 32 values at a time keeps the unpacked quants, their
                    // scales and four column sums within the 16 vector registers.
                    @inline(__always) func groups(_ qa: __m256i, _ ca: __m256i, _ qb: __m256i, _ cb: __m256i, _ g: Int) {
                        @inline(__always) func part(_ ab: UnsafeRawPointer) -> __m256i {
                            let y = ab + 4 + 128 * h + 32 * g
                            return _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(qa, load256(y, 0)), ca),
                                                    _mm256_madd_epi16(_mm256_maddubs_epi16(qb, load256(y, 32)), cb))
                        }
                        s0 = _mm256_add_epi32(s0, part(a0))
                        s1 = _mm256_add_epi32(s1, part(a1))
                        if cols > 2 { s2 = _mm256_add_epi32(s2, part(a2)) }
                        if cols > 3 { s3 = _mm256_add_epi32(s3, part(a3)) }
                    }
                    groups(_mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), bits45)),
                           AVX2Dot.q6Scales(scales, 0),
                           _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), bits45)),
                           AVX2Dot.q6Scales(scales, 1), 0)
                    groups(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, bits45)),
                           AVX2Dot.q6Scales(scales, 2),
                           _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), _mm256_and_si256(_mm256_srli_epi16(qh, 2), bits45)),
                           AVX2Dot.q6Scales(scales, 3), 2)
                }
                let d = halfBroadcast(wb, 208)
                @inline(__always) func finish(_ acc: inout __m256, _ s: __m256i, _ ab: UnsafeRawPointer) {
                    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d * ab.loadUnaligned(as: Float.self), acc)
                }
                finish(&acc0, s0, a0)
                finish(&acc1, s1, a1)
                if cols > 2 { finish(&acc2, s2, a2) }
                if cols > 3 { finish(&acc3, s3, a3) }
            }
            t.out[r] = hsum(acc0)
            t.out[t.os + r] = hsum(acc1)
            if cols > 2 { t.out[2 * t.os + r] = hsum(acc2) }
            if cols > 3 { t.out[3 * t.os + r] = hsum(acc3) }
        }
    }

    // MARK: Q8_0, Q4_0, Q5_0 (× Q8_0)

    @inline(__always)
    static func legacy(_ t: Tile, _ type: GGMLType, cols: Int) {
        let wbs = type.bytesPerBlock
        // The activation scales, converted once for all rows: [block][column].
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * t.blocks) { buf in
            let scales = buf.baseAddress!
            for b in 0..<t.blocks {
                for c in 0..<4 { scales[4 * b + c] = loadHalf(t.act(c, cols: cols), 34 * b) }
            }
            for r in 0..<t.rows {
                // Like AVX2Dot's kernels, even blocks go to one set of accumulators, odd to another.
                var e0 = __m256(), e1 = e0, e2 = e0, e3 = e0
                var o0 = e0, o1 = e0, o2 = e0, o3 = e0
                @inline(__always) func block(_ b: Int, _ acc0: inout __m256, _ acc1: inout __m256,
                                             _ acc2: inout __m256, _ acc3: inout __m256) {
                    let wb = t.w + r * t.ws + wbs * b
                    let q: __m256i
                    switch type {
                    case .q4_0: q = _mm256_sub_epi8(AVX2.nibbles(wb, 2), _mm256_set1_epi8(8))
                    case .q5_0: q = AVX2Dot.q5_0Quants(wb)
                    default: q = load256(wb, 2)
                    }
                    let ax = _mm256_sign_epi8(q, q)
                    let dw = halfBroadcast(wb, 0)
                    @inline(__always) func pair(_ c: Int, _ acc: inout __m256) {
                        let y = load256(t.act(c, cols: cols), 34 * b + 2)
                        let p = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(y, q))
                        let v = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, AVX2.ones16))
                        acc = _mm256_fmadd_ps(v, dw * scales[4 * b + c], acc)
                    }
                    pair(0, &acc0)
                    pair(1, &acc1)
                    if cols > 2 { pair(2, &acc2) }
                    if cols > 3 { pair(3, &acc3) }
                }
                var b = 0
                while b + 2 <= t.blocks {
                    block(b, &e0, &e1, &e2, &e3)
                    block(b + 1, &o0, &o1, &o2, &o3)
                    b += 2
                }
                if b < t.blocks { block(b, &e0, &e1, &e2, &e3) }
                t.out[r] = hsum(e0 + o0)
                t.out[t.os + r] = hsum(e1 + o1)
                if cols > 2 { t.out[2 * t.os + r] = hsum(e2 + o2) }
                if cols > 3 { t.out[3 * t.os + r] = hsum(e3 + o3) }
            }
        }
    }

    // MARK: Q8_0 × 4 columns (prefill)

    /// Q8_0 weights against 4 activation rows, written out without type or column branches
    /// (prefill's hot loop; Q4_0/Q5_0 weights are repacked to Q8_0 for it, see
    /// `QuantDot.repackToQ8_0`). Even and odd blocks accumulate apart, as `AVX2Dot.q8_0` does.
    static func q8_0x4(_ t: Tile) {
        let a0 = t.a, a1 = a0 + t.aStride, a2 = a1 + t.aStride, a3 = a2 + t.aStride
        let ones = AVX2.ones16
        @inline(__always)
        func term(_ ax: __m256i, _ q: __m256i, _ dw: __m256, _ a: UnsafeRawPointer, _ o: Int, _ acc: inout __m256) {
            let p = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(load256(a, o + 2), q))
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), dw * halfBroadcast(a, o), acc)
        }
        for r in 0..<t.rows {
            let w = t.w + r * t.ws
            var e0 = _mm256_setzero_ps(), e1 = e0, e2 = e0, e3 = e0
            var o0 = e0, o1 = e0, o2 = e0, o3 = e0
            /// Block b of this row against the 4 activation rows, into 4 accumulators.
            @inline(__always)
            func block(_ b: Int, _ c0: inout __m256, _ c1: inout __m256, _ c2: inout __m256, _ c3: inout __m256) {
                let o = 34 * b
                let q = load256(w, o + 2)
                let ax = _mm256_sign_epi8(q, q)
                let dw = halfBroadcast(w, o)
                term(ax, q, dw, a0, o, &c0); term(ax, q, dw, a1, o, &c1)
                term(ax, q, dw, a2, o, &c2); term(ax, q, dw, a3, o, &c3)
            }
            var b = 0
            while b + 2 <= t.blocks {
                block(b, &e0, &e1, &e2, &e3)
                block(b + 1, &o0, &o1, &o2, &o3)
                b += 2
            }
            if b < t.blocks { block(b, &e0, &e1, &e2, &e3) }
            t.out[r] = hsum(e0 + o0)
            t.out[t.os + r] = hsum(e1 + o1)
            t.out[2 * t.os + r] = hsum(e2 + o2)
            t.out[3 * t.os + r] = hsum(e3 + o3)
        }
    }

    /// Rewrites `blocks` Q4_0 or Q5_0 blocks as Q8_0 blocks (same f16 scale, the same small
    /// integers in bytes), so that prefill unpacks each weight block once rather than once
    /// per group of activation rows.
    static func repackToQ8_0(_ type: GGMLType, _ src: UnsafeRawPointer, blocks: Int, into dst: UnsafeMutableRawPointer) {
        let sbs = type.bytesPerBlock
        for b in 0..<blocks {
            let wb = src + sbs * b
            let q: __m256i = type == .q5_0 ? AVX2Dot.q5_0Quants(wb) : _mm256_sub_epi8(AVX2.nibbles(wb, 2), _mm256_set1_epi8(8))
            let out = dst + 34 * b
            out.storeBytes(of: wb.loadUnaligned(as: UInt16.self), as: UInt16.self)
            out.storeBytes(of: q, toByteOffset: 2, as: __m256i.self)
        }
    }
}
#endif
