#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The key/value cache of one sequence on the CPU, in f16.
///
/// Layout per layer: `[kvHead][position][headDim]`, so one head's keys for all positions are
/// contiguous (attention scans them in order; sparse methods gather rows from them). Memory is
/// reserved for `capacity` positions up front and committed by the OS only as it is written.
public final class KVCache: @unchecked Sendable {
    public let layerCount: Int
    public let kvHeads: Int
    public let headDim: Int
    public let capacity: Int
    /// Positions filled (the same for every layer between forward passes).
    public internal(set) var length = 0

    private let base: UnsafeMutableRawPointer
    private let bytes: Int
    private let layerStride: Int  // elements per layer for K (and again for V)

    public init(layers: Int, kvHeads: Int, headDim: Int, capacity: Int) {
        layerCount = layers
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.capacity = capacity
        layerStride = kvHeads * capacity * headDim
        bytes = max(1, 2 * layers * layerStride * MemoryLayout<Float16>.size)
        let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        precondition(p != MAP_FAILED, "cannot reserve \(bytes) bytes for the KV cache")
        base = p!
    }

    deinit { munmap(base, bytes) }

    /// Bytes the cache would occupy when full.
    public var reservedBytes: Int { bytes }

    /// Keys of one layer and KV head: `capacity × headDim` f16 values.
    @inline(__always)
    public func keys(_ layer: Int, _ head: Int) -> UnsafeMutablePointer<Float16> {
        base.assumingMemoryBound(to: Float16.self) + (2 * layer) * layerStride + head * capacity * headDim
    }

    /// Values of one layer and KV head.
    @inline(__always)
    public func values(_ layer: Int, _ head: Int) -> UnsafeMutablePointer<Float16> {
        base.assumingMemoryBound(to: Float16.self) + (2 * layer + 1) * layerStride + head * capacity * headDim
    }

    /// Writes the keys and values of `k.rows` tokens (rows of `kvHeads * headDim` floats) at
    /// positions `start...`.
    public func store(layer: Int, k: Tensor, v: Tensor, start: Int) {
        precondition(start + k.rows <= capacity, "KV cache full")
        for t in 0..<k.rows {
            for h in 0..<kvHeads {
                Kernels.toHalf(k.row(t) + h * headDim, keys(layer, h) + (start + t) * headDim, headDim)
                Kernels.toHalf(v.row(t) + h * headDim, values(layer, h) + (start + t) * headDim, headDim)
            }
        }
    }

    /// Writes the key and value of one token (`kvHeads * headDim` floats each) at `position`.
    public func storeRow(layer: Int, k: UnsafePointer<Float>, v: UnsafePointer<Float>, position: Int) {
        precondition(position >= 0 && position < capacity, "KV cache full")
        for h in 0..<kvHeads {
            Kernels.toHalf(k + h * headDim, keys(layer, h) + position * headDim, headDim)
            Kernels.toHalf(v + h * headDim, values(layer, h) + position * headDim, headDim)
        }
    }

    /// Sets the filled length (after a forward pass, or to forget positions ≥ n).
    public func setLength(_ n: Int) {
        precondition(n >= 0 && n <= capacity)
        length = n
    }
}
