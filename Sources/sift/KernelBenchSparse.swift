import Sift

/// `sift kernel-bench --methods`: the decode attention op of each method at a 1/16 budget,
/// side by side on the same synthetic batch (random bf16 cache, shuffled page table, L2 flushed
/// before each timed call): dense split-KV, Double Sparsity (r = d/16 label channels), Quest
/// (page 16, top L/256 pages) and TidalDecode's token-selection layer (dense + selection) and
/// reuse layer (gather over the k selected rows), with the per-layer average of a 32-layer
/// model (2 dense layers, the selection and the re-selection layer, 28 reuse layers).
/// Bytes are what each op must read at least (K/V, labels, bounds, keys), so MB/ms = GB/s.
extension KernelBench {
    func methodsTable(ctx: CUDAContext, kernels k: CUDAAttentionKernels, flush: DeviceBuffer, names: [String]) throws {
        print("| shape | B | L | dense ms | DS ms | quest ms | tidal select ms | tidal reuse ms | tidal 32-layer avg ms |")
        print("|---|---|---|---|---|---|---|---|---|")
        var notes: [String] = []
        try forEachCell(k, names) { n, s, b, l, syn in
            let kTok = max(1, l / 16), qp = 16, kPages = max(1, kTok / qp)
            let quest = try CUDAAttentionKernels.Quest(kernels: k, batch: b, heads: s.heads, kvHeads: s.kvHeads,
                                                       headDim: s.headDim, questPage: qp, maxLength: l)
            let bounds = try ctx.allocate(bytes: quest.boundsBytes)
            try quest.updateBounds(keys: syn.keys.address, pageTable: syn.pageTable.address, pageSize: pageSize,
                                   maxPages: syn.maxPages, bounds: bounds.address, from: 0, length: l)
            let tidal = try CUDAAttentionKernels.Tidal(kernels: k, batch: b, heads: s.heads, kvHeads: s.kvHeads,
                                                       headDim: s.headDim, maxLength: l)
            func questRun() throws {
                try quest.run(q: syn.q.address, qF32: false, keys: syn.keys.address, values: syn.values.address,
                              pageTable: syn.pageTable.address, pageSize: pageSize, maxPages: syn.maxPages,
                              bounds: bounds.address, length: l, kPages: kPages, out: syn.out.address, outF32: false)
            }
            func tidalSelect() throws {
                try tidal.select(q: syn.q.address, qF32: false, keys: syn.keys.address, values: syn.values.address,
                                 pageTable: syn.pageTable.address, pageSize: pageSize, maxPages: syn.maxPages,
                                 length: l, k: kTok, sinks: 0, out: syn.out.address, outF32: false)
            }
            func tidalReuse() throws {
                try tidal.reuse(q: syn.q.address, qF32: false, keys: syn.keys.address, values: syn.values.address,
                                pageTable: syn.pageTable.address, pageSize: pageSize, maxPages: syn.maxPages,
                                out: syn.out.address, outF32: false)
            }
            let dense = try time(ctx, flush) { try syn.dense() }
            let ds = try time(ctx, flush) { try syn.doubleSparsity() }
            let qt = try time(ctx, flush) { try questRun() }
            let sel = try time(ctx, flush) { try tidalSelect() }
            let reuse = try time(ctx, flush) { try tidalReuse() }
            let avg = (2 * dense + 2 * sel + 28 * reuse) / 32
            let tok = Double(b * s.kvHeads), d = Double(s.headDim), L = Double(l), K = Double(kTok)
            let mb = 1e-6
            let denseB = tok * L * d * 4
            let dsB = tok * (L * Double(syn.channels) * 2 + 3 * L * 4 + K * (d * 4 + 4))
            let pages = Double((l + qp - 1) / qp)
            let questB = tok * (pages * 2 * d * 2 + 3 * pages * 4 + Double(kPages * qp) * (d * 4 + 4))
            let selB = denseB + tok * (L * d * 2 + 3 * L * 4 + K * 4)
            let reuseB = tok * K * (d * 4 + 4)
            let avgB = (2 * denseB + 2 * selB + 28 * reuseB) / 32
            func cell(_ ms: Double, _ bytes: Double, _ vsDense: Bool = true) -> String {
                "\(fixed(ms, 4)) · \(fixed(bytes * mb, 1)) MB" + (vsDense ? " · \(fixed(dense / ms, 2))x" : "")
            }
            print("| \(n) | \(b) | \(l) | \(cell(dense, denseB, false)) | \(cell(ds, dsB)) | \(cell(qt, questB)) | "
                  + "\(cell(sel, selB)) | \(cell(reuse, reuseB)) | \(cell(avg, avgB)) |")
            notes.append("\(n) B=\(b) L=\(l): k = \(kTok) tokens, quest \(kPages) of \(Int(pages)) pages")
        }
        print("\nCells: median ms of \(iterations) calls · MB the op reads at least · speed-up vs dense. "
              + "Budget 1/16 of L for every method; quest page 16; DS \(names.map { Self.shapes[$0]!.headDim >= 256 ? 16 : 8 }) label channels.")
        for line in notes { print("  " + line) }
    }
}
