#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Sift
#if canImport(Glibc)
import Glibc
#endif

/// Device checks of the Quest and TidalDecode kernels (Kernels/sparse_select.cu) against float64
/// references computed here from fresh random bf16 inputs:
///  - Quest: page bounds equal the min/max of the host keys; the bound never under-estimates
///    any true group score in its page; the selected pages are the reference top pages (up to
///    near-ties of the float64 bounds); attention = float64 attention over their tokens.
///  - Tidal: the selection layer's dense output; the summed group softmax mass per token; the
///    selected positions are the reference top-k by that mass (up to near-ties), sinks kept;
///    the reuse layer's gather attention = float64 attention over those rows.
extension KernelCheck {
    func runSparse() throws -> Bool {
        var rng = SystemRandomNumberGenerator()
        func rnd(_ s: Float = 1) -> Float { Float.random(in: -1.7320508...1.7320508, using: &rng) * s }
        let L = 4099, B = 2, H = heads, KVH = kvHeads, D = headDim, P = pageSize, G = H / KVH
        let maxPages = (L + P - 1) / P
        let pages = B * maxPages + 2
        let perm = Array(0..<pages).shuffled(using: &rng)
        var table = [Int32](repeating: 0, count: B * maxPages)
        for i in 0..<table.count { table[i] = Int32(perm[i]) }
        // Keys with a per-channel offset so that pages differ in their bounds.
        let chOff = (0..<D).map { _ in rnd(0.5) }
        var kh = [UInt16](repeating: 0, count: pages * KVH * P * D)
        for i in kh.indices { kh[i] = Self.bf16(rnd() + chOff[i % D] * Float((i / (D * 64)) % 3)) }
        let vh = (0..<(pages * KVH * P * D)).map { _ in Self.bf16(rnd()) }
        func row(_ b: Int, _ t: Int, _ h: Int) -> Int { ((Int(table[b * maxPages + t / P]) * KVH + h) * P + t % P) * D }
        let kd = try ctx.allocate(bytes: kh.count * 2), vd = try ctx.allocate(bytes: vh.count * 2)
        let pt = try ctx.allocate(bytes: table.count * 4), qd = try ctx.allocate(bytes: B * H * D * 4)
        let od = try ctx.allocate(bytes: B * H * D * 4)
        try ctx.upload(kh, to: kd.address); try ctx.upload(vh, to: vd.address); try ctx.upload(table, to: pt.address)
        let scale = 1 / Double(D).squareRoot()
        func dot(_ q: [Double], _ b: Int, _ t: Int, _ kvh: Int) -> Double {
            let r = row(b, t, kvh)
            var d = 0.0
            for i in 0..<D { d += q[i] * Self.f(kh[r + i]) }
            return d
        }
        func attend(_ q: [Double], _ b: Int, _ h: Int, _ rows: [Int]) -> [Double] {
            Self.attendReference(q, keys: kh, values: vh, rows: rows.map { row(b, $0, h / G) })
        }
        func newQuery() throws -> [UInt16] {
            let qh = (0..<(B * H * D)).map { _ in Self.bf16(rnd(2)) }
            try ctx.upload(qh, to: qd.address)
            try ctx.memset32(od.address, word: 0x7fc0_7fc0, count: B * H * D)   // NaN-poisoned output
            return qh
        }
        func qrow(_ qh: [UInt16], _ b: Int, _ h: Int) -> [Double] { (0..<D).map { Self.f(qh[(b * H + h) * D + $0]) } }
        func keyValue(_ k: UInt32) -> Double {
            Double(Float(bitPattern: k & 0x8000_0000 != 0 ? k & 0x7fff_ffff : ~k))
        }
        func outErr(_ got: [UInt16], _ qh: [UInt16], _ sel: [[Int32]]) -> (Double, Double) {
            var err = 0.0, sc = 0.0
            for b in 0..<B { for h in 0..<H {
                let r = attend(qrow(qh, b, h), b, h, sel[b * KVH + h / G].map { Int($0) })
                for i in 0..<D { err = max(err, abs(r[i] - Self.f(got[(b * H + h) * D + i]))); sc = max(sc, abs(r[i])) }
            } }
            return (err, sc)
        }
        var ok = true

        // Quest, page 16, k = L/16 tokens → 16 pages of 257.
        let QP = 16, qpages = (L + QP - 1) / QP, kPages = max(1, L / 16 / QP)
        let quest = try CUDAAttentionKernels.Quest(kernels: kernels, batch: B, heads: H, kvHeads: KVH, headDim: D,
                                                   questPage: QP, maxLength: L)
        let bd = try ctx.allocate(bytes: quest.boundsBytes)
        try ctx.memset32(bd.address, word: 0x7fc0_7fc0, count: quest.boundsBytes / 4)
        // Two appends (as prefill then decode): 0..<4000 then 4000..<L.
        try quest.updateBounds(keys: kd.address, pageTable: pt.address, pageSize: P, maxPages: maxPages, bounds: bd.address,
                               from: 0, length: 4000)
        try quest.updateBounds(keys: kd.address, pageTable: pt.address, pageSize: P, maxPages: maxPages, bounds: bd.address,
                               from: 4000, length: L)
        let boundsGot = try ctx.download(bd.address, count: quest.boundsBytes / 2, as: UInt16.self)
        var boundsOK = true
        var lo = [Double](repeating: 0, count: B * qpages * KVH * D), hi = lo
        for b in 0..<B { for p in 0..<qpages { for h in 0..<KVH {
            let at = ((b * qpages + p) * KVH + h) * D
            for c in 0..<D {
                var mn = Double.infinity, mx = -Double.infinity
                for t in (p * QP)..<min(L, (p + 1) * QP) { let x = Self.f(kh[row(b, t, h) + c]); mn = min(mn, x); mx = max(mx, x) }
                lo[at + c] = mn; hi[at + c] = mx
                if Self.f(boundsGot[2 * at + c]) != mn || Self.f(boundsGot[2 * at + D + c]) != mx { boundsOK = false }
            }
        } } }
        print("\(boundsOK ? "PASS" : "FAIL") \(name) quest page bounds (page \(QP), L \(L), two appends) equal the keys' min/max")
        ok = boundsOK && ok
        let qh = try newQuery()
        try quest.run(q: qd.address, qF32: false, keys: kd.address, values: vd.address, pageTable: pt.address, pageSize: P,
                      maxPages: maxPages, bounds: bd.address, length: L, kPages: kPages, out: od.address, outF32: false)
        let qkeys = try quest.keysHost(), qsel = try quest.selectedHost()
        var underOK = true, selOK = true, uErr = 0.0, uScale = 0.0, exactSets = 0
        for b in 0..<B { for h in 0..<KVH {
            let qs = (0..<G).map { qrow(qh, b, h * G + $0) }
            var uRef = [Double](repeating: 0, count: qpages)
            for p in 0..<qpages {
                let at = ((b * qpages + p) * KVH + h) * D
                var u = 0.0
                for g in 0..<G { for c in 0..<D { u += max(qs[g][c] * lo[at + c], qs[g][c] * hi[at + c]) } }
                uRef[p] = u
                let got = keyValue(qkeys[(b * KVH + h) * quest.keyRowStride + p])
                uErr = max(uErr, abs(got - u)); uScale = max(uScale, abs(u))
                for t in (p * QP)..<min(L, (p + 1) * QP) {
                    let s = qs.reduce(0.0) { $0 + dot($1, b, t, h) }
                    if got < s - 1e-4 * max(1, abs(s)) { underOK = false }
                }
            }
            let list = qsel[b * KVH + h].map { Int($0) }
            let picked = Set(list.map { $0 / QP })
            var expect: [Int] = []
            for p in picked.sorted() { expect += Array((p * QP)..<min(L, (p + 1) * QP)) }
            if picked.count != kPages || list != expect { selOK = false }
            let ranked = (0..<qpages).sorted { uRef[$0] > uRef[$1] }
            let refTop = Set(ranked.prefix(kPages))
            if refTop == picked { exactSets += 1 }
            let minIn = picked.map { uRef[$0] }.min() ?? 0
            let maxOut = (0..<qpages).filter { !picked.contains($0) }.map { uRef[$0] }.max() ?? -.infinity
            if minIn < maxOut - 1e-4 * max(1, abs(maxOut)) { selOK = false }   // only near-ties may swap
        } }
        print("\(underOK ? "PASS" : "FAIL") \(name) quest bound ≥ every true group score q·k in its page (\(B * KVH * L) tokens)")
        print("\(selOK ? "PASS" : "FAIL") \(name) quest selection: \(kPages) pages of \(qpages), their tokens ascending, = float64 top pages (\(exactSets)/\(B * KVH) sets identical, others differ only at near-ties)")
        ok = underOK && selOK && ok
        ok = report("quest page bound U vs float64", uErr, uScale, tol: 1e-5) && ok
        let (qe, qsc) = outErr(try ctx.download(od.address, count: B * H * D, as: UInt16.self), qh, qsel)
        ok = report("quest attention over the selected pages' tokens", qe, qsc) && ok

        // TidalDecode: selection layer (dense + top-k by summed group softmax mass), then a reuse layer.
        let k = (L + 15) / 16
        let tidal = try CUDAAttentionKernels.Tidal(kernels: kernels, batch: B, heads: H, kvHeads: KVH, headDim: D, maxLength: L)
        for sinks in [0, 4] {
            let qs = try newQuery()
            try tidal.select(q: qd.address, qF32: false, keys: kd.address, values: vd.address, pageTable: pt.address,
                             pageSize: P, maxPages: maxPages, length: L, k: k, sinks: sinks, out: od.address, outF32: false)
            let dense = try ctx.download(od.address, count: B * H * D, as: UInt16.self)
            let tkeys = try tidal.keysHost(), tsel = try tidal.selectedHost()
            let all = [[Int32]](repeating: (0..<Int32(L)).map { $0 }, count: B * KVH)
            let (de, dsc) = outErr(dense, qs, all)
            ok = report("tidal selection layer: dense attention, sinks \(sinks)", de, dsc) && ok
            var massErr = 0.0, tSelOK = true, exact = 0
            for b in 0..<B { for h in 0..<KVH {
                var mass = [Double](repeating: 0, count: L)
                for g in 0..<G {
                    let q = qrow(qs, b, h * G + g)
                    var s = (0..<L).map { dot(q, b, $0, h) * scale }
                    let m = s.max()!
                    var sum = 0.0
                    for j in 0..<L { s[j] = exp(s[j] - m); sum += s[j] }
                    for j in 0..<L { mass[j] += s[j] / sum }
                }
                for j in sinks..<L {
                    let got = keyValue(tkeys[(b * KVH + h) * tidal.keyRowStride + j])
                    massErr = max(massErr, abs(got - mass[j]) / (mass[j] + 1e-9))
                }
                let list = tsel[b * KVH + h].map { Int($0) }
                let picked = Set(list)
                if list.count != k || list != list.sorted() || picked.count != k { tSelOK = false }
                for j in 0..<sinks where !picked.contains(j) { tSelOK = false }
                var ranked = mass
                for j in 0..<sinks { ranked[j] = .infinity }
                let refTop = Set((0..<L).sorted { ranked[$0] > ranked[$1] }.prefix(k))
                if refTop == picked { exact += 1 }
                let minIn = picked.filter { $0 >= sinks }.map { mass[$0] }.min() ?? .infinity
                let maxOut = (0..<L).filter { !picked.contains($0) }.map { mass[$0] }.max() ?? 0
                if minIn < maxOut * (1 - 1e-4) { tSelOK = false }
            } }
            print("\(tSelOK ? "PASS" : "FAIL") \(name) tidal selection sinks \(sinks): k = \(k) of \(L), ascending, = float64 top-k by summed group softmax mass (\(exact)/\(B * KVH) sets identical, others differ only at near-ties); mass rel err \(scientific(massErr, 2))")
            ok = tSelOK && massErr < 1e-3 && ok
            // Reuse layer: a new query (another layer) over the same positions.
            let q2 = try newQuery()
            try tidal.reuse(q: qd.address, qF32: false, keys: kd.address, values: vd.address, pageTable: pt.address,
                            pageSize: P, maxPages: maxPages, out: od.address, outF32: false)
            let (re, rsc) = outErr(try ctx.download(od.address, count: B * H * D, as: UInt16.self), q2, tsel)
            ok = report("tidal reuse layer: gather attention over the \(k) selected rows, sinks \(sinks)", re, rsc) && ok
        }
        return ok
    }
}
