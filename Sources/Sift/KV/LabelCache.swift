#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Double Sparsity's label cache: for every cached token, the `r` calibrated key channels of
/// each KV head, contiguous per layer and KV head, so scoring all tokens reads about r/d of the
/// key cache. Written next to the KV cache, from the same post-RoPE keys.
///
/// Two encodings (`bits`):
/// - 16: `[layer][kvHead][position][r]` f16 values.
/// - 4: per position a record of `4 + ⌈r/2⌉` bytes: f16 scale `s`, f16 offset `m`, then r
///   4-bit codes `u_c` (two a byte, low nibble first); the label is `m + s·u_c`, with
///   `m = min_c x_c`, `s = (max_c x_c − m)/15` and `u_c = round((x_c − m)/s)` (asymmetric
///   per-token quantization, as the paper's 4-bit labels). For r = 8 a record is 8 bytes
///   instead of 16; the score needs one more multiply-add per token:
///   `q·label = m·Σ_c q_c + s·Σ_c q_c·u_c`.
///
/// 4-bit labels are normalised per channel when the calibration gives key moments (`mean`,
/// `std`: μ_c and σ_c per layer, KV head and label channel): the codes quantise
/// x_c = (k_c − μ_c)·(1/σ_c) and the query is scaled to q_c·σ_c, so the score is
/// q·k − q·μ: the same ranking as q·k (q·μ is one constant per query), but each token's scale
/// and offset now span channels of comparable spread instead of being set by the largest one.
/// Without moments μ = 0 and σ = 1 (x_c = k_c). f16 labels are never normalised.
///
/// `scale: .channel` drops the per-token scale and offset: each normalised channel is
/// quantised on one fixed grid, x_c ≈ (u_c − 7.5)·Δ with Δ = `LabelScale.step` and
/// u_c = clamp(⌊x_c/Δ + 8⌋, 0, 15), so a record is the ⌈r/2⌉ bytes of codes alone (4 bytes for
/// r = 8, half the per-token record) and the score is `Δ·Σ_c q_c·u_c − 7.5·Δ·Σ_c q_c`. It needs
/// the calibration's key moments (the grid is in units of σ_c).
public final class LabelCache: @unchecked Sendable {
    public let layerCount: Int
    public let kvHeads: Int
    public let channels: Int
    public let capacity: Int
    /// 16 (f16 labels) or 4 (4-bit codes).
    public let bits: Int
    /// How 4-bit codes are scaled: per token (a f16 scale and offset in each record) or per
    /// channel (one calibrated grid, codes only).
    public let scale: LabelScale
    /// Bytes one position's label takes in one KV head.
    public let recordBytes: Int
    private let base: UnsafeMutableRawPointer
    private let bytes: Int
    /// 4-bit normalisation, `[layer][kvHead][channels]` flat: μ_c, 1/σ_c (f32, as stored keys
    /// are normalised) and σ_c (the query scale).
    public let mean: [Float], invStd: [Float], std: [Float]

    /// - Parameters: mean, std: per [layer][kvHead] the μ and σ of the label channels (4-bit
    ///   labels only; nil = 0 and 1).
    public init(layers: Int, kvHeads: Int, channels: Int, capacity: Int, bits: Int = 16,
                mean: [[[Float]]]? = nil, std: [[[Float]]]? = nil, scale: LabelScale = .token) {
        precondition(bits == 16 || bits == 4, "label bits must be 16 or 4")
        precondition(scale == .token || bits == 4, "per-channel label scale needs 4-bit labels")
        self.scale = scale
        let n = layers * kvHeads * channels
        self.mean = mean.map { $0.flatMap { $0.flatMap { $0 } } } ?? [Float](repeating: 0, count: n)
        self.std = std.map { $0.flatMap { $0.flatMap { $0 } } } ?? [Float](repeating: 1, count: n)
        precondition(self.mean.count == n && self.std.count == n, "label normalisation shape")
        invStd = self.std.map { 1 / $0 }
        layerCount = layers
        self.kvHeads = kvHeads
        self.channels = channels
        identity = (0..<channels).map(Int32.init)
        self.capacity = capacity
        self.bits = bits
        recordBytes = bits == 16 ? channels * 2 : (scale == .token ? 4 : 0) + (channels + 1) / 2
        bytes = max(1, layers * kvHeads * capacity * recordBytes)
        let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        precondition(p != MAP_FAILED, "cannot reserve \(bytes) bytes for the label cache")
        base = p!
    }

    deinit { munmap(base, bytes) }

    public var reservedBytes: Int { bytes }

    /// Start of one layer's and KV head's records.
    @inline(__always) func records(_ layer: Int, _ head: Int) -> UnsafeMutableRawPointer {
        base + ((layer * kvHeads + head) * capacity) * recordBytes
    }

    /// Labels of one layer and KV head, f16 encoding: `capacity × channels` values.
    @inline(__always) public func labels(_ layer: Int, _ head: Int) -> UnsafeMutablePointer<Float16> {
        precondition(bits == 16, "f16 label access on a \(bits)-bit label cache")
        return records(layer, head).assumingMemoryBound(to: Float16.self)
    }

    /// The label of one position as floats (decoded back to key units, μ_c + σ_c·(m + s·u_c) for
    /// 4-bit labels; for tests and checks).
    public func label(layer: Int, head: Int, position: Int) -> [Float] {
        let rec = records(layer, head) + position * recordBytes
        if bits == 16 {
            let p = rec.assumingMemoryBound(to: Float16.self)
            return (0..<channels).map { Float(p[$0]) }
        }
        let (s, m, codes) = scale == .channel
            ? (LabelScale.step, -7.5 * LabelScale.step, rec.assumingMemoryBound(to: UInt8.self))
            : (Float(rec.load(as: Float16.self)), Float(rec.load(fromByteOffset: 2, as: Float16.self)),
               rec.assumingMemoryBound(to: UInt8.self) + 4)
        let o = (layer * kvHeads + head) * channels
        return (0..<channels).map { c in mean[o + c] + std[o + c] * (m + s * Float((codes[c >> 1] >> UInt8((c & 1) * 4)) & 15)) }
    }

    /// The stored bytes of one position's label (for checks against the GPU's label cache).
    public func record(layer: Int, head: Int, position: Int) -> [UInt8] {
        let rec = (records(layer, head) + position * recordBytes).assumingMemoryBound(to: UInt8.self)
        return (0..<recordBytes).map { rec[$0] }
    }

    /// Stores the selected channels of keys `k` (rows of kvHeads × headDim floats, post-RoPE)
    /// at positions start..., with `select[layer][head]` the channel indices.
    func store(layer: Int, k: Tensor, start: Int, headDim: Int, select: [[Int32]]) {
        var x = [Float](repeating: 0, count: channels)
        for t in 0..<k.rows {
            let row = k.row(t)
            for h in 0..<kvHeads {
                let key = row + h * headDim
                let ch = select[h]
                let rec = records(layer, h) + (start + t) * recordBytes
                if bits == 16 {
                    let dst = rec.assumingMemoryBound(to: Float16.self)
                    for c in 0..<channels { dst[c] = Float16(key[Int(ch[c])]) }
                    continue
                }
                Self.encode4(key: key, channels: ch, mean: mean, invStd: invStd, offset: (layer * kvHeads + h) * channels,
                             scale: scale, scratch: &x, into: rec)
            }
        }
    }

    /// Stores one position's label of one KV head from `channels` label values (projected
    /// labels, `LabelProjection`): f16, or 4-bit normalised by the label channels' moments.
    func store(layer: Int, head: Int, position: Int, values: UnsafePointer<Float>, scratch: inout [Float]) {
        let rec = records(layer, head) + position * recordBytes
        if bits == 16 {
            let dst = rec.assumingMemoryBound(to: Float16.self)
            for c in 0..<channels { dst[c] = Float16(values[c]) }
            return
        }
        Self.encode4(key: values, channels: identity, mean: mean, invStd: invStd, offset: (layer * kvHeads + head) * channels,
                     scale: scale, scratch: &scratch, into: rec)
    }

    /// 0..<channels: the channel list of projected labels, whose values come in label order.
    private let identity: [Int32]

    /// One 4-bit record from a key: x_c = (key[ch[c]] − μ_c)·(1/σ_c) (f32, separate rounding of
    /// the subtraction and the product: the GPU store kernel does the same operations), then
    /// the per-token offset, scale and codes.
    static func encode4(key: UnsafePointer<Float>, channels ch: [Int32], mean: [Float], invStd: [Float], offset o: Int,
                        scale: LabelScale = .token, scratch x: inout [Float], into rec: UnsafeMutableRawPointer) {
        let channels = ch.count
        if scale == .channel {
            // u = ⌊x/Δ + 8⌋ clamped, each operation rounded once as the GPU's store kernel does.
            let codes = rec.assumingMemoryBound(to: UInt8.self)
            for i in 0..<((channels + 1) / 2) { codes[i] = 0 }
            for c in 0..<channels {
                let d = key[Int(ch[c])] - mean[o + c]
                let t = ((d * invStd[o + c]) * LabelScale.inverseStep + 8).rounded(.down)
                let u = t >= 15 ? 15 : (t >= 0 ? Int(t) : 0)   // NaN lands on 0
                codes[c >> 1] |= UInt8(u) << UInt8((c & 1) * 4)
            }
            return
        }
        var lo = Float.infinity, hi = -Float.infinity
        for c in 0..<channels {
            let d = key[Int(ch[c])] - mean[o + c]
            x[c] = d * invStd[o + c]
            lo = min(lo, x[c]); hi = max(hi, x[c])
        }
        // The offset is stored in f16: quantize against the rounded value so that codes
        // and offset agree.
        let m = Float(Float16(lo))
        let s16 = Float16(max(hi - m, 0) / 15)
        let s = Float(s16)
        rec.storeBytes(of: s16, as: Float16.self)
        rec.storeBytes(of: Float16(m), toByteOffset: 2, as: Float16.self)
        let codes = rec.assumingMemoryBound(to: UInt8.self) + 4
        for i in 0..<((channels + 1) / 2) { codes[i] = 0 }
        for c in 0..<channels {
            let u = s > 0 ? min(15, max(0, Int(((x[c] - m) / s).rounded()))) : 0
            codes[c >> 1] |= UInt8(u) << UInt8((c & 1) * 4)
        }
    }

    /// Approximate scores `q·label_j` for positions first..<first+count of one layer and KV
    /// head (`q`: r floats, the query over the label channels).
    func scores(layer: Int, head: Int, q: UnsafePointer<Float>, first: Int, count: Int,
                into scores: UnsafeMutablePointer<Float>) {
        if bits == 16 {
            Kernels.labelScores(q, labels(layer, head) + first * channels, channels, count, scores)
            return
        }
        let o = (layer * kvHeads + head) * channels
        withUnsafeTemporaryAllocation(of: Float.self, capacity: channels) { qs in
            for c in 0..<channels { qs[c] = q[c] * std[o + c] }
            Kernels.labelScores4(qs.baseAddress!, records(layer, head) + first * recordBytes, channels, recordBytes, count, scores,
                                 fixedScale: scale == .channel ? LabelScale.step : nil)
        }
    }
}

/// How 4-bit label codes are scaled (`--ds-label-scale`).
public enum LabelScale: String, Codable, Sendable, CaseIterable {
    /// A f16 scale and offset per token and KV head, from the token's own min and max (the
    /// paper's 4-bit labels): 4 + ⌈r/2⌉ bytes a record.
    case token
    /// One fixed grid per channel, in units of the calibrated σ_c: ⌈r/2⌉ bytes a record. Keys
    /// beyond ±2.51σ clamp to the end codes; the one that matters is the first token's (the
    /// attention sink, up to 13σ out on Qwen 1.5B), so `sift` pins it (`--sinks 1`) by default.
    case channel

    /// The grid step Δ in units of σ: 0.3352, the mean-squared-error optimal step of a 16-level
    /// uniform quantiser for a unit Gaussian (Max, 1960); the grid spans ±2.51σ, wider values
    /// clamp to the end codes.
    public static let step: Float = 0.3352
    /// 1/Δ as the f32 both encoders multiply by.
    public static let inverseStep: Float = 1 / step
}
