/// A batch of activation vectors: `rows` vectors (one per token) of `cols` floats, row-major,
/// in the memory of the backend that made it. `rows` can shrink below the capacity so the
/// same buffers serve a 512-token prefill chunk and a 1-token decode step.
public final class Tensor: @unchecked Sendable {
    public let capacity: Int
    public let cols: Int
    public var rows: Int {
        didSet { precondition(rows >= 0 && rows <= capacity, "tensor rows \(rows) exceed capacity \(capacity)") }
    }
    /// Host address (CPU backend) or device address (GPU backends) of element [0, 0].
    public let pointer: UnsafeMutableRawPointer
    private let release: (() -> Void)?

    public init(rows: Int, cols: Int, pointer: UnsafeMutableRawPointer, release: (() -> Void)?) {
        self.capacity = rows
        self.rows = rows
        self.cols = cols
        self.pointer = pointer
        self.release = release
    }

    /// A host tensor of zeros.
    public convenience init(rows: Int, cols: Int) {
        let p = UnsafeMutablePointer<Float>.allocate(capacity: max(1, rows * cols))
        p.initialize(repeating: 0, count: max(1, rows * cols))
        self.init(rows: rows, cols: cols, pointer: UnsafeMutableRawPointer(p), release: { p.deallocate() })
    }

    deinit { release?() }

    /// Host view (CPU backend only).
    @inline(__always) public var floats: UnsafeMutablePointer<Float> {
        pointer.assumingMemoryBound(to: Float.self)
    }

    @inline(__always) public func row(_ r: Int) -> UnsafeMutablePointer<Float> { floats + r * cols }

    /// Copies of the host rows (for tests and logits).
    public func hostRows() -> [[Float]] {
        (0..<rows).map { Array(UnsafeBufferPointer(start: row($0), count: cols)) }
    }
}

/// Element-wise activation used by gated MLPs.
public enum Activation: Sendable {
    case silu
    /// GELU with the tanh approximation (Gemma's `gelu_pytorch_tanh`).
    case geluTanh
}

/// What a model needs from the hardware: every operation of a transformer forward pass other
/// than attention (which `AttentionMethod`s implement). Model files are written against this
/// protocol only, so they run unchanged on every backend.
public protocol Backend: AnyObject {
    var name: String { get }
    func makeTensor(rows: Int, cols: Int) -> Tensor
    /// Prepares a weight for this backend (quantized matrices stay quantized).
    func loadWeight(_ info: GGUFTensorInfo, from file: GGUFFile) throws -> Weight

    /// out[i] = table[tokens[i]] * scale
    func embed(_ tokens: [Int32], table: Weight, scale: Float, into out: Tensor)
    /// out = x / rms(x) * w over groups of `groupSize` values (a row, or one head); out may be x.
    func rmsNorm(_ x: Tensor, weight: Weight, groupSize: Int, eps: Float, into out: Tensor)
    /// out[t] = W x[t] (+ bias) for every row t of x.
    func linear(_ x: Tensor, _ w: Weight, bias: Weight?, into out: Tensor)
    /// Rotates pairs of channels of every head by position-dependent angles, in place.
    func rope(_ x: Tensor, headDim: Int, positions: [Int32], base: Float, scale: Float, style: RoPEStyle)
    /// x += y
    func add(_ x: Tensor, _ y: Tensor)
    /// gate = act(gate) * up
    func gatedActivation(_ gate: Tensor, _ up: Tensor, _ kind: Activation)
    /// Copies row `src` of x to row `dst` of out.
    func copyRow(_ x: Tensor, _ src: Int, into out: Tensor, _ dst: Int)
    /// Host copy of the tensor's rows (logits).
    func read(_ x: Tensor) -> [[Float]]
    /// Sets `t` to `rows` rows copied from host memory.
    func write(_ values: UnsafePointer<Float>, rows: Int, into t: Tensor)
    /// Throws the first failure of an operation since the backend was made (GPU backends,
    /// whose operations cannot throw); host backends never fail.
    func checkError() throws
}

extension Backend {
    public func write(_ values: UnsafePointer<Float>, rows: Int, into t: Tensor) {
        t.rows = rows
        t.floats.update(from: values, count: rows * t.cols)
    }

    public func checkError() throws {}
}

/// A model parameter as loaded by a backend.
public class Weight: @unchecked Sendable {
    public let info: GGUFTensorInfo
    public init(info: GGUFTensorInfo) { self.info = info }
    public var rows: Int { info.rowCount }
    public var cols: Int { info.rowLength }
}
