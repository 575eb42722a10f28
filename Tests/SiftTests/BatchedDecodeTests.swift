import XCTest
@testable import Sift

/// Batched decode (`BatchSession`, `BatchedDecodeAttention`) on the CPU: one forward pass of B
/// rows must give each sequence what its own single-sequence decode gives; and the batched
/// dense attention call against a float64 softmax over each sequence's f16 cache.
final class BatchedDecodeTests: XCTestCase {
    /// 3 sequences of different lengths (one past Gemma's sliding window), random tiny models:
    /// prefill each alone, then 4 decode steps of all 3 in one pass, each compared with a
    /// separate `Session` fed the same tokens.
    func testBatchedDecodeMatchesSeparateSessions() throws {
        var rng = Xoshiro256(seed: UInt64.random(in: 0...UInt64.max))
        for arch in ["qwen2", "gemma3"] {
            let file = try CUDASelfTest.syntheticModel(arch: arch, seed: rng.next())
            let model = try Architectures.load(file, backend: CPUBackend(threads: 2), maxBatch: 16)
            let lengths = [5, 23, 47]
            let steps = 4
            let batch = try BatchSession(model: model, sequences: 3, contextLength: 64)
            var singles: [Session] = []
            var next: [Int32] = []
            for (i, n) in lengths.enumerated() {
                let prompt = (0..<n).map { _ in Int32(rng.next() % 512) }
                let s = try Session(model: model, contextLength: 64)
                let a = try s.evaluate(prompt, logits: .last)[0]
                let b = try batch.prefill(sequence: i, prompt, logits: .last)[0]
                XCTAssertEqual(a, b, "\(arch): prefill of sequence \(i) through the batched method")
                singles.append(s)
                next.append(Int32(rng.next() % 512))
            }
            for step in 0..<steps {
                let out = try batch.decode(next)
                XCTAssertEqual(out.count, 3)
                for i in 0..<3 {
                    let ref = try singles[i].evaluate([next[i]], logits: .last)[0]
                    var num = 0.0, den = 0.0
                    for (x, y) in zip(out[i], ref) { num += Double(x - y) * Double(x - y); den += Double(y) * Double(y) }
                    let err = (num / den).squareRoot()
                    XCTAssertLessThan(err, 1e-5, "\(arch) step \(step) sequence \(i) (length \(lengths[i] + step)): rel. error \(err)")
                    XCTAssertEqual(batch.tokens[i].count, lengths[i] + step + 1)
                }
                next = (0..<3).map { _ in Int32(rng.next() % 512) }
            }
            XCTAssertEqual((0..<3).map { batch.attention.length(of: $0) }, lengths.map { $0 + steps })
            // Truncating one sequence leaves the others alone.
            batch.truncate(sequence: 1, to: 10)
            XCTAssertEqual((0..<3).map { batch.attention.length(of: $0) }, [5 + steps, 10, 47 + steps])
        }
    }

    /// `DenseAttention.attendBatch` on hand-filled caches (GQA, a window) vs float64.
    func testAttendBatchAgainstFloat64() {
        var rng = SystemRandomNumberGenerator()
        let heads = 6, kvHeads = 2, d = 16, g = heads / kvHeads
        for window in [0, 9] {
            let shape = AttentionShape(heads: heads, kvHeads: kvHeads, headDim: d, scale: 0.3, window: window)
            let lengths = [1, 12, 30]
            let caches = lengths.map { _ in KVCache(layers: 2, kvHeads: kvHeads, headDim: d, capacity: 32) }
            let method = DenseAttention(caches: caches, pool: ThreadPool(threads: 3))
            func rand(_ rows: Int, _ cols: Int, _ s: Float) -> Tensor {
                let t = Tensor(rows: rows, cols: cols)
                for i in 0..<(rows * cols) { t.floats[i] = Float.random(in: -s...s, using: &rng) }
                return t
            }
            // Prefixes (positions before the new token) written through the single-sequence API.
            var keys: [[Float]] = [], values: [[Float]] = []
            for (i, n) in lengths.enumerated() {
                let k = rand(n, kvHeads * d, 2), v = rand(n, kvHeads * d, 1)
                keys.append(Array(UnsafeBufferPointer(start: k.floats, count: n * kvHeads * d)))
                values.append(Array(UnsafeBufferPointer(start: v.floats, count: n * kvHeads * d)))
                if n > 1 {
                    k.rows = n - 1; v.rows = n - 1
                    method.withSequence(i) { method.append(layer: 1, k: k, v: v, start: 0) }
                }
            }
            // The new token of each sequence is its last row.
            let q = rand(3, heads * d, 1)
            let k = Tensor(rows: 3, cols: kvHeads * d), v = Tensor(rows: 3, cols: kvHeads * d)
            for i in 0..<3 {
                for c in 0..<(kvHeads * d) {
                    k.row(i)[c] = keys[i][(lengths[i] - 1) * kvHeads * d + c]
                    v.row(i)[c] = values[i][(lengths[i] - 1) * kvHeads * d + c]
                }
            }
            let out = Tensor(rows: 3, cols: heads * d)
            out.floats.update(repeating: .nan, count: 3 * heads * d)
            method.attendBatch(layer: 1, q: q, k: k, v: v, positions: lengths.map { Int32($0 - 1) }, shape: shape, out: out)
            func h16(_ x: Float) -> Double { Double(Float(Float16(x))) }
            for i in 0..<3 {
                let pos = lengths[i] - 1, first = shape.firstVisible(pos)
                for h in 0..<heads {
                    let kvh = h / g
                    let s = (first...pos).map { j in
                        (0..<d).reduce(0.0) { $0 + Double(q.row(i)[h * d + $1]) * h16(keys[i][(j * kvHeads + kvh) * d + $1]) } * 0.3
                    }
                    let m = s.max()!
                    let w = s.map { exp($0 - m) }, z = w.reduce(0, +)
                    for c in 0..<d {
                        let ref = zip(first...pos, w).reduce(0.0) { $0 + $1.1 * h16(values[i][($1.0 * kvHeads + kvh) * d + c]) } / z
                        XCTAssertEqual(Double(out.row(i)[h * d + c]), ref, accuracy: 1e-4,
                                       "window \(window) sequence \(i) head \(h) channel \(c)")
                    }
                }
            }
        }
    }
}
