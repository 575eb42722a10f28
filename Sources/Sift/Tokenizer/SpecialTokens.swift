/// Finds special tokens (control, user-defined and unknown tokens) in raw text before the
/// model's own tokenizer sees it.
///
/// The splitting rule is the one llama.cpp applies, so that prompts tokenize the same way:
/// special tokens are taken longest text first, and each one claims all of its
/// non-overlapping occurrences, left to right, in the text that no longer (earlier) token
/// has claimed. (That is not the same as a left-to-right longest match: with tokens "ab" and
/// "bcd", "abcd" splits as "a" + "bcd".)
///
/// Rather than searching the text once per special token (Gemma 3 has over 6,000), all
/// occurrences of all special tokens are found in one pass with a byte trie, then accepted
/// in that order (a counting sort by length; time and memory linear in the number of
/// occurrences, which runs of whitespace tokens make at most ~30 per byte).
struct SpecialTokenMatcher {
    /// Trie edges (node << 8 | byte) → child node; node 0 is the root.
    private var edges = EdgeTable()
    /// The token that ends at each node, or -1.
    private var terminal: [Int32] = [-1]
    /// Per node on a token's end: whether that token is matched only when special-token
    /// parsing is on (control and unknown tokens); user-defined tokens are always matched.
    private var needsParseSpecial: [Bool] = [false]
    private var startsToken = [Bool](repeating: false, count: 256)
    private var longest = 0
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    /// Longest token text handled, and largest id (they are packed into 64-bit match keys).
    static let maxLength = (1 << 11) - 1
    static let maxID = (1 << 21) - 1

    /// `tokens`: (id, text bytes, control-like). Among tokens of equal length the lower id
    /// claims text first.
    init(_ tokens: [(id: Int32, bytes: [UInt8], controlLike: Bool)]) {
        for t in tokens where !t.bytes.isEmpty && t.bytes.count <= Self.maxLength && Int(t.id) <= Self.maxID {
            var node = 0
            for b in t.bytes {
                if let child = edges.get(node << 8 | Int(b)) {
                    node = Int(child)
                } else {
                    let child = Int32(terminal.count)
                    terminal.append(-1)
                    needsParseSpecial.append(false)
                    edges.set(node << 8 | Int(b), child)
                    node = Int(child)
                }
            }
            terminal[node] = t.id
            needsParseSpecial[node] = t.controlLike
            startsToken[Int(t.bytes[0])] = true
            longest = max(longest, t.bytes.count)
            count += 1
        }
    }

    enum Piece: Equatable {
        case text(Range<Int>)
        case token(Int32)
    }

    /// Splits `bytes` into raw-text ranges and special tokens, in order.
    func split(_ bytes: UnsafeBufferPointer<UInt8>, parseSpecial: Bool) -> [Piece] {
        let n = bytes.count
        if n == 0 { return [] }
        if isEmpty || n >= 1 << 32 { return [.text(0..<n)] }

        // Every occurrence of every special token, as start << 32 | id << 11 | length, in
        // order of start.
        var found: [UInt64] = []
        var perLength = [Int](repeating: 0, count: longest + 2)
        for start in 0..<n where startsToken[Int(bytes[start])] {
            var node = 0
            var i = start
            while i < n, let child = edges.get(node << 8 | Int(bytes[i])) {
                node = Int(child)
                i += 1
                let id = terminal[node]
                if id >= 0 && (parseSpecial || !needsParseSpecial[node]) {
                    let length = i - start
                    found.append(UInt64(start) << 32 | UInt64(id) << 11 | UInt64(length))
                    perLength[length] += 1
                }
            }
        }
        if found.isEmpty { return [.text(0..<n)] }

        // Longest first (a counting sort by length keeps each length's matches in start
        // order); within a length, token by token, each left to right.
        var bucketStart = [Int](repeating: 0, count: longest + 2)
        var acc = 0
        for length in stride(from: longest, through: 1, by: -1) {
            bucketStart[length] = acc
            acc += perLength[length]
        }
        var ordered = [UInt64](repeating: 0, count: found.count)
        var fill = bucketStart
        for m in found {
            let length = Int(m & 0x7FF)
            ordered[fill[length]] = m
            fill[length] += 1
        }
        found = []

        var claimed = [Bool](repeating: false, count: n)
        var accepted: [(start: Int, length: Int, id: Int32)] = []
        for length in stride(from: longest, through: 1, by: -1) where perLength[length] > 0 {
            let range = bucketStart[length]..<(bucketStart[length] + perLength[length])
            let firstID = (ordered[range.lowerBound] >> 11) & 0x1F_FFFF
            if ordered[range].contains(where: { ($0 >> 11) & 0x1F_FFFF != firstID }) {
                ordered[range].sort { a, b in
                    let ia = (a >> 11) & 0x1F_FFFF, ib = (b >> 11) & 0x1F_FFFF
                    return ia != ib ? ia < ib : a >> 32 < b >> 32
                }
            }
            for m in ordered[range] {
                let start = Int(m >> 32)
                // Text claimed so far is in spans at least this long, so a span overlapping
                // this one covers its first or its last byte.
                if claimed[start] || claimed[start + length - 1] { continue }
                for k in start..<(start + length) { claimed[k] = true }
                accepted.append((start, length, Int32(truncatingIfNeeded: (m >> 11) & 0x1F_FFFF)))
            }
        }
        accepted.sort { $0.start < $1.start }

        var pieces: [Piece] = []
        var at = 0
        for m in accepted {
            if m.start > at { pieces.append(.text(at..<m.start)) }
            pieces.append(.token(m.id))
            at = m.start + m.length
        }
        if at < n { pieces.append(.text(at..<n)) }
        return pieces
    }
}

/// Open-addressed hash map from non-negative Int keys to Int32 values.
struct EdgeTable {
    private var keys: [Int] = [Int](repeating: -1, count: 16)
    private var values: [Int32] = [Int32](repeating: 0, count: 16)
    private var used = 0

    @inline(__always)
    private static func slot(_ key: Int, _ mask: Int) -> Int {
        var h = UInt64(bitPattern: Int64(key)) &* 0x9E37_79B9_7F4A_7C15
        h ^= h >> 29
        return Int(truncatingIfNeeded: h) & mask
    }

    @inline(__always)
    func get(_ key: Int) -> Int32? {
        let mask = keys.count - 1
        var i = EdgeTable.slot(key, mask)
        while true {
            let k = keys[i]
            if k == key { return values[i] }
            if k < 0 { return nil }
            i = (i + 1) & mask
        }
    }

    mutating func set(_ key: Int, _ value: Int32) {
        if (used + 1) * 2 > keys.count { grow() }
        let mask = keys.count - 1
        var i = EdgeTable.slot(key, mask)
        while keys[i] >= 0 && keys[i] != key { i = (i + 1) & mask }
        if keys[i] < 0 { used += 1 }
        keys[i] = key
        values[i] = value
    }

    private mutating func grow() {
        let oldKeys = keys, oldValues = values
        keys = [Int](repeating: -1, count: oldKeys.count * 2)
        values = [Int32](repeating: 0, count: oldKeys.count * 2)
        used = 0
        for (k, v) in zip(oldKeys, oldValues) where k >= 0 { set(k, v) }
    }
}
