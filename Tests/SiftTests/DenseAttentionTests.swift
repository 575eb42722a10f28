import XCTest
@testable import Sift

/// Dense decode attention (including the split-over-positions path taken when there are fewer
/// KV heads than threads) against a float64 softmax over the f16-rounded cache.
final class DenseAttentionTests: XCTestCase {
    var rng = SystemRandomNumberGenerator()

    func randomTensor(_ rows: Int, _ cols: Int, scale: Float) -> Tensor {
        let t = Tensor(rows: rows, cols: cols)
        for i in 0..<(rows * cols) { t.floats[i] = Float.random(in: -1...1, using: &rng) * scale }
        return t
    }

    func check(heads: Int, kvHeads: Int, d: Int, length: Int, window: Int, threads: Int) {
        let shape = AttentionShape(heads: heads, kvHeads: kvHeads, headDim: d, scale: 1 / Float(d).squareRoot(), window: window)
        let cache = KVCache(layers: 1, kvHeads: kvHeads, headDim: d, capacity: length)
        let method = DenseAttention(cache: cache, pool: ThreadPool(threads: threads))
        let keys = randomTensor(length, kvHeads * d, scale: 3), values = randomTensor(length, kvHeads * d, scale: 1)
        let prefixQ = randomTensor(length - 1, heads * d, scale: 1)
        let out = Tensor(rows: length, cols: heads * d)
        let pk = Tensor(rows: length - 1, cols: kvHeads * d), pv = Tensor(rows: length - 1, cols: kvHeads * d)
        pk.floats.update(from: keys.floats, count: (length - 1) * kvHeads * d)
        pv.floats.update(from: values.floats, count: (length - 1) * kvHeads * d)
        method.attend(layer: 0, q: prefixQ, k: pk, v: pv, start: 0, shape: shape, out: out)
        let q = randomTensor(1, heads * d, scale: 3)
        let lk = Tensor(rows: 1, cols: kvHeads * d), lv = Tensor(rows: 1, cols: kvHeads * d)
        lk.floats.update(from: keys.row(length - 1), count: kvHeads * d)
        lv.floats.update(from: values.row(length - 1), count: kvHeads * d)
        out.floats.update(repeating: .nan, count: heads * d)  // poisoned
        method.attend(layer: 0, q: q, k: lk, v: lv, start: length - 1, shape: shape, out: out)

        func h16(_ x: Float) -> Double { Double(Float(Float16(x))) }
        let g = heads / kvHeads, first = shape.firstVisible(length - 1)
        for h in 0..<heads {
            let kvh = h / g
            let s = (first..<length).map { j in
                (0..<d).reduce(0.0) { $0 + Double(q.row(0)[h * d + $1]) * h16(keys.row(j)[kvh * d + $1]) } * Double(shape.scale)
            }
            let m = s.max()!
            let e = s.map { exp($0 - m) }
            let z = e.reduce(0, +)
            for x in 0..<d {
                var want = 0.0
                for (i, j) in (first..<length).enumerated() { want += e[i] / z * h16(values.row(j)[kvh * d + x]) }
                XCTAssertEqual(Double(out.row(0)[h * d + x]), want, accuracy: 2e-5,
                               "heads \(heads)/\(kvHeads) d \(d) length \(length) window \(window) threads \(threads): head \(h) channel \(x)")
            }
        }
    }

    func testDecodeMatchesFloat64Reference() {
        for (heads, kvHeads, d) in [(4, 1, 32), (4, 2, 16), (3, 3, 8)] {
            for length in [1, 7, 255, 256, 300, 1001] {
                for threads in [1, 2, 3] {
                    check(heads: heads, kvHeads: kvHeads, d: d, length: length, window: 0, threads: threads)
                }
            }
            check(heads: heads, kvHeads: kvHeads, d: d, length: 900, window: 512, threads: 2)
            check(heads: heads, kvHeads: kvHeads, d: d, length: 900, window: 200, threads: 2)
        }
    }
}
