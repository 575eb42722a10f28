#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A tokenizer metadata problem: which file, which key, what is wrong with it.
public struct TokenizerError: Error, CustomStringConvertible {
    public let path: String
    public let key: String
    public let message: String

    public init(path: String, key: String, message: String) {
        self.path = path
        self.key = key
        self.message = message
    }

    public var description: String { "\(path): tokenizer metadata '\(key)': \(message)" }
}

/// Token types as GGUF numbers them (`tokenizer.ggml.token_type`).
enum TokenType: UInt8 {
    case undefined = 0, normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
}

/// Text ↔ token ids for a model, built from its GGUF `tokenizer.*` metadata.
///
/// Two vocabularies are supported:
/// - `tokenizer.ggml.model = "gpt2"`: byte-level BPE with a merge list and a pre-tokenizer
///   named by `tokenizer.ggml.pre` (`qwen2`; also `llama-bpe`/`llama3`) — Qwen2.5.
/// - `tokenizer.ggml.model = "llama"`: SentencePiece BPE over scored pieces with byte
///   fallback — Gemma 3 (and Llama 2 style vocabularies).
///
/// Encoding first splits out special tokens (control, user-defined and unknown tokens; the
/// control and unknown ones only when `parseSpecial` is true), then tokenizes the text
/// between them. Results match llama.cpp's tokenizer on the golden samples.
///
/// Thread safety: `encode` may be called from several threads (the pre-token cache is
/// locked); everything else is immutable after `init`.
public final class Tokenizer: @unchecked Sendable {
    enum Kind { case bytePairEncoding, sentencePiece }

    let kind: Kind
    public let path: String

    /// Token text bytes, all tokens back to back (`textStart` has one more entry than tokens).
    private let textArena: [UInt8]
    private let textStart: [Int]
    let tokenTypes: [TokenType]
    /// Decoded bytes of each token (what `pieceBytes` returns), back to back.
    private let pieceArena: [UInt8]
    private let pieceStart: [Int]
    private let special: SpecialTokenMatcher
    private let bpe: BytePairEncoder?
    private let spm: SentencePieceEncoder?

    public var vocabularySize: Int { tokenTypes.count }
    public let bos: Int32?
    public let eos: Int32?
    /// End of turn (`tokenizer.ggml.eot_token_id`, or found by its text).
    public let eot: Int32?
    public let addsBOS: Bool
    public let addsEOS: Bool
    /// SentencePiece: whether a space is put before the text (`tokenizer.ggml.add_space_prefix`).
    public let addsSpacePrefix: Bool
    /// Tokens after which generation stops: EOS, EOT/EOM, and the end-of-turn/end-of-text
    /// tokens the vocabulary has (`<|im_end|>`, `<|endoftext|>`, `<end_of_turn>`, …).
    public let endOfGeneration: Set<Int32>

    /// The pre-token cache of byte-level BPE (pre-token bytes → its tokens) and scratch space.
    private final class BPEState {
        var cache = ByteStringMap(capacity: 4096)
        var cacheSpan: [(start: Int32, count: Int32)] = []
        var cacheTokens: [Int32] = []
        var scratch = BytePairEncoder.Scratch()
        var scalars: [UInt32] = []
        var classes: [UInt8] = []
        var offsets: [Int] = []
        var useCache = true
    }

    private let bpeState = BPEState()
    private let lock: UnsafeMutablePointer<pthread_mutex_t>

    /// Texts that end a turn or a document in the vocabularies sift knows (as llama.cpp treats
    /// them). Qwen's FIM pad / repo-name / file-separator tokens are included because a code
    /// model that emits one has finished the file it was asked for.
    static let endOfGenerationTexts: Set<String> = [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
        "<EOT>", "<|end_of_text|>", "<end_of_utterance>",
        "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
    ]
    static let endOfTurnTexts = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>"]

    public init(gguf: GGUFFile) throws {
        path = gguf.path
        let path = gguf.path
        func fail(_ key: String, _ message: String) -> TokenizerError {
            TokenizerError(path: path, key: key, message: message)
        }
        /// Runs a typed GGUF accessor, turning its error into a TokenizerError for the key.
        func read<T>(_ key: String, _ get: (String) throws -> T) throws -> T {
            do {
                return try get(key)
            } catch let e as GGUFError {
                throw fail(key, e.message == "missing metadata key" ? "missing (the file has no tokenizer of its own?)" : e.message)
            }
        }
        func optionalInt(_ key: String) throws -> Int? {
            gguf[key] == nil ? nil : try read(key, gguf.int)
        }
        func optionalBool(_ key: String) throws -> Bool? {
            guard let v = gguf[key] else { return nil }
            guard let b = v.bool else { throw fail(key, "expected a bool, found \(v.type)") }
            return b
        }

        let modelKey = "tokenizer.ggml.model"
        let model = try read(modelKey, gguf.string)
        let kind: Kind
        switch model {
        case "gpt2": kind = .bytePairEncoding
        case "llama": kind = .sentencePiece
        default:
            throw fail(modelKey, "unsupported tokenizer '\(model)' (sift reads 'gpt2' byte-level BPE and 'llama' SentencePiece)")
        }

        let tokensKey = "tokenizer.ggml.tokens"
        let tokens = try read(tokensKey, gguf.stringArray)
        guard !tokens.isEmpty, tokens.count < Int(Int32.max) else {
            throw fail(tokensKey, "has \(tokens.count) tokens")
        }
        let n = tokens.count

        let typesKey = "tokenizer.ggml.token_type"
        var types = [TokenType](repeating: .normal, count: n)
        if gguf[typesKey] != nil {
            let raw = try read(typesKey, gguf.intArray)
            guard raw.count >= n else { throw fail(typesKey, "has \(raw.count) entries for \(n) tokens") }
            for i in 0..<n { types[i] = TokenType(rawValue: UInt8(clamping: raw[i])) ?? .undefined }
        }

        // Token texts; llama.cpp names empty tokens "[EMPTY_i]" so that they stay distinct.
        var arena: [UInt8] = []
        var starts: [Int] = []
        arena.reserveCapacity(n * 8)
        starts.reserveCapacity(n + 1)
        var vocabulary = ByteStringMap(capacity: n)
        var texts: [[UInt8]] = []
        texts.reserveCapacity(n)
        for (i, t) in tokens.enumerated() {
            let bytes = t.isEmpty ? Array("[EMPTY_\(i)]".utf8) : Array(t.utf8)
            starts.append(arena.count)
            arena.append(contentsOf: bytes)
            if vocabulary.get(bytes) == nil { vocabulary.set(bytes, Int32(i)) }
            texts.append(bytes)
        }
        starts.append(arena.count)
        textArena = arena
        textStart = starts

        func tokenID(_ key: String) throws -> Int32? {
            guard let v = try optionalInt(key) else { return nil }
            guard v >= 0 && v < n else { throw fail(key, "token id \(v) is outside the vocabulary (0..<\(n))") }
            return Int32(v)
        }
        func idOfText(_ s: String) -> Int32? { vocabulary.get(Array(s.utf8)) }

        let bos = try tokenID("tokenizer.ggml.bos_token_id")
        let eos = try tokenID("tokenizer.ggml.eos_token_id")
        let eom = try tokenID("tokenizer.ggml.eom_token_id")
        let eotFromText = Tokenizer.endOfTurnTexts.lazy.compactMap { idOfText($0) }.first
        let eot = try tokenID("tokenizer.ggml.eot_token_id") ?? eotFromText

        // Defaults as llama.cpp: SentencePiece vocabularies add BOS and a space prefix.
        let addsBOS = try optionalBool("tokenizer.ggml.add_bos_token") ?? (kind == .sentencePiece)
        let addsEOS = try optionalBool("tokenizer.ggml.add_eos_token") ?? false
        let addsSpacePrefix = try optionalBool("tokenizer.ggml.add_space_prefix") ?? (kind == .sentencePiece)
        if addsBOS && bos == nil {
            throw fail("tokenizer.ggml.bos_token_id", "missing, but tokenizer.ggml.add_bos_token says a BOS token is added")
        }
        if addsEOS && eos == nil {
            throw fail("tokenizer.ggml.eos_token_id", "missing, but tokenizer.ggml.add_eos_token says an EOS token is added")
        }

        // End of generation; tokens found by their text count as control tokens even where
        // the file typed them otherwise (as llama.cpp does).
        var eog = Set<Int32>()
        for id in [eos, eot, eom] { if let id { eog.insert(id) } }
        for text in Tokenizer.endOfGenerationTexts {
            if let id = idOfText(text) {
                eog.insert(id)
                if types[Int(id)] != .control { types[Int(id)] = .control }
            }
        }
        self.kind = kind
        self.bos = bos
        self.eos = eos
        self.eot = eot
        self.addsBOS = addsBOS
        self.addsEOS = addsEOS
        self.addsSpacePrefix = addsSpacePrefix
        endOfGeneration = eog
        tokenTypes = types

        var specials: [(id: Int32, bytes: [UInt8], controlLike: Bool)] = []
        for i in 0..<n {
            switch types[i] {
            case .control, .unknown: specials.append((Int32(i), texts[i], true))
            case .userDefined: specials.append((Int32(i), texts[i], false))
            default: break
            }
        }
        special = SpecialTokenMatcher(specials)

        switch kind {
        case .bytePairEncoding:
            let preKey = "tokenizer.ggml.pre"
            let pre = try read(preKey, gguf.string)
            let preTokenizer: BytePairEncoder.PreTokenizer
            switch pre {
            case "qwen2": preTokenizer = .qwen2
            case "llama-bpe", "llama3": preTokenizer = .llama3
            default:
                throw fail(preKey, "unsupported pre-tokenizer '\(pre)' (sift implements 'qwen2' and 'llama-bpe')")
            }
            let mergesKey = "tokenizer.ggml.merges"
            let merges = try read(mergesKey, gguf.stringArray)
            bpe = try BytePairEncoder(preTokenizer: preTokenizer, vocabulary: vocabulary, vocabularySize: n,
                                      merges: merges, error: { fail(mergesKey, $0) })
            spm = nil
        case .sentencePiece:
            let scoresKey = "tokenizer.ggml.scores"
            let scores = try read(scoresKey, gguf.floatArray)
            guard scores.count >= n else { throw fail(scoresKey, "has \(scores.count) entries for \(n) tokens") }
            var byteToken = [Int32](repeating: -1, count: 256)
            let hex = Array("0123456789ABCDEF".utf8)
            for b in 0..<256 {
                let name: [UInt8] = Array("<0x".utf8) + [hex[b >> 4], hex[b & 15]] + [UInt8(ascii: ">")]
                byteToken[b] = vocabulary.get(name) ?? vocabulary.get([UInt8(b)]) ?? -1
            }
            spm = SentencePieceEncoder(vocabulary: vocabulary, scores: scores, byteToken: byteToken,
                                       unknown: try tokenID("tokenizer.ggml.unknown_token_id"))
            bpe = nil
        }

        // What each token decodes to.
        var pieces: [UInt8] = []
        var pieceStarts: [Int] = []
        pieces.reserveCapacity(arena.count)
        pieceStarts.reserveCapacity(n + 1)
        for i in 0..<n {
            pieceStarts.append(pieces.count)
            let text = texts[i]
            switch types[i] {
            case .normal:
                switch kind {
                case .bytePairEncoding:
                    pieces.append(contentsOf: BytePairEncoder.rawBytes(ofByteLevelText: text) ?? text)
                case .sentencePiece:
                    var k = 0
                    while k < text.count {
                        if k + 2 < text.count, text[k] == 0xE2, text[k + 1] == 0x96, text[k + 2] == 0x81 {
                            pieces.append(0x20)
                            k += 3
                        } else {
                            pieces.append(text[k])
                            k += 1
                        }
                    }
                }
            case .byte:
                if let b = Tokenizer.parseByteToken(text) {
                    pieces.append(b)
                } else {
                    pieces.append(contentsOf: text)
                }
            default:
                // Control, user-defined, unknown, unused: their text as written.
                pieces.append(contentsOf: text)
            }
        }
        pieceStarts.append(pieces.count)
        pieceArena = pieces
        pieceStart = pieceStarts

        lock = .allocate(capacity: 1)
        pthread_mutex_init(lock, nil)
    }

    deinit {
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    /// "<0xAB>" → 0xAB.
    static func parseByteToken(_ text: [UInt8]) -> UInt8? {
        guard text.count == 6, text[0] == 0x3C, text[1] == 0x30, text[2] == 0x78, text[5] == 0x3E else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x41...0x46: return c - 0x41 + 10
            case 0x61...0x66: return c - 0x61 + 10
            default: return nil
            }
        }
        guard let hi = nibble(text[3]), let lo = nibble(text[4]) else { return nil }
        return hi << 4 | lo
    }

    /// The text of a token as the vocabulary spells it (byte-level characters, "▁", "<0x0A>").
    func tokenText(_ id: Int32) -> String {
        guard id >= 0 && Int(id) < vocabularySize else { return "" }
        return String(decoding: textArena[textStart[Int(id)]..<textStart[Int(id) + 1]], as: UTF8.self)
    }

    /// The byte-level BPE encoder (nil for SentencePiece), for tests of the pre-tokenizer.
    var preTokenizerForTesting: BytePairEncoder? { bpe }

    func tokenType(_ id: Int32) -> TokenType? {
        guard id >= 0 && Int(id) < vocabularySize else { return nil }
        return tokenTypes[Int(id)]
    }

    // MARK: encoding

    /// Token ids of `text`.
    /// - Parameters:
    ///   - addSpecial: add BOS (and EOS) where the model's metadata says to.
    ///   - parseSpecial: recognise the text of control tokens (`<|im_start|>`, `<start_of_turn>`,
    ///     `<bos>`…) as those tokens; when false they are tokenized as plain text.
    ///     User-defined tokens are recognised either way.
    public func encode(_ text: String, addSpecial: Bool = true, parseSpecial: Bool = true) -> [Int32] {
        var out: [Int32] = []
        out.reserveCapacity(text.utf8.count / 3 + 2)
        if addSpecial && addsBOS, let bos { out.append(bos) }
        var bytes = Array(text.utf8)
        bytes.withUnsafeBufferPointer { buf in
            let pieces = special.split(buf, parseSpecial: parseSpecial)
            switch kind {
            case .bytePairEncoding:
                pthread_mutex_lock(lock)
                defer { pthread_mutex_unlock(lock) }
                for piece in pieces {
                    switch piece {
                    case .token(let id): out.append(id)
                    case .text(let r): encodeBytePairText(UnsafeBufferPointer(rebasing: buf[r]), into: &out)
                    }
                }
            case .sentencePiece:
                var scratch = SentencePieceEncoder.Scratch()
                var escaped: [UInt8] = []
                var afterSpecial = true
                for piece in pieces {
                    switch piece {
                    case .token(let id):
                        out.append(id)
                        afterSpecial = true
                    case .text(let r):
                        escaped.removeAll(keepingCapacity: true)
                        if addsSpacePrefix && afterSpecial { escaped.append(contentsOf: [0xE2, 0x96, 0x81]) }
                        for b in buf[r] {
                            if b == 0x20 {
                                escaped.append(contentsOf: [0xE2, 0x96, 0x81])
                            } else {
                                escaped.append(b)
                            }
                        }
                        escaped.withUnsafeBufferPointer { spm!.encode($0, into: &out, scratch: &scratch) }
                        afterSpecial = false
                    }
                }
            }
        }
        bytes.removeAll()
        if addSpecial && addsEOS, let eos { out.append(eos) }
        return out
    }

    /// Byte-level BPE of text without special tokens; the caller holds `lock`.
    private func encodeBytePairText(_ text: UnsafeBufferPointer<UInt8>, into out: inout [Int32]) {
        let bpe = self.bpe!
        let st = bpeState
        bpe.preTokenize(text, scalars: &st.scalars, classes: &st.classes, offsets: &st.offsets) { range in
            let word = UnsafeBufferPointer(rebasing: text[range])
            if word.count == 1 {
                out.append(bpe.byteToken[Int(word[0])])
                return
            }
            if st.useCache, let slot = st.cache.get(word.baseAddress!, word.count) {
                let span = st.cacheSpan[Int(slot)]
                out.append(contentsOf: st.cacheTokens[Int(span.start)..<Int(span.start + span.count)])
                return
            }
            let before = out.count
            bpe.encodeWord(word, into: &out, scratch: &st.scratch)
            guard st.useCache else { return }
            if st.cacheTokens.count > 4_000_000 || st.cache.count > 500_000 {
                st.cache.removeAll()
                st.cacheSpan.removeAll(keepingCapacity: true)
                st.cacheTokens.removeAll(keepingCapacity: true)
            }
            st.cache.set(word.baseAddress!, word.count, Int32(st.cacheSpan.count))
            st.cacheSpan.append((Int32(st.cacheTokens.count), Int32(out.count - before)))
            st.cacheTokens.append(contentsOf: out[before...])
        }
    }

    /// Turns the pre-token cache on or off (for measuring the tokenizer without it); clears it.
    func setPreTokenCache(enabled: Bool) {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        bpeState.useCache = enabled
        bpeState.cache.removeAll()
        bpeState.cacheSpan.removeAll()
        bpeState.cacheTokens.removeAll()
    }

    // MARK: decoding

    /// The bytes a token stands for: byte-level characters and byte tokens turned back into
    /// bytes, "▁" into spaces; control and other special tokens as their text. Not
    /// necessarily valid UTF-8 on its own. Empty for an id outside the vocabulary.
    public func pieceBytes(_ id: Int32) -> [UInt8] {
        guard id >= 0 && Int(id) < vocabularySize else { return [] }
        return Array(pieceArena[pieceStart[Int(id)]..<pieceStart[Int(id) + 1]])
    }

    func appendPiece(_ id: Int32, to out: inout [UInt8], stripLeadingSpace: Bool) {
        guard id >= 0 && Int(id) < vocabularySize else { return }
        var a = pieceStart[Int(id)]
        let b = pieceStart[Int(id) + 1]
        if stripLeadingSpace && a < b && pieceArena[a] == 0x20 && tokenTypes[Int(id)] == .normal { a += 1 }
        out.append(contentsOf: pieceArena[a..<b])
    }

    /// Index of the token whose leading space a decoder drops: with `add_space_prefix` the
    /// encoder put a space before the text, and the first text token (after a leading BOS)
    /// carries it.
    func spacePrefixIndex(firstToken: Int32) -> Int? {
        guard addsSpacePrefix else { return nil }
        return firstToken == bos ? 1 : 0
    }

    /// The text of `ids`. Special and control tokens (BOS included) appear as their text;
    /// invalid UTF-8 (a sequence cut at the end) becomes U+FFFD.
    public func decode(_ ids: [Int32]) -> String {
        guard let first = ids.first else { return "" }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        let strip = spacePrefixIndex(firstToken: first)
        for (i, id) in ids.enumerated() {
            appendPiece(id, to: &bytes, stripLeadingSpace: i == strip)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// A decoder for generated tokens one at a time, which holds back the bytes of a
    /// character that a token leaves unfinished until the next token completes it.
    public func streamingDecoder() -> StreamingDecoder {
        StreamingDecoder(tokenizer: self)
    }
}

/// Decodes a token stream incrementally. The strings `append` and `flush` return,
/// concatenated, equal `Tokenizer.decode` of all the tokens.
public final class StreamingDecoder {
    private let tokenizer: Tokenizer
    private var pending: [UInt8] = []
    private var seen = 0
    private var stripIndex: Int?

    init(tokenizer: Tokenizer) {
        self.tokenizer = tokenizer
    }

    /// Adds a token; returns the text that is now complete (possibly empty).
    public func append(_ id: Int32) -> String {
        if seen == 0 { stripIndex = tokenizer.spacePrefixIndex(firstToken: id) }
        tokenizer.appendPiece(id, to: &pending, stripLeadingSpace: seen == stripIndex)
        seen += 1
        let ready = StreamingDecoder.completeLength(pending)
        if ready == 0 { return "" }
        let text = String(decoding: pending[..<ready], as: UTF8.self)
        pending.removeFirst(ready)
        return text
    }

    /// Returns whatever is held back (an unfinished character becomes U+FFFD) and resets
    /// the decoder for a new stream.
    public func flush() -> String {
        let text = String(decoding: pending, as: UTF8.self)
        pending.removeAll()
        seen = 0
        stripIndex = nil
        return text
    }

    /// How many leading bytes can be decoded now: all of them, unless they end in the
    /// well-formed beginning of a multi-byte character, which is held back. Splitting
    /// just before a lead byte never changes how the bytes decode, since a decoder
    /// always resynchronises there.
    static func completeLength(_ b: [UInt8]) -> Int {
        let n = b.count
        var i = n - 1
        while i >= 0 && n - i <= 4 && b[i] & 0xC0 == 0x80 { i -= 1 }
        guard i >= 0 && n - i <= 4 else { return n }
        let lead = b[i]
        let need: Int
        switch lead {
        case 0xC2...0xDF: need = 2
        case 0xE0...0xEF: need = 3
        case 0xF0...0xF4: need = 4
        default: return n
        }
        let have = n - i
        guard have < need else { return n }
        if have >= 2 {
            let second = b[i + 1]
            let ok: Bool
            switch lead {
            case 0xE0: ok = (0xA0...0xBF).contains(second)
            case 0xED: ok = (0x80...0x9F).contains(second)
            case 0xF0: ok = (0x90...0xBF).contains(second)
            case 0xF4: ok = (0x80...0x8F).contains(second)
            default: ok = true
            }
            if !ok { return n }
        }
        return i
    }
}
