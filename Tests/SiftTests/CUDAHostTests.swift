import XCTest
@testable import Sift

/// The parts of the CUDA backend that run without a GPU (the GPU checks are
/// `sift selftest --device cuda`, run by scripts/device-test.sh on a GPU machine).
final class CUDAHostTests: XCTestCase {
    func testDeviceSpecParsing() throws {
        XCTAssertEqual(try DeviceSpec(parsing: "cpu"), .cpu)
        XCTAssertEqual(try DeviceSpec(parsing: "cuda"), .cuda(0))
        XCTAssertEqual(try DeviceSpec(parsing: "cuda:3"), .cuda(3))
        for bad in ["cuda:", "cuda:-1", "cuda:x", "gpu0", "", "CPU"] {
            XCTAssertThrowsError(try DeviceSpec(parsing: bad), "'\(bad)' should be rejected")
        }
    }

    /// bf16 rounding = the nearest of the two neighbouring bf16 values (ties to even),
    /// checked against a float64 computation on random and edge values.
    func testBF16RoundingIsNearestEven() {
        var rng = Xoshiro256(seed: UInt64.random(in: 1...UInt64.max))
        var values: [Float] = [0, -0, 1, -1, .infinity, -.infinity, .greatestFiniteMagnitude, .leastNonzeroMagnitude,
                               Float(bitPattern: 0x3f80_8000), Float(bitPattern: 0x3f81_8000), Float(bitPattern: 0x3f80_8001)]
        for _ in 0..<20_000 { values.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))) }
        for x in values where !x.isNaN {
            let b = bf16Bits(x)
            let lo = Float(bitPattern: x.bitPattern & 0xffff_0000)
            let hi = Float(bitPattern: (x.bitPattern & 0xffff_0000) &+ 0x1_0000)
            let got = Float(bitPattern: UInt32(b) << 16)
            var hiD = Double(hi)
            if hi.isInfinite {  // the next value past the largest bf16 (exponent unbounded, as IEEE rounds)
                hiD = Double(lo) + (Double(lo) - Double(Float(bitPattern: lo.bitPattern - 0x1_0000)))
            }
            let dLo = abs(Double(x) - Double(lo)), dHi = abs(Double(x) - hiD)
            let expected: Float
            if x.bitPattern & 0xffff == 0 { expected = x }
            else if dLo < dHi { expected = lo }
            else if dHi < dLo { expected = hi }
            else { expected = (lo.bitPattern >> 16) & 1 == 0 ? lo : hi }
            XCTAssertEqual(got.bitPattern, expected.bitPattern, "bf16(\(x))")
        }
        XCTAssertTrue(Float(bitPattern: UInt32(bf16Bits(.nan)) << 16).isNaN)
    }

    func testKernelSourcesAreEmbedded() {
        XCTAssertFalse(KernelSources.units.isEmpty)
        XCTAssertTrue(KernelSources.headers.contains { $0.name == "common.cuh" })
        // Every unit defines kernels, itself or through a header it includes (decode_attention.cu
        // instantiates the macros of decode_core.cuh).
        let entry = "extern \"C\" __global__"
        for u in KernelSources.units {
            let included = KernelSources.headers.filter { u.source.contains("#include \"\($0.name)\"") }
            XCTAssertTrue(u.source.contains(entry) || included.contains { $0.source.contains(entry) }, u.name)
        }
    }

    /// Without a GPU the backend fails with an error naming what is missing; with one it works.
    func testCUDABackendFailsCleanlyOrRuns() {
        do {
            let b = try CUDABackend(ordinal: 0, threads: 1)
            XCTAssertTrue(b.name.hasPrefix("cuda:0"))
        } catch let e as CUDAError {
            XCTAssertFalse(e.description.isEmpty)
        } catch {
            XCTFail("unexpected error type: \(error)")
        }
    }
}
