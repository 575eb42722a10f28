/// Writes 8-bit RGB images as PNG files (no Foundation): signature, IHDR, one IDAT holding a
/// zlib stream from `Deflate`, IEND; each chunk with its CRC-32. Rows are filtered with "Up"
/// (filter type 2; the first row with "None"), so rows that repeat the row above become zeros.
public enum PNGEncoder {
    public static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// - Parameter rgb: width × height × 3 bytes, rows top to bottom.
    public static func encode(width: Int, height: Int, rgb: [UInt8]) -> [UInt8] {
        precondition(width > 0 && height > 0 && rgb.count == width * height * 3, "bad image size")
        let stride = width * 3
        var raw: [UInt8] = []
        raw.reserveCapacity((stride + 1) * height)
        for y in 0..<height {
            let row = rgb[(y * stride)..<((y + 1) * stride)]
            if y == 0 {
                raw.append(0)
                raw += row
            } else {
                raw.append(2)
                let above = (y - 1) * stride
                for (i, b) in row.enumerated() { raw.append(b &- rgb[above + i]) }
            }
        }
        var out = signature
        var ihdr: [UInt8] = []
        be32(UInt32(width), &ihdr)
        be32(UInt32(height), &ihdr)
        ihdr += [8, 2, 0, 0, 0]  // 8 bits, RGB, deflate, adaptive filtering, no interlace
        chunk("IHDR", ihdr, &out)
        chunk("IDAT", Deflate.zlib(raw), &out)
        chunk("IEND", [], &out)
        return out
    }

    static func be32(_ v: UInt32, _ out: inout [UInt8]) {
        out += [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
    }

    static func chunk(_ type: String, _ data: [UInt8], _ out: inout [UInt8]) {
        be32(UInt32(data.count), &out)
        let t = Array(type.utf8)
        out += t
        out += data
        be32(Checksums.crc32(data, crc: Checksums.crc32(t)), &out)
    }
}
