/// RULER's synthetic tasks (Hsieh et al. 2024, "RULER: What's the Real Context Size of Your
/// Long-Context Language Models?"), generated in Swift from the paper's task definitions.
///
/// | task | haystack | needles | scoring |
/// |---|---|---|---|
/// | niah_single_1 | repeated noise sentences | 1 key (word) → 7-digit number | all |
/// | niah_single_2 | essays | 1 key (word) → 7-digit number | all |
/// | niah_single_3 | essays | 1 key (word) → UUID | all |
/// | niah_multikey_1 | essays | 4 keys, 1 asked | all |
/// | niah_multivalue | essays | 1 key with 4 values, all asked | all |
/// | niah_multiquery | essays | 4 keys, all asked | all |
/// | vt | noise | 1 chain of 4 hops: VAR A = n, VAR B = VAR A, … | all (the 5 names) |
/// | cwe | numbered word list | 10 words appear often, the rest 3 times each | all (the 10 words) |
/// | fwe | coded words, Zipf (α = 2) | — | all (the 3 most frequent) |
///
/// Scoring is RULER's string_match_all: the share of the expected strings the output contains
/// (case-insensitive); a sample is correct when it contains them all. Needle depths are drawn
/// uniformly in 0…100 per sample (RULER samples them too); the sample's `depth` is that of the
/// (first) needle asked about. The prompt ends with RULER's answer prefix, written as the start
/// of the model's turn. Length: prompt + tokens to generate ≤ the cell's length, short by less
/// than one haystack sentence or list item.
public struct RulerTasks {
    public static let names = ["niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1",
                               "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe"]
    static let noise = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "

    let tokenizer: EvalTokenizer
    let essays: [Int32]
    let noiseTokens: [Int32]

    /// - Parameter essays: the essay haystack, tokenized (as long as the longest cell).
    public init(tokenizer: EvalTokenizer, essays: [Int32]) {
        self.tokenizer = tokenizer
        self.essays = essays
        noiseTokens = tokenizer.evalEncode(RulerTasks.noise)
    }

    public func sample(task: String, length: Int, index: Int, seed: UInt64, maxNew: Int,
                       overhead: (EvalSample) -> Int) throws -> EvalSample {
        var rng = EvalRandom.generator(seed: seed, "ruler", task, "\(length)", "\(index)")
        switch task {
        case "niah_single_1": return try niah(noise: true, keys: 1, values: 1, queries: 1, uuid: false, length, maxNew, overhead, &rng)
        case "niah_single_2": return try niah(noise: false, keys: 1, values: 1, queries: 1, uuid: false, length, maxNew, overhead, &rng)
        case "niah_single_3": return try niah(noise: false, keys: 1, values: 1, queries: 1, uuid: true, length, maxNew, overhead, &rng)
        case "niah_multikey_1": return try niah(noise: false, keys: 4, values: 1, queries: 1, uuid: false, length, maxNew, overhead, &rng)
        case "niah_multivalue": return try niah(noise: false, keys: 1, values: 4, queries: 1, uuid: false, length, maxNew, overhead, &rng)
        case "niah_multiquery": return try niah(noise: false, keys: 4, values: 1, queries: 4, uuid: false, length, maxNew, overhead, &rng)
        case "vt": return try variableTracking(length, maxNew, overhead, &rng)
        case "cwe": return try commonWords(length, maxNew, overhead, &rng)
        case "fwe": return try frequentWords(length, maxNew, overhead, &rng)
        default:
            throw EvalError.invalid("unknown RULER task '\(task)' (known: \(RulerTasks.names.joined(separator: ", ")))")
        }
    }

    func budget(_ s: EvalSample, _ length: Int, _ maxNew: Int, _ overhead: (EvalSample) -> Int, need: Int) throws -> Int {
        let b = length - maxNew - overhead(s)
        guard b >= need else {
            throw EvalError.invalid("length \(length) is too short for this task: \(length - b + need) tokens needed at least")
        }
        return b
    }

    /// RULER's "and"-list of keys: "a", "a and b", "a, b, and c".
    static func list(_ items: [String]) -> String {
        if items.count <= 1 { return items.first ?? "" }
        if items.count == 2 { return items[0] + " and " + items[1] }
        return items.dropLast().joined(separator: ", ") + ", and " + items.last!
    }

    func niah(noise: Bool, keys: Int, values: Int, queries: Int, uuid: Bool, _ length: Int, _ maxNew: Int,
              _ overhead: (EvalSample) -> Int, _ rng: inout Xoshiro256) throws -> EvalSample {
        let kind = uuid ? "uuids" : "numbers"
        var keyList: [String] = []
        while keyList.count < keys {
            let k = RulerWords.key(&rng)
            if !keyList.contains(k) { keyList.append(k) }
        }
        var seenValues = Set<String>()
        var needles: [(key: String, value: String)] = []
        for k in keyList {
            for _ in 0..<values {
                var v: String
                repeat { v = uuid ? EvalRandom.uuid(&rng) : EvalRandom.number(digits: 7, &rng) } while !seenValues.insert(v).inserted
                needles.append((k, v))
            }
        }
        let asked = Array(keyList.prefix(queries))
        let query = RulerTasks.list(asked)
        var s = EvalSample()
        s.userBefore = "Some special magic \(kind) are hidden within the following text. Make sure to memorize it. I will quiz you about the \(kind) afterwards.\n"
        s.userAfter = "\nWhat are all the special magic \(kind) for \(query) mentioned in the provided text?"
        s.answerPrefix = " The special magic \(kind) for \(query) mentioned in the provided text are"
        s.expected = needles.filter { asked.contains($0.key) }.map(\.value)
        s.scoring = .all
        let tokens = needles.map { tokenizer.evalEncode(" One of the special magic \(kind) for \($0.key) is: \($0.value).") }
        let depths = needles.map { _ in Double(Int.random(in: 0...100, using: &rng)) }
        s.depth = depths[0]
        let b = try budget(s, length, maxNew, overhead, need: tokens.reduce(0) { $0 + $1.count })
        s.context = NeedleInsertion.build(haystack: noise ? noiseTokens : essays, needles: Array(zip(tokens, depths)),
                                          budget: b, endsSentence: tokenizer.endsSentence).tokens
        return s
    }

    func variableTracking(_ length: Int, _ maxNew: Int, _ overhead: (EvalSample) -> Int,
                          _ rng: inout Xoshiro256) throws -> EvalSample {
        let hops = 4
        let letters = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        var names: [String] = []
        while names.count < hops + 1 {
            let n = String((0..<5).map { _ in letters.randomElement(using: &rng)! })
            if !names.contains(n) { names.append(n) }
        }
        let value = EvalRandom.number(digits: 5, &rng)
        var statements = [" VAR \(names[0]) = \(value)."]
        for i in 1...hops { statements.append(" VAR \(names[i]) = VAR \(names[i - 1]).") }
        var s = EvalSample()
        s.userBefore = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
        s.userAfter = "\nQuestion: Find all variables that are assigned the value \(value) in the text above."
        s.answerPrefix = " Answer: According to the chain(s) of variable assignment in the text above, \(hops + 1) variables are assigned the value \(value), they are: "
        s.expected = names
        s.scoring = .all
        let tokens = statements.map { tokenizer.evalEncode($0) }
        // In chain order: depths sorted ascending (insertion keeps ties in statement order).
        let depths = statements.map { _ in Double(Int.random(in: 0...100, using: &rng)) }.sorted()
        s.depth = depths[0]
        let b = try budget(s, length, maxNew, overhead, need: tokens.reduce(0) { $0 + $1.count })
        s.context = NeedleInsertion.build(haystack: noiseTokens, needles: Array(zip(tokens, depths)), budget: b,
                                          endsSentence: tokenizer.endsSentence).tokens
        return s
    }

    /// Common words extraction: 10 words appear `freqCommon` times each (30, RULER's value, or
    /// fewer so they take at most half the context, but at least 5), the others 3 times each;
    /// the list is shuffled and numbered "1. word 2. word …".
    func commonWords(_ length: Int, _ maxNew: Int, _ overhead: (EvalSample) -> Int,
                     _ rng: inout Xoshiro256) throws -> EvalSample {
        let common = 10, freqRare = 3
        var s = EvalSample()
        s.userBefore = "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones that appear most often.\n"
        s.userAfter = "\nQuestion: What are the 10 most common words in the above list?"
        s.answerPrefix = " Answer: The top 10 words that appear most often in the list are:"
        s.scoring = .all
        let b = try budget(s, length, maxNew, overhead, need: common * 5 * 4)
        // Each item is tokenized as its number and its word, so the list's length does not
        // depend on the order and the largest count of rare words that fits is found exactly.
        let perItem = 5  // tokens of " 123. word", roughly, for sizing the common words
        let freqCommon = max(5, min(30, b / 2 / (common * perItem)))
        var numberTokens: [Int] = []
        func numbers(_ n: Int) -> Int {
            while numberTokens.count < n {
                let i = numberTokens.count
                numberTokens.append(tokenizer.evalEncode("\(i == 0 ? "" : " ")\(i + 1).").count)
            }
            return numberTokens[0..<n].reduce(0, +)
        }
        let maxRare = max(0, (b - common * freqCommon * 2) / freqRare)
        let words = RulerWords.distinctWords(common + maxRare + 1, &rng)
        let wordTokens = words.map { tokenizer.evalEncode(" " + $0).count }
        s.expected = Array(words[0..<common])
        let commonCost = wordTokens[0..<common].reduce(0, +) * freqCommon
        var rareCost = [0]  // rareCost[r]: tokens of the first r rare words, all occurrences
        for w in wordTokens[common...] { rareCost.append(rareCost.last! + w * freqRare) }
        func cost(_ rare: Int) -> Int { commonCost + rareCost[rare] + numbers(common * freqCommon + rare * freqRare) }
        guard cost(0) <= b else { throw EvalError.invalid("length \(length) is too short for cwe") }
        var lo = 0, hi = maxRare
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if cost(mid) <= b { lo = mid } else { hi = mid - 1 }
        }
        var bag: [String] = []
        for w in words[0..<common] { bag += Array(repeating: w, count: freqCommon) }
        for w in words[common..<(common + lo)] { bag += Array(repeating: w, count: freqRare) }
        bag.shuffle(using: &rng)
        var t: [Int32] = []
        for (i, w) in bag.enumerated() {
            t += tokenizer.evalEncode("\(i == 0 ? "" : " ")\(i + 1).") + tokenizer.evalEncode(" " + w)
        }
        s.context = t
        return s
    }

    /// Frequent words extraction: coded words (random 3–6 letter strings) drawn with Zipf
    /// (α = 2) frequencies; the three most frequent have strictly larger counts than any other.
    func frequentWords(_ length: Int, _ maxNew: Int, _ overhead: (EvalSample) -> Int,
                       _ rng: inout Xoshiro256) throws -> EvalSample {
        var s = EvalSample()
        s.userBefore = "Read the following coded text and track the frequency of each coded word. Find the three most frequently appeared coded words. "
        s.userAfter = "\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the three most frequently appeared words in the above coded text?"
        s.answerPrefix = " Answer: According to the coded text above, the three most frequently appeared words are:"
        s.scoring = .all
        let b = try budget(s, length, maxNew, overhead, need: 60)
        let letters = Array("abcdefghijklmnopqrstuvwxyz")
        var vocab: [String] = []
        var seen = Set<String>()
        let ranks = 200
        while vocab.count < ranks {
            let w = String((0..<Int.random(in: 3...6, using: &rng)).map { _ in letters.randomElement(using: &rng)! })
            if seen.insert(w).inserted { vocab.append(w) }
        }
        s.expected = Array(vocab[0..<3])
        let itemTokens = vocab.map { tokenizer.evalEncode(" \($0) ....").count }
        // Counts for `n` words in all: rank r gets n / (H r^2) (at least 1 for the top ranks
        // used); the top four strictly decreasing.
        func counts(_ n: Int) -> [Int] {
            var h = 0.0
            for r in 1...ranks { h += 1 / Double(r * r) }
            var c = (1...ranks).map { Int(Double(n) / (h * Double($0 * $0))) }
            for r in stride(from: 3, through: 0, by: -1) where c[r] <= (r + 1 < ranks ? c[r + 1] : 0) {
                c[r] = (r + 1 < ranks ? c[r + 1] : 0) + 1
            }
            return c
        }
        func cost(_ c: [Int]) -> Int { zip(c, itemTokens).reduce(0) { $0 + $1.0 * $1.1 } }
        var lo = 4, hi = max(8, b)
        while lo < hi {  // the largest n whose estimated tokens fit
            let mid = (lo + hi + 1) / 2
            if cost(counts(mid)) <= b { lo = mid } else { hi = mid - 1 }
        }
        // Items are tokenized one by one, so the estimate is the exact length.
        let c = counts(lo)
        guard cost(c) <= b else { throw EvalError.invalid("length \(length) is too short for fwe") }
        var bag: [Int] = []
        for (r, k) in c.enumerated() { bag += Array(repeating: r, count: k) }
        bag.shuffle(using: &rng)
        let itemIds = vocab.map { tokenizer.evalEncode(" \($0) ....") }
        var t: [Int32] = []
        for r in bag { t += itemIds[r] }
        s.context = t
        return s
    }
}
