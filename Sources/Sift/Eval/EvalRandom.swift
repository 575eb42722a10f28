/// Deterministic randomness for the eval generators: every cell gets its own generator, seeded
/// from the run's seed and the cell's coordinates through a stable hash (FNV-1a, not Swift's
/// per-process `Hasher`), so a cell's sample never depends on which cells ran before it.
public enum EvalRandom {
    /// FNV-1a 64 of the parts, joined with a separator byte.
    public static func hash(_ parts: [String]) -> UInt64 {
        var h: UInt64 = 0xcbf29ce484222325
        for p in parts {
            for b in p.utf8 { h = (h ^ UInt64(b)) &* 0x100000001b3 }
            h = (h ^ 0xff) &* 0x100000001b3
        }
        return h
    }

    /// The generator of one cell.
    public static func generator(seed: UInt64, _ parts: String...) -> Xoshiro256 {
        Xoshiro256(seed: seed ^ hash(parts))
    }

    /// A random version-4 UUID in its 36-character lowercase form.
    public static func uuid<R: RandomNumberGenerator>(_ rng: inout R) -> String {
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }
        bytes[6] = (bytes[6] & 0x0f) | 0x40
        bytes[8] = (bytes[8] & 0x3f) | 0x80
        let hex = Array("0123456789abcdef")
        var s = ""
        for (i, b) in bytes.enumerated() {
            if i == 4 || i == 6 || i == 8 || i == 10 { s.append("-") }
            s.append(hex[Int(b >> 4)])
            s.append(hex[Int(b & 15)])
        }
        return s
    }

    /// A random number with exactly `digits` digits (no leading zero), as text.
    public static func number<R: RandomNumberGenerator>(digits: Int, _ rng: inout R) -> String {
        var lo = 1
        for _ in 1..<digits { lo *= 10 }
        return "\(Int.random(in: lo..<(lo * 10), using: &rng))"
    }

    /// `count` distinct elements of `pool`, in random order.
    public static func distinct<T, R: RandomNumberGenerator>(_ count: Int, from pool: [T], _ rng: inout R) -> [T] {
        precondition(count <= pool.count)
        var idx = Array(pool.indices)
        for i in 0..<count {
            let j = Int.random(in: i..<idx.count, using: &rng)
            idx.swapAt(i, j)
        }
        return idx[..<count].map { pool[$0] }
    }
}

/// Fills a token budget with sentences of a haystack and inserts needles at sentence
/// boundaries, the way gkamradt's LLMTest_NeedleInAHaystack does: the haystack tokens are cut
/// to the budget minus the needles; each needle goes at `depth`% of the haystack, moved back
/// to just after the nearest token ending in a period (the start if there is none); depth 100
/// puts it at the very end.
public enum NeedleInsertion {
    /// - Parameters:
    ///   - haystack: tokens to draw from, repeated if too short (must not be empty).
    ///   - needles: tokens of each needle with its depth in percent.
    ///   - budget: total tokens of the result (haystack + needles).
    /// - Returns: the tokens and, per needle, the index where it starts.
    public static func build(haystack: [Int32], needles: [(tokens: [Int32], depth: Double)], budget: Int,
                             endsSentence: (Int32) -> Bool) -> (tokens: [Int32], starts: [Int]) {
        let needleCount = needles.reduce(0) { $0 + $1.tokens.count }
        let fill = max(0, budget - needleCount)
        var hay: [Int32] = []
        hay.reserveCapacity(fill)
        while hay.count < fill && !haystack.isEmpty {
            hay += haystack.prefix(fill - hay.count)
        }
        // Insertion points in the haystack, computed on the haystack alone (as if each needle
        // were the only one), then applied from the last to the first.
        var points: [(point: Int, needle: Int)] = []
        for (i, n) in needles.enumerated() {
            var p: Int
            if n.depth >= 100 {
                p = hay.count
            } else {
                p = Int(Double(hay.count) * max(0, n.depth) / 100)
                while p > 0 && !endsSentence(hay[p - 1]) { p -= 1 }
            }
            points.append((p, i))
        }
        // Stable order: by point, then by needle index.
        points.sort { $0.point != $1.point ? $0.point < $1.point : $0.needle < $1.needle }
        var out: [Int32] = []
        out.reserveCapacity(budget)
        var starts = Array(repeating: 0, count: needles.count)
        var from = 0
        for (p, i) in points {
            out += hay[from..<p]
            starts[i] = out.count
            out += needles[i].tokens
            from = p
        }
        out += hay[from...]
        return (out, starts)
    }
}
