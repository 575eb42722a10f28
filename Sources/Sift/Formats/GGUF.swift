/// A GGUF file (versions 2 and 3): metadata, tensor descriptions, and the tensor bytes,
/// memory-mapped. Layout (little-endian):
///
///     "GGUF" u32 version, u64 tensor_count, u64 kv_count
///     kv_count × (string key, u32 value_type, value)
///     tensor_count × (string name, u32 n_dims, n_dims × u64 dims, u32 ggml_type, u64 offset)
///     padding to `general.alignment` (default 32), then the tensor data
///
/// Strings are a u64 byte length followed by UTF-8 bytes; arrays are a u32 element type,
/// a u64 count and the elements. Every read is bounds-checked: a damaged file gives a
/// `GGUFError` naming the field and its byte offset.
public final class GGUFFile: @unchecked Sendable {
    public static let magic: UInt32 = 0x4655_4747  // "GGUF" read as little-endian u32
    public static let defaultAlignment = 32

    public let file: MappedFile
    public let version: UInt32
    /// Metadata in file order.
    public let metadataKeys: [String]
    public let metadata: [String: GGUFValue]
    /// Tensors in file order.
    public let tensors: [GGUFTensorInfo]
    public let tensorsByName: [String: GGUFTensorInfo]
    public let alignment: Int
    /// Byte offset of the tensor data section.
    public let dataOffset: Int

    public var path: String { file.path }

    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        self.file = file
        var r = GGUFCursor(bytes: file.bytes, path: file.path)
        let magic = try r.u32("magic")
        guard magic == GGUFFile.magic else {
            throw GGUFError(path: file.path, offset: 0, field: "magic",
                            message: "not a GGUF file (magic 0x\(String(magic, radix: 16)), expected \"GGUF\")")
        }
        version = try r.u32("version")
        guard version == 2 || version == 3 else {
            throw GGUFError(path: file.path, offset: 4, field: "version",
                            message: "unsupported GGUF version \(version) (sift reads 2 and 3)")
        }
        let tensorCount = try r.count("tensor_count", limit: 1 << 24)
        let kvCount = try r.count("kv_count", limit: 1 << 24)

        var keys: [String] = []
        var kv: [String: GGUFValue] = [:]
        keys.reserveCapacity(kvCount)
        for i in 0..<kvCount {
            let key = try r.string("metadata[\(i)].key")
            let typeOffset = r.offset
            let rawType = try r.u32("metadata[\(key)].type")
            guard let type = GGUFValueType(rawValue: rawType) else {
                throw GGUFError(path: file.path, offset: typeOffset, field: "metadata[\(key)].type",
                                message: "unknown value type \(rawType)")
            }
            let value = try r.value(type, field: "metadata[\(key)]", depth: 0)
            if kv[key] != nil {
                throw GGUFError(path: file.path, offset: typeOffset, field: "metadata[\(key)]",
                                message: "duplicate key")
            }
            keys.append(key)
            kv[key] = value
        }
        metadataKeys = keys
        metadata = kv

        var align = GGUFFile.defaultAlignment
        if let a = kv["general.alignment"] {
            guard let v = a.int, v > 0, v & (v - 1) == 0 else {
                throw GGUFError(path: file.path, offset: nil, field: "general.alignment",
                                message: "alignment \(a) is not a positive power of two")
            }
            align = v
        }
        alignment = align

        struct Raw { let name: String; let dims: [Int]; let type: GGMLType; let offset: Int; let at: Int }
        var raws: [Raw] = []
        raws.reserveCapacity(tensorCount)
        for i in 0..<tensorCount {
            let at = r.offset
            let name = try r.string("tensors[\(i)].name")
            let nDims = try r.u32("tensors[\(name)].n_dims")
            guard nDims >= 1 && nDims <= 4 else {
                throw GGUFError(path: file.path, offset: at, field: "tensors[\(name)].n_dims",
                                message: "\(nDims) dimensions (expected 1 to 4)")
            }
            var dims: [Int] = []
            for d in 0..<Int(nDims) {
                dims.append(try r.count("tensors[\(name)].dims[\(d)]", limit: 1 << 40))
            }
            let typeAt = r.offset
            let rawType = try r.u32("tensors[\(name)].type")
            guard let type = GGMLType(rawValue: rawType) else {
                throw GGUFError(path: file.path, offset: typeAt, field: "tensors[\(name)].type",
                                message: "unknown tensor type \(rawType)")
            }
            let offAt = r.offset
            let off = try r.count("tensors[\(name)].offset", limit: 1 << 50)
            guard off % align == 0 else {
                throw GGUFError(path: file.path, offset: offAt, field: "tensors[\(name)].offset",
                                message: "offset \(off) is not a multiple of the alignment \(align)")
            }
            raws.append(Raw(name: name, dims: dims, type: type, offset: off, at: at))
        }
        let dataStart = (r.offset + align - 1) / align * align
        dataOffset = dataStart

        var list: [GGUFTensorInfo] = []
        var byName: [String: GGUFTensorInfo] = [:]
        for raw in raws {
            let (elements, overflow) = raw.dims.reduce((1, false)) { acc, d in
                let (m, o) = acc.0.multipliedReportingOverflow(by: d)
                return (m, acc.1 || o)
            }
            guard !overflow, let size = raw.type.byteCount(elements: elements), raw.dims[0] % raw.type.blockSize == 0 else {
                throw GGUFError(path: file.path, offset: raw.at, field: "tensors[\(raw.name)].dims",
                                message: "shape \(raw.dims) does not fit type \(raw.type) (block of \(raw.type.blockSize))")
            }
            let start = dataStart + raw.offset
            guard start + size <= file.bytes.count else {
                throw GGUFError(path: file.path, offset: raw.at, field: "tensors[\(raw.name)].offset",
                                message: "data [\(start), \(start + size)) runs past the end of the file (\(file.bytes.count) bytes)")
            }
            guard byName[raw.name] == nil else {
                throw GGUFError(path: file.path, offset: raw.at, field: "tensors[\(raw.name)].name",
                                message: "duplicate tensor name")
            }
            let info = GGUFTensorInfo(name: raw.name, shape: raw.dims, type: raw.type,
                                      fileOffset: start, byteCount: size)
            list.append(info)
            byName[raw.name] = info
        }
        tensors = list
        tensorsByName = byName
    }

    /// The bytes of a tensor (valid while this file is alive).
    public func data(_ t: GGUFTensorInfo) -> UnsafeRawPointer {
        file.bytes.baseAddress! + t.fileOffset
    }

    public subscript(key: String) -> GGUFValue? { metadata[key] }

    /// `general.architecture`, or an error saying it is missing.
    public func architecture() throws -> String {
        guard let a = metadata["general.architecture"]?.string else {
            throw GGUFError(path: path, offset: nil, field: "general.architecture", message: "missing")
        }
        return a
    }

    /// Typed metadata access with errors naming the key.
    public func int(_ key: String) throws -> Int {
        guard let v = metadata[key] else { throw missing(key) }
        guard let i = v.int else { throw wrongType(key, v, "an integer") }
        return i
    }

    public func double(_ key: String) throws -> Double {
        guard let v = metadata[key] else { throw missing(key) }
        guard let d = v.double else { throw wrongType(key, v, "a number") }
        return d
    }

    public func string(_ key: String) throws -> String {
        guard let v = metadata[key] else { throw missing(key) }
        guard let s = v.string else { throw wrongType(key, v, "a string") }
        return s
    }

    public func stringArray(_ key: String) throws -> [String] {
        guard let v = metadata[key] else { throw missing(key) }
        guard case .array(.string, let values) = v else { throw wrongType(key, v, "an array of strings") }
        return values.map { $0.string! }
    }

    public func floatArray(_ key: String) throws -> [Float] {
        guard let v = metadata[key] else { throw missing(key) }
        guard case .array(_, let values) = v else { throw wrongType(key, v, "an array of numbers") }
        return try values.map {
            guard let d = $0.double else { throw wrongType(key, v, "an array of numbers") }
            return Float(d)
        }
    }

    public func intArray(_ key: String) throws -> [Int] {
        guard let v = metadata[key] else { throw missing(key) }
        guard case .array(_, let values) = v else { throw wrongType(key, v, "an array of integers") }
        return try values.map {
            guard let i = $0.int else { throw wrongType(key, v, "an array of integers") }
            return i
        }
    }

    private func missing(_ key: String) -> GGUFError {
        GGUFError(path: path, offset: nil, field: key, message: "missing metadata key")
    }

    private func wrongType(_ key: String, _ v: GGUFValue, _ expected: String) -> GGUFError {
        GGUFError(path: path, offset: nil, field: key, message: "expected \(expected), found \(v.type)")
    }
}

/// Where a tensor's data lies in the file, and its shape. `shape[0]` is the innermost
/// (contiguous) dimension, as in ggml: a weight matrix of `rows × cols` is `[cols, rows]`.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    public let shape: [Int]
    public let type: GGMLType
    /// Absolute byte offset in the file.
    public let fileOffset: Int
    public let byteCount: Int

    public var elementCount: Int { shape.reduce(1, *) }
    /// Number of rows (all dimensions but the first) and their length.
    public var rowCount: Int { elementCount / shape[0] }
    public var rowLength: Int { shape[0] }
}

public struct GGUFError: Error, CustomStringConvertible {
    public let path: String
    public let offset: Int?
    public let field: String
    public let message: String

    public var description: String {
        let at = offset.map { " at byte offset \($0)" } ?? ""
        return "\(path): GGUF field '\(field)'\(at): \(message)"
    }
}

/// Bounds-checked little-endian reader over the mapped bytes.
struct GGUFCursor {
    let bytes: UnsafeRawBufferPointer
    let path: String
    var offset = 0

    init(bytes: UnsafeRawBufferPointer, path: String) {
        self.bytes = bytes
        self.path = path
    }

    private func need(_ n: Int, _ field: @autoclosure () -> String) throws {
        guard n >= 0, offset <= bytes.count, n <= bytes.count - offset else {
            throw GGUFError(path: path, offset: offset, field: field(),
                            message: "file ends after \(bytes.count) bytes, \(n) more needed (truncated?)")
        }
    }

    mutating func read<T: FixedWidthInteger>(_ type: T.Type, _ field: @autoclosure () -> String) throws -> T {
        let n = MemoryLayout<T>.size
        try need(n, field())
        let v = bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += n
        return T(littleEndian: v)
    }

    mutating func u32(_ field: @autoclosure () -> String) throws -> UInt32 { try read(UInt32.self, field()) }

    /// A u64 count that must fit in `limit`.
    mutating func count(_ field: @autoclosure () -> String, limit: Int) throws -> Int {
        let at = offset
        let v = try read(UInt64.self, field())
        guard v <= UInt64(limit) else {
            throw GGUFError(path: path, offset: at, field: field(), message: "value \(v) is implausibly large")
        }
        return Int(v)
    }

    mutating func string(_ field: @autoclosure () -> String) throws -> String {
        let at = offset
        let n = try count("\(field()) (length)", limit: bytes.count)
        try need(n, field())
        let raw = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)])
        guard let s = String(validating: raw.bindMemory(to: UInt8.self), as: UTF8.self) else {
            // Some vocabularies hold byte tokens that are not valid UTF-8 on their own; keep them
            // losslessly decodable by repairing rather than failing, but only for token arrays.
            if field().hasPrefix("metadata[tokenizer.") {
                offset += n
                return String(decoding: raw, as: UTF8.self)
            }
            throw GGUFError(path: path, offset: at, field: field(), message: "string is not valid UTF-8")
        }
        offset += n
        return s
    }

    mutating func value(_ type: GGUFValueType, field: @autoclosure () -> String, depth: Int) throws -> GGUFValue {
        switch type {
        case .uint8: return .uint8(try read(UInt8.self, field()))
        case .int8: return .int8(try read(Int8.self, field()))
        case .uint16: return .uint16(try read(UInt16.self, field()))
        case .int16: return .int16(try read(Int16.self, field()))
        case .uint32: return .uint32(try read(UInt32.self, field()))
        case .int32: return .int32(try read(Int32.self, field()))
        case .uint64: return .uint64(try read(UInt64.self, field()))
        case .int64: return .int64(try read(Int64.self, field()))
        case .float32: return .float32(Float(bitPattern: try read(UInt32.self, field())))
        case .float64: return .float64(Double(bitPattern: try read(UInt64.self, field())))
        case .bool:
            let at = offset
            let b = try read(UInt8.self, field())
            guard b <= 1 else {
                throw GGUFError(path: path, offset: at, field: field(), message: "bool byte is \(b), expected 0 or 1")
            }
            return .bool(b == 1)
        case .string: return .string(try string(field()))
        case .array:
            let at = offset
            guard depth < 8 else {
                throw GGUFError(path: path, offset: at, field: field(), message: "arrays nested too deeply")
            }
            let rawType = try u32("\(field()).element_type")
            guard let elementType = GGUFValueType(rawValue: rawType) else {
                throw GGUFError(path: path, offset: at, field: "\(field()).element_type",
                                message: "unknown value type \(rawType)")
            }
            // Each element takes at least one byte, so a count above the remaining size is damage.
            let n = try count("\(field()).count", limit: bytes.count - offset)
            var values: [GGUFValue] = []
            values.reserveCapacity(n)
            for i in 0..<n {
                values.append(try value(elementType, field: elementType == .array ? "\(field())[\(i)]" : field(), depth: depth + 1))
            }
            return .array(elementType, values)
        }
    }
}
