/// What the eval generators need from a tokenizer: plain text in and out, and which tokens end
/// a sentence (where a needle may be inserted). `Tokenizer` conforms; tests use a byte-level
/// stand-in so they need no model.
public protocol EvalTokenizer {
    /// Tokens of `text` with no BOS/EOS and no special-token parsing.
    func evalEncode(_ text: String) -> [Int32]
    func evalDecode(_ ids: [Int32]) -> String
    /// True for a token whose text ends with a period (gkamradt's "period tokens").
    func endsSentence(_ id: Int32) -> Bool
}

extension Tokenizer: EvalTokenizer {
    public func evalEncode(_ text: String) -> [Int32] { encode(text, addSpecial: false, parseSpecial: false) }
    public func evalDecode(_ ids: [Int32]) -> String { decode(ids) }
    public func endsSentence(_ id: Int32) -> Bool { pieceBytes(id).last == UInt8(ascii: ".") }
}

/// How a sample's output is scored.
public enum EvalScoring: Sendable, Equatable {
    /// NIAH: the answer's key terms must appear (see `NeedleScorer`).
    case needle(NeedleScorer)
    /// RULER string_match_all: the share of the expected strings found in the output.
    case all
    /// RULER string_match_part: 1 if any expected string is found.
    case part
    /// Perplexity: no answer to score.
    case none
}

/// One generated test prompt, split so that its long part stays in tokens (exact length, and
/// cells of one length share the cached prefix up to where they differ).
///
/// The chat turns are: an optional system message; a user message
/// `userBefore + context + userAfter`; an optional second user message `question`; then the
/// model's turn, which starts with `answerPrefix` (RULER's answer prefix; empty for NIAH).
public struct EvalSample: Sendable {
    public var system: String?
    public var userBefore = ""
    public var context: [Int32] = []
    public var userAfter = ""
    public var question: String?
    public var answerPrefix = ""
    /// The strings a correct output contains (the needle answer, the value(s), the variables…).
    public var expected: [String] = []
    public var scoring: EvalScoring = .all
    /// Depth (percent of the context) of the needle that is asked about, where there is one.
    public var depth: Double?
    /// Teacher-forced check of the retrieval alone (kv): the answer's opening words as the
    /// model writes them (`forcedPrefix`), then the string to retrieve (`forcedAnswer`), whose
    /// tokens are scored given everything before them. Unlike the generated output, this does
    /// not depend on the form the model picks for its answer.
    public var forcedPrefix = ""
    public var forcedAnswer: String?

    public init() {}
}

/// Turns an `EvalSample` into prompt tokens in the model's chat format.
public struct EvalPromptFormat {
    public let tokenizer: Tokenizer
    /// nil: no chat template; the parts are joined as plain text.
    public let template: ChatTemplate?

    public init(tokenizer: Tokenizer, template: ChatTemplate?) {
        self.tokenizer = tokenizer
        self.template = template
    }

    static let mark = "\u{1}SIFT_CONTEXT\u{1}"

    /// The text before and after the context.
    public func frame(_ s: EvalSample) -> (head: String, tail: String) {
        let full: String
        if let template {
            var messages: [ChatMessage] = []
            if let system = s.system { messages.append(ChatMessage(role: "system", content: system)) }
            messages.append(ChatMessage(role: "user", content: s.userBefore + EvalPromptFormat.mark + s.userAfter))
            if let q = s.question { messages.append(ChatMessage(role: "user", content: q)) }
            full = template.format(messages, addGenerationPrompt: true) + s.answerPrefix
        } else {
            var t = ""
            if let system = s.system { t += system + "\n\n" }
            t += s.userBefore + EvalPromptFormat.mark + s.userAfter
            if let q = s.question { t += "\n\n" + q }
            full = t + "\n" + s.answerPrefix
        }
        let r = full.firstRange(of: EvalPromptFormat.mark)!
        return (String(full[..<r.lowerBound]), String(full[r.upperBound...]))
    }

    /// Prompt tokens (BOS first when the model adds one): head + context + tail.
    public func tokens(_ s: EvalSample) -> [Int32] {
        let (head, tail) = frame(s)
        return tokenizer.encode(head, addSpecial: true, parseSpecial: true) + s.context
            + tokenizer.encode(tail, addSpecial: false, parseSpecial: true)
    }

    /// Tokens the frame takes around the context (what a generator must leave free).
    public func overhead(_ s: EvalSample) -> Int {
        var empty = s
        empty.context = []
        return tokens(empty).count
    }
}
