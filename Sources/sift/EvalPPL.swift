import ArgumentParser
import Sift
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

struct EvalPPL: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ppl",
        abstract: "Perplexity per context length, dense or sparse-aware (as `sift ppl`), in the eval results format.")

    @OptionGroup var options: ModelOptions
    @OptionGroup var common: EvalRunOptions

    @Option(name: [.short, .customLong("file")], help: "Text file, 'pg50k' (golden text) or 'heldout' (essays never calibrated on).")
    var file: String = "heldout"

    @Option(help: "Score at most this many chunks per length (default: all).")
    var chunks: Int?

    func validate() throws {
        if let chunks, chunks < 1 { throw ValidationError("--chunks must be ≥ 1") }
        if let l = try common.parsedLengths().first(where: { $0 < 4 }) { throw ValidationError("length \(l) is below 4") }
    }

    func run() throws {
        let lengths = try common.parsedLengths()
        let text = file == "pg50k" ? try Haystack.pg50k() : file == "heldout" ? try EssaySplit.heldOutText() : try readTextFile(file)
        var tokens: [Int32] = []
        var bos: Int32?
        let keys = lengths.map { EvalCellKey(task: "ppl", length: $0) }
        var settings = ["file": file]
        if let chunks { settings["chunks"] = "\(chunks)" }
        try runEvalTask(task: "ppl", options: options, run: common, settings: settings, keys: keys, maxNew: 0,
                        heatmapTasks: [],
                        prepare: { m in
                            tokens = m.tokenizer.encode(text, addSpecial: true, parseSpecial: false)
                            bos = m.tokenizer.addsBOS ? m.tokenizer.bos : nil
                        }) { engine, key in
            var o = try options.attentionOptions()
            o.measureRecall = false
            let session = try engine.model.session(contextLength: key.length, attention: options.attention, options: o)
            let r = try Perplexity.compute(tokens: tokens, bos: bos, ctx: key.length, maxChunks: chunks, session: session)
            return EvalCell(key: key, correct: false, score: 0, output: "", expected: [], promptTokens: r.tokensScored,
                            ppl: r.ppl)
        }
    }
}

struct EvalReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Merge eval runs into one Markdown comparison table (task × model × attention rows, lengths as columns).")

    @Argument(help: "Results folders (or results.json files).")
    var directories: [String]

    @Option(name: [.short, .customLong("output")], help: "Write the table to this file instead of standard output.")
    var output: String?

    func run() throws {
        var runs: [EvalResults] = []
        for d in directories {
            let path = d.hasSuffix(".json") ? d : d + "/results.json"
            guard FileManager.default.fileExists(atPath: path) else { throw ValidationError("\(path) does not exist") }
            runs.append(try readResults(path))
        }
        let table = EvalReport.compare(runs)
        if let output {
            try writeFile(output, Array(table.utf8))
        } else {
            print(table, terminator: "")
        }
    }
}
