/// SentencePiece-style BPE over a scored vocabulary (`tokenizer.ggml.model = "llama"`, as in
/// Gemma and Llama 2): spaces are written as U+2581 ("▁"), the text starts as one symbol per
/// character, and the adjacent pair whose concatenation is a vocabulary token with the
/// highest score is merged (ties: leftmost), until no adjacent pair forms a token. A final
/// symbol that is not a token (a character the vocabulary lacks) is written as byte tokens
/// `<0xXX>`.
struct SentencePieceEncoder {
    let vocabulary: ByteStringMap
    let scores: [Float]
    /// `<0xXX>` token of each byte, or failing that the token whose text is that single byte;
    /// -1 if neither exists.
    let byteToken: [Int32]
    let unknown: Int32?

    fileprivate struct Bigram {
        var score: Float
        var left: Int32
        var right: Int32
        var size: Int32

        /// Higher score first; among equal scores, the leftmost pair.
        @inline(__always)
        func before(_ o: Bigram) -> Bool {
            score > o.score || (score == o.score && left < o.left)
        }
    }

    struct Scratch {
        var start: [Int32] = []
        var length: [Int32] = []
        var prev: [Int32] = []
        var next: [Int32] = []
        fileprivate var heap: [Bigram] = []
    }

    /// Appends the tokens of `text` (already with spaces written as "▁") to `out`.
    func encode(_ text: UnsafeBufferPointer<UInt8>, into out: inout [Int32], scratch s: inout Scratch) {
        let n = text.count
        if n == 0 { return }
        let base = text.baseAddress!
        s.start.removeAll(keepingCapacity: true)
        s.length.removeAll(keepingCapacity: true)
        s.prev.removeAll(keepingCapacity: true)
        s.next.removeAll(keepingCapacity: true)
        s.heap.removeAll(keepingCapacity: true)

        var at = 0
        while at < n {
            let b = text[at]
            let len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4
            let l = min(len, n - at)
            s.prev.append(Int32(s.start.count - 1))
            s.start.append(Int32(at))
            s.length.append(Int32(l))
            at += l
            s.next.append(at < n ? Int32(s.start.count) : -1)
        }

        func tryAdd(_ left: Int32, _ right: Int32, _ s: inout Scratch) {
            if left < 0 || right < 0 { return }
            let size = s.length[Int(left)] + s.length[Int(right)]
            guard let id = vocabulary.get(base + Int(s.start[Int(left)]), Int(size)) else { return }
            push(&s.heap, Bigram(score: scores[Int(id)], left: left, right: right, size: size))
        }

        for i in 1..<s.start.count { tryAdd(Int32(i - 1), Int32(i), &s) }

        while let bigram = pop(&s.heap) {
            let l = Int(bigram.left), r = Int(bigram.right)
            // Skip pairs where either side has since been merged into something else.
            if s.length[l] == 0 || s.length[r] == 0 || s.next[l] != bigram.right
                || s.length[l] + s.length[r] != bigram.size { continue }
            s.length[l] += s.length[r]
            s.length[r] = 0
            s.next[l] = s.next[r]
            if s.next[r] >= 0 { s.prev[Int(s.next[r])] = bigram.left }
            tryAdd(s.prev[l], bigram.left, &s)
            tryAdd(bigram.left, s.next[l], &s)
        }

        var i = 0
        while i >= 0 {
            let p = base + Int(s.start[i]), len = Int(s.length[i])
            if let id = vocabulary.get(p, len) {
                out.append(id)
            } else {
                for k in 0..<len {
                    let t = byteToken[Int(p[k])]
                    if t >= 0 {
                        out.append(t)
                    } else if let u = unknown {
                        out.append(u)
                    }
                }
            }
            i = Int(s.next[i])
        }
    }

    private func push(_ h: inout [Bigram], _ v: Bigram) {
        h.append(v)
        var i = h.count - 1
        while i > 0 {
            let p = (i - 1) >> 1
            if !v.before(h[p]) { break }
            h[i] = h[p]
            i = p
        }
        h[i] = v
    }

    private func pop(_ h: inout [Bigram]) -> Bigram? {
        guard let last = h.popLast() else { return nil }
        if h.isEmpty { return last }
        let top = h[0]
        let n = h.count
        var i = 0
        while true {
            let l = 2 * i + 1
            if l >= n { break }
            let r = l + 1
            let c = (r < n && h[r].before(h[l])) ? r : l
            if !h[c].before(last) { break }
            h[i] = h[c]
            i = c
        }
        h[i] = last
        return top
    }
}
