#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The attention a run used: method name, token budget and the method's other settings.
public struct EvalAttention: Codable, Equatable, Sendable {
    public var name: String
    public var budget: String
    /// Every other attention setting, as text (sinks, dense-below, method flags…).
    public var flags: [String: String]

    public init(name: String, budget: String, flags: [String: String] = [:]) {
        self.name = name
        self.budget = budget
        self.flags = flags
    }

    /// "dense", or "ds@1/16" with the non-default flags appended.
    public var label: String {
        if name == "dense" { return name }
        let extra = flags.keys.sorted().map { "\($0)=\(flags[$0]!)" }
        return ([name + "@" + budget] + extra).joined(separator: " ")
    }
}

/// Where one cell sits in a task's grid.
public struct EvalCellKey: Hashable, Comparable, Sendable {
    public var task: String
    public var length: Int
    public var depth: Double?
    public var sample: Int

    public init(task: String, length: Int, depth: Double? = nil, sample: Int = 0) {
        self.task = task
        self.length = length
        self.depth = depth
        self.sample = sample
    }

    public static func < (a: EvalCellKey, b: EvalCellKey) -> Bool {
        if a.task != b.task { return a.task < b.task }
        if a.length != b.length { return a.length < b.length }
        if (a.depth ?? -1) != (b.depth ?? -1) { return (a.depth ?? -1) < (b.depth ?? -1) }
        return a.sample < b.sample
    }
}

/// The result of one cell.
public struct EvalCell: Codable, Equatable, Sendable {
    /// The task (for `ruler`, the RULER task of this cell).
    public var task: String
    /// Context length in tokens (prompt + tokens to generate).
    public var length: Int
    /// Needle depth in percent of the grid (niah, kv); nil where the grid has none (ruler, ppl).
    public var depth: Double?
    /// ruler: depth in percent of the (first) needle asked about, drawn per sample.
    public var needleDepth: Double?
    /// Sample index within (task, length, depth).
    public var sample: Int
    public var correct: Bool
    /// 0…1 (RULER's string_match_all share; 0/1 for NIAH).
    public var score: Double
    public var output: String
    public var expected: [String]
    public var promptTokens: Int
    /// Perplexity (ppl task only).
    public var ppl: Double?
    /// Teacher-forced answer (kv; `EvalEngine.forcedScore`): its token count, mean negative
    /// log-likelihood in nats a token, and how many of its tokens were the greedy choice.
    /// nil in files written before it was recorded.
    public var forcedTokens: Int?
    public var forcedNLL: Double?
    public var forcedGreedy: Int?
    /// Greedy decoding, given the answer's opening, would copy the whole answer.
    public var forcedCopied: Bool? { forcedTokens.flatMap { n in forcedGreedy.map { $0 == n } } }

    public init(key: EvalCellKey, correct: Bool, score: Double, output: String, expected: [String],
                promptTokens: Int, ppl: Double? = nil, needleDepth: Double? = nil) {
        task = key.task
        length = key.length
        depth = key.depth
        sample = key.sample
        self.correct = correct
        self.score = score
        self.output = output
        self.expected = expected
        self.promptTokens = promptTokens
        self.ppl = ppl
        self.needleDepth = needleDepth
    }

    public var key: EvalCellKey { EvalCellKey(task: task, length: length, depth: depth, sample: sample) }

    enum CodingKeys: String, CodingKey {
        case task, length, depth, sample, correct, score, output, expected, ppl
        case promptTokens = "prompt_tokens", needleDepth = "needle_depth"
        case forcedTokens = "forced_tokens", forcedNLL = "forced_nll", forcedGreedy = "forced_greedy"
    }

    /// Records a teacher-forced score (nothing when there is none).
    public mutating func record(_ f: ForcedScore?) {
        guard let f, !f.logProbs.isEmpty else { return }
        forcedTokens = f.logProbs.count
        forcedNLL = -f.logProbs.reduce(0, +) / Double(f.logProbs.count)
        forcedGreedy = f.greedy.filter { $0 }.count
    }
}

/// Summary of the teacher-forced answers of some cells.
public struct ForcedSummary: Sendable, Equatable {
    public var cells = 0
    /// Share of cells whose answer greedy decoding would copy whole.
    public var copied = 0.0
    /// Share of answer tokens that were the greedy choice (over all tokens).
    public var tokenAccuracy = 0.0
    /// Mean NLL in nats a token (over all tokens).
    public var nll = 0.0

    /// One line for reports: "copied whole X% of N cells, tokens right Y%, NLL Z nats a token".
    public var text: String {
        "copied whole \(EvalReport.percent(copied))% of \(cells) cells, tokens right \(EvalReport.percent(tokenAccuracy))%, "
            + "NLL \(EvalReport.fixed(nll, 4)) nats a token"
    }

    public init?(_ cells: [EvalCell]) {
        let f = cells.filter { $0.forcedTokens != nil && $0.forcedNLL != nil && $0.forcedGreedy != nil }
        guard !f.isEmpty else { return nil }
        let tokens = f.reduce(0) { $0 + $1.forcedTokens! }
        guard tokens > 0 else { return nil }
        self.cells = f.count
        copied = Double(f.filter { $0.forcedCopied == true }.count) / Double(f.count)
        tokenAccuracy = Double(f.reduce(0) { $0 + $1.forcedGreedy! }) / Double(tokens)
        nll = f.reduce(0.0) { $0 + $1.forcedNLL! * Double($1.forcedTokens!) } / Double(tokens)
    }
}

/// A run's results.json.
public struct EvalResults: Codable, Equatable, Sendable {
    public var task: String
    public var model: String
    /// The backend that ran it (e.g. `cpu (2 threads)`, `cuda:0 (NVIDIA H100 …, bf16)`); nil in
    /// files written before it was recorded.
    public var device: String?
    public var attention: EvalAttention
    public var seed: UInt64
    /// Tokens generated per cell at most.
    public var maxNewTokens: Int
    /// Task settings that change results (needle, question, haystack, …); a folder only ever
    /// holds one combination of these and the fields above.
    public var settings: [String: String]
    /// Mean cell score (nil for ppl).
    public var accuracy: Double?
    /// Perplexity over all cells' scored tokens (ppl only).
    public var ppl: Double?
    public var cells: [EvalCell]

    public init(task: String, model: String, device: String? = nil, attention: EvalAttention, seed: UInt64,
                maxNewTokens: Int, settings: [String: String] = [:]) {
        self.task = task
        self.model = model
        self.device = device
        self.attention = attention
        self.seed = seed
        self.maxNewTokens = maxNewTokens
        self.settings = settings
        cells = []
    }

    enum CodingKeys: String, CodingKey {
        case task, model, device, attention, seed, settings, accuracy, ppl, cells
        case maxNewTokens = "max_new_tokens"
    }

    /// What differs between the settings of two runs (empty: they may share a folder).
    public func differences(from o: EvalResults) -> [String] {
        var d: [String] = []
        func cmp<T: Equatable>(_ name: String, _ a: T, _ b: T) { if a != b { d.append("\(name): \(a) here, \(b) now") } }
        cmp("task", task, o.task)
        cmp("model", model, o.model)
        // A CPU run and a GPU run give slightly different outputs: never mix their cells.
        if let a = device, let b = o.device { cmp("device", a, b) }
        cmp("attention", attention.name, o.attention.name)
        cmp("budget", attention.budget, o.attention.budget)
        for k in Set(attention.flags.keys).union(o.attention.flags.keys).sorted() {
            cmp(k, attention.flags[k] ?? "-", o.attention.flags[k] ?? "-")
        }
        cmp("seed", seed, o.seed)
        cmp("max new tokens", maxNewTokens, o.maxNewTokens)
        for k in Set(settings.keys).union(o.settings.keys).sorted() {
            cmp(k, settings[k] ?? "-", o.settings[k] ?? "-")
        }
        return d
    }

    /// Recomputes `accuracy` (mean score) and sorts the cells by key.
    public mutating func summarize() {
        cells.sort { $0.key < $1.key }
        let scored = cells.filter { $0.ppl == nil }
        accuracy = scored.isEmpty ? nil : scored.reduce(0) { $0 + $1.score } / Double(scored.count)
        // Perplexity over every length's scored tokens: exp of the token-weighted mean log ppl.
        let ppls = cells.filter { $0.ppl != nil && $0.promptTokens > 0 }
        let n = ppls.reduce(0) { $0 + $1.promptTokens }
        ppl = n == 0 ? nil : exp(ppls.reduce(0.0) { $0 + Double($1.promptTokens) * log($1.ppl!) } / Double(n))
    }

    /// Mean score of the cells of one task and length.
    public func accuracy(task: String, length: Int) -> Double? {
        let c = cells.filter { $0.task == task && $0.length == length }
        return c.isEmpty ? nil : c.reduce(0) { $0 + $1.score } / Double(c.count)
    }
}

/// Runs a grid of cells resumably: cells already in `existing` are skipped, and the results
/// are handed to `save` after every new cell.
public enum EvalRunner {
    /// - Parameters:
    ///   - header: the run's settings (its cells are ignored).
    ///   - existing: what the results folder holds already, if anything.
    ///   - location: the folder, for the error message.
    ///   - evaluate: computes one cell.
    ///   - progress: called after every cell with (cells done, cells in all, skipped).
    public static func run(header: EvalResults, keys: [EvalCellKey], existing: EvalResults?, location: String,
                           save: (EvalResults) throws -> Void,
                           progress: (Int, Int, Int) -> Void = { _, _, _ in },
                           evaluate: (EvalCellKey) throws -> EvalCell) throws -> EvalResults {
        var results = header
        results.cells = []
        if let existing {
            let diffs = existing.differences(from: header)
            guard diffs.isEmpty else { throw EvalError.settingsMismatch(directory: location, differences: diffs) }
            results.cells = existing.cells
        }
        var done = Set(results.cells.map(\.key))
        let todo = keys.filter { !done.contains($0) }
        let skipped = keys.count - todo.count
        progress(skipped, keys.count, skipped)
        for (i, key) in todo.enumerated() {
            var cell = try evaluate(key)
            (cell.task, cell.length, cell.depth, cell.sample) = (key.task, key.length, key.depth, key.sample)
            results.cells.append(cell)
            done.insert(key)
            results.summarize()
            try save(results)
            progress(skipped + i + 1, keys.count, skipped)
        }
        results.summarize()
        return results
    }
}
