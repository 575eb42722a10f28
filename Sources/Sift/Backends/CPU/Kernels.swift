/// Small SIMD vector kernels on f32 (and f16 cache rows) shared by the CPU backend and the
/// CPU attention methods.
public enum Kernels {
    public typealias V8 = SIMD8<Float>

    @inline(__always)
    static func load8(_ p: UnsafePointer<Float>) -> V8 {
        UnsafeRawPointer(p).loadUnaligned(as: V8.self)
    }

    @inline(__always)
    static func load8(_ p: UnsafePointer<Float16>) -> V8 {
        V8(UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float16>.self))
    }

    @inline(__always)
    static func store8(_ v: V8, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: V8.self)
    }

    /// Σ a[i] b[i]
    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var s0 = V8(), s1 = V8(), s2 = V8(), s3 = V8()
        var i = 0
        while i + 32 <= n {
            s0.addProduct(load8(a + i), load8(b + i))
            s1.addProduct(load8(a + i + 8), load8(b + i + 8))
            s2.addProduct(load8(a + i + 16), load8(b + i + 16))
            s3.addProduct(load8(a + i + 24), load8(b + i + 24))
            i += 32
        }
        while i + 8 <= n {
            s0.addProduct(load8(a + i), load8(b + i))
            i += 8
        }
        var s = ((s0 + s1) + (s2 + s3)).sum()
        while i < n { s += a[i] * b[i]; i += 1 }
        return s
    }

    /// Σ a[i] b[i] with `b` in f16.
    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float16>, _ n: Int) -> Float {
        var s0 = V8(), s1 = V8()
        var i = 0
        while i + 16 <= n {
            s0.addProduct(load8(a + i), load8(b + i))
            s1.addProduct(load8(a + i + 8), load8(b + i + 8))
            i += 16
        }
        while i + 8 <= n {
            s0.addProduct(load8(a + i), load8(b + i))
            i += 8
        }
        var s = (s0 + s1).sum()
        while i < n { s += a[i] * Float(b[i]); i += 1 }
        return s
    }

    /// y[i] += a * x[i] with `x` in f16.
    @inline(__always)
    public static func axpy(_ a: Float, _ x: UnsafePointer<Float16>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        let av = V8(repeating: a)
        while i + 8 <= n {
            var v = load8(y + i)
            v.addProduct(av, load8(x + i))
            store8(v, y + i)
            i += 8
        }
        while i < n { y[i] += a * Float(x[i]); i += 1 }
    }

    /// y[i] = a * y[i]
    @inline(__always)
    public static func scale(_ y: UnsafeMutablePointer<Float>, _ a: Float, _ n: Int) {
        var i = 0
        let av = V8(repeating: a)
        while i + 8 <= n { store8(load8(y + i) * av, y + i); i += 8 }
        while i < n { y[i] *= a; i += 1 }
    }

    @inline(__always)
    public static func sumOfSquares(_ a: UnsafePointer<Float>, _ n: Int) -> Float {
        var s0 = V8(), s1 = V8()
        var i = 0
        while i + 16 <= n {
            let x = load8(a + i), y = load8(a + i + 8)
            s0.addProduct(x, x)
            s1.addProduct(y, y)
            i += 16
        }
        var s = (s0 + s1).sum()
        while i < n { s += a[i] * a[i]; i += 1 }
        return s
    }

    /// dst[i] = src[i] * s * w[i]  (dst may equal src)
    @inline(__always)
    public static func scaleMultiply(_ src: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ s: Float,
                                     _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        let sv = V8(repeating: s)
        while i + 8 <= n { store8(load8(src + i) * sv * load8(w + i), dst + i); i += 8 }
        while i < n { dst[i] = src[i] * s * w[i]; i += 1 }
    }

    /// x[i] += y[i]
    @inline(__always)
    public static func add(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) {
        var i = 0
        while i + 8 <= n { store8(load8(x + i) + load8(y + i), x + i); i += 8 }
        while i < n { x[i] += y[i]; i += 1 }
    }

    /// Converts floats to f16 (round to nearest even).
    @inline(__always)
    public static func toHalf(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float16>, _ n: Int) {
        var i = 0
        while i + 8 <= n {
            UnsafeMutableRawPointer(dst + i).storeBytes(of: SIMD8<Float16>(load8(src + i)), as: SIMD8<Float16>.self)
            i += 8
        }
        while i < n { dst[i] = Float16(src[i]); i += 1 }
    }
}

extension Kernels {
    /// scores[j] = q · labels[j] for `count` consecutive label rows of `r` f16 values
    /// (Double Sparsity's approximate scores; r is small, 4 to 32).
    public static func labelScores(_ q: UnsafePointer<Float>, _ labels: UnsafePointer<Float16>, _ r: Int,
                                   _ count: Int, _ scores: UnsafeMutablePointer<Float>) {
        if r == 8 {
            let qv = load8(q)
            for j in 0..<count { scores[j] = (qv * load8(labels + j * 8)).sum() }
        } else if r % 8 == 0 {
            for j in 0..<count {
                var acc = V8()
                let row = labels + j * r
                var c = 0
                while c < r { acc = acc.addingProduct(load8(q + c), load8(row + c)); c += 8 }
                scores[j] = acc.sum()
            }
        } else {
            for j in 0..<count {
                let row = labels + j * r
                var s: Float = 0
                for c in 0..<r { s += q[c] * Float(row[c]) }
                scores[j] = s
            }
        }
    }

    /// Scores against 4-bit labels (LabelCache, `bits` 4): `q·label = m·Σq + s·Σ q_c·u_c`, with
    /// the f16 scale s and offset m the first 4 bytes of each record, or, given `fixedScale` Δ,
    /// records of codes alone on the grid (u − 7.5)·Δ: s = Δ, m = −7.5·Δ.
    public static func labelScores4(_ q: UnsafePointer<Float>, _ records: UnsafeRawPointer, _ r: Int, _ recordBytes: Int,
                                    _ count: Int, _ scores: UnsafeMutablePointer<Float>, fixedScale: Float? = nil) {
        var qsum: Float = 0
        for c in 0..<r { qsum += q[c] }
        let codeOffset = fixedScale == nil ? 4 : 0
        @inline(__always) func scaleOffset(_ rec: UnsafeRawPointer) -> (Float, Float) {
            if let d = fixedScale { return (d, -7.5 * d) }
            return (Float(rec.load(as: Float16.self)), Float(rec.load(fromByteOffset: 2, as: Float16.self)))
        }
        if r == 8 {
            let qv = load8(q)
            for j in 0..<count {
                let rec = records + j * recordBytes
                let (s, m) = scaleOffset(rec)
                let w = rec.loadUnaligned(fromByteOffset: codeOffset, as: UInt32.self)
                let u = V8(Float(w & 15), Float((w >> 4) & 15), Float((w >> 8) & 15), Float((w >> 12) & 15),
                           Float((w >> 16) & 15), Float((w >> 20) & 15), Float((w >> 24) & 15), Float(w >> 28))
                scores[j] = m * qsum + s * (qv * u).sum()
            }
            return
        }
        for j in 0..<count {
            let rec = records + j * recordBytes
            let (s, m) = scaleOffset(rec)
            let codes = rec.assumingMemoryBound(to: UInt8.self) + codeOffset
            var acc: Float = 0
            for c in 0..<r { acc += q[c] * Float((codes[c >> 1] >> UInt8((c & 1) * 4)) & 15) }
            scores[j] = m * qsum + s * acc
        }
    }
}
