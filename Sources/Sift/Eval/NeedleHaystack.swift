/// Needle in a haystack, as in gkamradt's LLMTest_NeedleInAHaystack: essays fill the context
/// to a length in tokens, one sentence (the needle) is inserted at a depth percent at a
/// sentence boundary, and the model is asked the question the needle answers.
///
/// The prompt is that repository's (its OpenAI provider's messages): a system message "You are
/// a helpful AI bot that answers questions for a user. Keep your response short and direct",
/// a user message holding the context, and a second user message "{question} Don't give
/// information outside the document or repeat your findings", in the model's chat format.
///
/// Length: the whole prompt (chat frame + context) plus the tokens to generate is exactly the
/// cell's length `L` (the original leaves a 200-token buffer for the same purpose).
public struct NeedleHaystack {
    public static let defaultNeedle = "\nThe best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.\n"
    public static let defaultQuestion = "What is the best thing to do in San Francisco?"
    /// Bracketed terms are the key terms the scorer requires (see `NeedleScorer`).
    public static let defaultAnswer = "Eat a [sandwich] and sit in [Dolores Park] on a sunny day."
    public static let system = "You are a helpful AI bot that answers questions for a user. Keep your response short and direct"

    public let needle: String
    public let question: String
    public let scorer: NeedleScorer
    let needleTokens: [Int32]
    /// The essays, tokenized once, concatenated in file-name order (enough for the longest cell).
    public let haystack: [Int32]
    let tokenizer: EvalTokenizer

    /// - Parameters:
    ///   - essays: haystack texts, in order; repeated if they are shorter than `maxLength`.
    public init(tokenizer: EvalTokenizer, essays: [String], maxLength: Int,
                needle: String = defaultNeedle, question: String = defaultQuestion,
                answer: String = defaultAnswer) throws {
        guard !essays.isEmpty else { throw EvalError.invalid("the haystack has no text") }
        self.tokenizer = tokenizer
        self.needle = needle
        self.question = question
        scorer = try NeedleScorer(answer: answer, question: question)
        needleTokens = tokenizer.evalEncode(needle)
        guard !needleTokens.isEmpty else { throw EvalError.invalid("the needle is empty") }
        var hay: [Int32] = []
        var i = 0
        while hay.count < maxLength {
            hay += tokenizer.evalEncode(essays[i % essays.count])
            i += 1
            if i >= essays.count && hay.isEmpty { throw EvalError.invalid("the haystack has no text") }
        }
        haystack = hay
    }

    /// The sample of one cell: `length` tokens in all (prompt + `maxNew`), needle at `depth`%.
    public func sample(length: Int, depth: Double, maxNew: Int, overhead: (EvalSample) -> Int) throws -> EvalSample {
        var s = EvalSample()
        s.system = NeedleHaystack.system
        s.question = "\(question) Don't give information outside the document or repeat your findings"
        s.expected = [scorer.answer]
        s.scoring = .needle(scorer)
        s.depth = depth
        let budget = length - maxNew - overhead(s)
        guard budget >= needleTokens.count else {
            throw EvalError.invalid("length \(length) is too short: the prompt frame, needle and \(maxNew) answer tokens need \(length - budget + needleTokens.count)")
        }
        s.context = NeedleInsertion.build(haystack: haystack, needles: [(needleTokens, depth)], budget: budget,
                                          endsSentence: tokenizer.endsSentence).tokens
        return s
    }
}

public enum EvalError: Error, CustomStringConvertible, Equatable {
    case invalid(String)
    /// The results folder holds a run with other settings.
    case settingsMismatch(directory: String, differences: [String])
    case stopped

    public var description: String {
        switch self {
        case .invalid(let s): return s
        case .settingsMismatch(let dir, let diffs):
            return "\(dir) holds results of a run with different settings (\(diffs.joined(separator: "; "))); use another --out folder or the same settings"
        case .stopped: return "stopped"
        }
    }
}
