#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Double Sparsity's label cache: for every cached token, the `r` calibrated key channels of
/// each KV head, contiguous (`[layer][kvHead][position][r]`, f16), so scoring all tokens reads
/// r/d of the key cache. Written next to the KV cache, from the same post-RoPE keys.
public final class LabelCache: @unchecked Sendable {
    public let layerCount: Int
    public let kvHeads: Int
    public let channels: Int
    public let capacity: Int
    private let base: UnsafeMutablePointer<Float16>
    private let bytes: Int

    public init(layers: Int, kvHeads: Int, channels: Int, capacity: Int) {
        layerCount = layers
        self.kvHeads = kvHeads
        self.channels = channels
        self.capacity = capacity
        bytes = max(1, layers * kvHeads * capacity * channels * 2)
        let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        precondition(p != MAP_FAILED, "cannot reserve \(bytes) bytes for the label cache")
        base = p!.assumingMemoryBound(to: Float16.self)
    }

    deinit { munmap(base, bytes) }

    public var reservedBytes: Int { bytes }

    /// Labels of one layer and KV head: `capacity × channels` values.
    @inline(__always) public func labels(_ layer: Int, _ head: Int) -> UnsafeMutablePointer<Float16> {
        base + ((layer * kvHeads + head) * capacity) * channels
    }

    /// Stores the selected channels of keys `k` (rows of kvHeads × headDim floats, post-RoPE)
    /// at positions start..., with `select[layer][head]` the channel indices.
    func store(layer: Int, k: Tensor, start: Int, headDim: Int, select: [[Int32]]) {
        for t in 0..<k.rows {
            let row = k.row(t)
            for h in 0..<kvHeads {
                let dst = labels(layer, h) + (start + t) * channels
                let key = row + h * headDim
                let ch = select[h]
                for c in 0..<channels { dst[c] = Float16(key[Int(ch[c])]) }
            }
        }
    }
}
