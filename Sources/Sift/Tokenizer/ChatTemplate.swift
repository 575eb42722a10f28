/// One message of a conversation.
public struct ChatMessage: Sendable, Codable, Equatable {
    /// "system", "user", "assistant" (or "tool" for ChatML).
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// Formats a conversation as the model was trained to see it.
///
/// sift does not run the Jinja template in `tokenizer.chat_template`; it recognises which
/// family the template belongs to and formats the way that template does:
///
/// - ChatML (template contains `<|im_start|>`, e.g. Qwen2.5): each message is
///   `<|im_start|>{role}\n{content}<|im_end|>\n`. If the template supplies a default system
///   message for conversations without one (Qwen2.5's "You are Qwen, created by Alibaba
///   Cloud. You are a helpful assistant."), it is read from the template text and inserted.
///   The generation prompt is `<|im_start|>assistant\n`.
/// - Gemma (template contains `<start_of_turn>`): turns are
///   `<start_of_turn>{user|model}\n{content, trimmed}<end_of_turn>\n`; "assistant" is written
///   `model`, and a leading system message is put before the first turn's content followed
///   by a blank line (Gemma has no system role). The generation prompt is
///   `<start_of_turn>model\n`.
///
/// The formatted text does not start with BOS (Gemma's template writes `{{ bos_token }}`):
/// `Tokenizer.encode(_:addSpecial: true)` adds it. Tokenize the result with special-token
/// parsing on.
///
/// A file without `tokenizer.chat_template` (Gemma 3 270M ships none) gets the family whose
/// turn tokens its vocabulary has.
public struct ChatTemplate: Sendable {
    public enum Kind: Sendable, Equatable {
        case chatML
        case gemma
    }

    public var kind: Kind
    /// ChatML: the system message used when the conversation has none (from the template).
    public var defaultSystemPrompt: String?

    public init(kind: Kind, defaultSystemPrompt: String? = nil) {
        self.kind = kind
        self.defaultSystemPrompt = defaultSystemPrompt
    }

    public init(gguf: GGUFFile) throws {
        let key = "tokenizer.chat_template"
        if let value = gguf[key] {
            guard let template = value.string else {
                throw TokenizerError(path: gguf.path, key: key, message: "expected a string, found \(value.type)")
            }
            if template.contains("<|im_start|>") {
                self.init(kind: .chatML, defaultSystemPrompt: ChatTemplate.defaultSystemPrompt(inChatML: template))
            } else if template.contains("<start_of_turn>") {
                self.init(kind: .gemma)
            } else {
                throw TokenizerError(path: gguf.path, key: key,
                                     message: "unrecognised chat template (sift formats ChatML '<|im_start|>' and Gemma '<start_of_turn>' conversations)")
            }
            return
        }
        // No template: go by the turn tokens in the vocabulary.
        if case .array(_, let tokens)? = gguf["tokenizer.ggml.tokens"] {
            var hasGemma = false, hasChatML = false
            for t in tokens {
                guard case .string(let s) = t, s.hasPrefix("<") else { continue }
                if s == "<start_of_turn>" { hasGemma = true }
                if s == "<|im_start|>" { hasChatML = true }
            }
            if hasGemma {
                self.init(kind: .gemma)
                return
            }
            if hasChatML {
                self.init(kind: .chatML)
                return
            }
        }
        throw TokenizerError(path: gguf.path, key: key,
                             message: "missing, and the vocabulary has neither '<|im_start|>' nor '<start_of_turn>' to go by")
    }

    /// The literal system message a ChatML template writes when the conversation has none:
    /// the text of a `'<|im_start|>system\n…<|im_end|>` string literal that is not built
    /// from `messages[…]`.
    static func defaultSystemPrompt(inChatML template: String) -> String? {
        let open = "<|im_start|>system\\n"
        let close = "<|im_end|>"
        var rest = Substring(template)
        while let start = rest.firstRange(of: open) {
            let after = rest[start.upperBound...]
            guard let end = after.firstRange(of: close) else { break }
            let body = after[..<end.lowerBound]
            // A literal default has no quote, concatenation or Jinja in it.
            if !body.isEmpty, !body.contains(where: { "'\"+{}".contains($0) }) {
                return unescapeJinjaString(String(body))
            }
            rest = after
        }
        return nil
    }

    /// Undoes the backslash escapes of a Jinja string literal.
    static func unescapeJinjaString(_ s: String) -> String {
        var out = ""
        var it = s.makeIterator()
        while let c = it.next() {
            guard c == "\\", let e = it.next() else {
                out.append(c)
                continue
            }
            switch e {
            case "n": out.append("\n")
            case "t": out.append("\t")
            case "r": out.append("\r")
            default: out.append(e)
            }
        }
        return out
    }

    /// The conversation as prompt text; with `addGenerationPrompt`, ending with the opening
    /// of the assistant's turn.
    public func format(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> String {
        switch kind {
        case .chatML: return formatChatML(messages, addGenerationPrompt: addGenerationPrompt)
        case .gemma: return formatGemma(messages, addGenerationPrompt: addGenerationPrompt)
        }
    }

    private func formatChatML(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> String {
        var out = ""
        func turn(_ role: String, _ content: String) {
            out += "<|im_start|>\(role)\n\(content)<|im_end|>\n"
        }
        var rest = messages[...]
        if let first = messages.first, first.role == "system" {
            turn("system", first.content)
            rest = messages.dropFirst()
        } else if let system = defaultSystemPrompt {
            turn("system", system)
        }
        var i = rest.startIndex
        while i < rest.endIndex {
            let m = rest[i]
            if m.role == "tool" {
                // Consecutive tool results go into one user turn, each in <tool_response> tags.
                out += "<|im_start|>user"
                while i < rest.endIndex && rest[i].role == "tool" {
                    out += "\n<tool_response>\n\(rest[i].content)\n</tool_response>"
                    i += 1
                }
                out += "<|im_end|>\n"
                continue
            }
            turn(m.role, m.content)
            i += 1
        }
        if addGenerationPrompt { out += "<|im_start|>assistant\n" }
        return out
    }

    private func formatGemma(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> String {
        var out = ""
        // System text waits for the next turn and is put before its content.
        var pendingSystem = ""
        for m in messages {
            if m.role == "system" {
                pendingSystem += m.content + "\n\n"
                continue
            }
            let role = m.role == "assistant" ? "model" : m.role
            out += "<start_of_turn>\(role)\n\(pendingSystem)\(ChatTemplate.trim(m.content))<end_of_turn>\n"
            pendingSystem = ""
        }
        if !pendingSystem.isEmpty {
            // Only system text: give it a user turn of its own rather than drop it.
            out += "<start_of_turn>user\n\(ChatTemplate.trim(pendingSystem))<end_of_turn>\n"
        }
        if addGenerationPrompt { out += "<start_of_turn>model\n" }
        return out
    }

    /// Jinja's `trim`: strips leading and trailing whitespace.
    static func trim(_ s: String) -> String {
        var sub = Substring(s)
        while let c = sub.first, c.isWhitespace { sub.removeFirst() }
        while let c = sub.last, c.isWhitespace { sub.removeLast() }
        return String(sub)
    }
}
