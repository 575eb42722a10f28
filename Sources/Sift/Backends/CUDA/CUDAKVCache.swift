/// The KV cache of one sequence on the GPU, in bf16, paged: per layer a K pool and a V pool of
/// `pageCount` pages laid out `[page][kvHead][pageSize][headDim]`, and a page table (Int32 on
/// the device) mapping logical page `p / pageSize` of the sequence to a physical page. Pages
/// are assigned in order today (page i → i); kernels must go through the table (see
/// `kv_offset` in Kernels/common.cuh) so that sharing and reuse of pages can come later.
public final class CUDAKVCache: KVStorage, @unchecked Sendable {
    public let layerCount: Int
    public let kvHeads: Int
    public let headDim: Int
    public let pageSize: Int
    public let pageCount: Int
    public let capacity: Int
    public private(set) var length = 0
    /// Why capacity is below the requested context (for the overflow message).
    let limitReason: String

    let context: CUDAContext
    private let kPools: [DeviceBuffer]
    private let vPools: [DeviceBuffer]
    public let pageTable: DeviceBuffer

    /// Bytes one page takes over all layers (K and V).
    public static func bytesPerPage(layers: Int, kvHeads: Int, headDim: Int, pageSize: Int) -> Int {
        2 * layers * kvHeads * pageSize * headDim * 2
    }

    /// A cache for `contextLength` positions, or fewer when `memoryBytes` (--kv-memory) or the
    /// free device memory (less 1 GiB kept for activations and cuBLAS) does not hold them.
    public init(context: CUDAContext, layers: Int, kvHeads: Int, headDim: Int, contextLength: Int,
                pageSize: Int = 64, memoryBytes: Int? = nil) throws {
        self.context = context
        layerCount = layers
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.pageSize = pageSize
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
        pageCount = min(wanted, allowed)
        guard pageCount > 0 else {
            throw CUDAError.invalid("GPU KV cache: no room for one page of \(pageSize) positions (\(perPage >> 10) KiB): \(limitReason)")
        }
        if pageCount * perPage > free {
            throw CUDAError.invalid("GPU KV cache: \(pageCount * perPage >> 20) MiB asked (--kv-memory) but only \(free >> 20) MiB are free")
        }
        capacity = min(contextLength, pageCount * pageSize)
        let poolBytes = pageCount * kvHeads * pageSize * headDim * 2
        kPools = try (0..<layers).map { _ in try context.allocate(bytes: poolBytes) }
        vPools = try (0..<layers).map { _ in try context.allocate(bytes: poolBytes) }
        pageTable = try context.allocate(bytes: pageCount * 4)
        try context.upload((0..<pageCount).map { Int32($0) }, to: pageTable.address)
        // Poison: unwritten positions read as NaN (bf16 0x7fc0 pairs), so a kernel that reads
        // past what was stored shows up in the checks.
        for b in kPools + vPools { try context.memset32(b.address, word: 0x7fc0_7fc0, count: poolBytes / 4) }
        try context.synchronize()
    }

    /// K pool of `layer` ([page][kvHead][pageSize][headDim] bf16).
    public func keys(_ layer: Int) -> CUdeviceptr { kPools[layer].address }
    /// V pool of `layer`.
    public func values(_ layer: Int) -> CUdeviceptr { vPools[layer].address }

    /// Bytes the pools take.
    public var reservedBytes: Int { 2 * layerCount * pageCount * kvHeads * pageSize * headDim * 2 }

    public func setLength(_ n: Int) {
        precondition(n >= 0 && n <= capacity)
        length = n
    }

    public func overflowError(needed: Int) -> Error {
        CUDAError.invalid("GPU KV cache full: the sequence needs \(needed) positions, the cache holds \(capacity) (\(limitReason))")
    }
}
