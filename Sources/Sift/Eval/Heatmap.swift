/// A depth × length grid of scores, drawn like gkamradt's NIAH heatmaps (green = found, red =
/// missed, yellow in between; grey = not run), as SVG and as PNG.
public struct Heatmap {
    public var title: String
    /// Column labels (context lengths) and row labels (depths), left to right and top to bottom.
    public var columns: [String]
    public var rows: [String]
    /// Scores 0…1 per [row][column]; nil where the cell has no result.
    public var values: [[Double?]]
    public var xLabel = "Context length (tokens)"
    public var yLabel = "Depth (%)"

    public init(title: String, columns: [String], rows: [String], values: [[Double?]]) {
        self.title = title
        self.columns = columns
        self.rows = rows
        self.values = values
    }

    /// The grid of a task's results: columns the lengths, rows the depths.
    public init(results: EvalResults, task: String) {
        let cells = results.cells.filter { $0.task == task }
        let lengths = Array(Set(cells.map(\.length))).sorted()
        let depths = Array(Set(cells.compactMap(\.depth))).sorted()
        var v = Array(repeating: Array(repeating: Double?.none, count: lengths.count), count: depths.count)
        for (r, d) in depths.enumerated() {
            for (c, l) in lengths.enumerated() {
                let m = cells.filter { $0.depth == d && $0.length == l }
                if !m.isEmpty { v[r][c] = m.reduce(0) { $0 + $1.score } / Double(m.count) }
            }
        }
        self.init(title: "\(task) — \(FS.basename(results.model)) — \(results.attention.label)",
                  columns: lengths.map(Heatmap.lengthLabel), rows: depths.map(Heatmap.number), values: v)
    }

    /// 1024 → "1k", 1500 → "1500".
    public static func lengthLabel(_ n: Int) -> String { n % 1024 == 0 ? "\(n / 1024)k" : "\(n)" }
    static func number(_ x: Double) -> String { x == x.rounded() ? "\(Int(x))" : "\(x)" }

    /// Colour of a score: red (#F0496E) → yellow (#EBB839) → green (#0CD79F); grey if nil.
    public static func color(_ v: Double?) -> (UInt8, UInt8, UInt8) {
        guard let v else { return (0xDD, 0xDD, 0xDD) }
        let red = (240.0, 73.0, 110.0), yellow = (235.0, 184.0, 57.0), green = (12.0, 215.0, 159.0)
        let t = min(max(v, 0), 1)
        let (a, b, f) = t < 0.5 ? (red, yellow, t * 2) : (yellow, green, t * 2 - 1)
        func mix(_ x: Double, _ y: Double) -> UInt8 { UInt8((x + (y - x) * f).rounded()) }
        return (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
    }

    static func hex(_ c: (UInt8, UInt8, UInt8)) -> String {
        let d = Array("0123456789ABCDEF")
        return "#" + [c.0, c.1, c.2].map { String([d[Int($0 >> 4)], d[Int($0 & 15)]]) }.joined()
    }

    // MARK: SVG

    public static let svgCell = (w: 60, h: 28)
    public static let svgMargin = (left: 110, top: 40, right: 20, bottom: 60)

    public var svgSize: (width: Int, height: Int) {
        let m = Heatmap.svgMargin, c = Heatmap.svgCell
        return (m.left + columns.count * c.w + m.right, m.top + rows.count * c.h + m.bottom)
    }

    public func svg() -> String {
        let m = Heatmap.svgMargin, c = Heatmap.svgCell
        let (w, h) = svgSize
        var s = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        s += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(w)\" height=\"\(h)\" viewBox=\"0 0 \(w) \(h)\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect x=\"0\" y=\"0\" width=\"\(w)\" height=\"\(h)\" fill=\"#FFFFFF\"/>\n"
        s += "<text x=\"\(w / 2)\" y=\"24\" text-anchor=\"middle\" font-size=\"14\">\(Heatmap.escape(title))</text>\n"
        for (r, label) in rows.enumerated() {
            let y = m.top + r * c.h
            s += "<text x=\"\(m.left - 8)\" y=\"\(y + c.h / 2 + 4)\" text-anchor=\"end\">\(Heatmap.escape(label))</text>\n"
            for col in columns.indices {
                let v = values[r][col]
                let score = v.map { "\(Int(($0 * 100).rounded()))%" } ?? "not run"
                s += "<rect x=\"\(m.left + col * c.w)\" y=\"\(y)\" width=\"\(c.w)\" height=\"\(c.h)\" fill=\"\(Heatmap.hex(Heatmap.color(v)))\" stroke=\"#FFFFFF\"><title>depth \(Heatmap.escape(label)), length \(Heatmap.escape(columns[col])): \(score)</title></rect>\n"
            }
        }
        let bottom = m.top + rows.count * c.h
        for (col, label) in columns.enumerated() {
            s += "<text x=\"\(m.left + col * c.w + c.w / 2)\" y=\"\(bottom + 16)\" text-anchor=\"middle\">\(Heatmap.escape(label))</text>\n"
        }
        s += "<text x=\"\(m.left + columns.count * c.w / 2)\" y=\"\(bottom + 40)\" text-anchor=\"middle\">\(Heatmap.escape(xLabel))</text>\n"
        s += "<text x=\"20\" y=\"\(m.top + rows.count * c.h / 2)\" text-anchor=\"middle\" transform=\"rotate(-90 20 \(m.top + rows.count * c.h / 2))\">\(Heatmap.escape(yLabel))</text>\n"
        s += "</svg>\n"
        return s
    }

    static func escape(_ s: String) -> String {
        var o = ""
        for ch in s {
            switch ch {
            case "&": o += "&amp;"
            case "<": o += "&lt;"
            case ">": o += "&gt;"
            case "\"": o += "&quot;"
            default: o.append(ch)
            }
        }
        return o
    }

    // MARK: PNG

    public static let pngCell = (w: 32, h: 16)
    /// Left margin holds the depth labels, the bottom one the length labels (3×5 pixel digits at scale 2).
    public static let pngMargin = (left: 36, top: 4, right: 4, bottom: 18)

    public var pngSize: (width: Int, height: Int) {
        let m = Heatmap.pngMargin, c = Heatmap.pngCell
        return (m.left + columns.count * c.w + m.right, m.top + rows.count * c.h + m.bottom)
    }

    /// Top-left pixel of a cell's square in the PNG.
    public static func pngCellOrigin(row: Int, column: Int) -> (x: Int, y: Int) {
        (pngMargin.left + column * pngCell.w, pngMargin.top + row * pngCell.h)
    }

    /// RGB pixels of the PNG image: white background, cells separated by 1-pixel white lines,
    /// labels in dark grey.
    public func pixels() -> (width: Int, height: Int, rgb: [UInt8]) {
        let (w, h) = pngSize
        var px = [UInt8](repeating: 255, count: w * h * 3)
        func fill(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ c: (UInt8, UInt8, UInt8)) {
            for y in max(0, y0)..<min(h, y1) {
                for x in max(0, x0)..<min(w, x1) {
                    let i = (y * w + x) * 3
                    px[i] = c.0; px[i + 1] = c.1; px[i + 2] = c.2
                }
            }
        }
        let c = Heatmap.pngCell
        for r in rows.indices {
            for col in columns.indices {
                let (x, y) = Heatmap.pngCellOrigin(row: r, column: col)
                fill(x, y, x + c.w - 1, y + c.h - 1, Heatmap.color(values[r][col]))
            }
        }
        let ink: (UInt8, UInt8, UInt8) = (0x33, 0x33, 0x33)
        func text(_ s: String, rightX: Int, y: Int) {
            let scale = 2
            var x = rightX - s.count * 4 * scale + scale
            for ch in s {
                if let g = Heatmap.glyphs[ch] {
                    for (gy, bits) in g.enumerated() {
                        for gx in 0..<3 where bits & (4 >> gx) != 0 {
                            fill(x + gx * scale, y + gy * scale, x + (gx + 1) * scale, y + (gy + 1) * scale, ink)
                        }
                    }
                }
                x += 4 * scale
            }
        }
        let m = Heatmap.pngMargin
        for (r, label) in rows.enumerated() {
            text(label, rightX: m.left - 4, y: m.top + r * c.h + (c.h - 10) / 2)
        }
        for (col, label) in columns.enumerated() {
            let x = m.left + col * c.w
            text(label, rightX: x + (c.w + label.count * 8) / 2 - 1, y: m.top + rows.count * c.h + 4)
        }
        return (w, h, px)
    }

    public func png() -> [UInt8] {
        let p = pixels()
        return PNGEncoder.encode(width: p.width, height: p.height, rgb: p.rgb)
    }

    /// 3×5 pixel glyphs, one row a byte (bit 2 = left column).
    static let glyphs: [Character: [UInt8]] = [
        "0": [7, 5, 5, 5, 7], "1": [2, 6, 2, 2, 7], "2": [7, 1, 7, 4, 7], "3": [7, 1, 7, 1, 7],
        "4": [5, 5, 7, 1, 1], "5": [7, 4, 7, 1, 7], "6": [7, 4, 7, 5, 7], "7": [7, 1, 1, 1, 1],
        "8": [7, 5, 7, 5, 7], "9": [7, 5, 7, 1, 7], "k": [4, 5, 6, 5, 5], ".": [0, 0, 0, 0, 2],
        "%": [5, 1, 2, 4, 5], "-": [0, 0, 7, 0, 0],
    ]
}
