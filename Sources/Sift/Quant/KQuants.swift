// The 256-value "K" super-block formats.
//
//   Q4_K  144 bytes: f16 d | f16 dmin | u8 scales[12] | u8 qs[128]
//         Eight sub-blocks of 32 values, each with a 6-bit scale sc[s] and 6-bit min m[s]
//         packed into `scales` (see `unpackScalesQ4K`). Values 64c ..< 64c+32 are the low
//         nibbles of qs[32c ..< 32c+32] (sub-block 2c), values 64c+32 ..< 64c+64 their high
//         nibbles (sub-block 2c+1), c in 0..<4.
//         y = d·sc[s]·q − dmin·m[s]
//   Q5_K  176 bytes: f16 d | f16 dmin | u8 scales[12] | u8 qh[32] | u8 qs[128]
//         As Q4_K, plus a fifth bit per value: value 64c + l (l < 32) takes bit 2c of
//         qh[l], value 64c + 32 + l takes bit 2c+1 of qh[l]. q = nibble | bit << 4 (0...31).
//         y = d·sc[s]·q − dmin·m[s]
//   Q6_K  210 bytes: u8 ql[128] | u8 qh[64] | i8 scales[16] | f16 d
//         Two halves of 128 values (h in 0..<2) using ql[64h ..< 64h+64], qh[32h ..< 32h+32],
//         scales[8h ..< 8h+8]. Within a half, for l < 32:
//           value l      = ql[l] & 0xF      | (qh[l] >> 0 & 3) << 4
//           value l + 32 = ql[l + 32] & 0xF | (qh[l] >> 2 & 3) << 4
//           value l + 64 = ql[l] >> 4       | (qh[l] >> 4 & 3) << 4
//           value l + 96 = ql[l + 32] >> 4  | (qh[l] >> 6 & 3) << 4
//         and value i of the half uses scales[8h + i/16].   y = d·scale·(q − 32)
//   Q8_K  292 bytes: f32 d | i8 qs[256] | i16 bsums[16]
//         y = d·qs[i]; bsums[k] = Σ qs[16k ..< 16k+16] (an activation format: see
//         Q8Activations.swift).

enum KQuants {
    /// Unpacks the 12 packed bytes of Q4_K/Q5_K into eight 6-bit scales and eight 6-bit mins
    /// (byte s of each result is sub-block s's value).
    ///
    /// Bytes 0..<4 hold scales 0..<4 in their low 6 bits, bytes 4..<8 mins 0..<4 likewise.
    /// Bytes 8..<12 hold the low 4 bits of scales 4..<8 (low nibble) and mins 4..<8 (high
    /// nibble); the top 2 bits of scales 4..<8 and mins 4..<8 are the top 2 bits of bytes
    /// 0..<4 and 4..<8 respectively.
    @inline(__always)
    static func unpackScales(_ p: UnsafeRawPointer) -> (scales: UInt64, mins: UInt64) {
        let w0 = p.loadUnaligned(as: UInt32.self)
        let w1 = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        let w2 = p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
        let scLo = w0 & 0x3F3F_3F3F
        let mLo = w1 & 0x3F3F_3F3F
        let scHi = (w2 & 0x0F0F_0F0F) | ((w0 >> 6) & 0x0303_0303) << 4
        let mHi = ((w2 >> 4) & 0x0F0F_0F0F) | ((w1 >> 6) & 0x0303_0303) << 4
        return (UInt64(scLo) | UInt64(scHi) << 32, UInt64(mLo) | UInt64(mHi) << 32)
    }

    @inline(__always)
    static func byte(_ packed: UInt64, _ i: Int) -> Float {
        Float(UInt8(truncatingIfNeeded: packed >> UInt64(8 * i)))
    }

    static func dequantizeQ4K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = loadHalf(p, 0), dmin = loadHalf(p, 2)
        let (sc, mn) = unpackScales(p + 4)
        for c in 0..<4 {
            let d1 = d * byte(sc, 2 * c), m1 = dmin * byte(mn, 2 * c)
            let d2 = d * byte(sc, 2 * c + 1), m2 = dmin * byte(mn, 2 * c + 1)
            for half in 0..<2 {
                let q = loadBytes16(p, 16 + 32 * c + 16 * half)
                storeFloats16(floats(q & 0xF) * d1 - m1, y + 64 * c + 16 * half)
                storeFloats16(floats(q &>> 4) * d2 - m2, y + 64 * c + 32 + 16 * half)
            }
        }
    }

    static func dequantizeQ5K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = loadHalf(p, 0), dmin = loadHalf(p, 2)
        let (sc, mn) = unpackScales(p + 4)
        for c in 0..<4 {
            let d1 = d * byte(sc, 2 * c), m1 = dmin * byte(mn, 2 * c)
            let d2 = d * byte(sc, 2 * c + 1), m2 = dmin * byte(mn, 2 * c + 1)
            for half in 0..<2 {
                let qh = loadBytes16(p, 16 + 16 * half)
                let q = loadBytes16(p, 48 + 32 * c + 16 * half)
                let hi1 = ((qh &>> UInt8(2 * c)) & 1) &<< 4
                let hi2 = ((qh &>> UInt8(2 * c + 1)) & 1) &<< 4
                storeFloats16(floats((q & 0xF) | hi1) * d1 - m1, y + 64 * c + 16 * half)
                storeFloats16(floats((q &>> 4) | hi2) * d2 - m2, y + 64 * c + 32 + 16 * half)
            }
        }
    }

    static func dequantizeQ6K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = loadHalf(p, 208)
        for h in 0..<2 {
            let ql = 64 * h, qh = 128 + 32 * h, sc = 192 + 8 * h
            let out = y + 128 * h
            for part in 0..<2 {  // l in 16·part ..< 16·part + 16 shares one scale per group
                let l = 16 * part
                let a = loadBytes16(p, ql + l), b = loadBytes16(p, ql + 32 + l)
                let hb = loadBytes16(p, qh + l)
                @inline(__always) func emit(_ q: SIMD16<UInt8>, _ start: Int) {
                    let scale = d * Float(p.load(fromByteOffset: sc + (start + l) / 16, as: Int8.self))
                    storeFloats16((floats(q) - 32) * scale, out + start + l)
                }
                emit((a & 0xF) | (hb & 3) &<< 4, 0)
                emit((b & 0xF) | ((hb &>> 2) & 3) &<< 4, 32)
                emit((a &>> 4) | ((hb &>> 4) & 3) &<< 4, 64)
                emit((b &>> 4) | (hb &>> 6) &<< 4, 96)
            }
        }
    }

    static func dequantizeQ8K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = p.loadUnaligned(as: Float.self)
        for i in stride(from: 0, to: 256, by: 16) {
            storeFloats16(floats(p.loadUnaligned(fromByteOffset: 4 + i, as: SIMD16<Int8>.self)) * d, y + i)
        }
    }
}
