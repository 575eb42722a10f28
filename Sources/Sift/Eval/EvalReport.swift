/// Markdown tables of eval results: one run's grid (table.md) and a comparison of runs
/// (`sift eval report`).
public enum EvalReport {
    static func percent(_ x: Double?) -> String {
        guard let x else { return "–" }
        return fixed(x * 100, 1)
    }

    static func fixed(_ x: Double, _ decimals: Int) -> String {
        guard x.isFinite else { return "\(x)" }
        var p = 1.0
        for _ in 0..<decimals { p *= 10 }
        let r = (abs(x) * p).rounded()
        let whole = Int(r / p), frac = Int(r - Double(whole) * p)
        var f = "\(frac)"
        while f.count < decimals { f = "0" + f }
        return (x < 0 && r != 0 ? "-" : "") + "\(whole)" + (decimals > 0 ? "." + f : "")
    }

    static func row(_ cells: [String]) -> String { "| " + cells.joined(separator: " | ") + " |" }

    /// One run: for grids with depths, depth rows × length columns (accuracy %); otherwise one
    /// row per task (ruler) with lengths as columns; ppl shows perplexities.
    public static func runTable(_ r: EvalResults) -> String {
        let lengths = Array(Set(r.cells.map(\.length))).sorted()
        var out = "# \(r.task): \(FS.basename(r.model)), \(r.attention.label)\n\n"
        if let d = r.device { out += "Device: \(d).\n\n" }
        if let a = r.accuracy { out += "Accuracy: \(percent(a))% over \(r.cells.count) cells (seed \(r.seed)).\n\n" }
        if let p = r.ppl { out += "Perplexity: \(fixed(p, 4)).\n\n" }
        if let f = ForcedSummary(r.cells) {
            out += "Teacher-forced answer (its opening given): \(f.text).\n\n"
        }
        let header = lengths.map(Heatmap.lengthLabel)
        let depths = Array(Set(r.cells.compactMap(\.depth))).sorted()
        if r.task == "ppl" {
            out += row(["", "ppl"]) + "\n" + row(["---", "---:"]) + "\n"
            for c in r.cells { out += row([Heatmap.lengthLabel(c.length), c.ppl.map { fixed($0, 4) } ?? "–"]) + "\n" }
        } else if !depths.isEmpty {
            out += row(["depth \\ length"] + header) + "\n" + row(["---"] + header.map { _ in "---:" }) + "\n"
            for d in depths {
                out += row([Heatmap.number(d)] + lengths.map { l in
                    let m = r.cells.filter { $0.depth == d && $0.length == l }
                    return percent(m.isEmpty ? nil : m.reduce(0) { $0 + $1.score } / Double(m.count))
                }) + "\n"
            }
            out += row(["**all**"] + lengths.map { l in percent(r.accuracy(task: r.task, length: l)) }) + "\n"
            if ForcedSummary(r.cells) != nil {
                out += row(["forced: copied"] + lengths.map { l in
                    percent(ForcedSummary(r.cells.filter { $0.length == l })?.copied)
                }) + "\n"
            }
        } else {
            let tasks = Array(Set(r.cells.map(\.task))).sorted()
            out += row(["task"] + header) + "\n" + row(["---"] + header.map { _ in "---:" }) + "\n"
            for t in tasks { out += row([t] + lengths.map { percent(r.accuracy(task: t, length: $0)) }) + "\n" }
        }
        return out
    }

    /// Runs side by side: one row per (task, model, attention), lengths as columns, accuracy %
    /// (perplexity for ppl) and the mean over lengths.
    public static func compare(_ runs: [EvalResults]) -> String {
        let lengths = Array(Set(runs.flatMap { $0.cells.map(\.length) })).sorted()
        var out = row(["task", "model", "attention"] + lengths.map(Heatmap.lengthLabel) + ["mean"]) + "\n"
        out += row(["---", "---", "---"] + lengths.map { _ in "---:" } + ["---:"]) + "\n"
        var lines: [(key: [String], text: String)] = []
        for r in runs {
            let model = FS.basename(r.model)
            for t in Array(Set(r.cells.map(\.task))).sorted() {
                let cells = r.cells.filter { $0.task == t }
                let isPPL = cells.contains { $0.ppl != nil }
                var cols: [String] = []
                for l in lengths {
                    let m = cells.filter { $0.length == l }
                    if m.isEmpty { cols.append("–"); continue }
                    if isPPL {
                        cols.append(fixed(m.compactMap(\.ppl).reduce(0, +) / Double(m.count), 3))
                    } else {
                        cols.append(percent(m.reduce(0) { $0 + $1.score } / Double(m.count)))
                    }
                }
                let mean = isPPL ? (r.ppl.map { fixed($0, 3) } ?? "–")
                    : percent(cells.reduce(0) { $0 + $1.score } / Double(cells.count))
                let name = t == r.task ? t : "\(r.task)/\(t)"
                lines.append(([name, model, r.attention.label], row([name, model, r.attention.label] + cols + [mean])))
                // The teacher-forced answers, where recorded: the share copied whole.
                if let all = ForcedSummary(cells) {
                    let f = lengths.map { l in percent(ForcedSummary(cells.filter { $0.length == l })?.copied) }
                    let fname = name + " (forced)"
                    lines.append(([fname, model, r.attention.label], row([fname, model, r.attention.label] + f + [percent(all.copied)])))
                }
            }
        }
        lines.sort { $0.key.lexicographicallyPrecedes($1.key) }
        for l in lines { out += l.text + "\n" }
        return out
    }
}
