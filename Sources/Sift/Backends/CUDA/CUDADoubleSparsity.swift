#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Double Sparsity's label cache on the GPU: per layer a pool paged exactly like the KV cache
/// (`[page][kvHead][pageSize][r]` bf16, read through the same page table), holding for every
/// stored position the r calibrated channels of its post-RoPE key. Written by
/// `sift_ds_label_store` (Kernels/ds_labels.cu) next to every KV store; unwritten rows are NaN.
///
/// `bits` 4 (`--ds-label-bits 4`): the pool holds instead, per row, the CPU's 4-bit record
/// (KV/LabelCache.swift: f16 scale, f16 offset, r/2 bytes of codes; 4 + r/2 bytes), normalised
/// per channel by the calibration's key moments (`mean`, `std`), written by
/// `sift_ds_label4_store` with the same f32 operations as the CPU (bit-identical codes); the
/// scores kernel scales the query by σ (`queryScale`). Unwritten rows have NaN scale and offset.
/// `scale: .channel` (`--ds-label-scale channel`): rows of r/2 bytes of codes alone on the
/// per-channel grid (`LabelScale`), same encoder with 1/Δ; unwritten rows are all code 15.
///
/// Projected labels (`projection`, a `qk-svd` calibration): the label channels are rows of a
/// calibrated matrix B (`LabelProjection`); `sift_ds_project_f32` computes B·k for the stored rows
/// into a scratch buffer, which the same store kernels then write with head_dim r and the channel
/// list 0..<r; `projectQuery` computes A·q for the scores kernels (bf16).
public final class CUDALabelCache: @unchecked Sendable {
    public let layerCount: Int
    public let kvHeads: Int
    public let channels: Int
    /// 16 (bf16 labels) or 4 (4-bit records).
    public let bits: Int
    /// 4-bit records: per-token scale and offset, or codes alone on a per-channel grid.
    public let scale: LabelScale
    /// Bytes of one row (position, KV head) of the pool.
    public let recordBytes: Int
    let cache: CUDAKVCache
    private let pools: [DeviceBuffer]
    /// `[layer][kvHead][channels]` Int32: the channel list of each layer and KV head.
    let channelList: DeviceBuffer
    /// 4-bit labels: `[3][layer][kvHead][channels]` f32: μ, 1/σ, σ (nil for bf16 labels).
    private let norm: DeviceBuffer?
    private let kStore: CUDAFunction, kStoreBatch: CUDAFunction
    /// Projected labels: B and A per layer, `[layer][kvHead][channels][headDim]` f32 (nil: key channels).
    private let keyProjection: DeviceBuffer?, queryProjection: DeviceBuffer?
    private let kProject: CUDAFunction?, kProjectBF16: CUDAFunction?
    /// Projected keys of the rows being stored, f32 `[rows][kvHeads][channels]`.
    private var projected: DeviceBuffer?
    public var isProjected: Bool { keyProjection != nil }

    /// - Parameters: mean, std: per [layer][kvHead] the μ and σ of the label channels (4-bit
    ///   labels; nil = 0 and 1).
    /// - Parameter projection: projected labels, per [layer][kvHead] B and A (r × headDim floats
    ///   each, row-major); `list` is then 0..<r for every head.
    init(cache: CUDAKVCache, channels list: [[[Int32]]], bits: Int = 16, mean: [[[Float]]]? = nil,
         std: [[[Float]]]? = nil, projection: (keys: [[[Float]]], queries: [[[Float]]])? = nil,
         scale: LabelScale = .token) throws {
        let c = cache.context
        self.cache = cache
        let layers = cache.layerCount, heads = cache.kvHeads, r = list.first?.first?.count ?? 0
        layerCount = layers
        kvHeads = heads
        channels = r
        let four = CUDADoubleSparseAttention.supportedChannels(labelBits: 4)
        guard bits == 16 || (bits == 4 && four.contains(r)) else {
            throw CUDAError.invalid("GPU Double Sparsity labels: \(bits) bits with \(r) channels not supported (16, or 4 with \(four.map(String.init).joined(separator: ", ")) channels)")
        }
        self.bits = bits
        guard scale == .token || bits == 4 else { throw CUDAError.invalid("a per-channel label scale needs 4-bit labels") }
        self.scale = scale
        recordBytes = bits == 16 ? r * 2 : (scale == .token ? 4 : 0) + r / 2
        precondition(list.count == layers && list.allSatisfy { $0.count == heads && $0.allSatisfy { $0.count == r } })
        let bytes = cache.totalPages * heads * cache.pageSize * recordBytes
        let n = layers * heads * r
        do {
            pools = try (0..<layers).map { _ in try c.allocate(bytes: bytes) }
            channelList = try c.allocate(bytes: n * 4)
            norm = bits == 4 ? try c.allocate(bytes: 3 * n * 4) : nil
        } catch {
            throw CUDAError.invalid("GPU Double Sparsity: no room for the label cache (\(layers * bytes >> 20) MiB next to the KV cache): lower -c or set --kv-memory (\(error))")
        }
        try c.upload(list.flatMap { $0.flatMap { $0 } }, to: channelList.address)
        if let norm {
            let mu = mean.map { $0.flatMap { $0.flatMap { $0 } } } ?? [Float](repeating: 0, count: n)
            let sd = std.map { $0.flatMap { $0.flatMap { $0 } } } ?? [Float](repeating: 1, count: n)
            precondition(mu.count == n && sd.count == n, "label normalisation shape")
            try c.upload(mu + sd.map { 1 / $0 } + sd, to: norm.address)
        }
        for p in pools { try c.memset32(p.address, word: bits == 16 ? 0x7fc0_7fc0 : 0xffff_ffff, count: bytes / 4) }
        kStore = try c.kernel("ds_labels.cu", bits == 16 ? "sift_ds_label_store" : "sift_ds_label4_store")
        kStoreBatch = try c.kernel("ds_labels.cu", bits == 16 ? "sift_ds_label_store_batch" : "sift_ds_label4_store_batch")
        if let projection {
            let count = layers * heads * r * cache.headDim
            let kp = projection.keys.flatMap { $0.flatMap { $0 } }, qp = projection.queries.flatMap { $0.flatMap { $0 } }
            precondition(kp.count == count && qp.count == count, "label projection shape")
            let kb = try c.allocate(bytes: count * 4), qb = try c.allocate(bytes: count * 4)
            try c.upload(kp, to: kb.address)
            try c.upload(qp, to: qb.address)
            keyProjection = kb
            queryProjection = qb
            kProject = try c.kernel("ds_labels.cu", "sift_ds_project_f32")
            kProjectBF16 = try c.kernel("ds_labels.cu", "sift_ds_project_bf16")
        } else {
            keyProjection = nil
            queryProjection = nil
            kProject = nil
            kProjectBF16 = nil
        }
    }

    private func projection(_ buffer: DeviceBuffer, _ layer: Int) -> CUdeviceptr {
        buffer.address + UInt64(layer * kvHeads * channels * cache.headDim * 4)
    }

    /// Projected labels: B·k of the rows of `k` into the scratch buffer; returns it and the row
    /// width to store from (head_dim r). Key channels: `k` itself and head_dim.
    private func labelSource(layer: Int, k: Tensor) throws -> (address: CUdeviceptr, headDim: Int) {
        guard let keyProjection, let kProject else { return (CUDABackend.address(k), cache.headDim) }
        let bytes = k.rows * kvHeads * channels * 4
        if projected == nil || projected!.bytes < bytes {
            projected = nil
            projected = try cache.context.allocate(bytes: max(bytes, 4096))
        }
        try cache.context.launch(kProject, grid: (k.rows, kvHeads, 1), block: (128, 1, 1), [
            .pointer(CUDABackend.address(k)), .pointer(projection(keyProjection, layer)), .ptr(projected!),
            .int(kvHeads), .int(1), .int(cache.headDim), .int(channels)])
        return (projected!.address, channels)
    }

    /// Projected labels: A·q of `rows` query rows (f32 `[rows][heads][headDim]`) into `out`
    /// (bf16 `[rows][heads][channels]`), each query head through its KV head's A.
    func projectQuery(layer: Int, q: CUdeviceptr, rows: Int, heads: Int, into out: CUdeviceptr) throws {
        guard let queryProjection, let kProjectBF16 else { preconditionFailure("projectQuery without a label projection") }
        try cache.context.launch(kProjectBF16, grid: (rows, heads, 1), block: (128, 1, 1), [
            .pointer(q), .pointer(projection(queryProjection, layer)), .pointer(out),
            .int(heads), .int(heads / kvHeads), .int(cache.headDim), .int(channels)])
    }

    /// The label pool of `layer`.
    public func labels(_ layer: Int) -> CUdeviceptr { pools[layer].address }
    /// The channel list of `layer` (`[kvHead][channels]` Int32).
    func channels(_ layer: Int) -> CUdeviceptr { channelList.address + UInt64(layer * kvHeads * channels * 4) }
    /// 4-bit labels: μ, 1/σ and σ of `layer`'s label channels (`[kvHead][channels]` f32); 0 for bf16.
    private func normPart(_ part: Int, _ layer: Int) -> CUdeviceptr {
        guard let norm else { return 0 }
        return norm.address + UInt64(((part * layerCount + layer) * kvHeads * channels) * 4)
    }
    /// The query scale of `layer` for the 4-bit scores kernel (σ per KV head and channel); 0 for bf16.
    public func queryScale(_ layer: Int) -> CUdeviceptr { normPart(2, layer) }

    /// Bytes the pools take.
    public var reservedBytes: Int { pools.reduce(0) { $0 + $1.bytes } }

    /// Stores the labels of the rows of `k` (f32 `[rows][kvHeads × headDim]`, post-RoPE) at
    /// positions start... of `layer`.
    func store(layer: Int, k: Tensor, start: Int) throws {
        guard k.rows > 0 else { return }
        let src = try labelSource(layer: layer, k: k)
        if bits == 4 {
            try cache.context.launch(kStore, grid: (k.rows, 1, 1), block: ((kvHeads + 31) / 32 * 32, 1, 1), [
                .pointer(src.address), .ptr(pools[layer]), .pointer(channels(layer)), .pointer(normPart(0, layer)),
                .pointer(normPart(1, layer)), .pointer(cache.activePageTable), .int(start), .int(kvHeads), .int(src.headDim),
                .int(channels), .int(cache.pageSize), .float(inverseStep)])
            return
        }
        try cache.context.launch(kStore, grid: (k.rows, 1, 1), block: (min(256, (kvHeads * channels + 31) / 32 * 32), 1, 1), [
            .pointer(src.address), .ptr(pools[layer]), .pointer(channels(layer)), .pointer(cache.activePageTable),
            .int(start), .int(kvHeads), .int(src.headDim), .int(channels), .int(cache.pageSize)])
    }

    /// The 4-bit store kernels' grid argument: 1/Δ for the per-channel grid, 0 for per-token records.
    private var inverseStep: Float { scale == .channel ? LabelScale.inverseStep : 0 }

    /// Batched decode: row i of `k` at position `seqLens[i] - 1` of sequence i (the cache's
    /// lengths already uploaded, as for its own batched store).
    func storeBatch(layer: Int, k: Tensor) throws {
        let src = try labelSource(layer: layer, k: k)
        if bits == 4 {
            try cache.context.launch(kStoreBatch, grid: (k.rows, 1, 1), block: ((kvHeads + 31) / 32 * 32, 1, 1), [
                .pointer(src.address), .ptr(pools[layer]), .pointer(channels(layer)), .pointer(normPart(0, layer)),
                .pointer(normPart(1, layer)), .ptr(cache.pageTable), .ptr(cache.seqLens), .int(cache.pageCount), .int(kvHeads),
                .int(src.headDim), .int(channels), .int(cache.pageSize), .float(inverseStep)])
            return
        }
        try cache.context.launch(kStoreBatch, grid: (k.rows, 1, 1), block: (min(256, (kvHeads * channels + 31) / 32 * 32), 1, 1), [
            .pointer(src.address), .ptr(pools[layer]), .pointer(channels(layer)), .ptr(cache.pageTable),
            .ptr(cache.seqLens), .int(cache.pageCount), .int(kvHeads), .int(src.headDim), .int(channels), .int(cache.pageSize)])
    }

    /// The stored rows of positions 0..<count of `layer`, `[position][kvHead][recordBytes]`
    /// bytes (through the page table; for checks: 4-bit records compare with the CPU's bytes).
    public func hostRecords(layer: Int, count: Int) throws -> [UInt8] {
        let c = cache.context
        try c.synchronize()
        let table = try c.download(cache.activePageTable, count: cache.pageCount, as: Int32.self)
        let raw = try c.download(pools[layer].address, count: pools[layer].bytes, as: UInt8.self)
        var out = [UInt8]()
        out.reserveCapacity(count * kvHeads * recordBytes)
        for p in 0..<count {
            for h in 0..<kvHeads {
                let row = (Int(table[p / cache.pageSize]) * kvHeads + h) * cache.pageSize + p % cache.pageSize
                out += raw[(row * recordBytes)..<((row + 1) * recordBytes)]
            }
        }
        return out
    }

    /// Labels of positions 0..<count of `layer` as floats, `[position][kvHead][channels]`
    /// (through the page table; for checks; bf16 labels).
    public func host(layer: Int, count: Int) throws -> [Float] {
        precondition(bits == 16, "host(layer:count:) reads bf16 labels; use hostRecords for 4-bit ones")
        let c = cache.context
        try c.synchronize()
        let table = try c.download(cache.activePageTable, count: cache.pageCount, as: Int32.self)
        let raw = try c.download(pools[layer].address, count: pools[layer].bytes / 2, as: UInt16.self)
        var out = [Float](repeating: 0, count: count * kvHeads * channels)
        for p in 0..<count {
            for h in 0..<kvHeads {
                let row = (Int(table[p / cache.pageSize]) * kvHeads + h) * cache.pageSize + p % cache.pageSize
                for ch in 0..<channels {
                    out[(p * kvHeads + h) * channels + ch] = Float(bitPattern: UInt32(raw[row * channels + ch]) << 16)
                }
            }
        }
        return out
    }
}

/// Double Sparsity (Attention/DoubleSparsity.swift) on the GPU: the same method, the same
/// settings (`--ds-config`, `--ds-channels`, `--budget`/`--ds-tokens`, `--sinks`,
/// `--ds-dense-below`, `--ds-group shared|per-head`): one selection per KV group from the
/// group's summed query, or one per query head (each reads its KV head's labels and up to k
/// rows of its own: up to G× the label and row reads).
///
/// - Every stored row (prefill chunks, decode steps, `append`) goes to the paged bf16 KV cache
///   (CUDADenseAttention's store) and its labels to `CUDALabelCache`.
/// - Decode steps (one query row) with `length ≥ --ds-dense-below` and `k = budget(length) <
///   length` run the DS kernels of Kernels/double_sparsity.cu (`CUDAAttentionKernels.DoubleSparsity`):
///   label scores → exact top-k threshold → gather-attention → split combine. The kernels read
///   bf16 queries and write bf16 outputs (converted around them) and take the length and k from
///   a device word pair written with memset (no host→device copy, no synchronisation).
/// - Other decode steps, prefill chunks and sliding-window layers attend densely through
///   CUDADenseAttention.
/// - Sparse-aware perplexity (`sparsePrefill`): each row of a chunk runs as the decode step at
///   its position would (one DS call per row, its length limiting what it sees).
public final class CUDADoubleSparseAttention: SparseAwareAttention, BatchedDecodeAttention, @unchecked Sendable {
    public let name = "double-sparse"
    public let dense: CUDADenseAttention
    public var kv: KVStorage { dense.gpuCache }
    public var sequenceCount: Int { dense.sequenceCount }
    public var activeSequence: Int {
        get { dense.activeSequence }
        set { dense.activeSequence = newValue }
    }
    public let labels: CUDALabelCache
    public let options: AttentionOptions
    public var sparsePrefill: Bool
    /// Run the DS kernels even where the budget covers every visible token (checks: the kernels
    /// then select everything and must agree with dense attention).
    public var alwaysKernels = false
    /// `--recent` (default 64), capped on the device per sequence as `AttentionOptions.pinned`.
    var recent: Int { options.recent ?? AttentionOptions.doubleSparsityRecent }
    /// Decode rows attended through the DS kernels and densely (for checks and reports).
    public private(set) var sparseRows = 0, denseRows = 0
    let backend: CUDABackend
    let ds: CUDAAttentionKernels.DoubleSparsity
    /// Device words: [0] the visible length, [1] k (written with memset per step).
    private let control: DeviceBuffer
    private var control32 = (-1, -1)
    private var qBF16: DeviceBuffer?, outBF16: DeviceBuffer?
    /// Projected labels: A·q of the rows being attended, bf16 `[rows][heads][channels]`.
    private var qLabel: DeviceBuffer?
    private let kToF32: CUDAFunction

    /// Label channels the GPU kernels are built for.
    /// bf16 labels: 8 or 16; 4-bit labels also 24 and 32 (16 and 20 bytes a row: 24 channels at
    /// 4 bits take the bytes of 8 at bf16).
    public static func supportedChannels(labelBits: Int) -> [Int] { labelBits == 4 ? [8, 16, 24, 32] : [8, 16] }

    /// - Parameter channels: per layer and KV head the channels to label (r = 8 or 16 each).
    /// - Parameter mean, std: the label channels' key moments for 4-bit labels
    ///   (`options.dsLabelBits`; `DoubleSparsityConfig.labelNormalization`), nil = 0 and 1.
    /// - Parameter projection: projected labels (`qk-svd`), per [layer][kvHead] the first r rows
    ///   of B and A (r × head_dim each); `channels` is then 0..<r.
    public init(cache: CUDAKVCache, backend: CUDABackend, heads: Int, channels: [[[Int32]]], options: AttentionOptions,
                mean: [[[Float]]]? = nil, std: [[[Float]]]? = nil,
                projection: (keys: [[[Float]]], queries: [[[Float]]])? = nil) throws {
        let r = channels.first?.first?.count ?? 0
        let supported = Self.supportedChannels(labelBits: options.dsLabelBits)
        guard supported.contains(r) else {
            throw CUDAError.invalid("--ds-channels \(r): the GPU Double Sparsity kernels support \(supported.map(String.init).joined(separator: ", ")) label channels with --ds-label-bits \(options.dsLabelBits) (or use --device cpu)")
        }
        guard options.dsSoftGroup != true else {
            throw CUDAError.invalid("--ds-group soft is not supported on the GPU (its selection ranks by the summed group query): drop --ds-group or use --device cpu")
        }
        guard options.dsResidual != true else {
            throw CUDAError.invalid("--ds-residual is not implemented on the GPU yet: drop it or use --device cpu")
        }
        guard options.dsLabelBits == 16 || options.dsLabelBits == 4 else {
            throw CUDAError.invalid("--ds-label-bits must be 16 or 4, got \(options.dsLabelBits)")
        }
        guard !options.measureRecall else {
            throw CUDAError.invalid("recall is not measured by GPU Double Sparsity: use --device cpu for --recall")
        }
        do {
            try CUDAAttentionKernels.validate(heads: heads, kvHeads: cache.kvHeads, headDim: cache.headDim, pageSize: cache.pageSize)
        } catch {
            throw CUDAError.invalid("GPU Double Sparsity: \(error) (use --device cpu)")
        }
        dense = try CUDADenseAttention(cache: cache, backend: backend)
        labels = try CUDALabelCache(cache: cache, channels: channels, bits: options.dsLabelBits, mean: mean, std: std,
                                    projection: projection, scale: options.dsLabelScale ?? .token)
        self.backend = backend
        self.options = options
        sparsePrefill = options.sparsePrefill
        ds = try CUDAAttentionKernels.DoubleSparsity(kernels: dense.fast, batch: 1, heads: heads, kvHeads: cache.kvHeads,
                                                     headDim: cache.headDim, channels: r, maxLength: cache.capacity,
                                                     labelBits: options.dsLabelBits, labelScaleMode: labels.scale,
                                                     perHead: options.dsPerHead)
        control = try backend.context.allocate(bytes: 8)
        kToF32 = try backend.context.kernel("ds_labels.cu", "sift_bf16_to_f32")
        try warmUp(heads: heads)
    }

    /// One DS call over position 0 of layer 0 (unwritten: NaN, into scratch), so that NVRTC
    /// compiles the kernels now and not inside the first timed decode step.
    private func warmUp(heads: Int) throws {
        let ctx = backend.context, c = dense.gpuCache
        let qb = try grow(&qBF16, bytes: heads * c.headDim * 2), ob = try grow(&outBF16, bytes: heads * c.headDim * 2)
        try ctx.memset32(control.address, word: 1, count: 2)
        control32 = (1, 1)
        try ds.run(q: qb.address, keys: c.keys(0), values: c.values(0), labels: labels.labels(0),
                   channelList: labels.channels(0), pageTable: c.activePageTable, pageSize: c.pageSize,
                   maxPages: c.pageCount, seqLens: control.address, kPerSeq: control.address + 4, sinks: 0, out: ob.address,
                   labelScale: labels.queryScale(0))
        try ctx.synchronize()
    }

    /// The method for `--attention double-sparse --device cuda`: the calibration resolved,
    /// loaded and checked as on the CPU (AttentionMethods); synthetic benchmark models (random
    /// weights, no calibration) label channels 0..<r of every head.
    static func make(cache: CUDAKVCache, model: LanguageModel, options: AttentionOptions,
                     backend: CUDABackend) throws -> CUDADoubleSparseAttention {
        let c = model.config
        let channels: [[[Int32]]]
        var norm: (mean: [[[Float]]], std: [[[Float]]])?
        var projection: (keys: [[[Float]]], queries: [[[Float]]])?
        if backend.syntheticWeights {
            let r = options.dsChannels ?? max(1, c.headDim / 16)
            channels = Array(repeating: Array(repeating: (0..<Int32(r)).map { $0 }, count: c.kvHeadCount), count: c.layerCount)
            fputs("sift: double-sparse on a synthetic model: label channels 0..<\(r) of every head, a speed-only calibration (selections are not meaningful)\n", stderr)
        } else {
            let path = try DoubleSparsityConfig.resolvePath(options)
            let config = try DoubleSparsityConfig.load(path: path)
            try config.check(against: c, fileSHA256: options.modelSHA256, path: path)
            let r = options.dsChannels ?? config.defaultChannels ?? max(1, c.headDim / 16)
            guard r >= 1 && r <= c.headDim else {
                throw ModelError.invalid("--ds-channels must be in 1...\(c.headDim), got \(r)")
            }
            let supported = supportedChannels(labelBits: options.dsLabelBits)
            if options.dsChannels == nil && !supported.contains(r) {
                throw CUDAError.invalid("the default label channel count for this model is \(r) (\(config.defaultChannels != nil ? "the calibration's default_channels" : "head_dim/16")); the GPU Double Sparsity kernels support \(supported.map(String.init).joined(separator: ", ")) with --ds-label-bits \(options.dsLabelBits): pass --ds-channels 8 or 16, or use --device cpu")
            }
            channels = config.channels.map { $0.map { $0.prefix(r).map { Int32($0) } } }
            norm = config.labelNormalization(channels: r)
            _ = try config.labelScale(options)   // a per-channel grid needs 4 bits and key moments
            if let p = config.labelProjection {
                guard r <= p.rank else {
                    throw ModelError.invalid("--ds-channels \(r) exceeds the calibration's projected label channels (label_projection.rank \(p.rank)): re-run `sift calibrate --statistic qk-svd --rank \(r)`")
                }
                let d = c.headDim
                projection = (p.keys.map { $0.map { Array($0.prefix(r * d)) } }, p.queries.map { $0.map { Array($0.prefix(r * d)) } })
            }
        }
        return try CUDADoubleSparseAttention(cache: cache, backend: backend, heads: c.headCount, channels: channels,
                                             options: options, mean: norm?.mean, std: norm?.std, projection: projection)
    }

    public func append(layer: Int, k: Tensor, v: Tensor, start: Int) {
        dense.append(layer: layer, k: k, v: v, start: start)
        backend.run { try labels.store(layer: layer, k: k, start: start) }
    }

    public func attend(layer: Int, q: Tensor, k: Tensor, v: Tensor, start: Int, shape: AttentionShape, out: Tensor) {
        append(layer: layer, k: k, v: v, start: start)
        out.rows = q.rows
        // Sliding-window layers (Gemma 3's local layers) stay dense, as on the CPU.
        guard (q.rows == 1 || sparsePrefill) && shape.window == 0 else {
            dense.attendStored(layer: layer, q: q, start: start, shape: shape, out: out)
            return
        }
        precondition(shape.heads == ds.heads && shape.kvHeads == ds.kvHeads && shape.headDim == ds.headDim,
                     "GPU Double Sparsity was built for \(ds.heads)/\(ds.kvHeads) heads of \(ds.headDim)")
        let width = shape.heads * shape.headDim
        let ctx = backend.context
        backend.run {
            let qb = try grow(&qBF16, bytes: q.rows * width * 2)
            var converted = false
            for t in 0..<q.rows {
                let visible = start + t + 1
                let k = options.budget.count(visible: visible)
                let qRow = CUDABackend.address(q) + UInt64(t * width * 4)
                let oRow = CUDABackend.address(out) + UInt64(t * width * 4)
                if !alwaysKernels && (k >= visible || visible < options.denseBelow) {
                    try dense.decodeRow(layer: layer, q: qRow, out: oRow, length: visible, shape: shape)
                    denseRows += 1
                    continue
                }
                if !converted {
                    try ctx.launch(backend.kToBF16, grid: ((q.rows * width + 255) / 256, 1, 1), block: (256, 1, 1),
                                   [.pointer(CUDABackend.address(q)), .ptr(qb), .int64(Int64(q.rows * width))])
                    if labels.isProjected {
                        let ql = try grow(&qLabel, bytes: q.rows * shape.heads * labels.channels * 2)
                        try labels.projectQuery(layer: layer, q: CUDABackend.address(q), rows: q.rows, heads: shape.heads,
                                                into: ql.address)
                    }
                    converted = true
                }
                if control32 != (visible, k) {   // the same for every layer of a step: set once
                    try ctx.memset32(control.address, word: UInt32(visible), count: 1)
                    try ctx.memset32(control.address + 4, word: UInt32(k), count: 1)
                    control32 = (visible, k)
                }
                let c = dense.gpuCache
                try ds.run(q: qb.address + UInt64(t * width * 2), keys: c.keys(layer), values: c.values(layer),
                           labels: labels.labels(layer), channelList: labels.channels(layer), pageTable: c.activePageTable,
                           pageSize: c.pageSize, maxPages: c.pageCount, seqLens: control.address,
                           kPerSeq: control.address + 4, sinks: options.sinks, recent: recent, out: oRow,
                           labelScale: labels.queryScale(layer), outF32: true,
                           labelQuery: labels.isProjected ? qLabel!.address + UInt64(t * shape.heads * labels.channels * 2) : 0,
                           labelQueryDim: labels.channels)
                sparseRows += 1
            }
        }
    }

    /// Batched decode (`BatchSession`): row i is the new token of sequence i at `positions[i]`.
    /// Keys, values and labels are stored for the batch; if any row is sparse (length ≥
    /// `--ds-dense-below` and k < length) one DS call covers the batch (rows that would be
    /// dense select every token: k = length), else the batch decodes densely.
    public func attendBatch(layer: Int, q: Tensor, k: Tensor, v: Tensor, positions: [Int32], shape: AttentionShape,
                            out: Tensor) {
        let b = q.rows, c = dense.gpuCache
        dense.storeBatch(layer: layer, k: k, v: v, positions: positions)
        backend.run { try labels.storeBatch(layer: layer, k: k) }
        out.rows = b
        var ks = [Int32](), anySparse = false
        for p in positions {
            let visible = Int(p) + 1, kk = options.budget.count(visible: visible)
            let sparse = alwaysKernels || (kk < visible && visible >= options.denseBelow)
            anySparse = anySparse || sparse
            ks.append(Int32(sparse ? kk : visible))
        }
        guard anySparse && shape.window == 0 else {
            dense.attendBatchStored(layer: layer, q: q, positions: positions, shape: shape, out: out)
            denseRows += b
            return
        }
        let width = shape.heads * shape.headDim
        let ctx = backend.context
        backend.run {
            if batchDS == nil || batchDS!.batch < b {
                batchDS = try CUDAAttentionKernels.DoubleSparsity(kernels: dense.fast, batch: c.sequenceCount, heads: ds.heads,
                                                                 kvHeads: ds.kvHeads, headDim: ds.headDim, channels: ds.channels,
                                                                 maxLength: c.capacity, labelBits: labels.bits,
                                                                 labelScaleMode: labels.scale, perHead: ds.perHead)
                batchK = try ctx.allocate(bytes: c.sequenceCount * 4)
            }
            // Sequences past b keep length 0 and k 0 (nothing selected, nothing attended).
            let pad = c.sequenceCount - b
            let lens = positions.map { $0 + 1 } + [Int32](repeating: 0, count: pad)
            try c.uploadLengths(lens)
            let kAll = ks + [Int32](repeating: 0, count: pad)
            if kAll != uploadedK {
                try ctx.upload(kAll, to: batchK!.address)
                uploadedK = kAll
            }
            let qb = try grow(&qBF16, bytes: c.sequenceCount * width * 2)
            try ctx.launch(backend.kToBF16, grid: ((b * width + 255) / 256, 1, 1), block: (256, 1, 1),
                           [.pointer(CUDABackend.address(q)), .ptr(qb), .int64(Int64(b * width))])
            if labels.isProjected {
                // Rows past b are padding (length 0): their projected queries are never read.
                let ql = try grow(&qLabel, bytes: c.sequenceCount * shape.heads * labels.channels * 2)
                try labels.projectQuery(layer: layer, q: CUDABackend.address(q), rows: b, heads: shape.heads, into: ql.address)
            }
            // The combine writes f32 rows straight into `out` when it has room for every cached
            // sequence's row (padding rows included), else bf16 rows converted after.
            let direct = out.capacity >= c.sequenceCount
            let ob = direct ? nil : try grow(&outBF16, bytes: c.sequenceCount * width * 2)
            try batchDS!.run(q: qb.address, keys: c.keys(layer), values: c.values(layer), labels: labels.labels(layer),
                             channelList: labels.channels(layer), pageTable: c.pageTable.address, pageSize: c.pageSize,
                             maxPages: c.pageCount, seqLens: c.seqLens.address, kPerSeq: batchK!.address,
                             sinks: options.sinks, recent: recent, out: ob?.address ?? CUDABackend.address(out),
                             labelScale: labels.queryScale(layer), outF32: direct,
                             labelQuery: labels.isProjected ? qLabel!.address : 0, labelQueryDim: labels.channels)
            if let ob {
                try ctx.launch(kToF32, grid: ((b * width + 255) / 256, 1, 1), block: (256, 1, 1),
                               [.ptr(ob), .pointer(CUDABackend.address(out)), .int64(Int64(b * width))])
            }
            sparseRows += b
        }
    }

    private var batchDS: CUDAAttentionKernels.DoubleSparsity?
    private var batchK: DeviceBuffer?
    private var uploadedK: [Int32] = []

    private func grow(_ buffer: inout DeviceBuffer?, bytes: Int) throws -> DeviceBuffer {
        if let b = buffer, b.bytes >= bytes { return b }
        buffer = nil
        let b = try backend.context.allocate(bytes: max(bytes, 4096))
        buffer = b
        return b
    }

    public func truncate(to n: Int) { dense.truncate(to: n) }

    /// The positions the last DS kernel call selected for each selection (ascending): per KV
    /// head, or per query head with `--ds-group per-head`; from the kernels' keys and threshold
    /// (for checks).
    public func lastSelection(length n: Int) throws -> [[Int]] {
        try backend.synchronize()
        let keys = try ds.keysHost(), thr = try ds.thresholdsHost()
        return (0..<ds.selections).map { h in
            let T = thr[2 * h], cut = Int(Int32(bitPattern: thr[2 * h + 1]))
            let row = h * ds.keyRowStride
            return (0..<n).filter { j in keys[row + j] > T || (keys[row + j] == T && j <= cut) }
        }
    }
}
