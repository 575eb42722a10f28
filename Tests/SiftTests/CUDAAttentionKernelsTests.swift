import XCTest
@testable import Sift

/// The host-side rules of the GPU attention kernels (no GPU needed): shape validation, the split
/// size heuristic (measured on an H100, docs/cuda-attention.md) and the embedded sources.
final class CUDAAttentionKernelsTests: XCTestCase {
    func testValidateAcceptsTheModelShapes() throws {
        for (h, kv, d) in [(32, 8, 128), (12, 2, 128), (14, 2, 64), (4, 1, 256), (8, 1, 128)] {
            XCTAssertNoThrow(try CUDAAttentionKernels.validate(heads: h, kvHeads: kv, headDim: d, pageSize: 64))
        }
    }

    func testValidateRejectsWithAClearError() {
        func message(_ h: Int, _ kv: Int, _ d: Int, _ p: Int) -> String {
            do { try CUDAAttentionKernels.validate(heads: h, kvHeads: kv, headDim: d, pageSize: p); return "" }
            catch { return "\(error)" }
        }
        XCTAssertTrue(message(32, 8, 96, 64).contains("head_dim"))
        XCTAssertTrue(message(32, 2, 128, 64).contains("query heads per KV head"))
        XCTAssertTrue(message(30, 8, 128, 64).contains("query heads per KV head"))
        XCTAssertTrue(message(32, 8, 128, 48).contains("power-of-two"))
    }

    /// The sweep's best split sizes on 132 SMs (each within 2% of the best measured).
    func testSplitTokensMatchesTheH100Sweep() {
        let cases: [(b: Int, kv: Int, l: Int, best: Int)] = [
            (1, 8, 32768, 1024), (1, 8, 65536, 2048), (1, 8, 131072, 4096), (8, 8, 32768, 8192),
            (32, 8, 8192, 8192), (4, 8, 4096, 512), (1, 2, 32768, 256), (8, 1, 32768, 1024)]
        for c in cases {
            XCTAssertEqual(CUDAAttentionKernels.splitTokens(batch: c.b, kvHeads: c.kv, length: c.l, multiprocessors: 132), c.best,
                           "B=\(c.b) KVH=\(c.kv) L=\(c.l)")
        }
        // Never below one unrolled warp chunk, always a power of two.
        for l in [1, 5, 63, 1000, 100_000] {
            let s = CUDAAttentionKernels.splitTokens(batch: 1, kvHeads: 8, length: l, multiprocessors: 132)
            XCTAssertGreaterThanOrEqual(s, 64)
            XCTAssertEqual(s & (s - 1), 0)
        }
    }

    func testKernelUnitsAreEmbedded() {
        let units = Set(KernelSources.units.map(\.name)), headers = Set(KernelSources.headers.map(\.name))
        XCTAssertTrue(units.isSuperset(of: ["decode_attention.cu", "double_sparsity.cu", "prefill_attention.cu"]))
        XCTAssertTrue(headers.isSuperset(of: ["attention_common.cuh", "decode_core.cuh"]))
        let decode = KernelSources.units.first { $0.name == "decode_attention.cu" }!.source
        for d in [64, 128, 256] { XCTAssertTrue(decode.contains("SIFT_DECODE_KERNELS(\(d))")) }
    }

    /// The Swift launcher sizes the prefill grid and shared memory from its own constants; they
    /// must match the tiles the kernel source instantiates (a mismatch reads past shared memory).
    func testPrefillLaunchShapeMatchesTheKernelSource() {
        let src = KernelSources.units.first { $0.name == "prefill_attention.cu" }!.source
        XCTAssertEqual(CUDAAttentionKernels.prefillThreads, 32 * 8)
        XCTAssertEqual(CUDAAttentionKernels.prefillRows, 16 * 8)
        XCTAssertTrue(src.contains("#define SIFT_PF_WARPS 8\n"))
        XCTAssertTrue(src.contains("#define SIFT_PF_KT128 64\n"))
        XCTAssertTrue(src.contains("SIFT_PREFILL_KERNEL(64, 64)"))
        XCTAssertTrue(src.contains("SIFT_PREFILL_KERNEL(128, SIFT_PF_KT128)"))
        XCTAssertTrue(src.contains("SIFT_PREFILL_KERNEL(256, 32)"))
        for (d, kt) in [(64, 64), (128, 64), (256, 32)] {
            XCTAssertEqual(CUDAAttentionKernels.prefillKeyTile(headDim: d), kt)
            // two stages of one K and one V tile of kt × d bf16
            XCTAssertEqual(CUDAAttentionKernels.prefillSharedBytes(headDim: d), 2 * 2 * kt * d * 2)
        }
        XCTAssertLessThanOrEqual(CUDAAttentionKernels.prefillSharedBytes(headDim: 256), 227 * 1024)   // sm_90 per-block limit
    }
}
