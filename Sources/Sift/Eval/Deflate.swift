/// A small DEFLATE (RFC 1951) compressor: one block with the fixed Huffman codes, matches
/// found by greedy LZ77 with a hash of the next three bytes (most recent position only) plus
/// a check of the previous byte (runs). Enough for flat images; not a general-purpose zlib.
public enum Deflate {
    struct BitWriter {
        var bytes: [UInt8] = []
        var acc: UInt32 = 0
        var count = 0

        /// Writes the low `n` bits of `v`, least significant first.
        mutating func write(_ v: UInt32, _ n: Int) {
            acc |= (v & ((1 << n) - 1)) << count
            count += n
            while count >= 8 {
                bytes.append(UInt8(acc & 0xff))
                acc >>= 8
                count -= 8
            }
        }

        /// Writes a Huffman code of `n` bits, most significant bit first.
        mutating func writeCode(_ code: UInt32, _ n: Int) {
            var r: UInt32 = 0
            for i in 0..<n where code & (1 << i) != 0 { r |= 1 << (n - 1 - i) }
            write(r, n)
        }

        mutating func flush() {
            if count > 0 { bytes.append(UInt8(acc & 0xff)) }
            acc = 0
            count = 0
        }
    }

    static let lengthBase: [Int] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59,
                                    67, 83, 99, 115, 131, 163, 195, 227, 258]
    static let lengthExtra: [Int] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    static let distBase: [Int] = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769,
                                  1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577]
    static let distExtra: [Int] = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11,
                                   12, 12, 13, 13]

    /// Fixed literal/length code of symbol `s` (0…287).
    static func writeSymbol(_ s: Int, _ w: inout BitWriter) {
        switch s {
        case 0...143: w.writeCode(UInt32(0x30 + s), 8)
        case 144...255: w.writeCode(UInt32(0x190 + s - 144), 9)
        case 256...279: w.writeCode(UInt32(s - 256), 7)
        default: w.writeCode(UInt32(0xC0 + s - 280), 8)
        }
    }

    static func writeMatch(length: Int, distance: Int, _ w: inout BitWriter) {
        var li = lengthBase.count - 1
        while lengthBase[li] > length { li -= 1 }
        writeSymbol(257 + li, &w)
        if lengthExtra[li] > 0 { w.write(UInt32(length - lengthBase[li]), lengthExtra[li]) }
        var di = distBase.count - 1
        while distBase[di] > distance { di -= 1 }
        w.writeCode(UInt32(di), 5)
        if distExtra[di] > 0 { w.write(UInt32(distance - distBase[di]), distExtra[di]) }
    }

    /// Raw DEFLATE data of `data`.
    public static func compress(_ data: [UInt8]) -> [UInt8] {
        var w = BitWriter()
        w.write(1, 1)  // BFINAL
        w.write(1, 2)  // BTYPE = 01, fixed Huffman
        let n = data.count
        let window = 32768, maxLen = 258
        var head = [Int](repeating: -1, count: 1 << 15)
        func hash(_ i: Int) -> Int {
            (Int(data[i]) << 10 ^ Int(data[i + 1]) << 5 ^ Int(data[i + 2])) & 0x7fff
        }
        func matchLength(_ a: Int, _ b: Int) -> Int {
            var l = 0
            let limit = min(maxLen, n - b)
            while l < limit && data[a + l] == data[b + l] { l += 1 }
            return l
        }
        var i = 0
        while i < n {
            var bestLen = 0, bestDist = 0
            if i + 2 < n {
                // A run: the previous byte repeated.
                if i > 0 {
                    let l = matchLength(i - 1, i)
                    if l >= 3 { bestLen = l; bestDist = 1 }
                }
                let h = hash(i)
                let cand = head[h]
                if cand >= 0 && i - cand <= window && bestLen < maxLen {
                    let l = matchLength(cand, i)
                    if l >= 3 && l > bestLen { bestLen = l; bestDist = i - cand }
                }
                head[h] = i
            }
            if bestLen >= 3 {
                writeMatch(length: bestLen, distance: bestDist, &w)
                // Index the positions the match covers (cheaply: every position).
                var j = i + 1
                while j < i + bestLen && j + 2 < n { head[hash(j)] = j; j += 1 }
                i += bestLen
            } else {
                writeSymbol(Int(data[i]), &w)
                i += 1
            }
        }
        writeSymbol(256, &w)
        w.flush()
        return w.bytes
    }

    /// A zlib stream (RFC 1950) of `data`: header, DEFLATE data, Adler-32.
    public static func zlib(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]  // deflate, 32K window, fastest; (0x78 << 8 | 0x01) % 31 == 0
        out += compress(data)
        let a = Checksums.adler32(data)
        out += [UInt8(a >> 24), UInt8((a >> 16) & 0xff), UInt8((a >> 8) & 0xff), UInt8(a & 0xff)]
        return out
    }
}
