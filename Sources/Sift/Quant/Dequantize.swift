// Conversion of ggml tensor rows to f32.
//
// Every format stores its blocks back to back with no padding; multi-byte fields are
// little-endian and may be unaligned (an f16 scale followed by an odd number of bytes), so
// all reads here are `loadUnaligned`. "f16" is IEEE binary16, "bf16" the top half of an f32.
//
// Plain element types:
//   F32   4 bytes per value.
//   F16   2 bytes per value.
//   BF16  2 bytes per value; value = f32 with these 16 bits as its high half.
//
// 32-value block formats (`y` is the value, `q` the stored quant, `j` in 0..<16):
//   Q4_0  18 bytes: f16 d | u8 qs[16]
//         q[j] = qs[j] & 0xF, q[j+16] = qs[j] >> 4;              y = d·(q − 8)
//   Q4_1  20 bytes: f16 d | f16 m | u8 qs[16]
//         q as in Q4_0;                                           y = d·q + m
//   Q5_0  22 bytes: f16 d | u32 qh | u8 qs[16]
//         q[j] = (qs[j] & 0xF) | bit j of qh << 4,
//         q[j+16] = (qs[j] >> 4) | bit (j+16) of qh << 4;         y = d·(q − 16)
//   Q5_1  24 bytes: f16 d | f16 m | u32 qh | u8 qs[16]
//         q as in Q5_0;                                           y = d·q + m
//   Q8_0  34 bytes: f16 d | i8 qs[32];                            y = d·qs[i]
//   Q8_1  36 bytes: f16 d | f16 s | i8 qs[32];                    y = d·qs[i]
//         (s = d·Σqs, kept for ggml compatibility; sift's dots recompute the exact sum)
//
// The 256-value K formats (Q4_K, Q5_K, Q6_K, Q8_K) are described in KQuants.swift.

/// Reads the f16 at `p + offset` as a Float.
@inline(__always)
func loadHalf(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
}

/// Stores `x` rounded to f16 at `p + offset` and returns the stored value as a Float.
@inline(__always)
@discardableResult
func storeHalf(_ x: Float, _ p: UnsafeMutableRawPointer, _ offset: Int) -> Float {
    let h = Float16(x)
    p.storeBytes(of: h.bitPattern, toByteOffset: offset, as: UInt16.self)
    return Float(h)
}

@inline(__always)
func storeFloats16(_ v: SIMD16<Float>, _ dst: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(dst).storeBytes(of: v, as: SIMD16<Float>.self)
}

@inline(__always)
func loadBytes16(_ p: UnsafeRawPointer, _ offset: Int) -> SIMD16<UInt8> {
    p.loadUnaligned(fromByteOffset: offset, as: SIMD16<UInt8>.self)
}

/// Widens 16 small unsigned quants to floats.
@inline(__always)
func floats(_ q: SIMD16<UInt8>) -> SIMD16<Float> {
    SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q))
}

/// Widens 16 signed quants to floats.
@inline(__always)
func floats(_ q: SIMD16<Int8>) -> SIMD16<Float> {
    SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q))
}

/// Spreads bits `first ..< first+16` of `bits` into 16 bytes holding 0 or `value`.
@inline(__always)
func spreadBits16(_ bits: UInt32, from first: Int, value: UInt8) -> SIMD16<UInt8> {
    let lanes = SIMD16<UInt32>(repeating: bits &>> UInt32(first))
    let shifts = SIMD16<UInt32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    let set = SIMD16<UInt8>(truncatingIfNeeded: (lanes &>> shifts) & 1)
    return set &* value
}

public enum Dequantize {
    /// Converts `count` values (a multiple of type.blockSize) starting at `src` to f32.
    ///
    /// Supports every type in `GGMLType.isSupported` plus the activation formats Q8_1 and Q8_K.
    public static func row(_ type: GGMLType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, count: Int) {
        precondition(count % type.blockSize == 0, "\(type) row of \(count) values is not a whole number of blocks")
        let blocks = count / type.blockSize
        let bs = type.bytesPerBlock
        switch type {
        case .f32:
            UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: count * 4)
        case .f16:
            var i = 0
            while i + 16 <= count {
                storeFloats16(SIMD16<Float>(src.loadUnaligned(fromByteOffset: 2 * i, as: SIMD16<Float16>.self)), dst + i)
                i += 16
            }
            while i < count { dst[i] = loadHalf(src, 2 * i); i += 1 }
        case .bf16:
            var i = 0
            while i + 16 <= count {
                let h = src.loadUnaligned(fromByteOffset: 2 * i, as: SIMD16<UInt16>.self)
                let w = SIMD16<UInt32>(truncatingIfNeeded: h) &<< 16
                storeFloats16(unsafeBitCast(w, to: SIMD16<Float>.self), dst + i)
                i += 16
            }
            while i < count {
                dst[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)
                i += 1
            }
        case .q4_0, .q4_1:
            let hasMin = type == .q4_1
            let qsOffset = hasMin ? 4 : 2
            for b in 0..<blocks {
                let p = src + b * bs, y = dst + b * 32
                let d = loadHalf(p, 0)
                let qs = loadBytes16(p, qsOffset)
                // Q4_0 centres the quants at 8; Q4_1 adds its stored minimum instead.
                let center: Float = hasMin ? 0 : 8
                let m = hasMin ? loadHalf(p, 2) : 0
                storeFloats16((floats(qs & 0xF) - center) * d + m, y)
                storeFloats16((floats(qs &>> 4) - center) * d + m, y + 16)
            }
        case .q5_0, .q5_1:
            let hasMin = type == .q5_1
            let qhOffset = hasMin ? 4 : 2
            for b in 0..<blocks {
                let p = src + b * bs, y = dst + b * 32
                let d = loadHalf(p, 0)
                let qh = p.loadUnaligned(fromByteOffset: qhOffset, as: UInt32.self)
                let qs = loadBytes16(p, qhOffset + 4)
                let center: Float = hasMin ? 0 : 16
                let m = hasMin ? loadHalf(p, 2) : 0
                storeFloats16((floats((qs & 0xF) | spreadBits16(qh, from: 0, value: 16)) - center) * d + m, y)
                storeFloats16((floats((qs &>> 4) | spreadBits16(qh, from: 16, value: 16)) - center) * d + m, y + 16)
            }
        case .q8_0, .q8_1:
            let qsOffset = type == .q8_0 ? 2 : 4
            for b in 0..<blocks {
                let p = src + b * bs, y = dst + b * 32
                let d = loadHalf(p, 0)
                storeFloats16(floats(p.loadUnaligned(fromByteOffset: qsOffset, as: SIMD16<Int8>.self)) * d, y)
                storeFloats16(floats(p.loadUnaligned(fromByteOffset: qsOffset + 16, as: SIMD16<Int8>.self)) * d, y + 16)
            }
        case .q4_K:
            for b in 0..<blocks { KQuants.dequantizeQ4K(src + b * bs, dst + b * 256) }
        case .q5_K:
            for b in 0..<blocks { KQuants.dequantizeQ5K(src + b * bs, dst + b * 256) }
        case .q6_K:
            for b in 0..<blocks { KQuants.dequantizeQ6K(src + b * bs, dst + b * 256) }
        case .q8_K:
            for b in 0..<blocks { KQuants.dequantizeQ8K(src + b * bs, dst + b * 256) }
        default:
            preconditionFailure("Dequantize.row: \(type) is not supported")
        }
    }
}
