#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Sift
#if canImport(Glibc)
import Glibc
#endif

/// Device check of sift's GPU attention kernels against float64 references computed here on
/// the CPU, from fresh random inputs made on the host (so both sides see the same bf16 values):
/// dense split-KV decode (device lengths, bf16 in/out; fixed length, f32 in/out, sliding
/// window), Double Sparsity (exactly k tokens, the top-k of the kernel's scores, scores equal
/// to the float64 label scores, attention over the selection) and paged causal prefill.
struct KernelCheck {
    let kernels: CUDAAttentionKernels
    let heads: Int, kvHeads: Int, headDim: Int, pageSize: Int, name: String
    var ctx: CUDAContext { kernels.context }

    static func bf16(_ f: Float) -> UInt16 {
        let u = f.bitPattern
        return UInt16(truncatingIfNeeded: (u &+ 0x7fff &+ ((u >> 16) & 1)) >> 16)
    }
    static func f(_ b: UInt16) -> Double { Double(Float(bitPattern: UInt32(b) << 16)) }

    /// softmax(q·K_r/√d)·V_r in float64 over the cache rows r (element offsets of head_dim
    /// values in the bf16 `keys` and `values`; d = q.count, rows in any order): the attention
    /// reference of every kernel check here and in KernelCheckSparse.swift.
    static func attendReference(_ q: [Double], keys: [UInt16], values: [UInt16], rows: [Int]) -> [Double] {
        let D = q.count
        var s = rows.map { r -> Double in
            var d = 0.0
            for i in 0..<D { d += q[i] * f(keys[r + i]) }
            return d / Double(D).squareRoot()
        }
        let m = s.max() ?? 0
        var sum = 0.0
        for i in s.indices { s[i] = exp(s[i] - m); sum += s[i] }
        var o = [Double](repeating: 0, count: D)
        for (j, r) in rows.enumerated() {
            let w = s[j] / sum
            for i in 0..<D { o[i] += w * f(values[r + i]) }
        }
        return o
    }

    func report(_ what: String, _ err: Double, _ scale: Double, tol: Double = 1e-2) -> Bool {
        let ok = err <= tol * max(scale, 1e-6) && !err.isNaN
        print("\(ok ? "PASS" : "FAIL") \(name) \(what): max|err| \(scientific(err, 3)) (ref max \(scientific(scale, 3)))")
        return ok
    }

    func run() throws -> Bool {
        var rng = SystemRandomNumberGenerator()
        func rnd(_ s: Float = 1) -> Float { Float.random(in: -1.7320508...1.7320508, using: &rng) * s }
        let lens = [1500, 4099], B = 2, H = heads, KVH = kvHeads, D = headDim, P = pageSize, G = H / KVH
        let maxPages = (lens.max()! + P - 1) / P
        let pages = B * maxPages + 2
        let perm = Array(0..<pages).shuffled(using: &rng)
        var table = [Int32](repeating: 0, count: B * maxPages)
        for i in 0..<table.count { table[i] = Int32(perm[i]) }
        let kh = (0..<(pages * KVH * P * D)).map { _ in Self.bf16(rnd()) }
        let vh = (0..<(pages * KVH * P * D)).map { _ in Self.bf16(rnd()) }
        let qh = (0..<(B * H * D)).map { _ in Self.bf16(rnd(2)) }
        func row(_ b: Int, _ t: Int, _ h: Int) -> Int { ((Int(table[b * maxPages + t / P]) * KVH + h) * P + t % P) * D }
        let kd = try ctx.allocate(bytes: kh.count * 2), vd = try ctx.allocate(bytes: vh.count * 2)
        let pt = try ctx.allocate(bytes: table.count * 4), qd = try ctx.allocate(bytes: B * H * D * 4)
        let od = try ctx.allocate(bytes: max(B * H * D, 700 * H * D) * 4), ld = try ctx.allocate(bytes: B * 4)
        try ctx.upload(kh, to: kd.address); try ctx.upload(vh, to: vd.address); try ctx.upload(table, to: pt.address)
        try ctx.upload(qh, to: qd.address); try ctx.upload(lens.map { Int32($0) }, to: ld.address)
        let scratch = try CUDAAttentionKernels.Scratch(context: ctx, batch: B, heads: H, headDim: D, maxSplits: 2 * ctx.multiprocessors + 1)

        /// The float64 attention of query head h of sequence b over its positions `rows`.
        func attend(_ q: [Double], _ b: Int, _ h: Int, _ rows: [Int]) -> [Double] {
            Self.attendReference(q, keys: kh, values: vh, rows: rows.map { row(b, $0, h / G) })
        }
        func qrow(_ b: Int, _ h: Int) -> [Double] { (0..<D).map { Self.f(qh[(b * H + h) * D + $0]) } }
        var ok = true

        // 1. dense decode, device lengths, bf16 in/out, two split sizes
        for split in [nil, 256] as [Int?] {
            try kernels.decode(q: qd.address, qF32: false, keys: kd.address, values: vd.address, pageTable: pt.address,
                               pageSize: P, maxPages: maxPages, lengths: .device(ld.address, maxLength: lens.max()!),
                               batch: B, heads: H, kvHeads: KVH, headDim: D, out: od.address, outF32: false,
                               scratch: scratch, splitTokens: split)
            let got = try ctx.download(od.address, count: B * H * D, as: UInt16.self)
            var err = 0.0, scale = 0.0
            for b in 0..<B { for h in 0..<H {
                let r = attend(qrow(b, h), b, h, Array(0..<lens[b]))
                for i in 0..<D { err = max(err, abs(r[i] - Self.f(got[(b * H + h) * D + i]))); scale = max(scale, abs(r[i])) }
            } }
            ok = report("decode B=\(B) lens \(lens) split \(split.map(String.init) ?? "auto")", err, scale) && ok
        }
        // 2. the engine's convention: one sequence, fixed length, f32 in/out, sliding window
        for window in [0, 512] {
            let qf = (0..<(H * D)).map { _ in rnd(2) }
            try ctx.upload(qf, to: qd.address)
            try kernels.decode(q: qd.address, qF32: true, keys: kd.address, values: vd.address, pageTable: pt.address,
                               pageSize: P, maxPages: maxPages, lengths: .fixed(lens[0]), batch: 1, heads: H, kvHeads: KVH,
                               headDim: D, window: window, out: od.address, outF32: true, scratch: scratch)
            let got = try ctx.download(od.address, count: H * D, as: Float.self)
            var err = 0.0, scale = 0.0
            let first = window > 0 ? max(0, lens[0] - window) : 0
            for h in 0..<H {
                let qExact = (0..<D).map { Double(qf[h * D + $0]) }   // the decode kernel keeps f32 q
                let r = attend(qExact, 0, h, Array(first..<lens[0]))
                for i in 0..<D { err = max(err, abs(r[i] - Double(got[h * D + i]))); scale = max(scale, abs(r[i])) }
            }
            ok = report("decode f32 fixed length \(lens[0]) window \(window)", err, scale) && ok
        }
        try ctx.upload(qh, to: qd.address)

        // 3. Double Sparsity: labels from K's calibrated channels
        let R = D >= 256 ? 16 : 8
        var ch = [Int32]()
        for _ in 0..<KVH { ch += Array(0..<D).shuffled(using: &rng).prefix(R).map { Int32($0) } }
        var lab = [UInt16](repeating: 0, count: pages * KVH * P * R)
        for pg in 0..<pages { for h in 0..<KVH { for t in 0..<P { for c in 0..<R {
            lab[((pg * KVH + h) * P + t) * R + c] = kh[((pg * KVH + h) * P + t) * D + Int(ch[h * R + c])]
        } } } }
        let labd = try ctx.allocate(bytes: lab.count * 2), chd = try ctx.allocate(bytes: ch.count * 4), kpd = try ctx.allocate(bytes: B * 4)
        try ctx.upload(lab, to: labd.address); try ctx.upload(ch, to: chd.address)
        let kper = lens.map { max(1, $0 / 16) }
        try ctx.upload(kper.map { Int32($0) }, to: kpd.address)
        let ds0 = try CUDAAttentionKernels.DoubleSparsity(kernels: kernels, batch: B, heads: H, kvHeads: KVH, headDim: D,
                                                          channels: R, maxLength: lens.max()!)
        // Splits of 512 positions (the default here is 1024), of 4096, and of 4 positions: 1025
        // chunks, whose low-digit histograms every attend block sums to resolve the threshold.
        let dsSmall = try CUDAAttentionKernels.DoubleSparsity(kernels: kernels, batch: B, heads: H, kvHeads: KVH, headDim: D,
                                                              channels: R, maxLength: lens.max()!, splitPositions: 512)
        let dsWide = try CUDAAttentionKernels.DoubleSparsity(kernels: kernels, batch: B, heads: H, kvHeads: KVH, headDim: D,
                                                             channels: R, maxLength: lens.max()!, splitPositions: 4096)
        let dsKeys = try CUDAAttentionKernels.DoubleSparsity(kernels: kernels, batch: B, heads: H, kvHeads: KVH, headDim: D,
                                                             channels: R, maxLength: lens.max()!, splitPositions: 4)
        // Threshold blocks covering several chunks (the last block partly past the end): 4 and 2.
        dsSmall.thresholdChunksPerBlock = 4
        dsWide.thresholdChunksPerBlock = 2
        // Pool row -> position in sequence b (the inverse page table), to read the selection lists.
        var pageIndex = [Int: Int]()
        for b in 0..<B { for i in 0..<maxPages { pageIndex[b * pages + Int(table[b * maxPages + i])] = i } }
        func position(_ b: Int, _ poolRow: Int, _ h: Int) -> Int? {
            let pk = poolRow / P, off = poolRow % P
            guard pk % KVH == h, let i = pageIndex[b * pages + pk / KVH] else { return nil }
            return i * P + off
        }
        // The third run quantizes the scores (one channel of one head per group, weight 1: the
        // score is a bf16 label, so many keys tie and the tie cut by position decides).
        var qq = qh
        for b in 0..<B { for h in 0..<KVH { for c in 0..<R { for g in 0..<G {
            qq[(b * H + h * G + g) * D + Int(ch[h * R + c])] = c == 0 && g == 0 ? Self.bf16(1) : 0
        } } } }
        // The fourth zeroes the label channels of q: every score is 0, every key ties.
        var qz = qh
        for b in 0..<B { for h in 0..<KVH { for c in 0..<R { for g in 0..<G {
            qz[(b * H + h * G + g) * D + Int(ch[h * R + c])] = 0
        } } } }
        // The last runs take the experimental attend variants (1...6) through the plain case.
        // The fifth field is the recent window (`--recent`, capped per sequence at half of k − sinks);
        // the sixth one selection per query head (`--ds-group per-head`) instead of per KV group.
        let configs = [(0, 0, false, 0, 0, false), (4, 0, false, 0, 0, false), (0, 1, false, 0, 0, false),
                       (0, 1, true, 0, 0, false), (0, 2, false, 0, 0, false), (3, 2, true, 0, 0, false),
                       (1, 0, false, -1, 0, false), (0, 1, false, -1, 0, false), (0, 0, true, 0, 0, false),
                       (0, 1, false, -2, 0, false), (2, 2, false, -2, 0, false), (4, 0, false, 0, 64, false),
                       (0, 2, false, 0, 1000, false), (4, 1, true, 0, 64, false),
                       (4, 0, false, 0, 64, true), (0, 1, true, 0, 0, true), (2, 2, false, -2, 64, true)]
            + (1...6).map { (2, 0, false, $0, 0, false) }
        for (sinks, mode, small, variant, recent, perHead) in configs {
            let quantized = mode == 1
            let qv = mode == 1 ? qq : mode == 2 ? qz : qh
            let ds: CUDAAttentionKernels.DoubleSparsity
            if variant > 0 {
                ds = try CUDAAttentionKernels.DoubleSparsity(kernels: kernels, batch: B, heads: H, kvHeads: KVH, headDim: D,
                                                             channels: R, maxLength: lens.max()!, attendVariant: variant)
            } else if perHead {   // the shared configuration's splits and capacities, one selection a query head
                let base = small ? dsSmall : variant == -1 ? dsWide : variant == -2 ? dsKeys : ds0
                ds = try CUDAAttentionKernels.DoubleSparsity(kernels: kernels, batch: B, heads: H, kvHeads: KVH, headDim: D,
                                                             channels: R, maxLength: lens.max()!, splitPositions: base.splitPositions,
                                                             perHead: true)
                ds.thresholdChunksPerBlock = base.thresholdChunksPerBlock
            } else {
                ds = small ? dsSmall : variant == -1 ? dsWide : variant == -2 ? dsKeys : ds0
            }
            // Selections per sequence (KVH, or H per head), each over gs query heads of KV head s / spk.
            let S = ds.selections, spk = S / KVH, gs = G / spk
            try ctx.upload(qv, to: qd.address)
            try ds.run(q: qd.address, keys: kd.address, values: vd.address, labels: labd.address, channelList: chd.address,
                       pageTable: pt.address, pageSize: P, maxPages: maxPages, seqLens: ld.address, kPerSeq: kpd.address,
                       sinks: sinks, recent: recent, out: od.address)
            let got = try ctx.download(od.address, count: B * H * D, as: UInt16.self)
            let keys = try ds.keysHost(), thr = try ds.thresholdsHost(), lists = try ds.selectionListsHost()
            var selOK = true, listsOK = true, scoreErr = 0.0, err = 0.0, scale = 0.0, maxTies = 0, keyDiffs = 0, refDiffs = 0
            for b in 0..<B { for s in 0..<S {
                let h = s / spk, bs = b * S + s
                let base = bs * ds.keyRowStride, T = thr[bs * 2], cut = Int(Int32(bitPattern: thr[bs * 2 + 1]))
                let L = lens[b]
                var pin = AttentionOptions()
                pin.sinks = sinks
                pin.recent = recent
                let w = pin.pinned(visible: L, budget: min(kper[b], L), defaultRecent: 0).recent
                let sel = (0..<L).filter { keys[base + $0] > T || (keys[base + $0] == T && $0 <= cut) }
                let selSet = Set(sel)
                let minSel = sel.map { keys[base + $0] }.min() ?? 0
                let maxOut = (0..<L).filter { !selSet.contains($0) }.map { keys[base + $0] }.max() ?? 0
                if sel.count != min(kper[b], L) || (sel.count < L && minSel < maxOut) { selOK = false }
                // ties at T are taken in position order: the selected ones come first
                let tiePos = (0..<L).filter { keys[base + $0] == T }
                let taken = tiePos.filter { selSet.contains($0) }.count
                if tiePos.prefix(taken).contains(where: { !selSet.contains($0) }) { selOK = false }
                maxTies = max(maxTies, tiePos.count)
                // scores against float64: s_j = (Σ_g q_g[C])·K_j[C], over the selection's query heads
                let qs = (0..<R).map { c in (0..<gs).reduce(0.0) { $0 + Self.f(qv[(b * H + s * gs + $1) * D + Int(ch[h * R + c])]) } }
                // The 16-bit key is the score truncated to bf16 (toward zero): within 2^-7 of it.
                var refKey = [UInt32](repeating: 0xffff, count: L)
                for j in sinks..<(L - w) {
                    var s = 0.0
                    for c in 0..<R { s += qs[c] * Self.f(kh[row(b, j, h) + Int(ch[h * R + c])]) }
                    let kk = keys[base + j] << 16
                    let u = kk & 0x8000_0000 != 0 ? kk & 0x7fff_ffff : ~kk & 0xffff_0000
                    scoreErr = max(scoreErr, abs(Double(Float(bitPattern: u)) - s) - abs(s) / 128)
                    let fb = Float(s).bitPattern
                    refKey[j] = (fb & 0x8000_0000 != 0 ? ~fb : fb | 0x8000_0000) >> 16
                    if refKey[j] != keys[base + j] { keyDiffs += 1 }
                }
                // float64 reference selection: exactly the top-k by the float64 scores' 16-bit keys,
                // ties to the lowest position (differs from the kernel's only where f32 summation
                // moved a key across a bf16 boundary).
                let refSel = Set((0..<L).sorted { refKey[$0] != refKey[$1] ? refKey[$0] > refKey[$1] : $0 < $1 }.prefix(min(kper[b], L)))
                refDiffs += refSel.symmetricDifference(selSet).count
                // The lists the attend kernel reads hold exactly this selection.
                if let got = lists[bs] {
                    let fromRows = got.rows.map { position(b, $0, h) ?? -1 }
                    let all = fromRows + got.positions
                    if all.count != sel.count || Set(all) != selSet { listsOK = false }
                } else { listsOK = false }
                for j in 0..<min(sinks, L) where !selSet.contains(j) { selOK = false }   // sinks always selected
                for j in (L - w)..<L where !selSet.contains(j) { selOK = false }          // and the recent window
                for g in 0..<gs {
                    let qhd = s * gs + g
                    let r = attend((0..<D).map { Self.f(qv[(b * H + qhd) * D + $0]) }, b, qhd, sel)
                    for i in 0..<D { err = max(err, abs(r[i] - Self.f(got[(b * H + qhd) * D + i]))); scale = max(scale, abs(r[i])) }
                }
            } }
            let what = "\(perHead ? "per-head selections, " : "")sinks \(sinks)\(recent > 0 ? ", recent \(recent)" : "")\(quantized ? ", quantized scores" : mode == 2 ? ", all scores equal" : "")\(small ? ", 512-position splits, 4 chunks a threshold block" : "")\(variant == -1 ? ", 4096-position splits, 2 chunks a threshold block" : "")\(variant == -2 ? ", 4-position splits (1025 chunks)" : "")\(variant > 0 ? ", attend variant \(variant)" : "")"
            let refOK = keyDiffs == 0 ? refDiffs == 0 : refDiffs <= 2 * keyDiffs
            print("\(selOK ? "PASS" : "FAIL") \(name) DS \(what): exactly k = L/16 tokens, the top-k of the kernel's 16-bit keys, ties in position order (most keys equal to T: \(maxTies)); score err vs float64 beyond bf16 truncation \(scientific(max(0, scoreErr), 2))")
            print("\(refOK ? "PASS" : "FAIL") \(name) DS \(what): vs the float64 top-k by 16-bit key: \(refDiffs) tokens differ (keys off by f32 summation: \(keyDiffs))")
            print("\(listsOK ? "PASS" : "FAIL") \(name) DS \(what): the attend kernel's selection lists hold exactly the selection")
            ok = selOK && refOK && listsOK && scoreErr < 1e-3 && ok
            ok = report("DS attention over the selection, \(what)", err, scale) && ok
        }

        // 4. causal prefill over the paged cache (sequence 0), f32 in/out: a chunk after a prefix
        // (with and without a window), a prompt from position 0 (several 128-row blocks, full
        // tiles off the diagonal), a window wider than a key tile. Output poisoned with NaN.
        for (T, start, window) in [(300, 200, 0), (300, 200, 128), (700, 0, 0), (517, 900, 512)] {
            let qf = (0..<(T * H * D)).map { _ in rnd() }
            let qp = try ctx.allocate(bytes: qf.count * 4)
            try ctx.upload(qf, to: qp.address)
            try ctx.upload([Float](repeating: .nan, count: T * H * D), to: od.address)
            try kernels.prefill(q: qp.address, qF32: true, keys: kd.address, values: vd.address, pageTable: pt.address,
                                pageSize: P, rows: T, start: start, heads: H, kvHeads: KVH, headDim: D, window: window,
                                out: od.address, outF32: true)
            let got = try ctx.download(od.address, count: T * H * D, as: Float.self)
            var err = 0.0, scale = 0.0
            for t in stride(from: 0, to: T, by: 7) { for h in 0..<H {
                let pos = start + t, first = window > 0 ? max(0, pos - window + 1) : 0
                // the kernel feeds bf16 q to the tensor cores
                let q = (0..<D).map { Self.f(Self.bf16(qf[(t * H + h) * D + $0])) }
                let r = attend(q, 0, h, Array(first...pos))
                for i in 0..<D { err = max(err, abs(r[i] - Double(got[(t * H + h) * D + i]))); scale = max(scale, abs(r[i])) }
            } }
            // every element written and finite (Swift's max skips NaN, so count them apart)
            let unwritten = got.reduce(0) { $0 + ($1.isFinite ? 0 : 1) }
            if unwritten > 0 { print("FAIL \(name) prefill T=\(T) start \(start) window \(window): \(unwritten) outputs not finite"); ok = false }
            ok = report("prefill T=\(T) start \(start) window \(window) (paged, f32 q/out)", err, scale, tol: 2e-2) && ok
        }
        return ok
    }
}
