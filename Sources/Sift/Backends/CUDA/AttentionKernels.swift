/// Swift side of sift's fast GPU attention kernels (Kernels/decode_attention.cu,
/// double_sparsity.cu, prefill_attention.cu; design in docs/cuda-attention.md):
/// split-KV flash-decoding over the paged bf16 cache, Double Sparsity decode (label scores,
/// exact radix top-k, gather-attention) and tensor-core causal prefill.
///
/// Cache layout (as CUDAKVCache): per layer K and V pools `[page][kvHead][pageSize][headDim]`
/// bf16, `pageSize` a power of two, a page table of Int32 per sequence (`[batch][maxPages]`).
public final class CUDAAttentionKernels: @unchecked Sendable {
    public let context: CUDAContext
    private var functions: [String: CUDAFunction] = [:]

    public init(context: CUDAContext) { self.context = context }

    /// The kernel `name` of `unit` (NVRTC compiles a unit on first use; cached per process).
    func function(_ unit: String, _ name: String) throws -> CUDAFunction {
        if let f = functions[unit + ":" + name] { return f }
        let f = try context.kernel(unit, name)
        functions[unit + ":" + name] = f
        return f
    }

    /// The kernel `name` of `unit` built for one head_dim and group size only (the unit is
    /// compiled with SIFT_DECODE_D / SIFT_DECODE_G defined: about a second of NVRTC instead of
    /// every variant of the unit at once).
    func function(_ unit: String, headDim: Int, group: Int, _ name: String) throws -> CUDAFunction {
        let module = "\(unit)#d\(headDim)g\(group)"
        if let f = functions[module + ":" + name] { return f }
        guard let src = KernelSources.units.first(where: { $0.name == unit }) else {
            throw CUDAError.invalid("no embedded kernel source \(unit)")
        }
        let m = try context.module(named: module, source: "#define SIFT_DECODE_D \(headDim)\n#define SIFT_DECODE_G \(group)\n" + src.source,
                                   headers: KernelSources.headers.map { ($0.name, $0.source) })
        let f = try m.function(name)
        functions[module + ":" + name] = f
        return f
    }

    /// Checks the shapes the kernels are instantiated for.
    public static func validate(heads: Int, kvHeads: Int, headDim: Int, pageSize: Int) throws {
        guard [64, 128, 256].contains(headDim) else {
            throw CUDAError.invalid("GPU attention kernels support head_dim 64, 128 or 256, not \(headDim)")
        }
        guard kvHeads > 0, heads % kvHeads == 0, (1...8).contains(heads / kvHeads) else {
            throw CUDAError.invalid("GPU attention kernels support 1...8 query heads per KV head, not \(heads)/\(kvHeads)")
        }
        guard pageSize > 0, pageSize & (pageSize - 1) == 0 else {
            throw CUDAError.invalid("GPU attention kernels need a power-of-two page size, not \(pageSize)")
        }
    }

    static func log2(_ x: Int) -> Int { Int.bitWidth - 1 - x.leadingZeroBitCount }

    /// Tokens per split of the decode kernel: about one wave of two 128-thread blocks per SM
    /// (each thread holds ~240 registers), rounded up to a power of two; measured best on an
    /// H100 over 256...16384 (docs/cuda-attention.md).
    public static func splitTokens(batch: Int, kvHeads: Int, length: Int, multiprocessors: Int) -> Int {
        let per = (batch * kvHeads * max(1, length) + 2 * multiprocessors - 1) / (2 * multiprocessors)
        var s = 64
        while s < per { s *= 2 }
        return s
    }

    /// Device buffers for the split partials of a decode call.
    public final class Scratch: @unchecked Sendable {
        public let maxSplits: Int
        let partO: DeviceBuffer
        let partLSE: DeviceBuffer
        let heads: Int, batch: Int, headDim: Int
        public init(context: CUDAContext, batch: Int, heads: Int, headDim: Int, maxSplits: Int) throws {
            self.maxSplits = maxSplits
            self.heads = heads; self.batch = batch; self.headDim = headDim
            partO = try context.allocate(bytes: batch * heads * maxSplits * headDim * 4)
            partLSE = try context.allocate(bytes: batch * heads * maxSplits * 4)
        }
    }

    /// Where the sequence lengths come from: a device array `[batch]` of Int32, or one length
    /// for every sequence (passed by value: no upload per step).
    public enum Lengths {
        case device(CUdeviceptr, maxLength: Int)
        case fixed(Int)
        var maxLength: Int {
            switch self { case .device(_, let m): return m; case .fixed(let n): return n }
        }
    }

    /// Decode attention of one query row per sequence: `q` `[batch][heads][headDim]` (f32 when
    /// `qF32`, else bf16), `out` likewise (`outF32`). Attends to the last `window` positions
    /// (0: all). Two launches: the split kernel and the combine.
    public func decode(q: CUdeviceptr, qF32: Bool, keys: CUdeviceptr, values: CUdeviceptr, pageTable: CUdeviceptr,
                       pageSize: Int, maxPages: Int, lengths: Lengths, batch: Int, heads: Int, kvHeads: Int,
                       headDim: Int, window: Int = 0, out: CUdeviceptr, outF32: Bool, scratch: Scratch,
                       splitTokens: Int? = nil) throws {
        let g = heads / kvHeads
        let span = window > 0 ? min(window, lengths.maxLength) : lengths.maxLength
        var split = splitTokens ?? Self.splitTokens(batch: batch, kvHeads: kvHeads, length: span,
                                                    multiprocessors: context.multiprocessors)
        // Never more splits than the scratch holds.
        while (span + split - 1) / split > scratch.maxSplits { split *= 2 }
        let splits = max(1, (span + split - 1) / split)
        let lens: CUdeviceptr, fixed: Int
        switch lengths { case .device(let p, _): lens = p; fixed = 0; case .fixed(let n): lens = 0; fixed = n }
        let f = try function("decode_attention.cu", headDim: headDim, group: g, "sift_decode_split_d\(headDim)_g\(g)")
        try context.launch(f, grid: (splits, kvHeads, batch), block: (128, 1, 1), dependent: true, [
            .pointer(q), .pointer(keys), .pointer(values), .pointer(pageTable), .pointer(lens),
            .pointer(0), .pointer(0), .int(0), .ptr(scratch.partO), .ptr(scratch.partLSE),
            .int(Self.log2(pageSize)), .int(maxPages), .int(split), .int(scratch.maxSplits),
            .float(1 / Float(headDim).squareRoot()), .pointer(0), .pointer(0), .int(fixed), .int(window), .int(qF32 ? 1 : 0)])
        let c = try function("decode_attention.cu", headDim: headDim, group: g, "sift_decode_combine_d\(headDim)")
        try context.launch(c, grid: (heads, batch, 1), block: (min(headDim, 128), 1, 1), sharedBytes: 4 * scratch.maxSplits, dependent: true, [
            .ptr(scratch.partO), .ptr(scratch.partLSE), .pointer(lens), .pointer(0), .int(g), .int(split),
            .int(scratch.maxSplits), .pointer(out), .int(fixed), .int(window), .int(outF32 ? 1 : 0)])
    }

    /// The prefill kernel's launch shape (prefill_attention.cu, sift_prefill_d*): 128 query rows
    /// per block (8 warps × 16 rows), a 1-D grid of ceil(rows / 128) × heads blocks, and two
    /// shared-memory stages of one K and one V tile of `prefillKeyTile` keys each.
    public static let prefillRows = 128
    public static let prefillThreads = 256
    public static func prefillKeyTile(headDim: Int) -> Int { headDim == 256 ? 32 : 64 }
    public static func prefillSharedBytes(headDim: Int) -> Int { 2 * 2 * prefillKeyTile(headDim: headDim) * headDim * 2 }

    /// Causal prefill of `rows` query rows at positions `start...` over the paged cache (which
    /// already holds positions 0..<start+rows): `q` `[rows][heads][headDim]`, `out` likewise.
    public func prefill(q: CUdeviceptr, qF32: Bool, keys: CUdeviceptr, values: CUdeviceptr, pageTable: CUdeviceptr,
                        pageSize: Int, rows: Int, start: Int, heads: Int, kvHeads: Int, headDim: Int, window: Int,
                        out: CUdeviceptr, outF32: Bool) throws {
        let f = try function("prefill_attention.cu", "sift_prefill_d\(headDim)")
        let blocks = (rows + Self.prefillRows - 1) / Self.prefillRows * heads
        try context.launch(f, grid: (blocks, 1, 1), block: (Self.prefillThreads, 1, 1),
                           sharedBytes: Self.prefillSharedBytes(headDim: headDim), [
            .pointer(q), .int(qF32 ? 1 : 0), .pointer(keys), .pointer(values), .pointer(pageTable), .int(Self.log2(pageSize)),
            .pointer(out), .int(outF32 ? 1 : 0), .int(rows), .int(start + rows), .int(heads), .int(kvHeads), .int(start),
            .int(window), .float(1 / Float(headDim).squareRoot())])
    }

    /// Double Sparsity decode state for a batch: 16-bit keys, histogram, thresholds, selection
    /// lists, partials. One selection per KV group from the summed group query (as the CPU path),
    /// or with `perHead` one per query head (`--ds-group per-head`), exactly the top-k by 16-bit
    /// key (the score truncated to bf16, ordered), ties to the lowest position, sinks and the
    /// recent window always in.
    public final class DoubleSparsity: @unchecked Sendable {
        public let batch: Int, heads: Int, kvHeads: Int, headDim: Int, channels: Int, maxLength: Int
        /// One selection per query head (else per KV group).
        public let perHead: Bool
        /// Selections per sequence: `kvHeads`, or `heads` per head. The keys, histogram,
        /// thresholds and lists are per (sequence, selection); selection s belongs to KV head
        /// s / (selections / kvHeads).
        public let selections: Int
        /// Query heads one selection serves (the attend kernel's group size).
        var selectionGroup: Int { heads / selections }
        /// Label encoding the scores kernel reads: 16 (bf16) or 4 (CUDALabelCache's 4-bit records).
        public let labelBits: Int
        /// 4-bit records with a per-token scale and offset, or codes alone on a per-channel grid.
        public let labelScaleMode: LabelScale
        public let splitPositions: Int
        let keyStride: Int
        let keys: DeviceBuffer, hist: DeviceBuffer, thresholds: DeviceBuffer
        /// The selection lists `[batch][selections][listStride]` UInt32 (split s's list at
        /// s·splitPositions: the pool rows above the threshold's top-12-bit bin, then that bin's
        /// candidates as key << 16 | position in the split), their counts `[batch][selections][maxSplits]`
        /// of (rows, candidates), and the threshold pass's picks `[batch][selections][4]` Int32 ([2]
        /// the top-12-bit bin D1 of the k-th largest key, [3] how many of that bin are taken).
        let lists: DeviceBuffer, counts: DeviceBuffer, meta: DeviceBuffer
        let listStride: Int
        /// Per (sequence, selection, split) histogram of the candidates' low 4 key bits `[batch][selections][maxSplits][16]`
        /// Int32, from which the attend kernel resolves the exact threshold.
        let lowHist: DeviceBuffer
        /// Per (sequence, KV head) count of finished attend blocks, for the fused combine (zero between calls).
        let counters: DeviceBuffer
        let scratch: Scratch
        let rounds: Int
        let kernels: CUDAAttentionKernels

        /// Chunks (splits) each block of the threshold pass covers: 1, 2 or 4 (nil: 1; 2 and 4 make
        /// fewer, longer blocks and measured slower). For benchmarks and checks.
        public var thresholdChunksPerBlock: Int? = nil
        /// The scores kernel: 0 the default; 1 lanes with equal histogram bins add once
        /// (`__match_any_sync`; measured slower). With grid labels also 2: no histogram (a
        /// diagnostic: the selection is then wrong) and 3: the other occupancy (r = 8 at 4
        /// blocks an SM, the earlier default; r = 16 at 6). For benchmarks.
        public var scoresVariant = 0

        static let gridScoresVariant = [1: "match_", 2: "nohist_", 3: "occ_"]

        /// The attend kernel: 0 the default; 1...6 experimental variants (8 dims a lane, more rows
        /// in flight, more blocks per SM; 4 and 5 fuse the split combine) for benchmarks.
        public let attendVariant: Int

        /// `splitPositions` (a multiple of 4, at most 4096) and `attendVariant` override the
        /// defaults, for benchmarks and checks.
        public init(kernels: CUDAAttentionKernels, batch: Int, heads: Int, kvHeads: Int, headDim: Int, channels: Int,
                    maxLength: Int, splitPositions: Int? = nil, attendVariant: Int = 0,
                    labelBits: Int = 16, labelScaleMode: LabelScale = .token,
                    perHead: Bool = false) throws {
            guard CUDADoubleSparseAttention.supportedChannels(labelBits: labelBits).contains(channels) else {
                throw CUDAError.invalid("GPU Double Sparsity supports \(CUDADoubleSparseAttention.supportedChannels(labelBits: labelBits)) label channels with \(labelBits)-bit labels, not \(channels)")
            }
            guard labelBits == 16 || labelBits == 4 else {
                throw CUDAError.invalid("GPU Double Sparsity labels are 16 or 4 bits, not \(labelBits)")
            }
            self.labelBits = labelBits
            guard labelScaleMode == .token || labelBits == 4 else {
                throw CUDAError.invalid("a per-channel label scale needs 4-bit labels")
            }
            self.labelScaleMode = labelScaleMode
            if let sp = splitPositions, sp <= 0 || sp % 4 != 0 || sp > 4096 {
                throw CUDAError.invalid("Double Sparsity split of \(sp) positions: need a positive multiple of 4, at most 4096")
            }
            guard (0...6).contains(attendVariant) else {
                throw CUDAError.invalid("Double Sparsity attend variant \(attendVariant): have 0...6")
            }
            self.attendVariant = attendVariant
            self.kernels = kernels
            self.batch = batch; self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim
            self.channels = channels; self.maxLength = maxLength
            self.perHead = perHead
            let sel = perHead ? heads : kvHeads
            selections = sel
            let c = kernels.context
            keyStride = (maxLength + 3) / 4 * 4
            keys = try c.allocate(bytes: batch * sel * keyStride * 2)
            hist = try c.allocate(bytes: batch * sel * 4096 * 4)
            try c.memset(hist.address, byte: 0, bytes: hist.bytes)
            thresholds = try c.allocate(bytes: batch * sel * 2 * 4)
            meta = try c.allocate(bytes: batch * sel * 4 * 4)
            try c.memset(meta.address, byte: 0, bytes: meta.bytes)
            counters = try c.allocate(bytes: batch * sel * 4)
            try c.memset(counters.address, byte: 0, bytes: counters.bytes)
            let sms = c.multiprocessors
            let per = (maxLength * batch * sel + 2 * sms - 1) / (2 * sms)
            self.splitPositions = splitPositions ?? min(4096, max(1024, (per + 1023) / 1024 * 1024))
            let maxSplits = (maxLength + self.splitPositions - 1) / self.splitPositions
            scratch = try Scratch(context: c, batch: batch, heads: heads, headDim: headDim, maxSplits: maxSplits)
            listStride = maxSplits * self.splitPositions
            lists = try c.allocate(bytes: batch * sel * listStride * 4)
            counts = try c.allocate(bytes: batch * sel * maxSplits * 8)
            lowHist = try c.allocate(bytes: batch * sel * maxSplits * 16 * 4)
            let blocks = (maxLength + 2047) / 2048 * batch * sel
            rounds = max(1, min(8, blocks / (4 * sms)))
        }

        /// One decode step: `q` bf16 `[batch][heads][headDim]`, labels `[page][kvHead][pageSize][channels]`
        /// bf16 (paged like the cache), `channelList` Int32 `[kvHeads][channels]`, `seqLens` and
        /// `kPerSeq` Int32 `[batch]` on the device; `out` bf16. The first `sinks` positions and the
        /// last `recent` (at most half of what k leaves after the sinks, as `AttentionOptions.pinned`)
        /// always win. `labelQuery` (projected labels): the query the scores kernel reads instead of
        /// `q`, bf16 `[batch][heads][labelQueryDim]` (A·q; `channelList` then 0..<channels).
        public func run(q: CUdeviceptr, keys kc: CUdeviceptr, values vc: CUdeviceptr, labels: CUdeviceptr,
                        channelList: CUdeviceptr, pageTable: CUdeviceptr, pageSize: Int, maxPages: Int,
                        seqLens: CUdeviceptr, kPerSeq: CUdeviceptr, sinks: Int, recent: Int = 0, out: CUdeviceptr,
                        parts: String = "sta", labelScale: CUdeviceptr = 0, outF32: Bool = false,
                        labelQuery: CUdeviceptr = 0, labelQueryDim: Int = 0) throws {
            // g: the query heads a selection serves (the kernels' group size); spk: selections per KV head.
            let c = kernels.context, g = selectionGroup, spk = selections / kvHeads, shift = CUDAAttentionKernels.log2(pageSize)
            if parts.contains("s") {
                let f = try kernels.function("double_sparsity.cu", headDim: headDim, group: g,
                                             labelBits == 4 ? (labelScaleMode == .channel ? "sift_ds_scores4g_\(Self.gridScoresVariant[scoresVariant] ?? "")r\(channels)" : "sift_ds_scores4_r\(channels)")
                                                 : scoresVariant == 1 ? "sift_ds_scores_match_r\(channels)" : "sift_ds_scores_r\(channels)")
                // 4-bit labels: `labelScale` is the query scale (σ per KV head and channel, [kvHeads][channels] f32).
                precondition(labelBits == 16 || labelScale != 0, "4-bit DS labels need their query scale")
                // The scores kernels read the query only through `D` (its row stride) and the channel list.
                var args: [KernelArg] = [
                    .pointer(labelQuery != 0 ? labelQuery : q), .pointer(labels), .pointer(channelList), .pointer(pageTable),
                    .pointer(seqLens), .int(g), .int(labelQuery != 0 ? labelQueryDim : headDim), .int(shift), .int(maxPages), .int(sinks), .pointer(kPerSeq), .int(recent),
                    .ptr(keys), .int(keyStride),
                    .ptr(hist), .int(rounds)]
                if labelBits == 4 { args += [.pointer(labelScale), .float(LabelScale.step)] }
                args.append(.int(spk))
                try c.launch(f, grid: ((maxLength + 2048 * rounds - 1) / (2048 * rounds), selections, batch), block: (256, 1, 1),
                             dependent: true, args)
            }
            if parts.contains("t") {
                // One chunk a block: 2 or 4 (fewer, longer blocks) measured slower at every shape.
                let cpb = thresholdChunksPerBlock ?? 1
                guard [1, 2, 4].contains(cpb) else { throw CUDAError.invalid("threshold chunks per block \(cpb): have 1, 2, 4") }
                let pick = try kernels.function("double_sparsity.cu", headDim: headDim, group: g, "sift_ds_pick_d1")
                try c.launch(pick, grid: (selections, batch, 1), block: (256, 1, 1), dependent: true, [
                    .ptr(hist), .pointer(seqLens), .pointer(kPerSeq), .ptr(meta)])
                let f = try kernels.function("double_sparsity.cu", headDim: headDim, group: g, "sift_ds_candidates_c\(cpb)")
                try c.launch(f, grid: ((scratch.maxSplits + cpb - 1) / cpb, selections, batch), block: (256, 1, 1), dependent: true, [
                    .ptr(keys), .int(keyStride), .pointer(seqLens), .pointer(kPerSeq), .pointer(pageTable),
                    .int(shift), .int(maxPages), .int(splitPositions), .ptr(lists), .int(listStride), .ptr(counts),
                    .int(scratch.maxSplits), .ptr(meta), .ptr(lowHist), .int(spk)])
            }
            if parts.contains("a") {
                let v = attendVariant == 0 ? "" : "v\(attendVariant)_"
                let f = try kernels.function("double_sparsity.cu", headDim: headDim, group: g, "sift_ds_attend_\(v)d\(headDim)_g\(g)")
                try c.launch(f, grid: (scratch.maxSplits, selections, batch), block: (128, 1, 1), dependent: true, [
                    .pointer(q), .pointer(kc), .pointer(vc), .pointer(pageTable), .pointer(seqLens), .pointer(kPerSeq), .ptr(lists),
                    .int(listStride), .ptr(counts), .ptr(meta), .ptr(lowHist), .ptr(thresholds), .ptr(scratch.partO), .ptr(scratch.partLSE), .int(shift),
                    .int(maxPages), .int(splitPositions), .int(scratch.maxSplits), .float(1 / Float(headDim).squareRoot()),
                    .ptr(counters), .pointer(out), .int(spk)])
                if attendVariant >= 4 {   // the last block of each (b, KV head) combined (bf16 out)
                    precondition(!outF32, "attend variants 4 and 5 write bf16 output")
                    return
                }
                let comb = try kernels.function("decode_attention.cu", headDim: headDim, group: g, "sift_decode_combine_d\(headDim)")
                try c.launch(comb, grid: (heads, batch, 1), block: (min(headDim, 128), 1, 1), sharedBytes: 4 * scratch.maxSplits,
                             dependent: true, [
                    .ptr(scratch.partO), .ptr(scratch.partLSE), .pointer(seqLens), .pointer(0), .int(g), .int(splitPositions),
                    .int(scratch.maxSplits), .pointer(out), .int(0), .int(0), .int(outF32 ? 1 : 0)])
            }
        }

        /// Zeroes the histogram and the threshold pass's picks (a full run leaves the histogram
        /// zero; running the scores alone, as a benchmark of that phase does, does not).
        public func clearState() throws {
            try kernels.context.memset(hist.address, byte: 0, bytes: hist.bytes)
            try kernels.context.memset(meta.address, byte: 0, bytes: meta.bytes)
        }

        /// The selection threshold per (sequence, selection): (T, tie cut) as written by the last run.
        public func thresholdsHost() throws -> [UInt32] {
            try kernels.context.download(thresholds.address, count: batch * selections * 2, as: UInt32.self)
        }
        /// The 16-bit keys of the last run (widened), `[batch][selections][keyRowStride]`.
        public func keysHost() throws -> [UInt32] {
            try kernels.context.download(keys.address, count: batch * selections * keyStride, as: UInt16.self).map { UInt32($0) }
        }
        /// What each (sequence, selection) attends over after the last run, as the attend kernel
        /// reads it from the selection lists: the pool rows listed above the threshold's bin, and
        /// the positions of the candidates it takes (key > T, or key == T at a position <= the tie
        /// cut); nil for a row whose counts are out of range. For checks.
        public func selectionListsHost() throws -> [(rows: [Int], positions: [Int])?] {
            let c = kernels.context, ms = scratch.maxSplits
            let l = try c.download(lists.address, count: batch * selections * listStride, as: UInt32.self)
            let n = try c.download(counts.address, count: batch * selections * ms * 2, as: Int32.self)
            let thr = try thresholdsHost()
            return (0..<(batch * selections)).map { bh -> (rows: [Int], positions: [Int])? in
                var rows: [Int] = [], positions: [Int] = []
                let T = thr[2 * bh], cut = Int(Int32(bitPattern: thr[2 * bh + 1]))
                for s in 0..<ms {
                    let base = bh * listStride + s * splitPositions
                    let above = Int(n[2 * (bh * ms + s)]), cand = Int(n[2 * (bh * ms + s) + 1])
                    guard above >= 0, cand >= 0, above + cand <= splitPositions else { return nil }
                    rows += l[base..<(base + above)].map { Int($0) }
                    for x in l[(base + above)..<(base + above + cand)] {
                        let key = x >> 16, pos = s * splitPositions + Int(x & 0xffff)
                        if key > T || (key == T && pos <= cut) { positions.append(pos) }
                    }
                }
                return (rows, positions)
            }
        }
        public var keyRowStride: Int { keyStride }
    }

    /// Fills `count` bf16 values at `dst` with deterministic pseudo-random numbers (~N(0,1)-ish,
    /// uniform in [-√3, √3]) from `seed`, on the device (for synthetic benchmarks).
    public func fillRandom(_ dst: CUdeviceptr, count: Int, seed: UInt32, scale: Float = 1) throws {
        let f = try function("prefill_attention.cu", "sift_fill_random_bf16")
        try context.launch(f, grid: ((count + 255) / 256, 1, 1), block: (256, 1, 1),
                           [.pointer(dst), .int64(Int64(count)), .uint32(seed), .float(scale)])
    }
}
