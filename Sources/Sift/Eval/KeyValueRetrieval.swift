/// Synthetic key-value retrieval ("Lost in the Middle", Liu et al. 2023): a JSON object of
/// random UUID keys and values fills the context, and the model is asked for the value of one
/// key, placed at a chosen position (depth percent of the pairs: 0 = first pair, 100 = last).
///
/// Prompt (the paper's wording): "Extract the value corresponding to the specified key in the
/// JSON object below.\n\nJSON data:\n{json}\n\nKey: \"{key}\"\nCorresponding value:", with the
/// JSON written one pair a line. Length: prompt + tokens to generate ≤ the cell's length, and
/// short of it by less than one pair (about 50 tokens).
public struct KeyValueRetrieval {
    let tokenizer: EvalTokenizer

    public init(tokenizer: EvalTokenizer) { self.tokenizer = tokenizer }

    /// `index` > 0 draws another sample of the same cell (index 0 is the one runs before
    /// `--samples` drew).
    public func sample(length: Int, depth: Double, seed: UInt64, index: Int = 0, maxNew: Int,
                       overhead: (EvalSample) -> Int) throws -> EvalSample {
        var rng = index == 0 ? EvalRandom.generator(seed: seed, "kv", "\(length)", "\(depth)")
            : EvalRandom.generator(seed: seed, "kv", "\(length)", "\(depth)", "\(index)")
        let goldKey = EvalRandom.uuid(&rng), goldValue = EvalRandom.uuid(&rng)
        var s = EvalSample()
        s.userBefore = "Extract the value corresponding to the specified key in the JSON object below.\n\nJSON data:\n"
        s.userAfter = "\n\nKey: \"\(goldKey)\"\nCorresponding value:"
        s.expected = [goldValue]
        // The sentence Qwen2.5-Coder answers with when it answers (docs/eval/README.md).
        s.forcedPrefix = "The value corresponding to the key \"\(goldKey)\" in the given JSON object is \""
        s.forcedAnswer = goldValue
        s.scoring = .all
        s.depth = depth
        let budget = length - maxNew - overhead(s)
        func pair(_ k: String, _ v: String) -> String { "\"\(k)\": \"\(v)\"" }
        let open = tokenizer.evalEncode("{"), close = tokenizer.evalEncode("}")
        let goldText = pair(goldKey, goldValue)
        let gold = (goldText, tokenizer.evalEncode(goldText + ",\n "))
        var used = open.count + close.count + gold.1.count + 2
        guard used <= budget else {
            throw EvalError.invalid("length \(length) is too short for one key-value pair after the prompt frame and \(maxNew) answer tokens")
        }
        var others: [(String, [Int32])] = []
        var seen: Set<String> = [goldKey, goldValue]
        while true {
            let k = EvalRandom.uuid(&rng), v = EvalRandom.uuid(&rng)
            guard seen.insert(k).inserted, seen.insert(v).inserted else { continue }
            let text = pair(k, v)
            let t = tokenizer.evalEncode(text + ",\n ")
            if used + t.count > budget { break }
            used += t.count
            others.append((text, t))
        }
        let at = Int((Double(others.count) * min(max(depth, 0), 100) / 100).rounded())
        var items = others
        items.insert(gold, at: at)
        // The last pair ends with "}" instead of ",\n "; retokenize it that way.
        var context = open
        for (i, (text, t)) in items.enumerated() {
            context += i == items.count - 1 ? tokenizer.evalEncode(text + "}") : t
        }
        s.context = context
        return s
    }
}
