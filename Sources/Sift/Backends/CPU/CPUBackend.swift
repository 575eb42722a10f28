#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A weight on the CPU. Matrices stay quantized in the memory-mapped file and are read by the
/// quantized dot kernels of `Quant/`; vectors (norms, biases) are converted to f32 once.
public final class CPUWeight: Weight, @unchecked Sendable {
    /// The tensor's bytes in the mapped file (kept alive by `file`).
    let raw: UnsafeRawPointer
    let type: GGMLType
    /// Bytes per row of `cols` values.
    let rowBytes: Int
    /// f32 values of a 1-D tensor.
    let floats: UnsafeMutablePointer<Float>?
    private let file: GGUFFile

    init(info: GGUFTensorInfo, file: GGUFFile) {
        self.file = file
        raw = file.data(info)
        type = info.type
        rowBytes = info.type.byteCount(elements: info.rowLength) ?? 0
        if info.shape.count == 1 || info.rowCount == 1 {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: info.elementCount)
            Dequantize.row(info.type, raw, p, count: info.elementCount)
            floats = p
        } else {
            floats = nil
        }
        super.init(info: info)
    }

    deinit { floats?.deallocate() }

    @inline(__always) func row(_ r: Int) -> UnsafeRawPointer { raw + r * rowBytes }
}

/// The CPU backend: SIMD kernels split across a thread pool.
public final class CPUBackend: Backend, @unchecked Sendable {
    public let name = "cpu"
    /// Matrix products in f32 on dequantized weight rows instead of the 8-bit-activation dot
    /// products (llama.cpp's scheme, the default). Slow; a reference for checks of other
    /// backends, which would otherwise be measured against the CPU's activation rounding.
    public var exactActivations = false
    public let pool: ThreadPool
    /// Activations quantized for the current matrix product (grown on demand).
    private var scratch = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 64)
    private var scratchBytes = 1

    public init(threads: Int = ThreadPool.processorCount) {
        pool = ThreadPool(threads: threads)
    }

    deinit {
        pool.shutdown()
        scratch.deallocate()
    }

    public func makeTensor(rows: Int, cols: Int) -> Tensor { Tensor(rows: rows, cols: cols) }

    public func loadWeight(_ info: GGUFTensorInfo, from file: GGUFFile) throws -> Weight {
        guard info.type.isSupported else {
            throw ModelError.badTensor(info.name, path: file.path, reason: "tensor type \(info.type) is not supported")
        }
        guard info.rowLength % info.type.blockSize == 0 else {
            throw ModelError.badTensor(info.name, path: file.path,
                                       reason: "row length \(info.rowLength) is not a multiple of the \(info.type) block size \(info.type.blockSize)")
        }
        return CPUWeight(info: info, file: file)
    }

    @inline(__always) private func cpu(_ w: Weight) -> CPUWeight { unsafeDowncast(w, to: CPUWeight.self) }

    private func scratch(_ bytes: Int) -> UnsafeMutableRawPointer {
        if bytes > scratchBytes {
            scratch.deallocate()
            scratch = .allocate(byteCount: bytes, alignment: 64)
            scratchBytes = bytes
        }
        return scratch
    }

    public func embed(_ tokens: [Int32], table: Weight, scale: Float, into out: Tensor) {
        let w = cpu(table)
        out.rows = tokens.count
        let d = w.cols
        precondition(out.cols == d)
        pool.parallelRanges(tokens.count, grain: 16) { range in
            for i in range {
                let dst = out.row(i)
                Dequantize.row(w.type, w.row(Int(tokens[i])), dst, count: d)
                if scale != 1 { for j in 0..<d { dst[j] *= scale } }
            }
        }
    }

    public func rmsNorm(_ x: Tensor, weight: Weight, groupSize: Int, eps: Float, into out: Tensor) {
        let w = cpu(weight).floats!
        let groups = x.rows * x.cols / groupSize
        out.rows = x.rows
        pool.parallelRanges(groups, grain: max(1, 4096 / groupSize)) { range in
            for g in range {
                let src = x.floats + g * groupSize
                let dst = out.floats + g * groupSize
                let ss = Kernels.sumOfSquares(src, groupSize)
                let inv = 1 / (ss / Float(groupSize) + eps).squareRoot()
                Kernels.scaleMultiply(src, w, inv, dst, groupSize)
            }
        }
    }

    /// out[t] = W x[t] (+ b): the activations are quantized once to the format the weight's
    /// dot kernel takes, then weight rows are split across threads; in prefill each task
    /// multiplies a block of weight rows by tiles of tokens so each row is read from memory once.
    public func linear(_ x: Tensor, _ weight: Weight, bias: Weight?, into out: Tensor) {
        let w = cpu(weight)
        let n = w.cols, m = w.rows
        precondition(x.cols == n && out.cols == m, "linear \(weight.info.name): x has \(x.cols) columns, weight \(n)×\(m), out \(out.cols)")
        let tokens = x.rows
        out.rows = tokens
        if tokens == 0 { return }
        let type = w.type
        if exactActivations {
            let o = out.floats
            pool.parallelRanges(m, grain: 16) { rows in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: n) { tmp in
                    for r in rows {
                        Dequantize.row(type, w.row(r), tmp.baseAddress!, count: n)
                        for t in 0..<tokens { o[t * m + r] = Kernels.dot(x.row(t), UnsafePointer(tmp.baseAddress!), n) }
                    }
                }
            }
            if let b = bias.map({ cpu($0).floats! }) {
                for t in 0..<tokens { Kernels.add(o + t * m, b, m) }
            }
            return
        }
        let aBytes = QuantDot.activationRowBytes(for: type, count: n)
        let acts = UnsafeRawPointer(scratch(aBytes * tokens))
        pool.parallelRanges(tokens, grain: 4) { range in
            for t in range {
                QuantDot.quantizeActivation(x.row(t), count: n, for: type,
                                            into: UnsafeMutableRawPointer(mutating: acts) + t * aBytes)
            }
        }
        let b = bias.map { cpu($0).floats! }
        let o = out.floats
        if tokens == 1 {
            pool.parallelRanges(m, grain: 32) { rows in
                for r in rows { o[r] = QuantDot.dot(type, w.row(r), acts, count: n) }
            }
        } else {
            let blockRows = 16
            let blocks = (m + blockRows - 1) / blockRows
            // Q4_0/Q5_0 rows are unpacked to Q8_0 once per block of rows, not once per group
            // of 4 tokens (same values, same bits).
            let repack = QuantDot.repacksToQ8_0(type)
            let tileType: GGMLType = repack ? .q8_0 : type
            let packedRowBytes = repack ? n / 32 * 34 : w.rowBytes
            pool.parallelFor(blocks) { blk in
                let r0 = blk * blockRows, r1 = min(m, r0 + blockRows)
                func run(_ rows: UnsafeRawPointer) {
                    var r = r0
                    while r < r1 {
                        let nr = min(4, r1 - r)
                        var t = 0
                        while t < tokens {
                            let nt = min(4, tokens - t)
                            QuantDot.dotTile(tileType, weights: rows + (r - r0) * packedRowBytes, weightStride: packedRowBytes, rows: nr,
                                             activations: acts + t * aBytes, activationStride: aBytes, cols: nt,
                                             count: n, out: o + t * m + r, outStride: m)
                            t += nt
                        }
                        r += nr
                    }
                }
                if repack {
                    withUnsafeTemporaryAllocation(byteCount: (r1 - r0) * packedRowBytes, alignment: 64) { buf in
                        for r in r0..<r1 {
                            QuantDot.repackToQ8_0(type, w.row(r), count: n, into: buf.baseAddress! + (r - r0) * packedRowBytes)
                        }
                        run(UnsafeRawPointer(buf.baseAddress!))
                    }
                } else {
                    run(w.row(r0))
                }
            }
        }
        if let b {
            for t in 0..<tokens { Kernels.add(o + t * m, b, m) }
        }
    }

    public func rope(_ x: Tensor, headDim: Int, positions: [Int32], base: Float, scale: Float, style: RoPEStyle) {
        precondition(positions.count == x.rows)
        let heads = x.cols / headDim
        let half = headDim / 2
        // Inverse frequencies θ_i = base^(-2i/d), computed in double like the reference.
        var invFreq = [Float](repeating: 0, count: half)
        for i in 0..<half { invFreq[i] = Float(pow(Double(base), -2.0 * Double(i) / Double(headDim))) }
        pool.parallelRanges(x.rows, grain: 4) { rows in
            var cosv = [Float](repeating: 0, count: half), sinv = cosv
            for t in rows {
                let p = Float(positions[t]) / scale
                for i in 0..<half {
                    let a = p * invFreq[i]
                    cosv[i] = cos(a)
                    sinv[i] = sin(a)
                }
                let row = x.row(t)
                for h in 0..<heads {
                    let v = row + h * headDim
                    switch style {
                    case .neox:
                        for i in 0..<half {
                            let a = v[i], b = v[i + half]
                            v[i] = a * cosv[i] - b * sinv[i]
                            v[i + half] = a * sinv[i] + b * cosv[i]
                        }
                    case .interleaved:
                        for i in 0..<half {
                            let a = v[2 * i], b = v[2 * i + 1]
                            v[2 * i] = a * cosv[i] - b * sinv[i]
                            v[2 * i + 1] = a * sinv[i] + b * cosv[i]
                        }
                    }
                }
            }
        }
    }

    public func add(_ x: Tensor, _ y: Tensor) {
        precondition(x.rows == y.rows && x.cols == y.cols)
        Kernels.add(x.floats, y.floats, x.rows * x.cols)
    }

    public func gatedActivation(_ gate: Tensor, _ up: Tensor, _ kind: Activation) {
        let n = gate.rows * gate.cols
        let g = gate.floats, u = up.floats
        pool.parallelRanges(n, grain: 4096) { r in
            switch kind {
            case .silu:
                for i in r { let v = g[i]; g[i] = v / (1 + expf(-v)) * u[i] }
            case .geluTanh:
                for i in r {
                    let v = g[i]
                    g[i] = 0.5 * v * (1 + tanhf(0.7978845608028654 * (v + 0.044715 * v * v * v))) * u[i]
                }
            }
        }
    }

    public func copyRow(_ x: Tensor, _ src: Int, into out: Tensor, _ dst: Int) {
        out.row(dst).update(from: x.row(src), count: x.cols)
    }

    public func read(_ x: Tensor) -> [[Float]] { x.hostRows() }
}
