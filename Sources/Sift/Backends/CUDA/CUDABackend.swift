#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The element type of weight matrices on the GPU (and of activations fed to cuBLAS).
public enum GPUPrecision: String, Sendable, CaseIterable {
    case bf16, f16, f32

    var bytes: Int { self == .f32 ? 4 : 2 }
    var blasType: CUBLAS.DataType {
        switch self {
        case .bf16: return .bf16
        case .f16: return .f16
        case .f32: return .f32
        }
    }
    var kernelCode: Int { self == .bf16 ? 0 : self == .f16 ? 1 : 2 }
}

/// A weight on the GPU: matrices dequantized from the GGUF file to the backend's precision,
/// `[rows][cols]` (row r = output r); vectors (norms, biases) as f32.
public final class CUDAWeight: Weight, @unchecked Sendable {
    public let buffer: DeviceBuffer
    /// bf16 matrix (true) or f32 vector (false).
    public let isMatrix: Bool
    init(info: GGUFTensorInfo, buffer: DeviceBuffer, isMatrix: Bool) {
        self.buffer = buffer
        self.isMatrix = isMatrix
        super.init(info: info)
    }
    public var address: CUdeviceptr { buffer.address }
}

/// Which backend runs a model: `cpu`, `cuda` (GPU 0) or `cuda:N`.
public enum DeviceSpec: Equatable, Sendable, CustomStringConvertible {
    case cpu
    case cuda(Int)

    public init(parsing s: String) throws {
        switch s {
        case "cpu": self = .cpu
        case "cuda", "gpu": self = .cuda(0)
        default:
            if s.hasPrefix("cuda:"), let n = Int(s.dropFirst(5)), n >= 0 { self = .cuda(n); return }
            throw ModelError.invalid("--device must be cpu, cuda or cuda:N, not '\(s)'")
        }
    }

    public var description: String {
        switch self {
        case .cpu: return "cpu"
        case .cuda(let n): return "cuda:\(n)"
        }
    }
}

/// f32 → bf16 bits, rounded to nearest even (as the kernels' f32_to_bf16).
@inline(__always)
func bf16Bits(_ f: Float) -> UInt16 {
    let u = f.bitPattern
    if u & 0x7fff_ffff > 0x7f80_0000 { return UInt16(truncatingIfNeeded: u >> 16) | 0x40 }
    return UInt16(truncatingIfNeeded: (u &+ 0x7fff &+ ((u >> 16) & 1)) >> 16)
}

/// The CUDA backend: weights in bf16 on the GPU (or f16 / f32: `precision`), matrix products
/// through cuBLAS (inputs in that type, f32 accumulation and output), the other operations as small kernels of `Kernels/core.cu`,
/// activations in f32. All work is issued in order on the context's stream; `read` waits.
///
/// Backend methods cannot throw, so the first CUDA failure is kept, later work is skipped,
/// and `checkError()` (called by `Session.evaluate`) throws it.
public final class CUDABackend: Backend, @unchecked Sendable {
    public let name: String
    public let context: CUDAContext
    public let blas: CUBLAS
    /// Host threads for dequantizing weights at load time.
    let pool: ThreadPool
    /// Bytes the paged KV cache may take (nil: sized from free memory and the context length).
    public var kvMemoryBytes: Int?
    /// Tokens per KV page.
    public var kvPageSize = 64
    /// Random weights made on the GPU instead of reading the file (synthetic benchmark models).
    public var syntheticWeights = false
    /// One-token linear layers through `sift_gemv` (core.cu) instead of a conversion, a cuBLAS
    /// call and a bias add. On by default; `SIFT_GEMV=0` turns it off (benchmarks compare both).
    public var useGEMV = getenv("SIFT_GEMV").map { String(cString: $0) != "0" } ?? true
    private var syntheticSeed: UInt32 = 1
    /// Element type of weight matrices (default bf16; $SIFT_CUDA_PRECISION overrides).
    public let precision: GPUPrecision

    private var firstError: Error?
    private var scratch: DeviceBuffer?
    private var tokens: DeviceBuffer?
    private var positions: DeviceBuffer?
    private var lastPositions: [Int32] = []
    private var invFreq: [String: DeviceBuffer] = [:]

    let kEmbed, kRMSNorm, kRoPE, kAdd, kAddBias, kGated, kToBF16, kToF16, kGEMV: CUDAFunction
    let kKVStore, kKVStoreBatch, kAttention, kFillRandom: CUDAFunction

    public init(ordinal: Int = 0, threads: Int = ThreadPool.processorCount, precision: GPUPrecision? = nil) throws {
        if let p = precision {
            self.precision = p
        } else if let e = FS.env("SIFT_CUDA_PRECISION") {
            guard let p = GPUPrecision(rawValue: e) else {
                throw CUDAError.invalid("SIFT_CUDA_PRECISION must be bf16, f16 or f32, not '\(e)'")
            }
            self.precision = p
        } else {
            self.precision = .bf16
        }
        context = try CUDAContext.open(ordinal: ordinal)
        try context.makeCurrent()
        blas = try CUBLAS(context: context)
        name = "cuda:\(ordinal) (\(context.deviceName), sm_\(context.computeCapability.major)\(context.computeCapability.minor), \(self.precision.rawValue))"
        let m = try context.kernelModule("core.cu")
        kEmbed = try m.function("sift_embed")
        kRMSNorm = try m.function("sift_rms_norm")
        kRoPE = try m.function("sift_rope")
        kAdd = try m.function("sift_add")
        kAddBias = try m.function("sift_add_bias")
        kGEMV = try m.function("sift_gemv")
        kGated = try m.function("sift_gated")
        kToBF16 = try m.function("sift_f32_to_bf16")
        kToF16 = try m.function("sift_f32_to_f16")
        kKVStore = try m.function("sift_kv_store")
        kKVStoreBatch = try m.function("sift_kv_store_batch")
        kAttention = try m.function("sift_attention_dense")
        kFillRandom = try m.function("sift_fill_random")
        pool = ThreadPool(threads: max(1, threads))
    }

    deinit { pool.shutdown() }

    private var samplingKernels: CUDASampling?
    /// GPU-side argmax / top-k of device logits (compiled on first use).
    public func sampling() throws -> CUDASampling {
        if let s = samplingKernels { return s }
        let s = try CUDASampling(context: context)
        samplingKernels = s
        return s
    }

    /// Runs `body` unless an earlier operation failed; keeps the first failure.
    @inline(__always)
    func run(_ body: () throws -> Void) {
        guard firstError == nil else { return }
        do { try body() } catch { firstError = error }
    }

    public func checkError() throws {
        if let e = firstError { throw e }
    }

    /// Waits for the GPU and reports any failure so far.
    public func synchronize() throws {
        try checkError()
        try context.synchronize()
    }

    public func makeTensor(rows: Int, cols: Int) -> Tensor {
        do {
            let b = try context.allocate(bytes: max(1, rows * cols) * 4)
            return Tensor(rows: rows, cols: cols, pointer: b.pointer, release: { _ = b })
        } catch {
            fputs("sift: cannot allocate a \(rows)×\(cols) activation buffer on the GPU: \(error)\n", stderr)
            exit(1)
        }
    }

    // MARK: weights

    public func loadWeight(_ info: GGUFTensorInfo, from file: GGUFFile) throws -> Weight {
        guard info.type.isSupported else {
            throw ModelError.badTensor(info.name, path: file.path, reason: "tensor type \(info.type) is not supported")
        }
        guard info.rowLength % info.type.blockSize == 0 else {
            throw ModelError.badTensor(info.name, path: file.path,
                                       reason: "row length \(info.rowLength) is not a multiple of the \(info.type) block size \(info.type.blockSize)")
        }
        let n = info.rowLength, rows = info.rowCount
        if syntheticWeights {
            let vector = info.shape.count == 1 || rows == 1
            let es = vector ? 4 : precision.bytes
            let b = try context.allocate(bytes: info.elementCount * es)
            syntheticSeed &+= 1
            // Norm weights near 1, biases small, matrices ±1/√cols (activations stay O(1)).
            let isNorm = info.name.hasSuffix("norm.weight")
            try context.launch(kFillRandom, grid: (blocks(info.elementCount), 1, 1), block: (256, 1, 1),
                               [.ptr(b), .int64(Int64(info.elementCount)), .uint32(syntheticSeed),
                                .float(isNorm ? 1 : 0), .float(vector ? (isNorm ? 0.1 : 0.05) : 1 / Float(n).squareRoot()),
                                .int(vector ? 2 : precision.kernelCode)])
            try context.synchronize()
            return CUDAWeight(info: info, buffer: b, isMatrix: !vector)
        }
        let raw = file.data(info)
        if info.shape.count == 1 || rows == 1 {
            var host = [Float](repeating: 0, count: info.elementCount)
            host.withUnsafeMutableBufferPointer { Dequantize.row(info.type, raw, $0.baseAddress!, count: info.elementCount) }
            let b = try context.allocate(bytes: host.count * 4)
            try context.upload(host, to: b.address)
            try context.synchronize()
            return CUDAWeight(info: info, buffer: b, isMatrix: false)
        }
        let rowBytes = info.type.byteCount(elements: n) ?? 0
        let es = precision.bytes, prec = precision
        let b = try context.allocate(bytes: rows * n * es)
        // Dequantize and upload in slabs of rows, so host memory stays bounded.
        let slabRows = max(1, min(rows, (64 << 20) / (n * es)))
        let host = UnsafeMutableRawPointer.allocate(byteCount: slabRows * n * es, alignment: 64)
        defer { host.deallocate() }
        var r0 = 0
        while r0 < rows {
            let count = min(slabRows, rows - r0)
            let base = r0
            pool.parallelRanges(count, grain: 16) { range in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: n) { tmp in
                    for r in range {
                        let src = raw + (base + r) * rowBytes
                        switch prec {
                        case .f32:
                            Dequantize.row(info.type, src, (host + r * n * 4).assumingMemoryBound(to: Float.self), count: n)
                        case .bf16:
                            Dequantize.row(info.type, src, tmp.baseAddress!, count: n)
                            let dst = (host + r * n * 2).assumingMemoryBound(to: UInt16.self)
                            for j in 0..<n { dst[j] = bf16Bits(tmp[j]) }
                        case .f16:
                            Dequantize.row(info.type, src, tmp.baseAddress!, count: n)
                            let dst = (host + r * n * 2).assumingMemoryBound(to: UInt16.self)
                            for j in 0..<n { dst[j] = Float16(tmp[j]).bitPattern }
                        }
                    }
                }
            }
            try context.upload(UnsafeRawPointer(host), to: b.address + UInt64(r0 * n * es), bytes: count * n * es)
            try context.synchronize()
            r0 += count
        }
        return CUDAWeight(info: info, buffer: b, isMatrix: true)
    }

    @inline(__always) func gpu(_ w: Weight) -> CUDAWeight { unsafeDowncast(w, to: CUDAWeight.self) }

    // MARK: helpers

    @inline(__always) public static func address(_ t: Tensor) -> CUdeviceptr { CUdeviceptr(UInt(bitPattern: t.pointer)) }

    private func grow(_ buffer: inout DeviceBuffer?, bytes: Int) throws -> DeviceBuffer {
        if let b = buffer, b.bytes >= bytes { return b }
        buffer = nil
        let b = try context.allocate(bytes: max(bytes, 4096))
        buffer = b
        return b
    }

    private func blocks(_ n: Int, _ per: Int = 256) -> Int { (n + per - 1) / per }

    // MARK: Backend

    public func embed(_ tokens: [Int32], table: Weight, scale: Float, into out: Tensor) {
        let w = gpu(table)
        out.rows = tokens.count
        run {
            let tb = try grow(&self.tokens, bytes: tokens.count * 4)
            try context.upload(tokens, to: tb.address)
            try context.launch(kEmbed, grid: (blocks(w.cols), tokens.count, 1), block: (256, 1, 1),
                               [.pointer(w.address), .ptr(tb), .pointer(Self.address(out)), .int(w.cols), .float(scale),
                                .int(precision.kernelCode)])
        }
    }

    public func rmsNorm(_ x: Tensor, weight: Weight, groupSize: Int, eps: Float, into out: Tensor) {
        let w = gpu(weight)
        out.rows = x.rows
        let groups = x.rows * x.cols / groupSize
        let threads = min(256, (groupSize + 31) / 32 * 32)
        run {
            try context.launch(kRMSNorm, grid: (groups, 1, 1), block: (threads, 1, 1),
                               [.pointer(Self.address(x)), .pointer(w.address), .pointer(Self.address(out)),
                                .int(groupSize), .float(eps)])
        }
    }

    public func linear(_ x: Tensor, _ weight: Weight, bias: Weight?, into out: Tensor) {
        let w = gpu(weight)
        let n = w.cols, m = w.rows, tokens = x.rows
        precondition(x.cols == n && out.cols == m, "linear \(weight.info.name): x has \(x.cols) columns, weight \(n)×\(m), out \(out.cols)")
        out.rows = tokens
        if tokens == 0 { return }
        // One token (decode at batch 1): our GEMV, one launch (x converted and bias added inside).
        if tokens == 1 && precision != .f32 && n % 8 == 0 && useGEMV {
            run {
                try context.launch(kGEMV, grid: ((m + 7) / 8, 1, 1), block: (256, 1, 1),
                                   [.pointer(w.address), .pointer(Self.address(x)),
                                    .pointer(bias.map { gpu($0).address } ?? 0), .pointer(Self.address(out)),
                                    .int(m), .int(n), .int(precision.kernelCode)])
            }
            return
        }
        run {
            let input: CUdeviceptr
            if precision == .f32 {
                input = Self.address(x)
            } else {
                let s = try grow(&scratch, bytes: tokens * n * 2)
                try context.launch(precision == .bf16 ? kToBF16 : kToF16, grid: (blocks(tokens * n), 1, 1), block: (256, 1, 1),
                                   [.pointer(Self.address(x)), .ptr(s), .int64(Int64(tokens * n))])
                input = s.address
            }
            // Row-major W (m×n) is column-major Wᵀ (n×m); row-major x (tokens×n) is column-major
            // n×tokens; out (tokens×m) row-major = column-major m×tokens = Wᵀᵀ·x.
            try blas.gemm(.t, .n, m: m, n: tokens, k: n, a: w.address, lda: n, b: input, ldb: n,
                          c: Self.address(out), ldc: m, ab: precision.blasType)
            if let bias {
                try context.launch(kAddBias, grid: (blocks(tokens * m), 1, 1), block: (256, 1, 1),
                                   [.pointer(Self.address(out)), .pointer(gpu(bias).address), .int(m), .int64(Int64(tokens * m))])
            }
        }
    }

    public func rope(_ x: Tensor, headDim: Int, positions: [Int32], base: Float, scale: Float, style: RoPEStyle) {
        precondition(positions.count == x.rows)
        run {
            let key = "\(base)/\(headDim)"
            let freq: DeviceBuffer
            if let f = invFreq[key] {
                freq = f
            } else {
                let half = headDim / 2
                // θ_i = base^(-2i/d), computed in double like the CPU backend.
                let host = (0..<half).map { Float(pow(Double(base), -2.0 * Double($0) / Double(headDim))) }
                freq = try context.allocate(bytes: half * 4)
                try context.upload(host, to: freq.address)
                invFreq[key] = freq
            }
            let pb = try grow(&self.positions, bytes: positions.count * 4)
            if positions != lastPositions {
                try context.upload(positions, to: pb.address)
                lastPositions = positions
            }
            try context.launch(kRoPE, grid: (x.rows, 1, 1), block: (128, 1, 1),
                               [.pointer(Self.address(x)), .ptr(pb), .ptr(freq), .int(x.cols), .int(headDim),
                                .float(scale), .int(style == .interleaved ? 1 : 0)])
        }
    }

    public func add(_ x: Tensor, _ y: Tensor) {
        precondition(x.rows == y.rows && x.cols == y.cols)
        let n = x.rows * x.cols
        run {
            try context.launch(kAdd, grid: (blocks(n), 1, 1), block: (256, 1, 1),
                               [.pointer(Self.address(x)), .pointer(Self.address(y)), .int64(Int64(n))])
        }
    }

    public func gatedActivation(_ gate: Tensor, _ up: Tensor, _ kind: Activation) {
        let n = gate.rows * gate.cols
        run {
            try context.launch(kGated, grid: (blocks(n), 1, 1), block: (256, 1, 1),
                               [.pointer(Self.address(gate)), .pointer(Self.address(up)), .int64(Int64(n)),
                                .int(kind == .silu ? 0 : 1)])
        }
    }

    public func copyRow(_ x: Tensor, _ src: Int, into out: Tensor, _ dst: Int) {
        run {
            try context.copy(Self.address(x) + UInt64(src * x.cols * 4), to: Self.address(out) + UInt64(dst * out.cols * 4),
                             bytes: x.cols * 4)
        }
    }

    public func read(_ x: Tensor) -> [[Float]] {
        var flat = [Float](repeating: 0, count: x.rows * x.cols)
        run {
            try flat.withUnsafeMutableBytes { try context.download(Self.address(x), to: $0.baseAddress!, bytes: $0.count) }
        }
        return (0..<x.rows).map { Array(flat[($0 * x.cols)..<(($0 + 1) * x.cols)]) }
    }

    public func write(_ values: UnsafePointer<Float>, rows: Int, into t: Tensor) {
        t.rows = rows
        run {
            try context.upload(UnsafeRawPointer(values), to: Self.address(t), bytes: rows * t.cols * 4)
            try context.synchronize()  // the caller may reuse `values` at once
        }
    }

    /// Fills `rows` rows of `t` with uniform random values in ±`scale` made on the device
    /// (random keys and values for `Session.appendSyntheticPositions`).
    public func fillUniform(_ t: Tensor, rows: Int, seed: UInt32, scale: Float) {
        t.rows = rows
        let n = rows * t.cols
        run {
            try context.launch(kFillRandom, grid: (blocks(n), 1, 1), block: (256, 1, 1),
                               [.pointer(Self.address(t)), .int64(Int64(n)), .uint32(seed), .float(0), .float(scale), .int(2)])
        }
    }

    // MARK: attention

    /// The attention method `name` on this GPU, with a paged KV cache for `contextLength`
    /// positions (or what `kvMemoryBytes` allows); `sequences` > 1: one cache of that many
    /// sequences (batched decode), each of `contextLength` positions.
    public func makeAttention(_ name: String, model: LanguageModel, contextLength: Int,
                              options: AttentionOptions, sequences: Int = 1) throws -> AttentionMethod {
        guard let factory = CUDAAttentionMethods.factories[name] else {
            throw ModelError.invalid("attention method '\(name)' has no CUDA implementation yet (on CUDA: \(CUDAAttentionMethods.names.joined(separator: ", ")); on cpu: \(AttentionMethods.names.joined(separator: ", ")))")
        }
        let c = model.config
        let cache = try CUDAKVCache(context: context, layers: c.layerCount, kvHeads: c.kvHeadCount, headDim: c.headDim,
                                    contextLength: contextLength, pageSize: kvPageSize, memoryBytes: kvMemoryBytes,
                                    sequences: sequences)
        return try factory(cache, model, options, self)
    }
}
