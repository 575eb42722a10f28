/// Top-k selection over approximate scores, shared by the token-sparse methods.
public enum TopK {
    /// Writes into `out` the indices (ascending) of the `k` largest of `scores[0..<n]`,
    /// offset by `base`; ties at the threshold are broken by lower index. O(n) on average
    /// (quickselect on a copy). Returns k.
    @discardableResult
    public static func select(_ scores: UnsafePointer<Float>, count n: Int, k: Int, base: Int,
                              into out: UnsafeMutablePointer<Int32>) -> Int {
        precondition(k >= 0 && k <= n)
        if k == n {
            for j in 0..<n { out[j] = Int32(base + j) }
            return n
        }
        if k == 0 { return 0 }
        let threshold = kthLargest(scores, n, k)
        // Everything strictly above the threshold, then threshold ties in index order.
        var above = 0
        for j in 0..<n where scores[j] > threshold { above += 1 }
        var ties = k - above
        var w = 0
        for j in 0..<n {
            let s = scores[j]
            if s > threshold || (s == threshold && ties > 0) {
                if s == threshold { ties -= 1 }
                out[w] = Int32(base + j)
                w += 1
            }
        }
        return w
    }

    /// The k-th largest value of v[0..<n] (1 ≤ k ≤ n), by quickselect on a scratch copy.
    static func kthLargest(_ v: UnsafePointer<Float>, _ n: Int, _ k: Int) -> Float {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: n) { buf in
            let a = buf.baseAddress!
            a.initialize(from: v, count: n)
            var lo = 0, hi = n - 1
            let target = k - 1  // index in descending order
            var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
            while lo < hi {
                // Random pivot guards against sorted inputs.
                seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                let pivot = a[lo + Int((seed >> 33) % UInt64(hi - lo + 1))]
                // Three-way partition, descending: [> pivot][== pivot][< pivot].
                var lt = lo, i = lo, gt = hi
                while i <= gt {
                    if a[i] > pivot { a.swapAt(lt, i); lt += 1; i += 1 }
                    else if a[i] < pivot { a.swapAt(i, gt); gt -= 1 }
                    else { i += 1 }
                }
                if target < lt { hi = lt - 1 }
                else if target > gt { lo = gt + 1 }
                else { return pivot }
            }
            return a[lo]
        }
    }
}

extension UnsafeMutablePointer where Pointee == Float {
    @inline(__always) fileprivate func swapAt(_ i: Int, _ j: Int) {
        let t = self[i]; self[i] = self[j]; self[j] = t
    }
}
