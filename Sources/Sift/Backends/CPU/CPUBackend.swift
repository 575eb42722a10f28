#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A weight on the CPU: quantized matrices stay in the memory-mapped file; vectors
/// (norms, biases) are converted to f32 once.
public final class CPUWeight: Weight, @unchecked Sendable {
    /// Dequantized f32 values (TEMPORARY: every weight, until the quantized kernels land).
    let floats: UnsafeMutablePointer<Float>

    init(info: GGUFTensorInfo, file: GGUFFile) {
        floats = .allocate(capacity: info.elementCount)
        Dequantize.row(info.type, file.data(info), floats, count: info.elementCount)
        super.init(info: info)
    }

    deinit { floats.deallocate() }
}

/// The CPU backend: SIMD kernels split across a thread pool.
public final class CPUBackend: Backend, @unchecked Sendable {
    public let name = "cpu"
    public let pool: ThreadPool

    public init(threads: Int = ThreadPool.processorCount) {
        pool = ThreadPool(threads: threads)
    }

    deinit { pool.shutdown() }

    public func makeTensor(rows: Int, cols: Int) -> Tensor { Tensor(rows: rows, cols: cols) }

    public func loadWeight(_ info: GGUFTensorInfo, from file: GGUFFile) throws -> Weight {
        guard info.type.isSupported else {
            throw ModelError.badTensor(info.name, path: file.path, reason: "tensor type \(info.type) is not supported")
        }
        return CPUWeight(info: info, file: file)
    }

    @inline(__always) private func cpu(_ w: Weight) -> CPUWeight { unsafeDowncast(w, to: CPUWeight.self) }

    public func embed(_ tokens: [Int32], table: Weight, scale: Float, into out: Tensor) {
        let w = cpu(table)
        out.rows = tokens.count
        let d = w.cols
        precondition(out.cols == d)
        for (i, t) in tokens.enumerated() {
            let src = w.floats + Int(t) * d
            let dst = out.row(i)
            for j in 0..<d { dst[j] = src[j] * scale }
        }
    }

    public func rmsNorm(_ x: Tensor, weight: Weight, groupSize: Int, eps: Float, into out: Tensor) {
        let w = cpu(weight).floats
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

    public func linear(_ x: Tensor, _ weight: Weight, bias: Weight?, into out: Tensor) {
        let w = cpu(weight)
        let n = w.cols, m = w.rows
        precondition(x.cols == n && out.cols == m, "linear \(weight.info.name): x has \(x.cols) columns, weight \(n)×\(m), out \(out.cols)")
        out.rows = x.rows
        let tokens = x.rows
        let b = bias.map { cpu($0).floats }
        pool.parallelRanges(m, grain: 16) { rows in
            for r in rows {
                let wr = w.floats + r * n
                for t in 0..<tokens {
                    var v = Kernels.dot(wr, x.row(t), n)
                    if let b { v += b[r] }
                    out.row(t)[r] = v
                }
            }
        }
    }

    public func rope(_ x: Tensor, headDim: Int, positions: [Int32], base: Float, scale: Float, style: RoPEStyle) {
        precondition(positions.count == x.rows)
        let heads = x.cols / headDim
        let half = headDim / 2
        // Inverse frequencies θ_i = base^(-2i/d), computed in double like the reference.
        var invFreq = [Float](repeating: 0, count: half)
        for i in 0..<half { invFreq[i] = Float(pow(Double(base), -2.0 * Double(i) / Double(headDim))) }
        pool.parallelRanges(x.rows, grain: 1) { rows in
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
                for i in r { let v = g[i]; g[i] = v / (1 + exp(-v)) * u[i] }
            case .geluTanh:
                for i in r {
                    let v = g[i]
                    g[i] = 0.5 * v * (1 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))) * u[i]
                }
            }
        }
    }

    public func copyRow(_ x: Tensor, _ src: Int, into out: Tensor, _ dst: Int) {
        out.row(dst).update(from: x.row(src), count: x.cols)
    }

    public func read(_ x: Tensor) -> [[Float]] { x.hostRows() }
}
