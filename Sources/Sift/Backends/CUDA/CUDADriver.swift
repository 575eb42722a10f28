#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The CUDA driver API, loaded at run time with dlopen: sift links no CUDA library at build
// time, so the same binary runs on machines without a GPU (where `--device cuda` fails with
// a clear message) and on GPU machines. Every call's status is checked and turned into a
// `CUDAError` naming the function and the CUDA error name.

/// A failure of the CUDA libraries or of their use.
public enum CUDAError: Error, CustomStringConvertible {
    /// A shared library could not be loaded: its role, the names and paths tried, dlerror.
    case libraryNotFound(String, tried: [String], detail: String)
    /// A symbol is missing from a loaded library.
    case missingSymbol(String, library: String)
    /// A call returned an error status: function, numeric status, status name.
    case call(String, code: Int32, name: String)
    /// NVRTC rejected a kernel source: program name, options, compiler log.
    case compile(String, options: [String], log: String)
    case invalid(String)

    public var description: String {
        switch self {
        case .libraryNotFound(let what, let tried, let detail):
            return "cannot load \(what) (tried \(tried.joined(separator: ", "))): \(detail)"
        case .missingSymbol(let s, let lib): return "\(lib) has no symbol \(s) (too old a CUDA version?)"
        case .call(let f, let code, let name): return "\(f) failed: \(name) (\(code))"
        case .compile(let prog, let options, let log):
            return "NVRTC could not compile \(prog) (options \(options.joined(separator: " "))):\n\(log)"
        case .invalid(let s): return s
        }
    }
}

/// dlopen helpers shared by the driver, NVRTC and cuBLAS loaders.
enum DynamicLibrary {
    /// Opens the first of `candidates` that loads (names go through the loader's search path,
    /// absolute paths are opened as they are). `env` names a variable holding an explicit path.
    static func open(_ what: String, env: String, candidates: [String]) throws -> UnsafeMutableRawPointer {
        var tried: [String] = []
        var lastError = "not found"
        var list = candidates
        if let p = FS.env(env) { list.insert(p, at: 0) }
        for name in list {
            if name.hasPrefix("/") && !FS.exists(name) { continue }
            tried.append(name)
            if let h = dlopen(name, RTLD_NOW | RTLD_GLOBAL) { return h }
            if let e = dlerror() { lastError = String(cString: e) }
        }
        if tried.isEmpty { tried = candidates.filter { !$0.hasPrefix("/") } }
        throw CUDAError.libraryNotFound(what + " (set \(env) to its path)", tried: tried, detail: lastError)
    }

    static func symbol<T>(_ handle: UnsafeMutableRawPointer, _ name: String, library: String, as: T.Type) throws -> T {
        guard let p = dlsym(handle, name) else { throw CUDAError.missingSymbol(name, library: library) }
        return unsafeBitCast(p, to: T.self)
    }

    /// The file a loaded function comes from (dladdr, looked up at run time since Glibc's
    /// Swift module does not export it).
    static func path(of function: UnsafeRawPointer) -> String? {
        typealias DLAddr = @convention(c) (UnsafeRawPointer, UnsafeMutableRawPointer) -> Int32
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "dladdr") else { return nil }
        let dladdr = unsafeBitCast(sym, to: DLAddr.self)
        // Dl_info: dli_fname, dli_fbase, dli_sname, dli_saddr.
        var info: (UnsafePointer<CChar>?, UnsafeRawPointer?, UnsafePointer<CChar>?, UnsafeRawPointer?) = (nil, nil, nil, nil)
        let ok = withUnsafeMutableBytes(of: &info) { dladdr(function, $0.baseAddress!) }
        guard ok != 0, let name = info.0 else { return nil }
        return String(cString: name)
    }

    /// Site-packages folders where pip puts NVIDIA's wheels: sift's private folder
    /// (`~/.cache/sift/nvrtc`, see scripts/check-kernels.sh), then Python installs.
    static func pipRoots() -> [String] {
        var roots = [FS.homeDirectory() + "/.cache/sift/nvrtc"]
        for prefix in ["/opt/torch/.venv/lib", "/usr/local/lib", "/usr/lib", FS.homeDirectory() + "/.local/lib"] {
            for py in ["python3.14", "python3.13", "python3.12", "python3.11", "python3.10"] {
                roots.append("\(prefix)/\(py)/site-packages")
                roots.append("\(prefix)/\(py)/dist-packages")
            }
        }
        return roots.filter { FS.isDirectory($0) }
    }

    /// Files in `dir` whose names start with `prefix`, newest-looking (longest name) first.
    static func files(in dir: String, prefix: String) -> [String] {
        guard let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        var out: [String] = []
        while let e = readdir(d) {
            let name = withUnsafePointer(to: e.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name.hasPrefix(prefix) { out.append(dir + "/" + name) }
        }
        return out.sorted { $0.count != $1.count ? $0.count > $1.count : $0 > $1 }
    }

    /// Candidate paths of a library shipped in NVIDIA's pip wheels (`nvidia/<pkg>/lib`, and
    /// `nvidia/cu13/lib` for CUDA 13 wheels), for each site-packages folder.
    static func pipCandidates(prefix: String, packages: [String]) -> [String] {
        var out: [String] = []
        for root in pipRoots() {
            for pkg in packages + ["cu13", "cu12"] {
                out += files(in: "\(root)/nvidia/\(pkg)/lib", prefix: prefix)
            }
        }
        for dir in ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"] {
            out += files(in: dir, prefix: prefix)
        }
        return out
    }
}

public typealias CUdeviceptr = UInt64

/// The CUDA driver API functions sift uses, resolved from libcuda.so.1.
public final class CUDADriver: @unchecked Sendable {
    typealias Ptr = UnsafeMutableRawPointer
    typealias OPtr = OpaquePointer

    let cuGetErrorName: @convention(c) (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Int32
    let cuInit: @convention(c) (UInt32) -> Int32
    let cuDriverGetVersion: @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
    let cuDeviceGetCount: @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
    let cuDeviceGet: @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Int32
    let cuDeviceGetName: @convention(c) (UnsafeMutablePointer<CChar>, Int32, Int32) -> Int32
    let cuDeviceGetAttribute: @convention(c) (UnsafeMutablePointer<Int32>, Int32, Int32) -> Int32
    let cuDevicePrimaryCtxRetain: @convention(c) (UnsafeMutablePointer<OPtr?>, Int32) -> Int32
    let cuCtxSetCurrent: @convention(c) (OPtr?) -> Int32
    let cuCtxSynchronize: @convention(c) () -> Int32
    let cuMemAlloc: @convention(c) (UnsafeMutablePointer<CUdeviceptr>, Int) -> Int32
    let cuMemFree: @convention(c) (CUdeviceptr) -> Int32
    let cuMemAllocHost: @convention(c) (UnsafeMutablePointer<Ptr?>, Int) -> Int32
    let cuMemFreeHost: @convention(c) (Ptr?) -> Int32
    let cuMemGetInfo: @convention(c) (UnsafeMutablePointer<Int>, UnsafeMutablePointer<Int>) -> Int32
    let cuMemcpyHtoDAsync: @convention(c) (CUdeviceptr, UnsafeRawPointer?, Int, OPtr?) -> Int32
    let cuMemcpyDtoHAsync: @convention(c) (Ptr?, CUdeviceptr, Int, OPtr?) -> Int32
    let cuMemcpyDtoDAsync: @convention(c) (CUdeviceptr, CUdeviceptr, Int, OPtr?) -> Int32
    let cuMemsetD8Async: @convention(c) (CUdeviceptr, UInt8, Int, OPtr?) -> Int32
    let cuMemsetD32Async: @convention(c) (CUdeviceptr, UInt32, Int, OPtr?) -> Int32
    let cuStreamCreate: @convention(c) (UnsafeMutablePointer<OPtr?>, UInt32) -> Int32
    let cuStreamDestroy: @convention(c) (OPtr?) -> Int32
    let cuStreamSynchronize: @convention(c) (OPtr?) -> Int32
    let cuEventCreate: @convention(c) (UnsafeMutablePointer<OPtr?>, UInt32) -> Int32
    let cuEventRecord: @convention(c) (OPtr?, OPtr?) -> Int32
    let cuEventSynchronize: @convention(c) (OPtr?) -> Int32
    let cuEventElapsedTime: @convention(c) (UnsafeMutablePointer<Float>, OPtr?, OPtr?) -> Int32
    let cuEventDestroy: @convention(c) (OPtr?) -> Int32
    let cuModuleLoadData: @convention(c) (UnsafeMutablePointer<OPtr?>, UnsafeRawPointer) -> Int32
    let cuModuleGetFunction: @convention(c) (UnsafeMutablePointer<OPtr?>, OPtr?, UnsafePointer<CChar>) -> Int32
    let cuModuleUnload: @convention(c) (OPtr?) -> Int32
    let cuFuncSetAttribute: @convention(c) (OPtr?, Int32, Int32) -> Int32
    let cuLaunchKernel: @convention(c) (OPtr?, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, OPtr?,
                                        UnsafeMutablePointer<Ptr?>?, UnsafeMutablePointer<Ptr?>?) -> Int32
    /// cuLaunchKernelEx (CUDA 12+; nil on older drivers): a launch with attributes, here only
    /// programmatic dependent launch. Its config is a CUlaunchConfig (see `CUDAContext.launch`).
    let cuLaunchKernelEx: (@convention(c) (UnsafeRawPointer, OPtr?, UnsafeMutablePointer<Ptr?>?,
                                           UnsafeMutablePointer<Ptr?>?) -> Int32)?

    nonisolated(unsafe) private static var loaded: Result<CUDADriver, Error>?
    private static let lock: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()

    /// The process's driver, loaded and initialised (cuInit) on first use.
    public static func shared() throws -> CUDADriver {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        if loaded == nil { loaded = Result { try CUDADriver() } }
        return try loaded!.get()
    }

    private init() throws {
        let lib = "libcuda.so.1"
        let h = try DynamicLibrary.open(
            "the CUDA driver libcuda.so.1 (is an NVIDIA GPU and driver installed?)", env: "SIFT_CUDA_LIB",
            candidates: ["libcuda.so.1", "libcuda.so", "/usr/local/nvidia/lib64/libcuda.so.1",
                         "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1",
                         "/usr/lib/wsl/lib/libcuda.so.1"])
        func s<T>(_ name: String, _ t: T.Type) throws -> T { try DynamicLibrary.symbol(h, name, library: lib, as: t) }
        cuGetErrorName = try s("cuGetErrorName", type(of: cuGetErrorName))
        cuInit = try s("cuInit", type(of: cuInit))
        cuDriverGetVersion = try s("cuDriverGetVersion", type(of: cuDriverGetVersion))
        cuDeviceGetCount = try s("cuDeviceGetCount", type(of: cuDeviceGetCount))
        cuDeviceGet = try s("cuDeviceGet", type(of: cuDeviceGet))
        cuDeviceGetName = try s("cuDeviceGetName", type(of: cuDeviceGetName))
        cuDeviceGetAttribute = try s("cuDeviceGetAttribute", type(of: cuDeviceGetAttribute))
        cuDevicePrimaryCtxRetain = try s("cuDevicePrimaryCtxRetain", type(of: cuDevicePrimaryCtxRetain))
        cuCtxSetCurrent = try s("cuCtxSetCurrent", type(of: cuCtxSetCurrent))
        cuCtxSynchronize = try s("cuCtxSynchronize", type(of: cuCtxSynchronize))
        cuMemAlloc = try s("cuMemAlloc_v2", type(of: cuMemAlloc))
        cuMemFree = try s("cuMemFree_v2", type(of: cuMemFree))
        cuMemAllocHost = try s("cuMemAllocHost_v2", type(of: cuMemAllocHost))
        cuMemFreeHost = try s("cuMemFreeHost", type(of: cuMemFreeHost))
        cuMemGetInfo = try s("cuMemGetInfo_v2", type(of: cuMemGetInfo))
        cuMemcpyHtoDAsync = try s("cuMemcpyHtoDAsync_v2", type(of: cuMemcpyHtoDAsync))
        cuMemcpyDtoHAsync = try s("cuMemcpyDtoHAsync_v2", type(of: cuMemcpyDtoHAsync))
        cuMemcpyDtoDAsync = try s("cuMemcpyDtoDAsync_v2", type(of: cuMemcpyDtoDAsync))
        cuMemsetD8Async = try s("cuMemsetD8Async", type(of: cuMemsetD8Async))
        cuMemsetD32Async = try s("cuMemsetD32Async", type(of: cuMemsetD32Async))
        cuStreamCreate = try s("cuStreamCreate", type(of: cuStreamCreate))
        cuStreamDestroy = try s("cuStreamDestroy_v2", type(of: cuStreamDestroy))
        cuStreamSynchronize = try s("cuStreamSynchronize", type(of: cuStreamSynchronize))
        cuEventCreate = try s("cuEventCreate", type(of: cuEventCreate))
        cuEventRecord = try s("cuEventRecord", type(of: cuEventRecord))
        cuEventSynchronize = try s("cuEventSynchronize", type(of: cuEventSynchronize))
        cuEventElapsedTime = try CUDADriver.symbol("cuEventElapsedTime_v2", type(of: cuEventElapsedTime), fallback: "cuEventElapsedTime", h, lib)
        cuEventDestroy = try s("cuEventDestroy_v2", type(of: cuEventDestroy))
        cuModuleLoadData = try s("cuModuleLoadData", type(of: cuModuleLoadData))
        cuModuleGetFunction = try s("cuModuleGetFunction", type(of: cuModuleGetFunction))
        cuModuleUnload = try s("cuModuleUnload", type(of: cuModuleUnload))
        cuFuncSetAttribute = try s("cuFuncSetAttribute", type(of: cuFuncSetAttribute))
        cuLaunchKernel = try s("cuLaunchKernel", type(of: cuLaunchKernel))
        cuLaunchKernelEx = dlsym(h, "cuLaunchKernelEx").map {
            unsafeBitCast($0, to: (@convention(c) (UnsafeRawPointer, OPtr?, UnsafeMutablePointer<Ptr?>?,
                                                   UnsafeMutablePointer<Ptr?>?) -> Int32).self)
        }
        try check(cuInit(0), "cuInit")
    }

    private static func symbol<T>(_ name: String, _ t: T.Type, fallback: String, _ h: UnsafeMutableRawPointer, _ lib: String) throws -> T {
        if let p = dlsym(h, name) { return unsafeBitCast(p, to: T.self) }
        return try DynamicLibrary.symbol(h, fallback, library: lib, as: t)
    }

    /// The CUDA name of a status (CUDA_ERROR_OUT_OF_MEMORY, …).
    public func errorName(_ code: Int32) -> String {
        var p: UnsafePointer<CChar>?
        if cuGetErrorName(code, &p) == 0, let p { return String(cString: p) }
        return "CUDA error \(code)"
    }

    /// Throws `CUDAError.call` unless `status` is CUDA_SUCCESS.
    @inline(__always)
    public func check(_ status: Int32, _ function: @autoclosure () -> String) throws {
        if status != 0 { throw CUDAError.call(function(), code: status, name: errorName(status)) }
    }

    public var driverVersion: Int {
        var v: Int32 = 0
        _ = cuDriverGetVersion(&v)
        return Int(v)
    }

    public func deviceCount() throws -> Int {
        var n: Int32 = 0
        try check(cuDeviceGetCount(&n), "cuDeviceGetCount")
        return Int(n)
    }
}

/// A device memory allocation, freed when released.
public final class DeviceBuffer: @unchecked Sendable {
    public let address: CUdeviceptr
    public let bytes: Int
    unowned let context: CUDAContext

    init(context: CUDAContext, bytes: Int) throws {
        self.context = context
        self.bytes = bytes
        var p: CUdeviceptr = 0
        let d = context.driver
        let status = d.cuMemAlloc(&p, max(bytes, 1))
        if status != 0 {
            let (free, total) = (try? context.memoryInfo()) ?? (0, 0)
            throw CUDAError.call("cuMemAlloc(\(bytes) bytes; \(free >> 20) MiB free of \(total >> 20) MiB)",
                                 code: status, name: d.errorName(status))
        }
        address = p
    }

    deinit { _ = context.driver.cuMemFree(address) }

    /// The address as a raw pointer (for `Tensor.pointer`); never dereference it on the host.
    public var pointer: UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: UInt(address))! }
}

/// A loaded module (compiled kernels) and its functions by name.
public final class CUDAModule: @unchecked Sendable {
    let handle: OpaquePointer
    unowned let context: CUDAContext
    private var functions: [String: OpaquePointer] = [:]

    init(context: CUDAContext, image: [UInt8]) throws {
        self.context = context
        var m: OpaquePointer?
        try image.withUnsafeBytes { raw in
            try context.driver.check(context.driver.cuModuleLoadData(&m, raw.baseAddress!), "cuModuleLoadData")
        }
        handle = m!
    }

    deinit { _ = context.driver.cuModuleUnload(handle) }

    /// The `extern "C" __global__` function `name`.
    public func function(_ name: String) throws -> CUDAFunction {
        if let f = functions[name] { return CUDAFunction(handle: f, name: name) }
        var f: OpaquePointer?
        try context.driver.check(context.driver.cuModuleGetFunction(&f, handle, name), "cuModuleGetFunction(\(name))")
        functions[name] = f!
        return CUDAFunction(handle: f!, name: name)
    }
}

public struct CUDAFunction: @unchecked Sendable {
    let handle: OpaquePointer
    public let name: String
}

/// One kernel argument, passed by value.
public enum KernelArg {
    case pointer(CUdeviceptr)
    case int32(Int32)
    case uint32(UInt32)
    case int64(Int64)
    case float(Float)

    public static func ptr(_ b: DeviceBuffer, offset: Int = 0) -> KernelArg { .pointer(b.address + UInt64(offset)) }
    public static func ptr(_ p: UnsafeMutableRawPointer) -> KernelArg { .pointer(CUdeviceptr(UInt(bitPattern: p))) }
    public static func int(_ v: Int) -> KernelArg { .int32(Int32(truncatingIfNeeded: v)) }
}

/// A GPU event (timing).
public final class CUDAEvent: @unchecked Sendable {
    let handle: OpaquePointer
    unowned let context: CUDAContext
    init(context: CUDAContext) throws {
        self.context = context
        var e: OpaquePointer?
        try context.driver.check(context.driver.cuEventCreate(&e, 0), "cuEventCreate")
        handle = e!
    }
    deinit { _ = context.driver.cuEventDestroy(handle) }

    /// Records the event on the context's stream.
    public func record() throws { try context.driver.check(context.driver.cuEventRecord(handle, context.stream), "cuEventRecord") }
    /// Milliseconds from `start` to this event (waits for this event).
    public func elapsed(since start: CUDAEvent) throws -> Double {
        let d = context.driver
        try d.check(d.cuEventSynchronize(handle), "cuEventSynchronize")
        var ms: Float = 0
        try d.check(d.cuEventElapsedTime(&ms, start.handle, handle), "cuEventElapsedTime")
        return Double(ms)
    }
}

/// One GPU: its primary context and one stream on which sift issues all work (kernels,
/// copies, cuBLAS) in order. Kernel modules compiled from source are cached per process.
public final class CUDAContext: @unchecked Sendable {
    public let driver: CUDADriver
    public let ordinal: Int
    public let deviceName: String
    /// Compute capability (major, minor), e.g. (9, 0) for the H100.
    public let computeCapability: (major: Int, minor: Int)
    public let multiprocessors: Int
    let device: Int32
    let context: OpaquePointer
    public let stream: OpaquePointer
    private var modules: [String: CUDAModule] = [:]
    /// Programmatic dependent launch (sm_90+, CUDA 12 driver): launches made with
    /// `dependent: true` may start while the kernel before them on the stream finishes, so their
    /// launch and block start-up overlap its tail. Only kernels that begin with `sift_pdl_entry()`
    /// (attention_common.cuh: wait for the previous grid, then let the next one launch) may be launched so.
    /// On by default where supported; `SIFT_PDL=0` turns it off, as does setting this to false
    /// (benchmarks compare both in one run).
    public var programmaticLaunch = false
    public var supportsProgrammaticLaunch: Bool { computeCapability.major >= 9 && driver.cuLaunchKernelEx != nil }

    /// Host-side cost of issuing work (`sift bench --host-time`): while `profileHost` is on,
    /// `launch` and cuBLAS calls are counted and the host time spent inside them summed.
    public var profileHost = false
    public var hostStats = HostStats()
    public struct HostStats: Sendable {
        public var launches = 0, launchSeconds = 0.0, blasCalls = 0, blasSeconds = 0.0
        public init() {}
    }
    /// Monotonic seconds (for `hostStats`).
    static func hostNow() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + 1e-9 * Double(t.tv_nsec)
    }

    nonisolated(unsafe) private static var opened: [Int: CUDAContext] = [:]

    /// The context of GPU `ordinal` (shared within the process).
    public static func open(ordinal: Int = 0) throws -> CUDAContext {
        if let c = opened[ordinal] { return c }
        let c = try CUDAContext(ordinal: ordinal)
        opened[ordinal] = c
        return c
    }

    private init(ordinal: Int) throws {
        driver = try CUDADriver.shared()
        let d = driver
        let count = try d.deviceCount()
        guard ordinal >= 0 && ordinal < count else {
            throw CUDAError.invalid("no CUDA device \(ordinal): this machine has \(count) (cuda:0…cuda:\(max(0, count - 1)))")
        }
        self.ordinal = ordinal
        var dev: Int32 = 0
        try d.check(d.cuDeviceGet(&dev, Int32(ordinal)), "cuDeviceGet")
        device = dev
        var name = [CChar](repeating: 0, count: 256)
        try d.check(d.cuDeviceGetName(&name, 255, dev), "cuDeviceGetName")
        deviceName = String(cString: name)
        func attr(_ a: Int32) throws -> Int {
            var v: Int32 = 0
            try d.check(d.cuDeviceGetAttribute(&v, a, dev), "cuDeviceGetAttribute(\(a))")
            return Int(v)
        }
        computeCapability = (try attr(75), try attr(76))
        multiprocessors = try attr(16)
        var ctx: OpaquePointer?
        try d.check(d.cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain")
        context = ctx!
        try d.check(d.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        var s: OpaquePointer?
        try d.check(d.cuStreamCreate(&s, 0), "cuStreamCreate")
        stream = s!
        programmaticLaunch = supportsProgrammaticLaunch && getenv("SIFT_PDL").map { String(cString: $0) != "0" } ?? true
    }

    /// Makes this context current on the calling thread.
    public func makeCurrent() throws { try driver.check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent") }

    /// (free, total) bytes of device memory.
    public func memoryInfo() throws -> (free: Int, total: Int) {
        var f = 0, t = 0
        try driver.check(driver.cuMemGetInfo(&f, &t), "cuMemGetInfo")
        return (f, t)
    }

    public func allocate(bytes: Int) throws -> DeviceBuffer { try DeviceBuffer(context: self, bytes: bytes) }

    /// Copies host bytes to the device (ordered on the stream; the source may be reused on return).
    public func upload(_ src: UnsafeRawPointer, to dst: CUdeviceptr, bytes: Int) throws {
        guard bytes > 0 else { return }
        try driver.check(driver.cuMemcpyHtoDAsync(dst, src, bytes, stream), "cuMemcpyHtoDAsync(\(bytes) bytes)")
    }

    public func upload<T>(_ array: [T], to dst: CUdeviceptr) throws {
        try array.withUnsafeBytes { try upload($0.baseAddress!, to: dst, bytes: $0.count) }
    }

    /// Copies device bytes to the host and waits for them.
    public func download(_ src: CUdeviceptr, to dst: UnsafeMutableRawPointer, bytes: Int) throws {
        guard bytes > 0 else { return }
        try driver.check(driver.cuMemcpyDtoHAsync(dst, src, bytes, stream), "cuMemcpyDtoHAsync(\(bytes) bytes)")
        try synchronize()
    }

    public func download<T>(_ src: CUdeviceptr, count: Int, as: T.Type) throws -> [T] {
        try [T](unsafeUninitializedCapacity: count) { buf, n in
            try download(src, to: UnsafeMutableRawPointer(buf.baseAddress!), bytes: count * MemoryLayout<T>.stride)
            n = count
        }
    }

    public func copy(_ src: CUdeviceptr, to dst: CUdeviceptr, bytes: Int) throws {
        guard bytes > 0 else { return }
        try driver.check(driver.cuMemcpyDtoDAsync(dst, src, bytes, stream), "cuMemcpyDtoDAsync(\(bytes) bytes)")
    }

    public func memset(_ dst: CUdeviceptr, byte: UInt8, bytes: Int) throws {
        guard bytes > 0 else { return }
        try driver.check(driver.cuMemsetD8Async(dst, byte, bytes, stream), "cuMemsetD8Async")
    }

    /// Fills `count` 32-bit words with `word`.
    public func memset32(_ dst: CUdeviceptr, word: UInt32, count: Int) throws {
        guard count > 0 else { return }
        try driver.check(driver.cuMemsetD32Async(dst, word, count, stream), "cuMemsetD32Async")
    }

    /// Waits for all work issued on the stream.
    public func synchronize() throws { try driver.check(driver.cuStreamSynchronize(stream), "cuStreamSynchronize") }

    public func makeEvent() throws -> CUDAEvent { try CUDAEvent(context: self) }

    /// Loads a compiled image (PTX text with a trailing NUL, or a cubin).
    public func loadModule(image: [UInt8]) throws -> CUDAModule { try CUDAModule(context: self, image: image) }

    /// The module compiled from `source` by NVRTC for this device (cached per process by name).
    /// `headers` are (include name, source) pairs the source may `#include "name"`.
    public func module(named name: String, source: String, headers: [(String, String)] = []) throws -> CUDAModule {
        if let m = modules[name] { return m }
        let image = try NVRTC.shared().compile(source: source, name: name, headers: headers,
                                                arch: computeCapability, output: .cubin)
        let m = try loadModule(image: image)
        modules[name] = m
        return m
    }

    /// Launches `function` on the stream. Grid and block are (x, y, z); `sharedBytes` of
    /// dynamic shared memory (above 48 KiB the function's limit is raised first).
    /// `dependent`: launch with programmatic dependent launch when `programmaticLaunch` is on
    /// (the kernel must start with `sift_pdl_entry()`).
    public func launch(_ function: CUDAFunction, grid: (Int, Int, Int), block: (Int, Int, Int),
                       sharedBytes: Int = 0, dependent: Bool = false, _ args: [KernelArg]) throws {
        let t0 = profileHost ? Self.hostNow() : 0
        defer { if profileHost { hostStats.launches += 1; hostStats.launchSeconds += Self.hostNow() - t0 } }
        if sharedBytes > 48 * 1024 {
            // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
            try driver.check(driver.cuFuncSetAttribute(function.handle, 8, Int32(sharedBytes)),
                             "cuFuncSetAttribute(\(function.name), max dynamic shared \(sharedBytes))")
        }
        guard grid.0 > 0 && grid.1 > 0 && grid.2 > 0 else { return }
        try withUnsafeTemporaryAllocation(of: UInt64.self, capacity: max(1, args.count)) { slots in
            try withUnsafeTemporaryAllocation(of: UnsafeMutableRawPointer?.self, capacity: max(1, args.count)) { params in
                let base = UnsafeMutableRawPointer(slots.baseAddress!)
                for (i, a) in args.enumerated() {
                    let p = base + 8 * i
                    switch a {
                    case .pointer(let v): p.storeBytes(of: v, as: UInt64.self)
                    case .int32(let v): p.storeBytes(of: v, as: Int32.self)
                    case .uint32(let v): p.storeBytes(of: v, as: UInt32.self)
                    case .int64(let v): p.storeBytes(of: v, as: Int64.self)
                    case .float(let v): p.storeBytes(of: v, as: Float.self)
                    }
                    params[i] = p
                }
                if dependent && programmaticLaunch, let ex = driver.cuLaunchKernelEx {
                    try driver.check(Self.withDependentLaunchConfig(grid: grid, block: block, sharedBytes: sharedBytes, stream: stream) {
                        ex($0, function.handle, params.baseAddress, nil)
                    }, "cuLaunchKernelEx(\(function.name), grid \(grid), block \(block), programmatic)")
                } else {
                    try driver.check(driver.cuLaunchKernel(function.handle, UInt32(grid.0), UInt32(grid.1), UInt32(grid.2),
                                                           UInt32(block.0), UInt32(block.1), UInt32(block.2),
                                                           UInt32(sharedBytes), stream, params.baseAddress, nil),
                                     "cuLaunchKernel(\(function.name), grid \(grid), block \(block))")
                }
            }
        }
    }
    /// A CUlaunchConfig (cuda.h: seven UInt32 dims and shared bytes, the stream at offset 32,
    /// the attribute array at 40, their count at 48; 56 bytes) with one CUlaunchAttribute
    /// (id UInt32 + 4 bytes of padding, then a 64-byte value union; 72 bytes):
    /// CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION (6) with value 1.
    private static func withDependentLaunchConfig(grid: (Int, Int, Int), block: (Int, Int, Int), sharedBytes: Int,
                                                  stream: OpaquePointer, _ body: (UnsafeRawPointer) -> Int32) -> Int32 {
        withUnsafeTemporaryAllocation(byteCount: 72, alignment: 8) { attr in
            withUnsafeTemporaryAllocation(byteCount: 56, alignment: 8) { config in
                let a = attr.baseAddress!, c = config.baseAddress!
                a.initializeMemory(as: UInt8.self, repeating: 0, count: 72)
                c.initializeMemory(as: UInt8.self, repeating: 0, count: 56)
                a.storeBytes(of: 6, as: UInt32.self)
                a.storeBytes(of: 1, toByteOffset: 8, as: Int32.self)
                c.storeBytes(of: UInt32(grid.0), toByteOffset: 0, as: UInt32.self)
                c.storeBytes(of: UInt32(grid.1), toByteOffset: 4, as: UInt32.self)
                c.storeBytes(of: UInt32(grid.2), toByteOffset: 8, as: UInt32.self)
                c.storeBytes(of: UInt32(block.0), toByteOffset: 12, as: UInt32.self)
                c.storeBytes(of: UInt32(block.1), toByteOffset: 16, as: UInt32.self)
                c.storeBytes(of: UInt32(block.2), toByteOffset: 20, as: UInt32.self)
                c.storeBytes(of: UInt32(sharedBytes), toByteOffset: 24, as: UInt32.self)
                c.storeBytes(of: UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(stream))), toByteOffset: 32, as: UInt.self)
                c.storeBytes(of: UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(a))), toByteOffset: 40, as: UInt.self)
                c.storeBytes(of: 1, toByteOffset: 48, as: UInt32.self)
                return body(UnsafeRawPointer(c))
            }
        }
    }

}
