/// The KV cache of one or more sequences on the GPU, in bf16, paged: per layer a K pool and a
/// V pool of `totalPages` pages laid out `[page][kvHead][pageSize][headDim]`, and a page table
/// (Int32 on the device, `[sequenceCount][pageCount]`) mapping logical page `p / pageSize` of a
/// sequence to a physical page. Pages are assigned in order today (page i of sequence s →
/// s·pageCount + i); kernels must go through the table (see `kv_offset` in
/// Kernels/common.cuh) so that sharing and reuse of pages can come later.
///
/// With one sequence (the default) this is the single-sequence cache the attention methods
/// use: `pageTable` starts with sequence 0's row, `length` is its length. With several
/// (batched decode, `BatchedDecodeAttention`), `length`, `setLength` and `activePageTable`
/// act on `activeSequence`, and `seqLens` holds every sequence's length on the device.
public final class CUDAKVCache: KVStorage, @unchecked Sendable {
    public let layerCount: Int
    public let kvHeads: Int
    public let headDim: Int
    public let pageSize: Int
    /// Pages per sequence (the row length of the page table).
    public let pageCount: Int
    /// Sequences the cache holds.
    public let sequenceCount: Int
    /// Positions per sequence.
    public let capacity: Int
    /// The sequence `length`, `setLength` and `activePageTable` act on.
    public var activeSequence = 0 {
        didSet { precondition(activeSequence >= 0 && activeSequence < sequenceCount, "no sequence \(activeSequence)") }
    }
    /// Filled length of each sequence.
    public private(set) var lengths: [Int]
    public var length: Int { lengths[activeSequence] }
    /// Why capacity is below the requested context (for the overflow message).
    let limitReason: String

    let context: CUDAContext
    private let kPools: [DeviceBuffer]
    private let vPools: [DeviceBuffer]
    /// `[sequenceCount][pageCount]` Int32 (sequence 0's row first).
    public let pageTable: DeviceBuffer
    /// `[sequenceCount]` Int32 sequence lengths for batched kernels (written by the caller
    /// through `uploadLengths`).
    public let seqLens: DeviceBuffer
    private var uploadedLengths: [Int32] = []

    /// Bytes one page takes over all layers (K and V).
    public static func bytesPerPage(layers: Int, kvHeads: Int, headDim: Int, pageSize: Int) -> Int {
        2 * layers * kvHeads * pageSize * headDim * 2
    }

    /// A cache for `contextLength` positions per sequence, or, with one sequence, fewer when
    /// `memoryBytes` (--kv-memory) or the free device memory (less 1 GiB kept for activations
    /// and cuBLAS) does not hold them. Several sequences must fit in full (else an error).
    public init(context: CUDAContext, layers: Int, kvHeads: Int, headDim: Int, contextLength: Int,
                pageSize: Int = 64, memoryBytes: Int? = nil, sequences: Int = 1) throws {
        guard sequences >= 1 else { throw CUDAError.invalid("GPU KV cache: \(sequences) sequences") }
        self.context = context
        layerCount = layers
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.pageSize = pageSize
        sequenceCount = sequences
        let perPage = CUDAKVCache.bytesPerPage(layers: layers, kvHeads: kvHeads, headDim: headDim, pageSize: pageSize)
        let wanted = (contextLength + pageSize - 1) / pageSize
        let free = try context.memoryInfo().free
        let allowed: Int
        if let memoryBytes {
            allowed = memoryBytes / perPage
            limitReason = "--kv-memory \(memoryBytes >> 20) MiB holds \(allowed * pageSize) positions"
        } else {
            allowed = max(0, free - (1 << 30)) / perPage
            limitReason = "free GPU memory (\(free >> 20) MiB, less 1 GiB) holds \(allowed * pageSize) positions; set --kv-memory or lower -c"
        }
        if sequences > 1 {
            guard wanted * sequences <= allowed else {
                throw CUDAError.invalid("GPU KV cache: \(sequences) sequences × \(contextLength) positions need \(wanted * sequences * perPage >> 20) MiB, but \(limitReason) (\(allowed / max(1, wanted)) such sequences); lower the batch or the depth")
            }
            pageCount = wanted
        } else {
            pageCount = min(wanted, allowed)
        }
        guard pageCount > 0 else {
            throw CUDAError.invalid("GPU KV cache: no room for one page of \(pageSize) positions (\(perPage >> 10) KiB): \(limitReason)")
        }
        let total = pageCount * sequences
        if total * perPage > free {
            throw CUDAError.invalid("GPU KV cache: \(total * perPage >> 20) MiB asked (--kv-memory) but only \(free >> 20) MiB are free")
        }
        capacity = min(contextLength, pageCount * pageSize)
        lengths = Array(repeating: 0, count: sequences)
        let poolBytes = total * kvHeads * pageSize * headDim * 2
        kPools = try (0..<layers).map { _ in try context.allocate(bytes: poolBytes) }
        vPools = try (0..<layers).map { _ in try context.allocate(bytes: poolBytes) }
        pageTable = try context.allocate(bytes: total * 4)
        try context.upload((0..<total).map { Int32($0) }, to: pageTable.address)
        seqLens = try context.allocate(bytes: sequences * 4)
        try context.memset(seqLens.address, byte: 0, bytes: sequences * 4)
        // Poison: unwritten positions read as NaN (bf16 0x7fc0 pairs), so a kernel that reads
        // past what was stored shows up in the checks.
        for b in kPools + vPools { try context.memset32(b.address, word: 0x7fc0_7fc0, count: poolBytes / 4) }
        try context.synchronize()
    }

    /// K pool of `layer` ([page][kvHead][pageSize][headDim] bf16).
    public func keys(_ layer: Int) -> CUdeviceptr { kPools[layer].address }
    /// V pool of `layer`.
    public func values(_ layer: Int) -> CUdeviceptr { vPools[layer].address }

    /// The page table row of `sequence` (`pageCount` Int32).
    public func pageTable(sequence: Int) -> CUdeviceptr { pageTable.address + UInt64(sequence * pageCount * 4) }
    /// The page table row of the active sequence.
    public var activePageTable: CUdeviceptr { pageTable(sequence: activeSequence) }

    /// Pages over all sequences.
    public var totalPages: Int { pageCount * sequenceCount }

    /// Bytes the pools take.
    public var reservedBytes: Int { 2 * layerCount * totalPages * kvHeads * pageSize * headDim * 2 }

    public func setLength(_ n: Int) {
        precondition(n >= 0 && n <= capacity)
        lengths[activeSequence] = n
    }

    /// Writes `lengths[i]` of sequences `0..<lengths.count` to `seqLens` (skipped when the
    /// device already holds them).
    public func uploadLengths(_ lengths: [Int32]) throws {
        guard lengths != uploadedLengths else { return }
        try context.upload(lengths, to: seqLens.address)
        uploadedLengths = lengths
    }

    /// Fills positions `start..<start + count` of `sequence` (every layer, K and V) with
    /// pseudo-random bf16 values on the device — whole pages, so a few positions past the end
    /// may be written too (they are overwritten before they are read). For speed benchmarks.
    public func fillRandom(sequence: Int, start: Int, count: Int, seed: UInt32, kernels: CUDAAttentionKernels) throws {
        guard count > 0 else { return }
        precondition(start + count <= capacity)
        let first = sequence * pageCount + start / pageSize
        let last = sequence * pageCount + (start + count + pageSize - 1) / pageSize
        let pageElems = kvHeads * pageSize * headDim
        for l in 0..<layerCount {
            let off = UInt64(first * pageElems * 2)
            try kernels.fillRandom(kPools[l].address + off, count: (last - first) * pageElems,
                                   seed: seed &+ UInt32(2 * l), scale: 1.15)
            try kernels.fillRandom(vPools[l].address + off, count: (last - first) * pageElems,
                                   seed: seed &+ UInt32(2 * l + 1), scale: 0.577)
        }
    }

    public func overflowError(needed: Int) -> Error {
        CUDAError.invalid("GPU KV cache full: the sequence needs \(needed) positions, the cache holds \(capacity) (\(limitReason))")
    }
}
