/// Builds GGUF files in memory: used by tests to make tiny models with known weights,
/// and by tools that export data. Writes version 3 with `general.alignment` honoured.
public struct GGUFWriter {
    public struct Tensor {
        public var name: String
        /// ggml order: `shape[0]` is the contiguous dimension.
        public var shape: [Int]
        public var type: GGMLType
        public var bytes: [UInt8]

        public init(name: String, shape: [Int], type: GGMLType, bytes: [UInt8]) {
            self.name = name
            self.shape = shape
            self.type = type
            self.bytes = bytes
        }

        /// An F32 tensor from values.
        public init(name: String, shape: [Int], floats: [Float]) {
            precondition(shape.reduce(1, *) == floats.count, "shape \(shape) does not hold \(floats.count) values")
            self.name = name
            self.shape = shape
            self.type = .f32
            self.bytes = floats.withUnsafeBytes { Array($0) }
        }
    }

    public var metadata: [(String, GGUFValue)] = []
    public var tensors: [Tensor] = []
    public var alignment: Int = GGUFFile.defaultAlignment

    public init() {}

    public mutating func set(_ key: String, _ value: GGUFValue) {
        if let i = metadata.firstIndex(where: { $0.0 == key }) {
            metadata[i].1 = value
        } else {
            metadata.append((key, value))
        }
    }

    public mutating func add(_ tensor: Tensor) { tensors.append(tensor) }

    /// The whole file.
    public func bytes() -> [UInt8] {
        var out: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func str(_ s: String) { u64(UInt64(s.utf8.count)); out.append(contentsOf: s.utf8) }
        func value(_ v: GGUFValue) {
            switch v {
            case .uint8(let x): out.append(x)
            case .int8(let x): out.append(UInt8(bitPattern: x))
            case .uint16(let x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case .int16(let x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case .uint32(let x): u32(x)
            case .int32(let x): u32(UInt32(bitPattern: x))
            case .uint64(let x): u64(x)
            case .int64(let x): u64(UInt64(bitPattern: x))
            case .float32(let x): u32(x.bitPattern)
            case .float64(let x): u64(x.bitPattern)
            case .bool(let x): out.append(x ? 1 : 0)
            case .string(let s): str(s)
            case .array(let t, let values):
                u32(t.rawValue)
                u64(UInt64(values.count))
                for e in values { value(e) }
            }
        }

        var meta = metadata
        if alignment != GGUFFile.defaultAlignment, !meta.contains(where: { $0.0 == "general.alignment" }) {
            meta.append(("general.alignment", .uint32(UInt32(alignment))))
        }
        u32(GGUFFile.magic)
        u32(3)
        u64(UInt64(tensors.count))
        u64(UInt64(meta.count))
        for (k, v) in meta {
            str(k)
            u32(v.type.rawValue)
            value(v)
        }
        var offsets: [Int] = []
        var next = 0
        for t in tensors {
            offsets.append(next)
            next = (next + t.bytes.count + alignment - 1) / alignment * alignment
        }
        for (t, off) in zip(tensors, offsets) {
            str(t.name)
            u32(UInt32(t.shape.count))
            for d in t.shape { u64(UInt64(d)) }
            u32(t.type.rawValue)
            u64(UInt64(off))
        }
        func pad() { while out.count % alignment != 0 { out.append(0) } }
        pad()
        for t in tensors {
            out.append(contentsOf: t.bytes)
            pad()
        }
        return out
    }
}

public extension GGUFValue {
    static func strings(_ values: [String]) -> GGUFValue { .array(.string, values.map { .string($0) }) }
    static func floats(_ values: [Float]) -> GGUFValue { .array(.float32, values.map { .float32($0) }) }
    static func int32s(_ values: [Int32]) -> GGUFValue { .array(.int32, values.map { .int32($0) }) }
}
