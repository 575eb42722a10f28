// TEMPORARY scalar dequantization used only until the Quant module lands; deleted at merge.
@inline(__always) func tmpHalf(_ p: UnsafeRawPointer, _ off: Int) -> Float {
    Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: off, as: UInt16.self)))
}

func tmpDequantize(_ type: GGMLType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, count: Int) {
    let nb = count / type.blockSize
    let bs = type.bytesPerBlock
    switch type {
    case .f32:
        dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
    case .f16:
        for i in 0..<count { dst[i] = tmpHalf(src, 2 * i) }
    case .q8_0:
        for b in 0..<nb {
            let p = src + b * bs
            let d = tmpHalf(p, 0)
            for j in 0..<32 { dst[b * 32 + j] = d * Float(p.load(fromByteOffset: 2 + j, as: Int8.self)) }
        }
    case .q5_0:
        for b in 0..<nb {
            let p = src + b * bs
            let d = tmpHalf(p, 0)
            let qh = p.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
            for j in 0..<16 {
                let byte = p.load(fromByteOffset: 6 + j, as: UInt8.self)
                let lo = Int(byte & 0xF) | Int((qh >> UInt32(j)) & 1) << 4
                let hi = Int(byte >> 4) | Int((qh >> UInt32(j + 16)) & 1) << 4
                dst[b * 32 + j] = d * Float(lo - 16)
                dst[b * 32 + j + 16] = d * Float(hi - 16)
            }
        }
    case .q4_K:
        for b in 0..<nb {
            let p = src + b * bs
            let d = tmpHalf(p, 0), dmin = tmpHalf(p, 2)
            let sc = p + 4
            func scaleMin(_ j: Int) -> (Float, Float) {
                let s = { (i: Int) in Int(sc.load(fromByteOffset: i, as: UInt8.self)) }
                if j < 4 { return (Float(s(j) & 63), Float(s(j + 4) & 63)) }
                return (Float((s(j + 4) & 0xF) | ((s(j - 4) >> 6) << 4)), Float((s(j + 4) >> 4) | ((s(j) >> 6) << 4)))
            }
            let q = p + 16
            for c in 0..<4 {
                let (s1, m1) = scaleMin(2 * c), (s2, m2) = scaleMin(2 * c + 1)
                for l in 0..<32 {
                    let byte = q.load(fromByteOffset: c * 32 + l, as: UInt8.self)
                    dst[b * 256 + c * 64 + l] = d * s1 * Float(byte & 0xF) - dmin * m1
                    dst[b * 256 + c * 64 + 32 + l] = d * s2 * Float(byte >> 4) - dmin * m2
                }
            }
        }
    case .q6_K:
        for b in 0..<nb {
            let p = src + b * bs
            let ql = p, qh = p + 128, sc = p + 192
            let d = tmpHalf(p, 208)
            for half in 0..<2 {
                let qlh = ql + half * 64, qhh = qh + half * 32, sch = sc + half * 8
                for l in 0..<32 {
                    let si = l / 16
                    let a = Int(qlh.load(fromByteOffset: l, as: UInt8.self))
                    let a2 = Int(qlh.load(fromByteOffset: l + 32, as: UInt8.self))
                    let h = Int(qhh.load(fromByteOffset: l, as: UInt8.self))
                    let q1 = ((a & 0xF) | ((h >> 0) & 3) << 4) - 32
                    let q2 = ((a2 & 0xF) | ((h >> 2) & 3) << 4) - 32
                    let q3 = ((a >> 4) | ((h >> 4) & 3) << 4) - 32
                    let q4 = ((a2 >> 4) | ((h >> 6) & 3) << 4) - 32
                    let s = { (i: Int) in Float(sch.load(fromByteOffset: i, as: Int8.self)) }
                    let o = b * 256 + half * 128
                    dst[o + l] = d * s(si) * Float(q1)
                    dst[o + l + 32] = d * s(si + 2) * Float(q2)
                    dst[o + l + 64] = d * s(si + 4) * Float(q3)
                    dst[o + l + 96] = d * s(si + 6) * Float(q4)
                }
            }
        }
    default:
        fatalError("temp dequant: \(type) not supported")
    }
}
