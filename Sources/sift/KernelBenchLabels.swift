import ArgumentParser
import Sift

extension KernelBench {
    /// `sift kernel-bench --ds-label-bits`: Double Sparsity decode (1/16 tokens, r = d/16, shared
    /// GQA selection) reading bf16 labels (2r bytes a row), 4-bit labels with a per-token scale
    /// (4 + r/2 bytes: f16 scale and offset, r codes; CUDALabelCache) and 4-bit labels on a
    /// per-channel grid (r/2 bytes of codes; `--ds-label-scale channel`), against dense decode, on
    /// the synthetic cache.
    /// The 4-bit pool holds random bytes in the same buffer (its rows are smaller; the same page
    /// table): a speed-only measurement, the selections are not meaningful. `--ds-label4-channels`
    /// gives the 4-bit column its own channel count (own random pool and channel list).
    func labelBitsTable(ctx: CUDAContext, kernels k: CUDAAttentionKernels, flush: DeviceBuffer, names: [String]) throws {
        if pdl && !ctx.supportsProgrammaticLaunch {
            throw ValidationError("--pdl: this GPU or driver has no programmatic dependent launch (needs sm_90 and a CUDA 12 driver)")
        }
        let modes = pdl ? [false, true] : [ctx.programmaticLaunch]
        let original = ctx.programmaticLaunch
        defer { ctx.programmaticLaunch = original }
        print("| shape | B | L | PDL | dense ms | DS bf16 labels ms | DS 4-bit token-scale ms | DS 4-bit channel-grid ms | speedup bf16 | speedup 4-bit token | speedup 4-bit grid | scores bf16 ms | scores 4-bit token ms | scores 4-bit grid ms | label bytes/row bf16, token, grid |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        if let r4 = dsLabel4Channels, !CUDADoubleSparseAttention.supportedChannels(labelBits: 4).contains(r4) {
            throw ValidationError("--ds-label4-channels must be one of \(CUDADoubleSparseAttention.supportedChannels(labelBits: 4)), not \(r4)")
        }
        try forEachCell(k, names) { n, s, b, l, syn in
            let r = syn.channels, r4 = dsLabel4Channels ?? r
            let ds4 = try CUDAAttentionKernels.DoubleSparsity(kernels: k, batch: b, heads: s.heads, kvHeads: s.kvHeads,
                                                              headDim: s.headDim, channels: r4, maxLength: l, labelBits: 4)
            let ds4g = try CUDAAttentionKernels.DoubleSparsity(kernels: k, batch: b, heads: s.heads, kvHeads: s.kvHeads,
                                                               headDim: s.headDim, channels: r4, maxLength: l, labelBits: 4,
                                                               labelScaleMode: .channel)
            let scale = try ctx.allocate(bytes: s.kvHeads * r4 * 4)
            try ctx.upload([Float](repeating: 1, count: s.kvHeads * r4), to: scale.address)
            // Own pool and channel list when the 4-bit column has its own channel count.
            var pool4: DeviceBuffer?, list4: DeviceBuffer?
            if r4 != r {
                let rows = (b * syn.maxPages + 3) * s.kvHeads * pageSize, words = 1 + r4 / 8
                pool4 = try ctx.allocate(bytes: rows * words * 4)
                try k.fillRandom(pool4!.address, count: rows * words * 2, seed: 7)
                list4 = try Synthetic.randomChannelList(ctx, kvHeads: s.kvHeads, headDim: s.headDim, channels: r4)
            }
            func run4(_ parts: String, _ ds4: CUDAAttentionKernels.DoubleSparsity) throws {
                try ds4.run(q: syn.q.address, keys: syn.keys.address, values: syn.values.address,
                            labels: pool4?.address ?? syn.labels.address,
                            channelList: list4?.address ?? syn.channelList.address, pageTable: syn.pageTable.address, pageSize: pageSize,
                            maxPages: syn.maxPages, seqLens: syn.seqLens.address, kPerSeq: syn.kPerSeq.address, sinks: 0,
                            out: syn.out.address, parts: parts, labelScale: scale.address)
            }
            /// The grid column's phases, each timed alone (a launch each): threshold = scores +
            /// threshold − scores; attend = attend + combine on the last full call's lists. Then
            /// the scores kernel's variants alone, and in the whole op where they select correctly.
            func gridPhases(_ d: CUDAAttentionKernels.DoubleSparsity, full: Double, scores: Double) throws {
                try run4("sta", d)
                let st = try time(ctx, flush) { try run4("st", d) }
                let a = try time(ctx, flush) { try run4("a", d) }
                var cells = ["full \(fixed(full, 4))", "scores \(fixed(scores, 4))", "threshold \(fixed(st - scores, 4))",
                             "attend+combine \(fixed(a, 4))", "sum \(fixed(st + a, 4))"]
                for (v, what) in [(1, "match"), (3, "other occupancy"), (2, "no histogram")] {
                    d.scoresVariant = v
                    try d.clearState()
                    let sv = try time(ctx, flush) { try run4("s", d) }
                    try d.clearState()
                    var cell = "scores \(what) \(fixed(sv, 4))"
                    if v != 2 { cell += " (full \(fixed(try time(ctx, flush) { try run4("sta", d) }, 4)))" }
                    cells.append(cell)
                }
                d.scoresVariant = 0
                try d.clearState()
                print("|   grid phases ms | \(b) | \(l) | " + cells.joined(separator: ", ") + " |")
            }
            for mode in modes {
                ctx.programmaticLaunch = mode
                let dense = try time(ctx, flush) { try syn.dense() }
                let ds16 = try time(ctx, flush) { try syn.doubleSparsity() }
                let ds4t = try time(ctx, flush) { try run4("sta", ds4) }
                let ds4gt = try time(ctx, flush) { try run4("sta", ds4g) }
                let s16 = try time(ctx, flush) { try syn.doubleSparsity(parts: "s") }
                try syn.ds.clearState()
                let s4 = try time(ctx, flush) { try run4("s", ds4) }
                try ds4.clearState()
                let s4g = try time(ctx, flush) { try run4("s", ds4g) }
                try ds4g.clearState()
                print("| \(n) | \(b) | \(l) | \(mode ? "on" : "off") | \(fixed(dense, 4)) | \(fixed(ds16, 4)) | \(fixed(ds4t, 4)) | "
                      + "\(fixed(ds4gt, 4)) | \(fixed(dense / ds16, 2))x | \(fixed(dense / ds4t, 2))x | \(fixed(dense / ds4gt, 2))x | "
                      + "\(fixed(s16, 4)) | \(fixed(s4, 4)) | \(fixed(s4g, 4)) | "
                      + "\(2 * r), \(4 + r4 / 2), \(r4 / 2)\(r4 != r ? " (\(r4) channels)" : "") |")
                if dsGridPhases { try gridPhases(ds4g, full: ds4gt, scores: s4g) }
            }
        }
    }
}
