import Foundation
import XCTest
#if canImport(FoundationXML)
import FoundationXML
#endif
@testable import Sift

/// A small inflater written for the test (stored and fixed-Huffman blocks only, which is all
/// sift's encoder writes), with its own bit-at-a-time CRC-32 and Adler-32.
enum TestInflate {
    struct Failure: Error { let message: String }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = (c >> 1) ^ (c & 1 == 1 ? 0xEDB8_8320 : 0) }
        }
        return c ^ 0xFFFF_FFFF
    }

    static func adler32(_ bytes: [UInt8]) -> UInt32 {
        var a: UInt32 = 1, b: UInt32 = 0
        for x in bytes { a = (a + UInt32(x)) % 65521; b = (b + a) % 65521 }
        return b << 16 | a
    }

    static func zlib(_ z: [UInt8]) throws -> [UInt8] {
        guard z.count >= 6, z[0] & 0x0f == 8, (Int(z[0]) << 8 | Int(z[1])) % 31 == 0 else { throw Failure(message: "bad zlib header") }
        let out = try inflate(Array(z[2..<(z.count - 4)]))
        let a = z.suffix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard a == adler32(out) else { throw Failure(message: "adler32 mismatch") }
        return out
    }

    static func inflate(_ d: [UInt8]) throws -> [UInt8] {
        var pos = 0
        func bit() throws -> Int {
            guard pos / 8 < d.count else { throw Failure(message: "out of data") }
            let b = Int(d[pos / 8] >> (pos % 8)) & 1
            pos += 1
            return b
        }
        func bits(_ n: Int) throws -> Int { var v = 0; for i in 0..<n { v |= try bit() << i }; return v }
        let lbase = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258]
        let lext = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
        var dbase = [1, 2, 3, 4], dext = [0, 0, 0, 0]
        for i in 4..<30 { dext.append(i / 2 - 1); dbase.append(dbase[i - 1] + 1 << dext[i - 1]) }
        var out: [UInt8] = []
        var final = 0
        repeat {
            final = try bit()
            let type = try bits(2)
            if type == 0 {
                pos = (pos + 7) / 8 * 8
                let len = try bits(16), nlen = try bits(16)
                guard len == ~nlen & 0xffff else { throw Failure(message: "bad stored length") }
                for _ in 0..<len { out.append(UInt8(try bits(8))) }
            } else if type == 1 {
                while true {
                    var code = 0
                    for _ in 0..<7 { code = code << 1 | (try bit()) }
                    var sym: Int
                    if code <= 23 { sym = 256 + code } else {
                        code = code << 1 | (try bit())
                        if code >= 0x30 && code <= 0xBF { sym = code - 0x30 } else if code >= 0xC0 && code <= 0xC7 { sym = 280 + code - 0xC0 } else {
                            code = code << 1 | (try bit())
                            guard code >= 0x190 && code <= 0x1FF else { throw Failure(message: "bad code") }
                            sym = 144 + code - 0x190
                        }
                    }
                    if sym < 256 { out.append(UInt8(sym)); continue }
                    if sym == 256 { break }
                    guard sym - 257 < 29 else { throw Failure(message: "bad length symbol") }
                    let len = lbase[sym - 257] + (try bits(lext[sym - 257]))
                    var dc = 0
                    for _ in 0..<5 { dc = dc << 1 | (try bit()) }
                    guard dc < 30 else { throw Failure(message: "bad distance code") }
                    let dist = dbase[dc] + (try bits(dext[dc]))
                    guard dist <= out.count else { throw Failure(message: "distance before start") }
                    for _ in 0..<len { out.append(out[out.count - dist]) }
                }
            } else {
                throw Failure(message: "block type \(type) not expected")
            }
        } while final == 0
        return out
    }

    /// Decodes an 8-bit RGB PNG: checks the signature and every chunk CRC; returns the pixels.
    static func png(_ p: [UInt8]) throws -> (width: Int, height: Int, rgb: [UInt8], chunks: [String]) {
        guard Array(p.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] else { throw Failure(message: "signature") }
        var i = 8, w = 0, h = 0
        var idat: [UInt8] = [], chunks: [String] = []
        func be(_ at: Int) -> Int { Int(p[at]) << 24 | Int(p[at + 1]) << 16 | Int(p[at + 2]) << 8 | Int(p[at + 3]) }
        while i < p.count {
            let len = be(i)
            let type = String(decoding: p[(i + 4)..<(i + 8)], as: UTF8.self)
            let body = Array(p[(i + 8)..<(i + 8 + len)])
            guard UInt32(be(i + 8 + len)) == crc32(Array(p[(i + 4)..<(i + 8)]) + body) else { throw Failure(message: "\(type) CRC") }
            chunks.append(type)
            if type == "IHDR" {
                w = Int(body[0]) << 24 | Int(body[1]) << 16 | Int(body[2]) << 8 | Int(body[3])
                h = Int(body[4]) << 24 | Int(body[5]) << 16 | Int(body[6]) << 8 | Int(body[7])
                guard Array(body[8...]) == [8, 2, 0, 0, 0] else { throw Failure(message: "not 8-bit RGB") }
            }
            if type == "IDAT" { idat += body }
            i += 12 + len
        }
        let raw = try zlib(idat)
        let stride = w * 3
        guard raw.count == h * (stride + 1) else { throw Failure(message: "IDAT size \(raw.count)") }
        var rgb: [UInt8] = []
        for y in 0..<h {
            let f = raw[y * (stride + 1)]
            for x in 0..<stride {
                let v = raw[y * (stride + 1) + 1 + x]
                switch f {
                case 0: rgb.append(v)
                case 2: rgb.append(v &+ (y > 0 ? rgb[(y - 1) * stride + x] : 0))
                default: throw Failure(message: "filter \(f)")
                }
            }
        }
        return (w, h, rgb, chunks)
    }
}

final class EvalOutputTests: XCTestCase {
    func testDeflateRoundTripsRandomData() throws {
        var g = SystemRandomNumberGenerator()
        for _ in 0..<6 {
            // Runs, repeats at random distances and noise.
            var d: [UInt8] = []
            while d.count < Int.random(in: 1000...70_000, using: &g) {
                switch Int.random(in: 0..<3, using: &g) {
                case 0: d += Array(repeating: UInt8.random(in: 0...255, using: &g), count: Int.random(in: 1...600, using: &g))
                case 1 where d.count > 10:
                    let from = Int.random(in: 0..<d.count, using: &g)
                    d += Array(d[from..<min(d.count, from + Int.random(in: 3...300, using: &g))])
                default: d += (0..<Int.random(in: 1...50, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) }
                }
            }
            XCTAssertEqual(try TestInflate.zlib(Deflate.zlib(d)), d)
        }
        XCTAssertEqual(try TestInflate.zlib(Deflate.zlib([])), [])
        XCTAssertEqual(Checksums.crc32(Array("123456789".utf8)), 0xCBF4_3926)
        XCTAssertEqual(Checksums.adler32(Array("Wikipedia".utf8)), 0x11E6_0398)
    }

    func testHeatmapPNG() throws {
        let values: [[Double?]] = [[1, 0, nil], [0.5, 1, 0], [0, 0.25, 1]]
        let map = Heatmap(title: "t", columns: ["1k", "2k", "32k"], rows: ["0", "50", "100"], values: values)
        let png = map.png()
        XCTAssertLessThan(png.count, 4000, "flat cells should compress well")
        let img = try TestInflate.png(png)
        XCTAssertEqual(img.chunks, ["IHDR", "IDAT", "IEND"])
        XCTAssertEqual(img.width, map.pngSize.width)
        XCTAssertEqual(img.height, map.pngSize.height)
        func pixel(_ x: Int, _ y: Int) -> [UInt8] { Array(img.rgb[((y * img.width + x) * 3)..<((y * img.width + x) * 3 + 3)]) }
        let green: [UInt8] = [12, 215, 159], red: [UInt8] = [240, 73, 110], yellow: [UInt8] = [235, 184, 57], grey: [UInt8] = [221, 221, 221]
        for r in 0..<3 {
            for c in 0..<3 {
                let o = Heatmap.pngCellOrigin(row: r, column: c)
                let center = pixel(o.x + Heatmap.pngCell.w / 2, o.y + Heatmap.pngCell.h / 2)
                let want: [UInt8]
                switch values[r][c] {
                case nil: want = grey
                case 1?: want = green
                case 0?: want = red
                case 0.5?: want = yellow
                default: let col = Heatmap.color(0.25); want = [col.0, col.1, col.2]
                }
                XCTAssertEqual(center, want, "cell \(r),\(c)")
            }
        }
        XCTAssertEqual(pixel(img.width - 1, 0), [255, 255, 255])
        // A label pixel is dark: the "1" of the 1k label has its stem in the middle column.
        var dark = 0
        for y in (img.height - 18)..<img.height { for x in 0..<img.width where pixel(x, y) == [0x33, 0x33, 0x33] { dark += 1 } }
        XCTAssertGreaterThan(dark, 20)
    }

    func testHeatmapSVGIsWellFormed() throws {
        let map = Heatmap(title: "niah <gemma> & co", columns: ["1k", "2k"], rows: ["0", "50", "100"],
                          values: [[1, 0], [nil, 1], [0.5, 0]])
        let data = Data(map.svg().utf8)
        final class Delegate: NSObject, XMLParserDelegate {
            var root: [String: String]?
            var rects = 0
            func parser(_ p: XMLParser, didStartElement e: String, namespaceURI: String?, qualifiedName: String?, attributes a: [String: String] = [:]) {
                if root == nil { root = a.merging(["_name": e]) { x, _ in x } }
                if e == "rect" { rects += 1 }
            }
        }
        let d = Delegate()
        let p = XMLParser(data: data)
        p.delegate = d
        XCTAssertTrue(p.parse(), "\(String(describing: p.parserError))")
        XCTAssertEqual(d.root?["_name"], "svg")
        XCTAssertEqual(d.root?["width"], "\(map.svgSize.width)")
        XCTAssertEqual(d.root?["height"], "\(map.svgSize.height)")
        XCTAssertEqual(d.rects, 1 + 6)
    }
}

final class EvalResumeTests: XCTestCase {
    /// A fake model over a real NIAH generator: it "finds" the needle when it is in the first
    /// 60% of the context, and echoes part of the prompt otherwise.
    func fakeCell(_ task: NeedleHaystack, _ key: EvalCellKey) throws -> EvalCell {
        let s = try task.sample(length: key.length, depth: key.depth!, maxNew: 16, overhead: fakeOverhead)
        let output = key.depth! <= 60 ? "Eat a sandwich in Dolores Park." : String(ByteTokenizer().evalDecode(Array(s.context.prefix(30))))
        let (score, correct) = StringMatch.score(output, s)
        return EvalCell(key: key, correct: correct, score: score, output: output, expected: s.expected,
                        promptTokens: fakeOverhead(s) + s.context.count)
    }

    func encode(_ r: EvalResults) throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted]
        return try e.encode(r)
    }

    func testInterruptedRunResumesToTheSameResults() throws {
        let task = try NeedleHaystack(tokenizer: ByteTokenizer(), essays: randomEssays(), maxLength: 4096)
        let header = EvalResults(task: "niah", model: "fake.gguf", attention: EvalAttention(name: "dense", budget: "all"),
                                 seed: 3, maxNewTokens: 16, settings: ["needle": "default"])
        let keys = [1024, 2048, 4096].flatMap { l in [0.0, 50, 100].map { EvalCellKey(task: "niah", length: l, depth: $0) } }
        var full = Data()
        let whole = try EvalRunner.run(header: header, keys: keys, existing: nil, location: "mem",
                                       save: { full = try self.encode($0) }) { try self.fakeCell(task, $0) }
        XCTAssertEqual(whole.cells.count, keys.count)
        XCTAssertEqual(try encode(whole), full)
        XCTAssertEqual(whole.accuracy!, 6.0 / 9, accuracy: 1e-12)

        for k in [0, 1, 4, 8] {
            var saved: Data?
            var calls = 0
            XCTAssertThrowsError(try EvalRunner.run(header: header, keys: keys, existing: nil, location: "mem",
                                                    save: { saved = try self.encode($0) }) { key in
                if calls == k { throw EvalError.stopped }
                calls += 1
                return try self.fakeCell(task, key)
            })
            let existing = try saved.map { try JSONDecoder().decode(EvalResults.self, from: $0) }
            XCTAssertEqual(existing?.cells.count ?? 0, k)
            var evaluated: [EvalCellKey] = []
            var final = Data()
            _ = try EvalRunner.run(header: header, keys: keys, existing: existing, location: "mem",
                                   save: { final = try self.encode($0) }) { key in
                evaluated.append(key)
                return try self.fakeCell(task, key)
            }
            XCTAssertEqual(evaluated.count, keys.count - k, "done cells must be skipped")
            XCTAssertEqual(String(decoding: final, as: UTF8.self), String(decoding: full, as: UTF8.self))
        }

        // Other settings in the same folder are refused, naming what differs.
        var other = header
        other.attention = EvalAttention(name: "ds", budget: "1/16")
        XCTAssertThrowsError(try EvalRunner.run(header: other, keys: keys, existing: whole, location: "dir",
                                                save: { _ in }) { try self.fakeCell(task, $0) }) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains("dir") && text.contains("attention") && text.contains("budget"), text)
        }
    }

    func testDeviceIsRecordedAndNotMixed() throws {
        var cpu = EvalResults(task: "kv", model: "m.gguf", device: "cpu", attention: EvalAttention(name: "dense", budget: "all"),
                              seed: 1, maxNewTokens: 8)
        let data = try encode(cpu)
        XCTAssertEqual(try JSONDecoder().decode(EvalResults.self, from: data).device, "cpu")
        var gpu = cpu
        gpu.device = "cuda:0 (H100)"
        XCTAssertEqual(gpu.differences(from: cpu).count, 1)
        XCTAssertTrue(gpu.differences(from: cpu)[0].hasPrefix("device"), gpu.differences(from: cpu)[0])
        // Files written before the device was recorded still load, and do not conflict.
        var object = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        object.removeValue(forKey: "device")
        let old = try JSONDecoder().decode(EvalResults.self, from: JSONSerialization.data(withJSONObject: object))
        XCTAssertNil(old.device)
        XCTAssertEqual(gpu.differences(from: old), [])
        cpu.cells = [EvalCell(key: EvalCellKey(task: "kv", length: 1024), correct: true, score: 1, output: "x", expected: ["x"], promptTokens: 10)]
        XCTAssertTrue(EvalReport.runTable(cpu).contains("Device: cpu."))
    }

    /// The teacher-forced summary against sums done here, over random cells; cells without
    /// forced fields (files written before them) are left out of it and still load.
    func testForcedSummaryAndRows() throws {
        var g = SystemRandomNumberGenerator()
        var r = EvalResults(task: "kv", model: "m.gguf", attention: EvalAttention(name: "dense", budget: "all"), seed: 0, maxNewTokens: 8)
        var tokens = 0, right = 0, nllSum = 0.0, copied = 0, forcedCells = 0
        for (i, length) in [1024, 1024, 2048, 2048, 2048, 4096].enumerated() {
            var c = EvalCell(key: EvalCellKey(task: "kv", length: length, depth: Double(i * 10)), correct: false, score: 0,
                             output: "", expected: ["v"], promptTokens: 100)
            if i != 2 {
                let n = Int.random(in: 1...30, using: &g)
                var f = ForcedScore()
                for _ in 0..<n {
                    f.logProbs.append(-Double.random(in: 0...3, using: &g))
                    f.greedy.append(i == 0 || Bool.random(using: &g))
                }
                c.record(f)
                tokens += n
                right += f.greedy.filter { $0 }.count
                nllSum -= f.logProbs.reduce(0, +)
                copied += f.copied ? 1 : 0
                forcedCells += 1
            }
            r.cells.append(c)
        }
        r.summarize()
        let s = try XCTUnwrap(ForcedSummary(r.cells))
        XCTAssertEqual(s.cells, forcedCells)
        XCTAssertEqual(s.copied, Double(copied) / Double(forcedCells), accuracy: 1e-12)
        XCTAssertEqual(s.tokenAccuracy, Double(right) / Double(tokens), accuracy: 1e-12)
        XCTAssertEqual(s.nll, nllSum / Double(tokens), accuracy: 1e-9)
        XCTAssertEqual(r.cells[0].forcedCopied, true)
        XCTAssertNil(r.cells[2].forcedCopied)
        let table = EvalReport.runTable(r)
        XCTAssertTrue(table.contains("forced: copied"), table)
        XCTAssertTrue(table.contains("\(forcedCells) cells"), table)
        XCTAssertTrue(EvalReport.compare([r]).contains("kv (forced)"))
        // Round trip, and a file without the forced fields has no forced rows.
        let data = try encode(r)
        XCTAssertEqual(try JSONDecoder().decode(EvalResults.self, from: data), r)
        var object = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        object["cells"] = (object["cells"] as! [[String: Any]]).map { c in
            c.filter { !$0.key.hasPrefix("forced") }
        }
        let old = try JSONDecoder().decode(EvalResults.self, from: JSONSerialization.data(withJSONObject: object))
        XCTAssertNil(ForcedSummary(old.cells))
        XCTAssertFalse(EvalReport.runTable(old).contains("forced"))
        XCTAssertFalse(EvalReport.compare([old]).contains("forced"))
    }
}
