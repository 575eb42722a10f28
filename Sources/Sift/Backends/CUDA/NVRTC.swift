#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// NVIDIA's run-time compiler (libnvrtc), loaded with dlopen: compiles the embedded CUDA C
/// kernels to PTX or a cubin for the device's architecture. Needs no GPU, so CI compiles
/// every kernel with it (`sift kernels --check`). Results are cached per process.
public final class NVRTC: @unchecked Sendable {
    public enum Output: Sendable { case ptx, cubin }

    typealias Prog = OpaquePointer
    let nvrtcGetErrorString: @convention(c) (Int32) -> UnsafePointer<CChar>?
    let nvrtcVersion: @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Int32
    let nvrtcCreateProgram: @convention(c) (UnsafeMutablePointer<Prog?>, UnsafePointer<CChar>, UnsafePointer<CChar>?, Int32,
                                            UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    let nvrtcCompileProgram: @convention(c) (Prog?, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    let nvrtcDestroyProgram: @convention(c) (UnsafeMutablePointer<Prog?>) -> Int32
    let nvrtcGetProgramLogSize: @convention(c) (Prog?, UnsafeMutablePointer<Int>) -> Int32
    let nvrtcGetProgramLog: @convention(c) (Prog?, UnsafeMutablePointer<CChar>) -> Int32
    let nvrtcGetPTXSize: @convention(c) (Prog?, UnsafeMutablePointer<Int>) -> Int32
    let nvrtcGetPTX: @convention(c) (Prog?, UnsafeMutablePointer<CChar>) -> Int32
    let nvrtcGetCUBINSize: @convention(c) (Prog?, UnsafeMutablePointer<Int>) -> Int32
    let nvrtcGetCUBIN: @convention(c) (Prog?, UnsafeMutablePointer<CChar>) -> Int32

    /// The path of the loaded library (for messages).
    public let libraryPath: String
    private var cache: [String: [UInt8]] = [:]
    private let cacheLock: UnsafeMutablePointer<pthread_mutex_t> = .allocate(capacity: 1)

    nonisolated(unsafe) private static var loaded: Result<NVRTC, Error>?
    private static let lock: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()

    /// The process's NVRTC, loaded on first use. Search order: $SIFT_NVRTC, the loader's
    /// path (libnvrtc.so.13, .12, libnvrtc.so), then NVIDIA's pip wheels (sift's private
    /// ~/.cache/sift/nvrtc first, then Python site-packages), then /usr/local/cuda.
    public static func shared() throws -> NVRTC {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        if loaded == nil { loaded = Result { try NVRTC() } }
        return try loaded!.get()
    }

    static func candidates() -> [String] {
        ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
            + DynamicLibrary.pipCandidates(prefix: "libnvrtc.so", packages: ["cuda_nvrtc"])
    }

    private init() throws {
        let cands = NVRTC.candidates()
        let h = try DynamicLibrary.open("NVRTC (libnvrtc.so; `pip install nvidia-cuda-nvrtc` provides it)",
                                        env: "SIFT_NVRTC", candidates: cands)
        // Where it came from: the builtins library beside it must be loadable by soname, so
        // preload it from the same folder.
        var path = "libnvrtc"
        let lib = "libnvrtc"
        func s<T>(_ name: String, _ t: T.Type) throws -> T { try DynamicLibrary.symbol(h, name, library: lib, as: t) }
        nvrtcGetErrorString = try s("nvrtcGetErrorString", type(of: nvrtcGetErrorString))
        nvrtcVersion = try s("nvrtcVersion", type(of: nvrtcVersion))
        nvrtcCreateProgram = try s("nvrtcCreateProgram", type(of: nvrtcCreateProgram))
        nvrtcCompileProgram = try s("nvrtcCompileProgram", type(of: nvrtcCompileProgram))
        nvrtcDestroyProgram = try s("nvrtcDestroyProgram", type(of: nvrtcDestroyProgram))
        nvrtcGetProgramLogSize = try s("nvrtcGetProgramLogSize", type(of: nvrtcGetProgramLogSize))
        nvrtcGetProgramLog = try s("nvrtcGetProgramLog", type(of: nvrtcGetProgramLog))
        nvrtcGetPTXSize = try s("nvrtcGetPTXSize", type(of: nvrtcGetPTXSize))
        nvrtcGetPTX = try s("nvrtcGetPTX", type(of: nvrtcGetPTX))
        nvrtcGetCUBINSize = try s("nvrtcGetCUBINSize", type(of: nvrtcGetCUBINSize))
        nvrtcGetCUBIN = try s("nvrtcGetCUBIN", type(of: nvrtcGetCUBIN))
        if let f = DynamicLibrary.path(of: unsafeBitCast(nvrtcVersion, to: UnsafeRawPointer.self)) {
            path = f
            if let slash = path.lastIndex(of: "/") {
                let dir = String(path[..<slash])
                for b in DynamicLibrary.files(in: dir, prefix: "libnvrtc-builtins.so") { _ = dlopen(b, RTLD_NOW | RTLD_GLOBAL) }
            }
        }
        libraryPath = path
        pthread_mutex_init(cacheLock, nil)
    }

    /// (major, minor) of the loaded NVRTC.
    public var version: (Int, Int) {
        var a: Int32 = 0, b: Int32 = 0
        _ = nvrtcVersion(&a, &b)
        return (Int(a), Int(b))
    }

    private func check(_ status: Int32, _ f: String) throws {
        if status != 0 {
            let name = nvrtcGetErrorString(status).map { String(cString: $0) } ?? "NVRTC error"
            throw CUDAError.call(f, code: status, name: name)
        }
    }

    /// Compiles `source` for compute capability `arch` and returns PTX (NUL-terminated text)
    /// or a cubin. `headers` are (include name, text) pairs. Fails with the compiler's log.
    public func compile(source: String, name: String, headers: [(String, String)] = [],
                        arch: (major: Int, minor: Int), output: Output, extraOptions: [String] = []) throws -> [UInt8] {
        let cc = "\(arch.major)\(arch.minor)"
        let archOption = output == .ptx ? "--gpu-architecture=compute_\(cc)" : "--gpu-architecture=sm_\(cc)"
        let options = [archOption, "--std=c++17", "-default-device"] + extraOptions
        let key = "\(name)|\(options.joined(separator: " "))|\(source.hashValue)|\(headers.map { $0.1.hashValue })"
        pthread_mutex_lock(cacheLock)
        if let hit = cache[key] { pthread_mutex_unlock(cacheLock); return hit }
        pthread_mutex_unlock(cacheLock)

        var prog: Prog?
        let headerNames = headers.map { strdup($0.0) }
        let headerTexts = headers.map { strdup($0.1) }
        defer { (headerNames + headerTexts).forEach { free($0) } }
        let hn: [UnsafePointer<CChar>?] = headerNames.map { UnsafePointer($0) }
        let ht: [UnsafePointer<CChar>?] = headerTexts.map { UnsafePointer($0) }
        try ht.withUnsafeBufferPointer { texts in
            try hn.withUnsafeBufferPointer { names in
                try check(nvrtcCreateProgram(&prog, source, name, Int32(headers.count),
                                             headers.isEmpty ? nil : texts.baseAddress,
                                             headers.isEmpty ? nil : names.baseAddress), "nvrtcCreateProgram(\(name))")
            }
        }
        defer { _ = nvrtcDestroyProgram(&prog) }
        let cOptions = options.map { strdup($0) }
        defer { cOptions.forEach { free($0) } }
        let opts: [UnsafePointer<CChar>?] = cOptions.map { UnsafePointer($0) }
        let status = opts.withUnsafeBufferPointer { nvrtcCompileProgram(prog, Int32(options.count), $0.baseAddress) }
        if status != 0 {
            throw CUDAError.compile(name, options: options, log: log(prog))
        }
        var size = 0
        var image: [UInt8]
        switch output {
        case .ptx:
            try check(nvrtcGetPTXSize(prog, &size), "nvrtcGetPTXSize(\(name))")
            image = [UInt8](repeating: 0, count: size)
            try image.withUnsafeMutableBytes { try check(nvrtcGetPTX(prog, $0.baseAddress!.assumingMemoryBound(to: CChar.self)), "nvrtcGetPTX(\(name))") }
        case .cubin:
            try check(nvrtcGetCUBINSize(prog, &size), "nvrtcGetCUBINSize(\(name))")
            image = [UInt8](repeating: 0, count: size)
            try image.withUnsafeMutableBytes { try check(nvrtcGetCUBIN(prog, $0.baseAddress!.assumingMemoryBound(to: CChar.self)), "nvrtcGetCUBIN(\(name))") }
        }
        pthread_mutex_lock(cacheLock)
        cache[key] = image
        pthread_mutex_unlock(cacheLock)
        return image
    }

    private func log(_ prog: Prog?) -> String {
        var n = 0
        guard nvrtcGetProgramLogSize(prog, &n) == 0, n > 1 else { return "(no log)" }
        var buf = [CChar](repeating: 0, count: n + 1)
        _ = nvrtcGetProgramLog(prog, &buf)
        return String(cString: buf)
    }
}
