import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Sift

/// `sift kernel-bench`: sift's GPU attention kernels on synthetic shapes, timed with CUDA events
/// (L2 flushed before each timed call), dense split-KV decode beside Double Sparsity decode.
/// `--check` first compares every kernel with a float64 CPU reference on fresh random inputs.
struct KernelBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernel-bench",
        abstract: "Time (and --check) sift's CUDA attention kernels: dense decode vs Double Sparsity, prefill.")

    @Option(help: "cuda or cuda:N.") var device = "cuda"
    @Option(help: "Shapes: llama3-8b (32/8 heads, d128), qwen2.5-1.5b (12/2, d128), qwen2.5-0.5b (14/2, d64), gemma3-270m (4/1, d256).")
    var models = "llama3-8b,qwen2.5-1.5b"
    @Option(help: "Context lengths.") var lengths = "4096,16384,32768,65536,131072"
    @Option(help: "Batch sizes.") var batches = "1,8,32"
    @Option(help: "Skip shapes with batch × length above this many tokens.") var maxTokens = 4_194_304
    @Option(help: "Timed calls per kernel (median reported).") var iterations = 20
    @Option(help: "Page size of the synthetic cache (power of two).") var pageSize = 64
    @Flag(help: "Check every kernel against a float64 CPU reference before timing.") var check = false
    @Flag(help: "Only run the checks.") var checkOnly = false
    @Flag(help: "Also time Double Sparsity's attend variants 0, 5 and 6 (L2 prefetch) with split sizes, threshold blocks of 1, 2, 4 chunks and the __match_any histogram for every shape.") var dsSweep = false
    @Flag(help: "Time the attention methods side by side at 1/16 (dense, Double Sparsity, Quest, TidalDecode) instead of the dense-vs-DS table.")
    var methods = false
    @Flag(help: "Time Double Sparsity with 4-bit labels against bf16 labels and dense (KernelBenchLabels.swift) instead of the dense-vs-DS table.")
    var dsLabelBits = false
    @Option(help: "With --ds-label-bits: label channels of the 4-bit column (8, 16, 24 or 32; default d/16 as the bf16 column). 24 at 4 bits read the bytes of 8 at bf16.")
    var dsLabel4Channels: Int?
    @Flag(help: "With --ds-label-bits: also time the grid column's phases (scores, threshold, attend + combine) and its scores kernel's variants: __match_any histogram, the other occupancy (r = 8 at 4 blocks an SM, r = 16 at 6), and no histogram (a diagnostic: what the histogram costs).")
    var dsGridPhases = false
    @Flag(help: "With --ds-label-bits: time every column twice, with programmatic dependent launch off and on (sm_90; each kernel's launch overlaps the previous kernel's tail).")
    var pdl = false

    static let shapes: [String: (heads: Int, kvHeads: Int, headDim: Int)] = [
        "llama3-8b": (32, 8, 128), "qwen2.5-1.5b": (12, 2, 128), "qwen2.5-0.5b": (14, 2, 64), "gemma3-270m": (4, 1, 256)]

    func ints(_ s: String, _ what: String) throws -> [Int] {
        try s.split(separator: ",").map {
            guard let v = Int($0.filter { $0 != " " }), v > 0 else { throw ValidationError("bad \(what) '\($0)'") }
            return v
        }
    }

    func run() throws {
        guard case .cuda(let ordinal) = try DeviceSpec(parsing: device) else {
            throw ValidationError("kernel-bench needs --device cuda or cuda:N")
        }
        guard pageSize > 0, pageSize & (pageSize - 1) == 0 else { throw ValidationError("--page-size must be a power of two") }
        let names = models.split(separator: ",").map(String.init)
        for n in names where Self.shapes[n] == nil {
            throw ValidationError("unknown shape '\(n)' (have: \(Self.shapes.keys.sorted().joined(separator: ", ")))")
        }
        let ctx = try CUDAContext.open(ordinal: ordinal)
        let k = CUDAAttentionKernels(context: ctx)
        print("# sift kernel-bench on \(ctx.deviceName) (\(ctx.multiprocessors) SMs)")
        if check || checkOnly {
            var ok = true
            for n in names {
                let s = Self.shapes[n]!
                let c = KernelCheck(kernels: k, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim, pageSize: pageSize, name: n)
                ok = try c.run() && ok
                ok = try c.runSparse() && ok
            }
            print(ok ? "ALL CHECKS PASS" : "SOME CHECKS FAILED")
            if !ok { throw ExitCode(1) }
            if checkOnly { return }
        }
        let flush = try ctx.allocate(bytes: 256 << 20)
        let copyGBps = try copyBandwidth(ctx)
        print("device-to-device copy: \(fixed(copyGBps, 0)) GB/s (read + write)\n")
        if methods { return try methodsTable(ctx: ctx, kernels: k, flush: flush, names: names) }
        if dsLabelBits { return try labelBitsTable(ctx: ctx, kernels: k, flush: flush, names: names) }
        print("| shape | B | L | dense ms | GB/s | of copy | DS ms (1/16 tokens, r=d/16) | DS speedup | scores | threshold | attend | DS ideal bytes at copy BW |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        try forEachCell(k, names) { n, s, b, l, syn in
            let dense = try time(ctx, flush) { try syn.dense() }
            let ds = try time(ctx, flush) { try syn.doubleSparsity() }
            // Phases timed alone: scores (+ histogram); threshold = scores+threshold − scores;
            // attend = select + gather-attend + combine (thresholds of the last full call).
            let tS = try time(ctx, flush) { try syn.doubleSparsity(parts: "s") }
            try syn.ds.clearState()    // scores alone keep adding to the histogram
            let tST = try time(ctx, flush) { try syn.doubleSparsity(parts: "st") }
            let tA = try time(ctx, flush) { try syn.doubleSparsity(parts: "a") }
            let bytes = Double(b * l * s.kvHeads * s.headDim * 4)
            let gbps = bytes / (dense * 1e-3) / 1e9
            let r = syn.channels, kSel = max(1, l / 16)
            let ideal = Double(b * s.kvHeads * (l * r * 2 + 2 * kSel * s.headDim * 2)) / (copyGBps * 1e9) * 1e3
            print("| \(n) | \(b) | \(l) | \(fixed(dense, 4)) | \(fixed(gbps, 0)) | "
                  + "\(fixed(100 * gbps / copyGBps, 1))% | \(fixed(ds, 4)) | \(fixed(dense / ds, 2) + "x") | "
                  + "\(fixed(tS, 4)) | \(fixed(tST - tS, 4)) | \(fixed(tA, 4)) | \(fixed(ideal, 4)) |")
            if dsSweep {
                var cells: [String] = []
                for v in [0, 5, 6] {
                    for sp in [1024, 2048, 4096] where sp <= l {
                        let d2 = try CUDAAttentionKernels.DoubleSparsity(
                            kernels: k, batch: b, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim,
                            channels: syn.channels, maxLength: l, splitPositions: sp, attendVariant: v)
                        let full = try time(ctx, flush) { try syn.doubleSparsity(using: d2) }
                        let att = try time(ctx, flush) { try syn.doubleSparsity(parts: "a", using: d2) }
                        cells.append("v\(v)/\(sp): \(fixed(full, 4)) (attend \(fixed(att, 4)))")
                    }
                }
                print("|   sweep (variant/split: DS ms) | \(b) | \(l) | " + cells.joined(separator: ", ") + " |")
                var more: [String] = []
                for cpb in [1, 2, 4] {
                    syn.ds.thresholdChunksPerBlock = cpb
                    let full = try time(ctx, flush) { try syn.doubleSparsity() }
                    let st = try time(ctx, flush) { try syn.doubleSparsity(parts: "st") }
                    more.append("threshold blocks of \(cpb) chunks: \(fixed(full, 4)) (scores+threshold \(fixed(st, 4)))")
                }
                syn.ds.thresholdChunksPerBlock = nil
                for (v, what) in [(1, "__match_any histogram")] {
                    syn.ds.scoresVariant = v
                    try syn.ds.clearState()
                    let sm = try time(ctx, flush) { try syn.doubleSparsity(parts: "s") }
                    try syn.ds.clearState()
                    let fm = try time(ctx, flush) { try syn.doubleSparsity() }
                    more.append("scores with \(what): \(fixed(sm, 4)) (full \(fixed(fm, 4)))")
                }
                syn.ds.scoresVariant = 0
                try syn.ds.clearState()
                print("|   sweep | \(b) | \(l) | " + more.joined(separator: ", ") + " |")
            }
        }
    }

    /// Every (shape, batch, length) cell the flags ask for (batch × length ≤ --max-tokens), each
    /// with a fresh synthetic paged cache: the loop every kernel-bench table runs.
    func forEachCell(_ k: CUDAAttentionKernels, _ names: [String],
                     _ body: (_ name: String, _ shape: (heads: Int, kvHeads: Int, headDim: Int), _ batch: Int, _ length: Int,
                              _ syn: Synthetic) throws -> Void) throws {
        for n in names {
            let s = Self.shapes[n]!
            for b in try ints(batches, "batch") {
                for l in try ints(lengths, "length") where b * l <= maxTokens {
                    let syn = try Synthetic(kernels: k, batch: b, length: l, heads: s.heads, kvHeads: s.kvHeads,
                                            headDim: s.headDim, pageSize: pageSize, seed: UInt32(b * 7919 + l))
                    try body(n, s, b, l, syn)
                }
            }
        }
    }

    func copyBandwidth(_ ctx: CUDAContext) throws -> Double {
        let n = 1 << 30
        let a = try ctx.allocate(bytes: n), b = try ctx.allocate(bytes: n)
        try ctx.copy(a.address, to: b.address, bytes: n)
        let e0 = try ctx.makeEvent(), e1 = try ctx.makeEvent()
        try e0.record()
        for _ in 0..<10 { try ctx.copy(a.address, to: b.address, bytes: n) }
        try e1.record()
        let ms = try e1.elapsed(since: e0) / 10
        return 2 * Double(n) / (ms * 1e-3) / 1e9
    }

    /// Median ms of `body`, the L2 cache flushed (256 MiB written) before each call.
    func time(_ ctx: CUDAContext, _ flush: DeviceBuffer, _ body: () throws -> Void) throws -> Double {
        for _ in 0..<3 { try body() }
        var t: [Double] = []
        let e0 = try ctx.makeEvent(), e1 = try ctx.makeEvent()
        for _ in 0..<iterations {
            try ctx.memset(flush.address, byte: 0, bytes: flush.bytes)
            try e0.record()
            try body()
            try e1.record()
            t.append(try e1.elapsed(since: e0))
        }
        return t.sorted()[t.count / 2]
    }
}

/// A synthetic batch: paged bf16 cache with a shuffled page table, random q, labels.
final class Synthetic {
    let k: CUDAAttentionKernels
    let ctx: CUDAContext
    let batch: Int, length: Int, heads: Int, kvHeads: Int, headDim: Int, pageSize: Int, maxPages: Int
    let keys: DeviceBuffer, values: DeviceBuffer, labels: DeviceBuffer, pageTable: DeviceBuffer, q: DeviceBuffer, out: DeviceBuffer
    let seqLens: DeviceBuffer, kPerSeq: DeviceBuffer, channelList: DeviceBuffer
    let scratch: CUDAAttentionKernels.Scratch
    let ds: CUDAAttentionKernels.DoubleSparsity
    let channels: Int
    let lengthsHost: [Int]

    init(kernels: CUDAAttentionKernels, batch: Int, length: Int, heads: Int, kvHeads: Int, headDim: Int, pageSize: Int,
         seed: UInt32, lengths: [Int]? = nil, qScale: Float = 1) throws {
        try CUDAAttentionKernels.validate(heads: heads, kvHeads: kvHeads, headDim: headDim, pageSize: pageSize)
        k = kernels; ctx = kernels.context
        self.batch = batch; self.length = length; self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim
        self.pageSize = pageSize
        lengthsHost = lengths ?? Array(repeating: length, count: batch)
        maxPages = (length + pageSize - 1) / pageSize
        let pages = batch * maxPages + 3
        channels = headDim >= 256 ? 16 : 8
        let rowBytes = kvHeads * pageSize * headDim * 2
        keys = try ctx.allocate(bytes: pages * rowBytes)
        values = try ctx.allocate(bytes: pages * rowBytes)
        labels = try ctx.allocate(bytes: pages * kvHeads * pageSize * channels * 2)
        try k.fillRandom(keys.address, count: pages * rowBytes / 2, seed: seed)
        try k.fillRandom(values.address, count: pages * rowBytes / 2, seed: seed &+ 1)
        try k.fillRandom(labels.address, count: pages * kvHeads * pageSize * channels, seed: seed &+ 2)
        var rng = SystemRandomNumberGenerator()
        let perm = Array(0..<pages).shuffled(using: &rng)
        var table = [Int32](repeating: 0, count: batch * maxPages)
        for i in 0..<(batch * maxPages) { table[i] = Int32(perm[i]) }
        pageTable = try ctx.allocate(bytes: table.count * 4)
        try ctx.upload(table, to: pageTable.address)
        q = try ctx.allocate(bytes: batch * heads * headDim * 4)   // room for f32
        try k.fillRandom(q.address, count: batch * heads * headDim, seed: seed &+ 3, scale: qScale)
        out = try ctx.allocate(bytes: batch * heads * headDim * 4)
        seqLens = try ctx.allocate(bytes: batch * 4)
        try ctx.upload(lengthsHost.map { Int32($0) }, to: seqLens.address)
        kPerSeq = try ctx.allocate(bytes: batch * 4)
        try ctx.upload(lengthsHost.map { Int32(max(1, $0 / 16)) }, to: kPerSeq.address)
        channelList = try Self.randomChannelList(ctx, kvHeads: kvHeads, headDim: headDim, channels: channels)
        scratch = try CUDAAttentionKernels.Scratch(context: ctx, batch: batch, heads: heads, headDim: headDim,
                                                   maxSplits: 2 * ctx.multiprocessors + 1)
        ds = try CUDAAttentionKernels.DoubleSparsity(kernels: kernels, batch: batch, heads: heads, kvHeads: kvHeads,
                                                     headDim: headDim, channels: channels, maxLength: length)
        try ctx.synchronize()
    }

    /// A device channel list `[kvHeads][channels]` Int32: random distinct channels per KV head.
    static func randomChannelList(_ ctx: CUDAContext, kvHeads: Int, headDim: Int, channels: Int) throws -> DeviceBuffer {
        let list = try ctx.allocate(bytes: kvHeads * channels * 4)
        var ch = [Int32]()
        for _ in 0..<kvHeads { ch += Array(0..<Int32(headDim)).shuffled().prefix(channels) }
        try ctx.upload(ch, to: list.address)
        return list
    }

    func dense(window: Int = 0, splitTokens: Int? = nil) throws {
        try k.decode(q: q.address, qF32: false, keys: keys.address, values: values.address, pageTable: pageTable.address,
                     pageSize: pageSize, maxPages: maxPages, lengths: .device(seqLens.address, maxLength: length),
                     batch: batch, heads: heads, kvHeads: kvHeads, headDim: headDim, window: window,
                     out: out.address, outF32: false, scratch: scratch, splitTokens: splitTokens)
    }

    func doubleSparsity(sinks: Int = 0, parts: String = "sta", using other: CUDAAttentionKernels.DoubleSparsity? = nil) throws {
        try (other ?? ds).run(q: q.address, keys: keys.address, values: values.address, labels: labels.address,
                   channelList: channelList.address, pageTable: pageTable.address, pageSize: pageSize, maxPages: maxPages,
                   seqLens: seqLens.address, kPerSeq: kPerSeq.address, sinks: sinks, out: out.address, parts: parts)
    }
}
