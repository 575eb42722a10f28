/// Swift side of the Quest and TidalDecode decode kernels (Kernels/sparse_select.cu): both pick
/// positions per (sequence, KV head), with Double Sparsity's exact radix threshold
/// (`sift_ds_threshold`), and attend over the picked rows with the split-KV decode kernel's
/// index-list mode. Every sequence of a batch has the same length here (the engine decodes one
/// sequence; kernel-bench uses equal lengths).
extension CUDAAttentionKernels {
    /// Decode attention of each (sequence, KV head) group over the positions listed in
    /// `selIdx` `[batch][kvHeads][selStride]` (Int32), `selCount` `[batch][kvHeads]` of them;
    /// `maxCount` bounds the counts (it sizes the grid).
    public func decodeSelected(q: CUdeviceptr, qF32: Bool, keys: CUdeviceptr, values: CUdeviceptr, pageTable: CUdeviceptr,
                               pageSize: Int, maxPages: Int, selIdx: CUdeviceptr, selCount: CUdeviceptr, selStride: Int,
                               maxCount: Int, batch: Int, heads: Int, kvHeads: Int, headDim: Int, out: CUdeviceptr,
                               outF32: Bool, scratch: Scratch) throws {
        let g = heads / kvHeads
        var split = Self.splitTokens(batch: batch, kvHeads: kvHeads, length: maxCount, multiprocessors: context.multiprocessors)
        while (maxCount + split - 1) / split > scratch.maxSplits { split *= 2 }
        let splits = max(1, (maxCount + split - 1) / split)
        let f = try function("decode_attention.cu", headDim: headDim, group: g, "sift_decode_split_d\(headDim)_g\(g)")
        try context.launch(f, grid: (splits, kvHeads, batch), block: (128, 1, 1), dependent: true, [
            .pointer(q), .pointer(keys), .pointer(values), .pointer(pageTable), .pointer(0),
            .pointer(selIdx), .pointer(selCount), .int(selStride), .ptr(scratch.partO), .ptr(scratch.partLSE),
            .int(Self.log2(pageSize)), .int(maxPages), .int(split), .int(scratch.maxSplits),
            .float(1 / Float(headDim).squareRoot()), .pointer(0), .pointer(0), .int(0), .int(0), .int(qF32 ? 1 : 0)])
        let c = try function("decode_attention.cu", headDim: headDim, group: g, "sift_decode_combine_d\(headDim)")
        try context.launch(c, grid: (heads, batch, 1), block: (min(headDim, 128), 1, 1), sharedBytes: 4 * scratch.maxSplits, dependent: true, [
            .ptr(scratch.partO), .ptr(scratch.partLSE), .pointer(0), .pointer(selCount), .int(g), .int(split),
            .int(scratch.maxSplits), .pointer(out), .int(0), .int(0), .int(outF32 ? 1 : 0)])
    }

    /// State shared by the Quest and TidalDecode selections: keys, histogram, threshold, the
    /// list of picked positions, split partials.
    public class Selection: @unchecked Sendable {
        public let batch: Int, heads: Int, kvHeads: Int, headDim: Int
        /// Keys per (sequence, KV head) at most (pages for Quest, tokens for Tidal) and picked positions at most.
        public let maxKeys: Int, maxSelected: Int
        let keyStride: Int
        let keys: DeviceBuffer, hist: DeviceBuffer, thresholds: DeviceBuffer, meta: DeviceBuffer
        public let selIdx: DeviceBuffer, selCount: DeviceBuffer
        let scratch: Scratch
        let kernels: CUDAAttentionKernels

        init(kernels: CUDAAttentionKernels, batch: Int, heads: Int, kvHeads: Int, headDim: Int, maxKeys: Int,
             maxSelected: Int) throws {
            guard heads % kvHeads == 0, (1...8).contains(heads / kvHeads), [64, 128, 256].contains(headDim) else {
                throw CUDAError.invalid("GPU sparse decode supports head_dim 64/128/256 and 1...8 query heads per KV head, not \(heads)/\(kvHeads) d\(headDim)")
            }
            self.kernels = kernels
            self.batch = batch; self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim
            self.maxKeys = maxKeys; self.maxSelected = max(1, maxSelected)
            let c = kernels.context
            keyStride = (maxKeys + 3) / 4 * 4
            keys = try c.allocate(bytes: batch * kvHeads * keyStride * 4)
            hist = try c.allocate(bytes: batch * kvHeads * 4096 * 4)
            try c.memset(hist.address, byte: 0, bytes: hist.bytes)
            thresholds = try c.allocate(bytes: batch * kvHeads * 2 * 4)
            meta = try c.allocate(bytes: 2 * batch * 4)
            selIdx = try c.allocate(bytes: batch * kvHeads * self.maxSelected * 4)
            selCount = try c.allocate(bytes: batch * kvHeads * 4)
            try c.memset(selCount.address, byte: 0, bytes: selCount.bytes)
            scratch = try Scratch(context: c, batch: batch, heads: heads, headDim: headDim, maxSplits: 2 * c.multiprocessors + 1)
        }

        var group: Int { heads / kvHeads }

        /// Threshold of the keys just scored (meta holds n and k per sequence), then the list.
        func thresholdAndList(nKeys: Int, unit: Int, length: Int) throws {
            let c = kernels.context
            let t = try kernels.function("double_sparsity.cu", headDim: headDim, group: group, "sift_ds_threshold")
            try c.launch(t, grid: (kvHeads, batch, 1), block: (1024, 1, 1), [
                .ptr(keys), .int(keyStride), .ptr(hist), .ptr(meta), .pointer(meta.address + UInt64(4 * batch)), .ptr(thresholds)])
            let l = try kernels.function("sparse_select.cu", headDim: headDim, group: group, "sift_select_list")
            try c.launch(l, grid: (kvHeads, batch, 1), block: (1024, 1, 1), [
                .ptr(keys), .int(keyStride), .ptr(thresholds), .int(nKeys), .int(unit), .int(length), .ptr(selIdx),
                .int(maxSelected), .ptr(selCount)])
        }

        /// Attention of the batch's query over the picked positions.
        public func attendSelected(q: CUdeviceptr, qF32: Bool, keys kc: CUdeviceptr, values vc: CUdeviceptr,
                                   pageTable: CUdeviceptr, pageSize: Int, maxPages: Int, maxCount: Int,
                                   out: CUdeviceptr, outF32: Bool) throws {
            try kernels.decodeSelected(q: q, qF32: qF32, keys: kc, values: vc, pageTable: pageTable, pageSize: pageSize,
                                       maxPages: maxPages, selIdx: selIdx.address, selCount: selCount.address,
                                       selStride: maxSelected, maxCount: min(maxCount, maxSelected), batch: batch,
                                       heads: heads, kvHeads: kvHeads, headDim: headDim, out: out, outF32: outF32,
                                       scratch: scratch)
        }

        /// The picked positions per (sequence, KV head), as the last call left them.
        public func selectedHost() throws -> [[Int32]] {
            let c = kernels.context
            let counts = try c.download(selCount.address, count: batch * kvHeads, as: Int32.self)
            let all = try c.download(selIdx.address, count: batch * kvHeads * maxSelected, as: Int32.self)
            return counts.enumerated().map { i, n in Array(all[(i * maxSelected)..<(i * maxSelected + Int(n))]) }
        }
        public func keysHost() throws -> [UInt32] {
            try kernels.context.download(keys.address, count: batch * kvHeads * keyStride, as: UInt32.self)
        }
        public var keyRowStride: Int { keyStride }
    }

    /// Quest decode: page bounds (bf16 min/max per Quest page and KV head), the group's summed
    /// upper bound per page, the top `kPages` pages exactly, attention over their tokens.
    /// Bounds live in a buffer the caller owns (one per layer): `[batch][maxQPages][kvHeads][2][headDim]` bf16.
    public final class Quest: Selection, @unchecked Sendable {
        public let questPage: Int, maxQPages: Int

        public init(kernels: CUDAAttentionKernels, batch: Int, heads: Int, kvHeads: Int, headDim: Int, questPage: Int,
                    maxLength: Int) throws {
            guard questPage >= 1 && questPage <= 4096 else { throw CUDAError.invalid("--quest-page must be in 1...4096, got \(questPage)") }
            self.questPage = questPage
            maxQPages = (maxLength + questPage - 1) / questPage
            try super.init(kernels: kernels, batch: batch, heads: heads, kvHeads: kvHeads, headDim: headDim,
                           maxKeys: maxQPages, maxSelected: maxLength)
        }

        /// Bytes of one layer's bounds buffer.
        public var boundsBytes: Int { batch * maxQPages * kvHeads * 2 * headDim * 2 }

        /// Recomputes the bounds of the Quest pages holding positions `from..<length` from the
        /// stored keys (positions < `length`).
        public func updateBounds(keys kc: CUdeviceptr, pageTable: CUdeviceptr, pageSize: Int, maxPages: Int,
                                 bounds: CUdeviceptr, from: Int, length: Int) throws {
            guard length > from else { return }
            let first = from / questPage, last = (length - 1) / questPage
            let f = try kernels.function("sparse_select.cu", headDim: headDim, group: group, "sift_quest_bounds")
            try kernels.context.launch(f, grid: (last - first + 1, kvHeads, batch), block: (headDim, 1, 1), [
                .pointer(kc), .pointer(pageTable), .int(CUDAAttentionKernels.log2(pageSize)), .int(maxPages), .int(first),
                .int(questPage), .int(length), .pointer(bounds), .int(maxQPages)])
        }

        /// Scores the pages of sequences of `length` positions and lists the tokens of the top
        /// `kPages` (parts: "s" scores, "t" threshold and list, "a" attention).
        public func run(q: CUdeviceptr, qF32: Bool, keys kc: CUdeviceptr, values vc: CUdeviceptr, pageTable: CUdeviceptr,
                        pageSize: Int, maxPages: Int, bounds: CUdeviceptr, length: Int, kPages: Int,
                        out: CUdeviceptr, outF32: Bool, parts: String = "sta") throws {
            let pages = (length + questPage - 1) / questPage
            guard pages <= maxQPages else { throw CUDAError.invalid("Quest: \(length) positions exceed the \(maxQPages * questPage) this state holds") }
            let c = kernels.context
            if parts.contains("s") {
                let f = try kernels.function("sparse_select.cu", headDim: headDim, group: group, "sift_quest_scores")
                try c.launch(f, grid: ((pages + 63) / 64, kvHeads, batch), block: (256, 1, 1), [
                    .pointer(q), .int(qF32 ? 1 : 0), .pointer(bounds), .int(maxQPages), .int(pages), .int(kPages),
                    .int(group), .int(headDim), .ptr(keys), .int(keyStride), .ptr(hist), .ptr(meta)])
            }
            if parts.contains("t") { try thresholdAndList(nKeys: pages, unit: questPage, length: length) }
            if parts.contains("a") {
                try attendSelected(q: q, qF32: qF32, keys: kc, values: vc, pageTable: pageTable, pageSize: pageSize,
                                   maxPages: maxPages, maxCount: min(length, kPages * questPage), out: out, outF32: outF32)
            }
        }
    }

    /// TidalDecode decode: the token-selection layer attends densely and picks the `k` positions
    /// with the most softmax mass summed over each KV head's query group (the first `sinks`
    /// always); the other sparse layers attend over that list (`reuse`).
    public final class Tidal: Selection, @unchecked Sendable {
        public private(set) var lastCount = 0

        public init(kernels: CUDAAttentionKernels, batch: Int, heads: Int, kvHeads: Int, headDim: Int, maxLength: Int) throws {
            try super.init(kernels: kernels, batch: batch, heads: heads, kvHeads: kvHeads, headDim: headDim,
                           maxKeys: maxLength, maxSelected: maxLength)
        }

        /// Dense attention of sequences of `length` positions into `out`, and the new selection
        /// of `k` positions per (sequence, KV head). parts: "d" dense, "s" scores, "t" threshold and list.
        public func select(q: CUdeviceptr, qF32: Bool, keys kc: CUdeviceptr, values vc: CUdeviceptr, pageTable: CUdeviceptr,
                           pageSize: Int, maxPages: Int, length: Int, k: Int, sinks: Int, out: CUdeviceptr, outF32: Bool,
                           parts: String = "dst") throws {
            guard length <= maxKeys else { throw CUDAError.invalid("TidalDecode: \(length) positions exceed the \(maxKeys) this state holds") }
            let c = kernels.context
            var split = CUDAAttentionKernels.splitTokens(batch: batch, kvHeads: kvHeads, length: length,
                                                         multiprocessors: c.multiprocessors)
            while (length + split - 1) / split > scratch.maxSplits { split *= 2 }
            if parts.contains("d") {
                try kernels.decode(q: q, qF32: qF32, keys: kc, values: vc, pageTable: pageTable, pageSize: pageSize,
                                   maxPages: maxPages, lengths: .fixed(length), batch: batch, heads: heads, kvHeads: kvHeads,
                                   headDim: headDim, out: out, outF32: outF32, scratch: scratch, splitTokens: split)
            }
            let per = (batch * kvHeads * length + 2 * c.multiprocessors - 1) / (2 * c.multiprocessors)
            let perBlock = max(256, (per + 255) / 256 * 256)
            if parts.contains("s") {
                let f = try kernels.function("sparse_select.cu", headDim: headDim, group: group,
                                             "sift_tidal_scores_d\(headDim)_g\(group)")
                try c.launch(f, grid: ((length + perBlock - 1) / perBlock, kvHeads, batch), block: (256, 1, 1), [
                    .pointer(q), .int(qF32 ? 1 : 0), .pointer(kc), .pointer(pageTable), .int(CUDAAttentionKernels.log2(pageSize)),
                    .int(maxPages), .int(length), .ptr(scratch.partLSE), .int(scratch.maxSplits),
                    .int((length + split - 1) / split), .float(1 / Float(headDim).squareRoot()), .int(sinks),
                    .int(perBlock), .int(min(k, length)), .ptr(keys), .int(keyStride), .ptr(hist), .ptr(meta)])
            }
            if parts.contains("t") { try thresholdAndList(nKeys: length, unit: 1, length: length) }
            lastCount = min(k, length)
        }

        /// Attention over the positions of the last selection (another layer's cache).
        public func reuse(q: CUdeviceptr, qF32: Bool, keys kc: CUdeviceptr, values vc: CUdeviceptr, pageTable: CUdeviceptr,
                          pageSize: Int, maxPages: Int, out: CUdeviceptr, outF32: Bool) throws {
            try attendSelected(q: q, qF32: qF32, keys: kc, values: vc, pageTable: pageTable, pageSize: pageSize,
                               maxPages: maxPages, maxCount: max(1, lastCount), out: out, outF32: outF32)
        }
    }
}
