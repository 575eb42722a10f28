/// Deterministic answer matching for needle-in-a-haystack (no judge model).
///
/// The expected answer marks its key terms in brackets, with alternatives separated by `|`:
/// "Eat a [sandwich] and sit in [Dolores Park] on a sunny day." An output is correct when
/// every key term occurs in it, as a run of consecutive words, and at least one occurrence of
/// each is not negated. Both sides are normalised first: lowercase, apostrophes dropped,
/// every other non-alphanumeric character a word break, and each word reduced by a light
/// plural stemmer (sandwiches → sandwich, parks → park). A term counts as negated when one of
/// "not no never dont doesnt didnt isnt wasnt cannot cant without nor" is among the three
/// words before it.
///
/// So the right answer passes in any wording that keeps the key facts ("Sit in Dolores Park
/// and eat sandwiches", "**Eating a sandwich in dolores park**"), and near-misses that change
/// or negate one fail ("eat a burrito in Dolores Park", "a sandwich in Golden Gate Park",
/// "don't eat a sandwich in Dolores Park", "Dolores Park" alone).
///
/// An answer without brackets makes every content word a key term: the answer's words minus
/// common function words and minus the question's words.
public struct NeedleScorer: Sendable, Equatable {
    /// The answer as given (brackets included).
    public let answer: String
    /// Key terms: each a list of alternatives, each alternative a list of normalised words.
    public let terms: [[[String]]]

    static let negations: Set<String> = ["not", "no", "never", "dont", "doesnt", "didnt", "isnt", "wasnt",
                                         "cannot", "cant", "without", "nor"]
    static let stopwords: Set<String> = [
        "a", "an", "the", "and", "or", "but", "of", "in", "on", "at", "to", "for", "with", "by", "from",
        "is", "are", "was", "were", "be", "been", "it", "its", "this", "that", "these", "those", "as",
        "into", "onto", "your", "you", "i", "we", "they", "he", "she", "his", "her", "their", "our",
        "what", "which", "who", "whom", "how", "when", "where", "why", "do", "does", "did", "best", "thing",
    ]

    public init(answer: String, question: String = "") throws {
        self.answer = answer
        var terms: [[[String]]] = []
        var rest = Substring(answer)
        var sawBracket = false
        while let open = rest.firstIndex(of: "[") {
            guard let close = rest[open...].firstIndex(of: "]") else {
                throw EvalError.invalid("answer '\(answer)': '[' without ']'")
            }
            sawBracket = true
            let alternatives = rest[rest.index(after: open)..<close].split(separator: "|")
                .map { NeedleScorer.words(String($0)) }.filter { !$0.isEmpty }
            guard !alternatives.isEmpty else { throw EvalError.invalid("answer '\(answer)': empty [] term") }
            terms.append(alternatives)
            rest = rest[rest.index(after: close)...]
        }
        if !sawBracket {
            let asked = Set(NeedleScorer.words(question))
            var seen = Set<String>()
            for w in NeedleScorer.words(answer) where !NeedleScorer.stopwords.contains(w) && !asked.contains(w) {
                if seen.insert(w).inserted { terms.append([[w]]) }
            }
        }
        guard !terms.isEmpty else {
            throw EvalError.invalid("answer '\(answer)' has no key terms (mark them as [term] or use content words)")
        }
        self.terms = terms
    }

    /// The answer without brackets (what is shown as expected).
    public var plainAnswer: String { answer.filter { $0 != "[" && $0 != "]" }.replacing("|", with: "/") }

    /// True when `output` contains every key term, not negated.
    public func accepts(_ output: String) -> Bool {
        let w = NeedleScorer.words(output)
        return terms.allSatisfy { alternatives in
            alternatives.contains { phrase in
                NeedleScorer.occurrences(of: phrase, in: w).contains { start in
                    !w[max(0, start - 3)..<start].contains { NeedleScorer.negations.contains($0) }
                }
            }
        }
    }

    static func occurrences(of phrase: [String], in w: [String]) -> [Int] {
        guard !phrase.isEmpty, w.count >= phrase.count else { return [] }
        return (0...(w.count - phrase.count)).filter { i in
            phrase.indices.allSatisfy { w[i + $0] == phrase[$0] }
        }
    }

    /// Normalised words: lowercase, apostrophes removed, split at anything not a letter or
    /// digit, plurals stemmed.
    public static func words(_ s: String) -> [String] {
        var out: [String] = []
        var cur = ""
        for ch in s.lowercased() {
            if ch == "'" || ch == "\u{2019}" { continue }
            if ch.isLetter || ch.isNumber {
                cur.append(ch)
            } else if !cur.isEmpty {
                out.append(stem(cur))
                cur = ""
            }
        }
        if !cur.isEmpty { out.append(stem(cur)) }
        return out
    }

    /// Light plural stemmer: -ies → -y; -ches/-shes/-xes/-sses → drop "es"; other -s (not -ss,
    /// -us, -is) → drop "s"; words of three letters or fewer are kept.
    static func stem(_ w: String) -> String {
        guard w.count > 3 else { return w }
        if w.hasSuffix("ies") { return String(w.dropLast(3)) + "y" }
        for suffix in ["ches", "shes", "xes", "sses"] where w.hasSuffix(suffix) { return String(w.dropLast(2)) }
        if w.hasSuffix("s") && !w.hasSuffix("ss") && !w.hasSuffix("us") && !w.hasSuffix("is") {
            return String(w.dropLast())
        }
        return w
    }
}

/// RULER's metrics (string_match_all, string_match_part): case-insensitive substring tests.
public enum StringMatch {
    /// The share of `refs` that occur in `output`.
    public static func all(_ output: String, _ refs: [String]) -> Double {
        guard !refs.isEmpty else { return 0 }
        let o = output.lowercased()
        return Double(refs.filter { o.contains($0.lowercased()) }.count) / Double(refs.count)
    }

    /// 1 if any of `refs` occurs in `output`, else 0.
    public static func part(_ output: String, _ refs: [String]) -> Double {
        let o = output.lowercased()
        return refs.contains { o.contains($0.lowercased()) } ? 1 : 0
    }

    /// Score (0…1) and correctness of an output under a sample's scoring.
    public static func score(_ output: String, _ sample: EvalSample) -> (score: Double, correct: Bool) {
        switch sample.scoring {
        case .needle(let s):
            let ok = s.accepts(output)
            return (ok ? 1 : 0, ok)
        case .all:
            let x = all(output, sample.expected)
            return (x, x == 1)
        case .part:
            let x = part(output, sample.expected)
            return (x, x == 1)
        case .none:
            return (0, false)
        }
    }
}
