/// GPT-2 style byte-level BPE (`tokenizer.ggml.model = "gpt2"`): text is cut into
/// pre-tokens by a regex-like scanner, each pre-token's UTF-8 bytes are spelled with the
/// byte-level alphabet (every byte is one printable character in the vocabulary), and
/// adjacent symbols are merged, lowest merge rank first, until no ranked pair is left.
///
/// Symbols are token ids throughout: a merge maps a pair of ids to the id of their
/// concatenation. A merge whose result is not itself in the vocabulary gets a "virtual" id
/// past the end of the vocabulary, so that the merge sequence is exactly the one the merge
/// list defines even for such odd entries; a virtual id left at the end is written out as
/// its byte tokens.
struct BytePairEncoder {
    enum PreTokenizer {
        /// Qwen2: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
        case qwen2
        /// Llama 3: the same with `\p{N}{1,3}`.
        case llama3

        var digitsPerPiece: Int { self == .qwen2 ? 1 : 3 }
    }

    let preTokenizer: PreTokenizer
    /// The vocabulary id of each byte's byte-level character.
    let byteToken: [Int32]
    /// (left id << 32 | right id) → merge rank.
    private let rankOfPair: [UInt64: Int32]
    /// Per rank: the pair and the id of the merged symbol.
    private let mergeLeft: [Int32]
    private let mergeRight: [Int32]
    private let mergeResult: [Int32]
    private let vocabularySize: Int
    /// Raw bytes of virtual ids (index = id - vocabularySize).
    private let virtualBytes: [[UInt8]]

    /// The byte ↔ character mapping of GPT-2's byte-level BPE: printable Latin-1 bytes
    /// stand for themselves; the other 68 bytes map, in order, to U+0100 onwards.
    static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable {
                table[b] = UInt32(b)
            } else {
                table[b] = next
                next += 1
            }
        }
        return table
    }()

    static let scalarToByte: [UInt32: UInt8] = {
        var map: [UInt32: UInt8] = [:]
        for (b, s) in byteToScalar.enumerated() { map[s] = UInt8(b) }
        return map
    }()

    /// The UTF-8 spelling of a byte's byte-level character.
    static func byteLevelUTF8(_ b: UInt8) -> [UInt8] {
        Array(String(Character(Unicode.Scalar(byteToScalar[Int(b)])!)).utf8)
    }

    /// The raw bytes a byte-level token text stands for, or nil if it holds a character
    /// outside the byte-level alphabet.
    static func rawBytes(ofByteLevelText text: [UInt8]) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.count)
        for scalar in String(decoding: text, as: UTF8.self).unicodeScalars {
            guard let b = scalarToByte[scalar.value] else { return nil }
            out.append(b)
        }
        return out
    }

    /// - Parameters:
    ///   - vocabulary: id lookup by token text bytes.
    ///   - vocabularySize: number of real tokens.
    ///   - merges: the merge list, highest priority first, each "left right".
    ///   - error: makes an error naming the metadata key at fault.
    init(preTokenizer: PreTokenizer, vocabulary: ByteStringMap, vocabularySize: Int,
         merges: [String], error: (String) -> TokenizerError) throws {
        self.preTokenizer = preTokenizer
        self.vocabularySize = vocabularySize

        var byteToken = [Int32](repeating: -1, count: 256)
        var extraIDs = ByteStringMap(capacity: 64)
        var virtualBytes: [[UInt8]] = []
        func idOf(_ text: [UInt8]) -> Int32 {
            if let id = vocabulary.get(text) { return id }
            if let id = extraIDs.get(text) { return id }
            let id = Int32(vocabularySize + virtualBytes.count)
            extraIDs.set(text, id)
            // A virtual symbol is written out as the byte tokens of what it spells.
            virtualBytes.append(BytePairEncoder.rawBytes(ofByteLevelText: text) ?? text)
            return id
        }
        for b in 0..<256 {
            let text = BytePairEncoder.byteLevelUTF8(UInt8(b))
            guard let id = vocabulary.get(text) else {
                throw error("the vocabulary has no byte-level token for byte 0x\(String(b, radix: 16)) ('\(String(decoding: text, as: UTF8.self))'), which byte-level BPE needs")
            }
            byteToken[b] = id
        }

        var rankOfPair: [UInt64: Int32] = [:]
        rankOfPair.reserveCapacity(merges.count)
        var mergeLeft: [Int32] = [], mergeRight: [Int32] = [], mergeResult: [Int32] = []
        mergeLeft.reserveCapacity(merges.count)
        mergeRight.reserveCapacity(merges.count)
        mergeResult.reserveCapacity(merges.count)
        for (rank, merge) in merges.enumerated() {
            // "left right", split at the first space after the first character (a left part
            // may itself be a space in some vocabularies).
            let bytes = Array(merge.utf8)
            guard bytes.count >= 3, let sp = bytes[1...].firstIndex(of: 0x20) else {
                // Not "left right": it can never apply (llama.cpp skips these too).
                mergeLeft.append(-2)
                mergeRight.append(-2)
                mergeResult.append(-2)
                continue
            }
            let left = Array(bytes[..<sp]), right = Array(bytes[(sp + 1)...])
            let l = idOf(left), r = idOf(right), m = idOf(left + right)
            let key = UInt64(UInt32(bitPattern: l)) << 32 | UInt64(UInt32(bitPattern: r))
            if rankOfPair[key] == nil { rankOfPair[key] = Int32(rank) }
            mergeLeft.append(l)
            mergeRight.append(r)
            mergeResult.append(m)
        }
        self.byteToken = byteToken
        self.rankOfPair = rankOfPair
        self.mergeLeft = mergeLeft
        self.mergeRight = mergeRight
        self.mergeResult = mergeResult
        self.virtualBytes = virtualBytes
    }

    @inline(__always)
    private func rank(_ l: Int32, _ r: Int32) -> Int32? {
        rankOfPair[UInt64(UInt32(bitPattern: l)) << 32 | UInt64(UInt32(bitPattern: r))]
    }

    /// Reusable buffers for `encodeWord`.
    struct Scratch {
        var ids: [Int32] = []
        var next: [Int32] = []
        var prev: [Int32] = []
        var heap: [UInt64] = []
    }

    /// Appends the tokens of one pre-token (its raw UTF-8 bytes) to `out`.
    func encodeWord(_ word: UnsafeBufferPointer<UInt8>, into out: inout [Int32], scratch s: inout Scratch) {
        let n = word.count
        if n == 0 { return }
        if n == 1 {
            out.append(byteToken[Int(word[0])])
            return
        }
        s.ids.removeAll(keepingCapacity: true)
        s.next.removeAll(keepingCapacity: true)
        s.prev.removeAll(keepingCapacity: true)
        s.heap.removeAll(keepingCapacity: true)
        for i in 0..<n {
            s.ids.append(byteToken[Int(word[i])])
            s.prev.append(Int32(i - 1))
            s.next.append(i + 1 < n ? Int32(i + 1) : -1)
        }
        // Candidate merges keyed (rank << 32 | left position): the smallest key is the
        // lowest rank, and among equal ranks the leftmost pair.
        for i in 0..<(n - 1) {
            if let r = rank(s.ids[i], s.ids[i + 1]) { heapPush(&s.heap, UInt64(r) << 32 | UInt64(i)) }
        }
        let dead: Int32 = -1
        while let top = heapPop(&s.heap) {
            let r = Int(top >> 32), left = Int(top & 0xFFFF_FFFF)
            let leftID = s.ids[left]
            if leftID == dead { continue }
            let right = Int(s.next[left])
            if right < 0 { continue }
            // Stale entry: one side has been merged into something else since it was queued.
            if mergeLeft[r] != leftID || mergeRight[r] != s.ids[right] { continue }
            s.ids[left] = mergeResult[r]
            s.ids[right] = dead
            let after = s.next[right]
            s.next[left] = after
            if after >= 0 { s.prev[Int(after)] = Int32(left) }
            let before = Int(s.prev[left])
            if before >= 0, let r2 = rank(s.ids[before], s.ids[left]) {
                heapPush(&s.heap, UInt64(r2) << 32 | UInt64(before))
            }
            if after >= 0, let r2 = rank(s.ids[left], s.ids[Int(after)]) {
                heapPush(&s.heap, UInt64(r2) << 32 | UInt64(left))
            }
        }
        var i = 0
        while i >= 0 {
            let id = s.ids[i]
            if Int(id) < vocabularySize {
                out.append(id)
            } else {
                for b in virtualBytes[Int(id) - vocabularySize] { out.append(byteToken[Int(b)]) }
            }
            i = Int(s.next[i])
        }
    }

    // MARK: pre-tokenizer

    /// Character classes of the pre-tokenizer regex.
    static let letter: UInt8 = 1, number: UInt8 = 2, space: UInt8 = 4

    /// Class of a scalar, as llama.cpp's regex sees it: ASCII by the C locale (`\s` is
    /// space, \t \n \v \f \r), other scalars by Unicode: White_Space, general category L*
    /// or N*. Anything else (punctuation, symbols, marks, unassigned) is "other" (0).
    @inline(__always)
    static func charClass(_ v: UInt32) -> UInt8 {
        if v < 128 {
            return asciiClass[Int(v)]
        }
        let p = Unicode.Scalar(v)!.properties
        if p.isWhitespace { return space }
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return number
        default:
            return 0
        }
    }

    static let asciiClass: [UInt8] = (0..<128).map { c -> UInt8 in
        switch c {
        case 0x41...0x5A, 0x61...0x7A: return letter
        case 0x30...0x39: return number
        case 0x09...0x0D, 0x20: return space
        default: return 0
        }
    }

    /// Splits valid UTF-8 `text` into pre-tokens and calls `body` with each one's byte range.
    func preTokenize(_ text: UnsafeBufferPointer<UInt8>, scalars: inout [UInt32], classes: inout [UInt8],
                     offsets: inout [Int], _ body: (Range<Int>) -> Void) {
        scalars.removeAll(keepingCapacity: true)
        classes.removeAll(keepingCapacity: true)
        offsets.removeAll(keepingCapacity: true)
        // Decode scalars (the input came from a Swift String, so it is valid UTF-8).
        var at = 0
        let count = text.count
        while at < count {
            let b0 = UInt32(text[at])
            var v: UInt32
            var len: Int
            if b0 < 0x80 {
                v = b0; len = 1
            } else if b0 < 0xE0 {
                v = (b0 & 0x1F) << 6 | (UInt32(text[at + 1]) & 0x3F); len = 2
            } else if b0 < 0xF0 {
                v = (b0 & 0x0F) << 12 | (UInt32(text[at + 1]) & 0x3F) << 6 | (UInt32(text[at + 2]) & 0x3F); len = 3
            } else {
                v = (b0 & 0x07) << 18 | (UInt32(text[at + 1]) & 0x3F) << 12
                    | (UInt32(text[at + 2]) & 0x3F) << 6 | (UInt32(text[at + 3]) & 0x3F)
                len = 4
            }
            scalars.append(v)
            classes.append(BytePairEncoder.charClass(v))
            offsets.append(at)
            at += len
        }
        offsets.append(count)

        let n = scalars.count
        let L = BytePairEncoder.letter, N = BytePairEncoder.number, S = BytePairEncoder.space
        let cr: UInt32 = 0x0D, lf: UInt32 = 0x0A
        let maxDigits = preTokenizer.digitsPerPiece
        @inline(__always) func lower(_ c: UInt32) -> UInt32 { (0x41...0x5A).contains(c) ? c | 0x20 : c }
        @inline(__always) func emit(_ a: Int, _ b: Int) { body(offsets[a]..<offsets[b]) }

        var i = 0
        while i < n {
            let c = scalars[i], f = classes[i]

            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if c == 0x27, i + 1 < n {
                let c1 = lower(scalars[i + 1])
                if c1 == 0x73 || c1 == 0x74 || c1 == 0x6D || c1 == 0x64 {  // s t m d
                    emit(i, i + 2); i += 2; continue
                }
                if i + 2 < n {
                    let c2 = lower(scalars[i + 2])
                    if (c1 == 0x72 && c2 == 0x65) || (c1 == 0x76 && c2 == 0x65) || (c1 == 0x6C && c2 == 0x6C) {  // re ve ll
                        emit(i, i + 3); i += 3; continue
                    }
                }
            }

            // [^\r\n\p{L}\p{N}]?\p{L}+
            if f & L != 0 || (c != cr && c != lf && f & (L | N) == 0 && i + 1 < n && classes[i + 1] & L != 0) {
                var j = i + 1
                while j < n && classes[j] & L != 0 { j += 1 }
                emit(i, j); i = j; continue
            }

            // \p{N} (Qwen2) or \p{N}{1,3} (Llama 3)
            if f & N != 0 {
                var j = i + 1
                while j < n && j - i < maxDigits && classes[j] & N != 0 { j += 1 }
                emit(i, j); i = j; continue
            }

            //  ?[^\s\p{L}\p{N}]+[\r\n]*
            do {
                var j = i
                if c == 0x20 && i + 1 < n && classes[i + 1] == 0 { j = i + 1 }
                if classes[j] == 0 {
                    while j < n && classes[j] == 0 { j += 1 }
                    while j < n && (scalars[j] == cr || scalars[j] == lf) { j += 1 }
                    emit(i, j); i = j; continue
                }
            }

            // Whitespace: \s*[\r\n]+ | \s+(?!\S) | \s+
            var j = i
            var lastNewline = -1
            while j < n && classes[j] & S != 0 {
                if scalars[j] == cr || scalars[j] == lf { lastNewline = j }
                j += 1
            }
            if lastNewline >= 0 {
                emit(i, lastNewline + 1); i = lastNewline + 1; continue
            }
            if j - i > 1 && j < n {
                emit(i, j - 1); i = j - 1; continue
            }
            if j > i {
                emit(i, j); i = j; continue
            }
            emit(i, i + 1); i += 1  // unreachable: every scalar is in one of the classes above
        }
    }
}

// MARK: binary min-heap of UInt64

@inline(__always)
func heapPush(_ h: inout [UInt64], _ v: UInt64) {
    h.append(v)
    var i = h.count - 1
    while i > 0 {
        let p = (i - 1) >> 1
        if h[p] <= v { break }
        h[i] = h[p]
        i = p
    }
    h[i] = v
}

@inline(__always)
func heapPop(_ h: inout [UInt64]) -> UInt64? {
    guard let last = h.popLast() else { return nil }
    if h.isEmpty { return last }
    let top = h[0]
    let n = h.count
    var i = 0
    while true {
        let l = 2 * i + 1
        if l >= n { break }
        let r = l + 1
        let c = (r < n && h[r] < h[l]) ? r : l
        if h[c] >= last { break }
        h[i] = h[c]
        i = c
    }
    h[i] = last
    return top
}
