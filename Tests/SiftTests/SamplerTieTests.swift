import XCTest
@testable import Sift

/// The host side of GPU sampling: `Sampler.topIndices` keeps, among values tied at the cut,
/// the lowest indices (the rule the GPU top-k kernel follows), and a draw from the top-k
/// candidates equals the draw over the whole vocabulary.
final class SamplerTieTests: XCTestCase {
    func testTopIndicesKeepsLowestIdsAmongTies() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            let n = Int.random(in: 1...3000, using: &rng)
            // Few distinct values: many ties everywhere, including at the k-th place.
            let levels = Int.random(in: 1...12, using: &rng)
            let v = (0..<n).map { _ in Float(Int.random(in: 0..<levels, using: &rng)) * 0.5 - 2 }
            let k = Int.random(in: 1...min(64, n), using: &rng)
            let ref = Array((0..<n).sorted { v[$0] > v[$1] || (v[$0] == v[$1] && $0 < $1) }.prefix(k))
            XCTAssertEqual(Sampler.topIndices(v, k), ref, "n \(n) k \(k) levels \(levels)")
        }
    }

    func testDrawFromCandidatesEqualsFullDraw() {
        var rng = SystemRandomNumberGenerator()
        for trial in 0..<20 {
            let v = (0..<500).map { _ in Float.random(in: -6...6, using: &rng) }
            let params = SamplingParams(temperature: 0.7, topK: 40, topP: 0.9, minP: 0.03, seed: UInt64(trial))
            var a = Sampler(params), b = Sampler(params)
            let ids = Sampler.topIndices(v, 40)
            for _ in 0..<10 {
                XCTAssertEqual(a.sample(v), b.sample(candidates: ids.map { Int32($0) }, logits: ids.map { v[$0] }))
            }
        }
    }
}
