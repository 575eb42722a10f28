#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// cuBLAS, loaded with dlopen: matrix products in bf16/f16 with f32 accumulation on the
/// context's stream. Matrices are column-major as cuBLAS sees them; `CUDABackend.linear`
/// maps sift's row-major weights onto that.
public final class CUBLAS: @unchecked Sendable {
    /// cudaDataType values.
    public enum DataType: Int32, Sendable {
        case f32 = 0
        case f16 = 2
        case bf16 = 14
    }

    public enum Op: Int32, Sendable {
        case n = 0
        case t = 1
    }

    typealias Handle = OpaquePointer
    let cublasCreate: @convention(c) (UnsafeMutablePointer<Handle?>) -> Int32
    let cublasDestroy: @convention(c) (Handle?) -> Int32
    let cublasSetStream: @convention(c) (Handle?, OpaquePointer?) -> Int32
    let cublasGetStatusName: (@convention(c) (Int32) -> UnsafePointer<CChar>?)?
    let cublasGemmEx: @convention(c) (Handle?, Int32, Int32, Int32, Int32, Int32,
                                      UnsafeRawPointer, UInt64, Int32, Int32, UInt64, Int32, Int32,
                                      UnsafeRawPointer, UInt64, Int32, Int32, Int32, Int32) -> Int32
    let cublasGemmStridedBatchedEx: @convention(c) (Handle?, Int32, Int32, Int32, Int32, Int32,
                                                    UnsafeRawPointer, UInt64, Int32, Int32, Int64,
                                                    UInt64, Int32, Int32, Int64,
                                                    UnsafeRawPointer, UInt64, Int32, Int32, Int64,
                                                    Int32, Int32, Int32) -> Int32

    let handle: Handle
    public let libraryPath: String
    unowned let context: CUDAContext

    static let computeF32: Int32 = 68      // CUBLAS_COMPUTE_32F
    static let gemmDefault: Int32 = -1     // CUBLAS_GEMM_DEFAULT

    /// cuBLAS bound to `context`'s stream. Search order: $SIFT_CUBLAS, libcublas.so.13/.12,
    /// NVIDIA's pip wheels (nvidia/cublas/lib, nvidia/cu13/lib), /usr/local/cuda.
    public init(context: CUDAContext) throws {
        self.context = context
        let h = try DynamicLibrary.open("cuBLAS (libcublas.so; `pip install nvidia-cublas` provides it)", env: "SIFT_CUBLAS",
                                        candidates: ["libcublas.so.13", "libcublas.so.12", "libcublas.so"]
                                            + DynamicLibrary.pipCandidates(prefix: "libcublas.so", packages: ["cublas"]))
        let lib = "libcublas"
        func s<T>(_ name: String, _ t: T.Type) throws -> T { try DynamicLibrary.symbol(h, name, library: lib, as: t) }
        cublasCreate = try s("cublasCreate_v2", type(of: cublasCreate))
        cublasDestroy = try s("cublasDestroy_v2", type(of: cublasDestroy))
        cublasSetStream = try s("cublasSetStream_v2", type(of: cublasSetStream))
        cublasGetStatusName = dlsym(h, "cublasGetStatusName").map { unsafeBitCast($0, to: (@convention(c) (Int32) -> UnsafePointer<CChar>?).self) }
        cublasGemmEx = try s("cublasGemmEx", type(of: cublasGemmEx))
        cublasGemmStridedBatchedEx = try s("cublasGemmStridedBatchedEx", type(of: cublasGemmStridedBatchedEx))
        libraryPath = DynamicLibrary.path(of: unsafeBitCast(cublasGemmEx, to: UnsafeRawPointer.self)) ?? lib
        try context.makeCurrent()
        var hd: Handle?
        let st = cublasCreate(&hd)
        guard st == 0, let hd else { throw CUDAError.call("cublasCreate_v2", code: st, name: CUBLAS.fallbackName(st)) }
        handle = hd
        try check(cublasSetStream(handle, context.stream), "cublasSetStream_v2")
    }

    deinit { _ = cublasDestroy(handle) }

    static func fallbackName(_ s: Int32) -> String {
        switch s {
        case 1: return "CUBLAS_STATUS_NOT_INITIALIZED"
        case 3: return "CUBLAS_STATUS_ALLOC_FAILED"
        case 7: return "CUBLAS_STATUS_INVALID_VALUE"
        case 8: return "CUBLAS_STATUS_ARCH_MISMATCH"
        case 11: return "CUBLAS_STATUS_MAPPING_ERROR"
        case 13: return "CUBLAS_STATUS_EXECUTION_FAILED"
        case 14: return "CUBLAS_STATUS_INTERNAL_ERROR"
        case 15: return "CUBLAS_STATUS_NOT_SUPPORTED"
        default: return "cuBLAS status \(s)"
        }
    }

    func check(_ status: Int32, _ f: @autoclosure () -> String) throws {
        guard status != 0 else { return }
        let name = cublasGetStatusName?(status).map { String(cString: $0) } ?? CUBLAS.fallbackName(status)
        throw CUDAError.call(f(), code: status, name: name)
    }

    /// C = alpha · op(A) · op(B) + beta · C, column-major: op(A) is m×k, op(B) k×n, C m×n.
    /// A and B have type `ab`, C type `c`; accumulation is f32.
    public func gemm(_ opA: Op, _ opB: Op, m: Int, n: Int, k: Int,
                     alpha: Float = 1, a: CUdeviceptr, lda: Int, b: CUdeviceptr, ldb: Int,
                     beta: Float = 0, c: CUdeviceptr, ldc: Int, ab: DataType = .bf16, cType: DataType = .f32) throws {
        var al = alpha, be = beta
        let t0 = context.profileHost ? CUDAContext.hostNow() : 0
        defer { if context.profileHost { context.hostStats.blasCalls += 1; context.hostStats.blasSeconds += CUDAContext.hostNow() - t0 } }
        try check(cublasGemmEx(handle, opA.rawValue, opB.rawValue, Int32(m), Int32(n), Int32(k), &al,
                               a, ab.rawValue, Int32(lda), b, ab.rawValue, Int32(ldb), &be,
                               c, cType.rawValue, Int32(ldc), CUBLAS.computeF32, CUBLAS.gemmDefault),
                  "cublasGemmEx(m \(m), n \(n), k \(k))")
    }

    /// `batch` independent products with matrices `stride*` elements apart.
    public func gemmStridedBatched(_ opA: Op, _ opB: Op, m: Int, n: Int, k: Int,
                                   alpha: Float = 1, a: CUdeviceptr, lda: Int, strideA: Int,
                                   b: CUdeviceptr, ldb: Int, strideB: Int,
                                   beta: Float = 0, c: CUdeviceptr, ldc: Int, strideC: Int, batch: Int,
                                   ab: DataType = .bf16, cType: DataType = .f32) throws {
        var al = alpha, be = beta
        let t0 = context.profileHost ? CUDAContext.hostNow() : 0
        defer { if context.profileHost { context.hostStats.blasCalls += 1; context.hostStats.blasSeconds += CUDAContext.hostNow() - t0 } }
        try check(cublasGemmStridedBatchedEx(handle, opA.rawValue, opB.rawValue, Int32(m), Int32(n), Int32(k), &al,
                                             a, ab.rawValue, Int32(lda), Int64(strideA),
                                             b, ab.rawValue, Int32(ldb), Int64(strideB), &be,
                                             c, cType.rawValue, Int32(ldc), Int64(strideC), Int32(batch),
                                             CUBLAS.computeF32, CUBLAS.gemmDefault),
                  "cublasGemmStridedBatchedEx(m \(m), n \(n), k \(k), batch \(batch))")
    }
}
