/// GPU-side sampling (Kernels/sampling.cu): per row of device logits the argmax, or the k ≤ 64
/// largest logits with their ids, sorted — so a decode step sends back ids or k candidates
/// instead of the whole vocabulary. Order: larger logit first, equal logits lower id first
/// (the argmax of a row with ties is its lowest id, as `Sampler.argmax`); NaN ranks last.
public final class CUDASampling: @unchecked Sendable {
    public static let maxK = 64
    let context: CUDAContext
    let kArgmax, kTopK: CUDAFunction
    private var ids: DeviceBuffer?
    private var values: DeviceBuffer?

    public init(context: CUDAContext) throws {
        self.context = context
        let m = try context.kernelModule("sampling.cu")
        kArgmax = try m.function("sift_argmax_rows")
        kTopK = try m.function("sift_topk_rows")
    }

    private func buffers(_ count: Int) throws -> (DeviceBuffer, DeviceBuffer) {
        if ids == nil || ids!.bytes < count * 4 {
            ids = try context.allocate(bytes: count * 4)
            values = try context.allocate(bytes: count * 4)
        }
        return (ids!, values!)
    }

    /// The argmax of each of `rows` rows of `vocab` f32 logits at `logits`.
    public func argmax(logits: CUdeviceptr, rows: Int, vocab: Int) throws -> [Int32] {
        guard rows > 0, vocab > 0 else { return [] }
        let (ib, _) = try buffers(rows)
        try context.launch(kArgmax, grid: (rows, 1, 1), block: (1024, 1, 1), [.pointer(logits), .int(vocab), .ptr(ib)])
        return try context.download(ib.address, count: rows, as: Int32.self)
    }

    /// The `k` largest logits of each row and their ids, largest first.
    public func topK(logits: CUdeviceptr, rows: Int, vocab: Int, k: Int) throws -> [(ids: [Int32], values: [Float])] {
        guard (1...Self.maxK).contains(k), k <= vocab else {
            throw CUDAError.invalid("GPU top-k takes 1...\(Self.maxK) candidates (at most the vocabulary \(vocab)), not \(k)")
        }
        guard rows > 0 else { return [] }
        let (ib, vb) = try buffers(rows * k)
        try context.launch(kTopK, grid: (rows, 1, 1), block: (1024, 1, 1),
                           [.pointer(logits), .int(vocab), .int(k), .ptr(ib), .ptr(vb)])
        let i = try context.download(ib.address, count: rows * k, as: Int32.self)
        let v = try context.download(vb.address, count: rows * k, as: Float.self)
        return (0..<rows).map { r in (Array(i[(r * k)..<((r + 1) * k)]), Array(v[(r * k)..<((r + 1) * k)])) }
    }
}
