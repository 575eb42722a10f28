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
/// in that order.
struct SpecialTokenMatcher {
    /// Trie edges: (node << 8 | byte) → child node. Node 0 is the root.
    private var edges: [Int: Int32] = [:]
    /// The token that ends at each node, or -1.
    private var terminal: [Int32] = [-1]
    /// Whether the token is matched only when special-token parsing is on (control and
    /// unknown tokens); user-defined tokens are always matched.
    private var needsParseSpecial: [Int32: Bool] = [:]
    /// Tie order among tokens of equal length.
    private var order: [Int32: Int] = [:]
    private var startsToken = [Bool](repeating: false, count: 256)

    var isEmpty: Bool { needsParseSpecial.isEmpty }

    /// `tokens`: (id, text bytes, control-like) in the order ties should be broken.
    init(_ tokens: [(id: Int32, bytes: [UInt8], controlLike: Bool)]) {
        for (rank, t) in tokens.enumerated() where !t.bytes.isEmpty {
            var node = 0
            for b in t.bytes {
                let key = node << 8 | Int(b)
                if let child = edges[key] {
                    node = Int(child)
                } else {
                    let child = Int32(terminal.count)
                    terminal.append(-1)
                    edges[key] = child
                    node = Int(child)
                }
            }
            terminal[node] = t.id
            needsParseSpecial[t.id] = t.controlLike
            order[t.id] = rank
            startsToken[Int(t.bytes[0])] = true
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
        if isEmpty { return [.text(0..<n)] }

        struct Match { var start: Int; var length: Int; var id: Int32; var rank: Int }
        var matches: [Match] = []
        for start in 0..<n where startsToken[Int(bytes[start])] {
            var node = 0
            var i = start
            while i < n, let child = edges[node << 8 | Int(bytes[i])] {
                node = Int(child)
                i += 1
                let id = terminal[node]
                if id >= 0, parseSpecial || needsParseSpecial[id] == false {
                    matches.append(Match(start: start, length: i - start, id: id, rank: order[id]!))
                }
            }
        }
        if matches.isEmpty { return [.text(0..<n)] }

        // Longest first; among equal lengths, one token at a time; each token left to right.
        matches.sort { a, b in
            if a.length != b.length { return a.length > b.length }
            if a.rank != b.rank { return a.rank < b.rank }
            return a.start < b.start
        }
        var claimed = [Bool](repeating: false, count: n)
        var accepted: [Match] = []
        for m in matches {
            var free = true
            for k in m.start..<(m.start + m.length) where claimed[k] {
                free = false
                break
            }
            guard free else { continue }
            for k in m.start..<(m.start + m.length) { claimed[k] = true }
            accepted.append(m)
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
