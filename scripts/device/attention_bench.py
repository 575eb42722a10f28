#!/usr/bin/env python3
"""Side-by-side check and timing of sift's CUDA attention kernels against PyTorch (issue 6 / 5).

Compiles Sources/Sift/Backends/CUDA/Kernels/*.cu with NVRTC through CuPy (the compiler the engine
uses at run time), checks each kernel against a float64 reference on fresh random inputs, then
times them beside torch SDPA (flash backend, enable_gqa=True) with CUDA events, L2 flushed before
each timed call (a decode step sees a cold cache), each call replayed from a CUDA graph.
Writes attention_bench.json and attention_bench.md to $OUT (or the current folder).

Usage: python3 scripts/device/attention_bench.py [--quick] [--only decode,ds,prefill]
       [--prefill-variants NAME=-DSIFT_PF_KT128=32:-DSIFT_PF_MIN_BLOCKS=2,...]  (tuning builds timed beside)
"""
import argparse, json, math, os, sys, time
import numpy as np
import torch
import cupy as cp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KDIR = os.path.join(ROOT, "Sources/Sift/Backends/CUDA/Kernels")
OUT = os.environ.get("OUT", ".")
dev = torch.device("cuda")
torch.backends.cuda.matmul.allow_tf32 = False
RESULTS = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "checks": [], "decode": [],
           "ds": [], "prefill": []}
LOG = []


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    LOG.append(s)


class Modules:
    """The kernel units, each compiled by NVRTC as the engine does (headers found by -I)."""

    def __init__(self, mods):
        self.mods = mods

    def get_function(self, name):
        for m in self.mods:
            try:
                return m.get_function(name)
            except Exception:
                pass
        raise KeyError(name)


def load_module(parts=("decode", "ds", "prefill")):
    cc = torch.cuda.get_device_capability()
    t = time.time()
    mods = []
    # only the units the run needs (decode_attention.cu alone takes ~30 s of NVRTC)
    units = {"decode": ["decode_attention.cu"], "ds": ["decode_attention.cu", "double_sparsity.cu"], "prefill": ["prefill_attention.cu"]}
    for f in dict.fromkeys(u for p in parts for u in units.get(p, [])):
        src = open(os.path.join(KDIR, f)).read()
        m = cp.RawModule(code=src, options=(f"--gpu-architecture=sm_{cc[0]}{cc[1]}", "-std=c++17", f"-I{KDIR}"))
        m.compile()
        mods.append(m)
    log(f"NVRTC compile {time.time() - t:.2f}s")
    return Modules(mods)


def load_prefill_variant(defines):
    """prefill_attention.cu compiled again with extra -D options (tuning variants, timed beside the default)."""
    cc = torch.cuda.get_device_capability()
    src = open(os.path.join(KDIR, "prefill_attention.cu")).read()
    m = cp.RawModule(code=src, options=(f"--gpu-architecture=sm_{cc[0]}{cc[1]}", "-std=c++17", f"-I{KDIR}") + tuple(defines))
    m.compile()
    return Modules([m])


def cpa(t):
    """A raw device pointer for a kernel argument (no DLPack exchange, so it is safe inside graph capture)."""
    assert t.is_cuda and t.is_contiguous()
    return np.uint64(t.data_ptr())


I = np.int32
F = np.float32


class Paged:
    """A paged bf16 KV cache with a shuffled page table."""

    def __init__(self, lens, kvh, d, page_shift=6, r=0, gen=None, extra_pages=3):
        P = 1 << page_shift
        self.lens, self.kvh, self.d, self.shift, self.P = list(lens), kvh, d, page_shift, P
        B = len(lens)
        self.max_pages = max((l + P - 1) // P for l in lens)
        npages = sum((l + P - 1) // P for l in lens) + extra_pages
        perm = torch.randperm(npages, generator=gen)
        pt = torch.zeros(B, self.max_pages, dtype=torch.int32)
        c = 0
        for b, l in enumerate(lens):
            for p in range((l + P - 1) // P):
                pt[b, p] = perm[c]; c += 1
        self.page_table = pt.to(dev)
        self.k = torch.randn(npages, kvh, P, d, device=dev, dtype=torch.bfloat16)
        self.v = torch.randn(npages, kvh, P, d, device=dev, dtype=torch.bfloat16)
        self.seq_lens = torch.tensor(lens, dtype=torch.int32, device=dev)

    def contiguous(self, b, what):
        """[L][KVH][D] rows of sequence b."""
        src = self.k if what == "k" else self.v
        L = self.lens[b]
        pages = self.page_table[b, : (L + self.P - 1) // self.P].long()
        x = src[pages].permute(0, 2, 1, 3).reshape(-1, self.kvh, self.d)
        return x[:L]


def choose_split(B, kvh, maxlen, sms, chunk, want_blocks=None):
    """Tokens per split: about one wave of 2 blocks per SM (the kernel's 128 threads use ~240
    registers), rounded up to a power of two (measured best on an H100 over 256..8192)."""
    want = want_blocks or sms * 2
    per = -(-B * kvh * maxlen // want)
    st = 1
    while st < per:
        st *= 2
    return max(chunk, st)


def dec_chunk(d, g):
    dpl = 16 if g <= 4 else 8
    lpt = d // dpl
    tpw = 32 // lpt
    u = 4 if g * dpl <= 64 else 2
    return 4 * tpw * u


class Decoder:
    def __init__(self, mod, B, hq, kvh, d, maxlen, sms, split_tokens=None, max_sel=0, fused=False):
        self.g = hq // kvh
        self.fused = fused
        self.counters = torch.zeros(B, kvh, dtype=torch.int32, device=dev)
        self.mod, self.B, self.hq, self.kvh, self.d = mod, B, hq, kvh, d
        self.split = split_tokens or choose_split(B, kvh, maxlen, sms, dec_chunk(d, self.g))
        self.max_splits = -(-maxlen // self.split)
        self.part_o = torch.empty(B, hq, self.max_splits, d, device=dev, dtype=torch.float32)
        self.part_lse = torch.empty(B, hq, self.max_splits, device=dev, dtype=torch.float32)
        self.out = torch.empty(B, hq, d, device=dev, dtype=torch.bfloat16)
        self.fsplit = mod.get_function(f"sift_decode_split_d{d}_g{self.g}")
        self.fcomb = mod.get_function(f"sift_decode_combine_d{d}")
        self.a_po, self.a_pl = cpa(self.part_o), cpa(self.part_lse)

    def __call__(self, q, cache, sel=None, selcount=None, max_sel=0, fixed_len=0, window=0, out=None):
        stream = cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)
        out = self.out if out is None else out
        lens = np.uint64(0) if fixed_len else cpa(cache.seq_lens)
        with stream:
            args = (cpa(q), cpa(cache.k), cpa(cache.v), cpa(cache.page_table), lens,
                    cpa(sel) if sel is not None else np.uint64(0), cpa(selcount) if selcount is not None else np.uint64(0),
                    I(max_sel), self.a_po, self.a_pl, I(cache.shift), I(cache.max_pages), I(self.split),
                    I(self.max_splits), F(1.0 / math.sqrt(self.d)),
                    np.uint64(0), cpa(out), I(fixed_len), I(window), I(q.dtype == torch.float32))
            self.fsplit((self.max_splits, self.kvh, self.B), (128,), args)
            self.fcomb((self.hq, self.B), (min(self.d, 128),),
                       (self.a_po, self.a_pl, lens, cpa(selcount) if selcount is not None else np.uint64(0),
                        I(self.g), I(self.split), I(self.max_splits), cpa(out), I(fixed_len), I(window),
                        I(out.dtype == torch.float32)), shared_mem=4 * self.max_splits)
        return out


def ref_decode(q, cache, rows=None, window=0):
    """float64 reference; rows: optional [B][KVH] list of index tensors; window: last tokens only."""
    B, hq, d = q.shape
    g = hq // cache.kvh
    out = torch.empty(B, hq, d, dtype=torch.float64, device=dev)
    for b in range(B):
        K = cache.contiguous(b, "k").double(); V = cache.contiguous(b, "v").double()
        for h in range(hq):
            kh = h // g
            Kh, Vh = K[:, kh], V[:, kh]
            if rows is not None:
                idx = rows[b][kh].long()
                Kh, Vh = Kh[idx], Vh[idx]
            elif window > 0:
                Kh, Vh = Kh[-window:], Vh[-window:]
            s = (Kh @ q[b, h].double()) / math.sqrt(d)
            out[b, h] = torch.softmax(s, 0) @ Vh
    return out


def flush_buf():
    return torch.empty(512 * 1024 * 1024 // 4, dtype=torch.int32, device=dev)


FLUSH = None


def bench(fn, reps=30, warm=3):
    """Median ms of fn replayed from a CUDA graph, L2 flushed before each call."""
    global FLUSH
    if FLUSH is None:
        FLUSH = flush_buf()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(warm):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    times = []
    for _ in range(reps):
        FLUSH.zero_()
        a = torch.cuda.Event(enable_timing=True); e = torch.cuda.Event(enable_timing=True)
        a.record(); graph.replay(); e.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(e))
    return float(np.median(times))


def copy_bandwidth():
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device=dev); b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
    ev[0].record()
    for _ in range(10):
        b.copy_(a)
    ev[1].record(); torch.cuda.synchronize()
    ms = ev[0].elapsed_time(ev[1]) / 10
    return 2 * n / (ms * 1e-3) / 1e9


def check(name, got, ref, tol):
    err = (got.double() - ref).abs().max().item()
    scale = ref.abs().max().item()
    ok = err <= tol * max(scale, 1e-6)
    RESULTS["checks"].append({"name": name, "max_abs_err": err, "ref_max": scale, "ok": ok})
    log(f"{'PASS' if ok else 'FAIL'} {name}: max|err| {err:.3e} (ref max {scale:.3e})")
    return ok


def sdpa_decode(q, kc, vc):
    from torch.nn.attention import sdpa_kernel, SDPBackend
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return torch.nn.functional.scaled_dot_product_attention(q, kc, vc, enable_gqa=True)


# ---------------------------------------------------------------- decode
def test_decode(mod, sms, gen):
    ok = True
    for (hq, kvh, d, lens, shift) in [(32, 8, 128, [1, 77, 4096, 3001], 6), (12, 2, 128, [5000, 17], 4),
                                      (4, 1, 256, [2500, 1], 5), (32, 8, 64, [3333, 64], 6),
                                      (14, 2, 64, [1000], 4), (8, 1, 128, [2049, 4000], 6), (10, 2, 128, [3000, 5], 5), (12, 2, 256, [1500], 6), (16, 8, 128, [999], 3)]:
        cache = Paged(lens, kvh, d, shift, gen=gen)
        q = (torch.randn(len(lens), hq, d, device=dev) * 2).bfloat16()
        ref = ref_decode(q, cache)
        for st, fused in [(None, False), (64 * 4, False)]:
            dec = Decoder(mod, len(lens), hq, kvh, d, max(lens), sms, split_tokens=st, fused=fused)
            for rep in range(2):   # the second call checks the counters were left zero
                out = dec(q, cache); torch.cuda.synchronize()
                ok &= check(f"decode hq{hq} kvh{kvh} d{d} lens{lens} page{1 << shift} split{dec.split} fused{fused} call{rep}",
                            out, ref, 1e-2)
    # The engine's calling convention: one sequence, length as an argument, f32 query and output,
    # optionally a sliding window.
    for (hq, kvh, d, L, window) in [(32, 8, 128, 5000, 0), (4, 1, 256, 3000, 512), (12, 2, 128, 700, 1000), (14, 2, 64, 2222, 100)]:
        cache = Paged([L], kvh, d, 6, gen=gen)
        q = torch.randn(1, hq, d, device=dev) * 2
        out = torch.empty(1, hq, d, device=dev, dtype=torch.float32)
        dec = Decoder(mod, 1, hq, kvh, d, min(L, window) if window else L, sms)
        dec(q, cache, fixed_len=L, window=window, out=out); torch.cuda.synchronize()
        ok &= check(f"decode f32 q/out fixed_len {L} window {window} hq{hq} kvh{kvh} d{d}", out,
                    ref_decode(q.bfloat16(), cache, window=window), 1e-2)
    return ok


def bench_decode(mod, sms, bw, quick):
    shapes = [("llama3-8b", 32, 8, 128, 1, 32768), ("llama3-8b", 32, 8, 128, 1, 65536), ("llama3-8b", 32, 8, 128, 1, 131072),
              ("llama3-8b", 32, 8, 128, 8, 32768), ("llama3-8b", 32, 8, 128, 8, 65536), ("llama3-8b", 32, 8, 128, 32, 8192),
              ("llama3-8b", 32, 8, 128, 4, 4096),
              ("qwen2.5-1.5b", 12, 2, 128, 1, 32768), ("qwen2.5-1.5b", 12, 2, 128, 8, 32768),
              ("gemma3-270m", 4, 1, 256, 8, 32768), ("d64 32/8", 32, 8, 64, 8, 32768)]
    if quick:
        shapes = shapes[:5]
    for (name, hq, kvh, d, B, L) in shapes:
        cache = Paged([L] * B, kvh, d, 6)
        q = torch.randn(B, hq, d, device=dev).bfloat16()
        best = None
        sweep = {}
        for st in [None, 256, 512, 1024, 2048, 4096, 8192, 16384]:
            if st is not None and st > L:
                continue
            dec = Decoder(mod, B, hq, kvh, d, L, sms, split_tokens=st)
            ms = bench(lambda: dec(q, cache))
            sweep[dec.split] = ms
            if best is None or ms < best[0]:
                best = (ms, dec.split)
            if st is None:
                default = (ms, dec.split)
        log(f"  split sweep {name} B={B} L={L} regs {dec.fsplit.num_regs}: " + ", ".join(f"{k}:{v:.4f}" for k, v in sorted(sweep.items())))
        kc = torch.randn(B, kvh, L, d, device=dev, dtype=torch.bfloat16); vc = torch.randn_like(kc)
        q4 = q.view(B, hq, 1, d)
        try:
            sd = bench(lambda: sdpa_decode(q4, kc, vc))
        except Exception as e:
            sd = float("nan"); log("sdpa failed", e)
        del kc, vc
        byts = B * L * kvh * d * 2 * 2
        gbs = byts / (best[0] * 1e-3) / 1e9
        row = {"model": name, "hq": hq, "kvh": kvh, "d": d, "B": B, "L": L, "page": 64, "sift_ms": best[0],
               "split_tokens": best[1], "sweep": sweep, "default_ms": default[0], "default_split": default[1], "sdpa_ms": sd,
               "bytes": byts, "GBps": gbs, "frac_copy_bw": gbs / bw, "ratio_vs_sdpa": best[0] / sd}
        RESULTS["decode"].append(row)
        log(f"decode {name} B={B} L={L}: sift {best[0]:.4f} ms (split {best[1]}; default {default[0]:.4f}/{default[1]}) "
            f"sdpa {sd:.4f} ms ratio {best[0] / sd:.3f} {gbs:.0f} GB/s = {gbs / bw:.1%} of copy")
        del cache
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- double sparsity
class DS:
    """Double Sparsity decode: scores+histogram, threshold, per-split select+attend, combine."""

    def __init__(self, mod, B, hq, kvh, d, maxlen, sms, r=8, frac=1 / 16, sinks=0, split_pos=None, match=False):
        blocks = -(-maxlen // 2048) * B * kvh
        self.rounds = max(1, min(8, blocks // (4 * sms)))
        self.mod, self.B, self.hq, self.kvh, self.d, self.r, self.sinks = mod, B, hq, kvh, d, r, sinks
        self.g = hq // kvh
        self.key_stride = -(-maxlen // 4) * 4
        self.keys = torch.empty(B, kvh, self.key_stride, dtype=torch.int32, device=dev)
        self.hist = torch.zeros(B, kvh, 4096, dtype=torch.int32, device=dev)
        self.thr = torch.zeros(B, kvh, 2, dtype=torch.int32, device=dev)
        self.cand_cap = min(self.key_stride, max(8192, self.key_stride // 8))
        self.cand = torch.empty(B, kvh, self.cand_cap, 2, dtype=torch.int32, device=dev)
        self.meta = torch.zeros(B, kvh, 4, dtype=torch.int32, device=dev)
        self.maxlen = maxlen
        self.counters = torch.zeros(B, kvh, dtype=torch.int32, device=dev)
        self.frac = frac
        if split_pos is None:
            per = -(-maxlen * B * kvh // (sms * 2))
            split_pos = min(4096, max(1024, -(-per // 1024) * 1024))
        assert split_pos % 4 == 0 and split_pos <= 4096
        self.split = split_pos
        self.max_splits = -(-maxlen // split_pos)
        self.part_o = torch.empty(B, hq, self.max_splits, d, device=dev, dtype=torch.float32)
        self.part_lse = torch.empty(B, hq, self.max_splits, device=dev, dtype=torch.float32)
        self.out = torch.empty(B, hq, d, device=dev, dtype=torch.bfloat16)
        self.fscore = mod.get_function(f"sift_ds_scores_{'match_' if match else ''}r{r}")
        self.fthr = mod.get_function("sift_ds_candidates")
        self.fatt = mod.get_function(f"sift_ds_attend_d{d}_g{self.g}")
        self.fcomb = mod.get_function(f"sift_decode_combine_d{d}")

    def kper(self, lens):
        return torch.tensor([max(1, int(l * self.frac)) for l in lens], dtype=torch.int32, device=dev)

    def score(self, q, cache, labels, channels, kper):
        self.fscore((-(-self.maxlen // (2048 * self.rounds)), self.kvh, self.B), (256,),
                    (cpa(q), cpa(labels), cpa(channels), cpa(cache.page_table), cpa(cache.seq_lens), I(self.g), I(self.d),
                     I(cache.shift), I(cache.max_pages), I(self.sinks), cpa(self.keys), I(self.key_stride), cpa(self.hist),
                     I(self.rounds)))

    def threshold(self, cache, kper):
        self.fthr((-(-self.maxlen // 4096), self.kvh, self.B), (256,),
                  (cpa(self.keys), I(self.key_stride), cpa(self.hist), cpa(cache.seq_lens), cpa(kper), cpa(self.cand),
                   I(self.cand_cap), cpa(self.meta), cpa(self.thr)))

    def attend(self, q, cache):
        self.fatt((self.max_splits, self.kvh, self.B), (128,),
                  (cpa(q), cpa(cache.k), cpa(cache.v), cpa(cache.page_table), cpa(cache.seq_lens), cpa(self.keys),
                   I(self.key_stride), cpa(self.thr), cpa(self.part_o), cpa(self.part_lse), I(cache.shift), I(cache.max_pages),
                   I(self.split), I(self.max_splits), F(1.0 / math.sqrt(self.d)), cpa(self.counters), cpa(self.out)))
        self.fcomb((self.hq, self.B), (min(self.d, 128),),
                   (cpa(self.part_o), cpa(self.part_lse), cpa(cache.seq_lens), np.uint64(0), I(self.g), I(self.split),
                    I(self.max_splits), cpa(self.out), I(0), I(0), I(0)), shared_mem=4 * self.max_splits)

    def __call__(self, q, cache, labels, channels, kper, parts="sta"):
        with cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
            if "s" in parts: self.score(q, cache, labels, channels, kper)
            if "t" in parts: self.threshold(cache, kper)
            if "a" in parts: self.attend(q, cache)
        return self.out


def make_labels(cache, channels):
    # labels[page][kvh][P][r] = K[page][kvh][P][channels[kvh]]
    idx = channels.long().view(1, cache.kvh, 1, -1).expand(cache.k.shape[0], cache.kvh, cache.P, -1)
    return torch.gather(cache.k, 3, idx).contiguous()


def key_to_float(keys):
    k = keys.view(torch.int32).long() & 0xffffffff
    u = torch.where(k >= 0x80000000, k & 0x7fffffff, (~k) & 0xffffffff)
    return torch.from_numpy(u.cpu().numpy().astype(np.uint32).view(np.float32))


def test_ds(mod, sms, gen):
    ok = True
    for (hq, kvh, d, lens, r, sinks, frac, split, flat) in [
            (32, 8, 128, [4096, 1000, 37], 8, 0, 1 / 16, None, False), (12, 2, 128, [8192, 3000], 8, 4, 1 / 16, 1024, False),
            (4, 1, 256, [5000], 16, 0, 1 / 8, None, False), (32, 8, 128, [20000, 7001], 8, 16, 1 / 16, 2048, False),
            (8, 2, 64, [9000, 4100], 8, 0, 1 / 16, 4096, True), (14, 2, 64, [3000], 4 * 2, 0, 1 / 16, None, False), (32, 8, 128, [70000], 8, 0, 1 / 16, 996, False),
            (32, 8, 128, [9000, 3001], 8, 0, 1 / 16, None, 2), (32, 8, 128, [150000, 40000], 8, 4, 1 / 16, None, False)]:
        cache = Paged(lens, kvh, d, 6, gen=gen)
        g = hq // kvh
        q = (torch.randn(len(lens), hq, d, device=dev) * 2).bfloat16()
        channels = torch.stack([torch.randperm(d, generator=gen)[:r] for _ in range(kvh)]).int().to(dev)
        if flat:   # all approximate scores equal: every key ties, the overflow path and the tie cut decide
            for kh in range(kvh):
                q[:, kh * g:(kh + 1) * g, channels[kh].long()] = 0
                if flat == 2:   # quantized: the score is one bf16 label, a few keys tie at T
                    q[:, kh * g, channels[kh][0].long()] = 1
        labels = make_labels(cache, channels)
        ds = DS(mod, len(lens), hq, kvh, d, max(lens), sms, r=r, frac=frac, sinks=sinks, split_pos=split, match=(len(lens) == 2))
        kper = ds.kper(lens)
        out = ds(q, cache, labels, channels, kper)
        torch.cuda.synchronize()
        rows = []
        sel_ok = True
        overlap_min = 1.0
        score_err = 0.0
        for b, L in enumerate(lens):
            rows.append([])
            K = cache.contiguous(b, "k").double()
            for kh in range(kvh):
                k = min(int(kper[b]), L)
                kk = ds.keys[b, kh, :L].long() & 0xffffffff
                T = int(ds.thr[b, kh, 0]) & 0xffffffff
                cut = int(ds.thr[b, kh, 1])
                pos = torch.arange(L, device=dev)
                mask = (kk > T) | ((kk == T) & (pos <= cut))
                idx = pos[mask]
                cnt = idx.numel()
                rows[b].append(idx)
                qs = q[b, kh * g:(kh + 1) * g].double().sum(0)[channels[kh].long()]
                s_ref = K[:, kh][:, channels[kh].long()] @ qs            # float64 approximate scores
                s_ref[:min(sinks, L)] = float("inf")
                got = key_to_float(ds.keys[b, kh, :L]).double().to(dev)
                fin = torch.isfinite(s_ref)
                score_err = max(score_err, (got[fin] - s_ref[fin]).abs().max().item() if fin.any() else 0.0)
                # exactly k tokens, and every selected key >= every unselected key (exact top-k of the
                # kernel's own scores); ties broken by lowest position
                if cnt != k or (cnt < L and kk[mask].min() < kk[~mask].max()):
                    sel_ok = False
                ties = pos[kk == T]
                if cnt < L and ties.numel() > 0 and mask[ties].long().diff().clamp(min=0).sum() > 0:
                    sel_ok = False
                # the histogram must be left zero for the next call
                if int(ds.hist[b, kh].abs().sum()) != 0 or int(ds.meta[b, kh].abs().sum()) != 0:
                    sel_ok = False
                ref_top = torch.arange(k) if flat == 1 else torch.topk(s_ref, k).indices
                inter = len(set(ref_top.tolist()) & set(idx.tolist())) / k
                overlap_min = min(overlap_min, inter)
        RESULTS["checks"].append({"name": f"ds select hq{hq} kvh{kvh} d{d} lens{lens} r{r} sinks{sinks} split{ds.split} flat{flat}",
                                  "exact_topk_of_kernel_scores": sel_ok, "overlap_with_f64_topk_min": overlap_min,
                                  "score_max_abs_err": score_err, "ok": sel_ok and overlap_min > 0.97})
        log(f"{'PASS' if sel_ok and overlap_min > 0.97 else 'FAIL'} ds select {lens} r{r}: exact={sel_ok} overlap with f64 top-k {overlap_min:.4f} score err {score_err:.2e}")
        ok &= sel_ok and overlap_min > 0.97
        RESULTS['checks'][-1]['ok'] = bool(sel_ok and overlap_min > 0.97)
        ok &= check(f"ds attend hq{hq} kvh{kvh} d{d} lens{lens}", out, ref_decode(q, cache, rows), 1e-2)
    return ok


def bench_ds(mod, sms, quick):
    shapes = [("llama3-8b", 32, 8, 128, 1, 32768), ("llama3-8b", 32, 8, 128, 1, 131072), ("llama3-8b", 32, 8, 128, 8, 32768), ("llama3-8b", 32, 8, 128, 8, 131072),
              ("llama3-8b", 32, 8, 128, 8, 65536), ("llama3-8b", 32, 8, 128, 16, 65536), ("llama3-8b", 32, 8, 128, 32, 32768),
              ("qwen2.5-1.5b", 12, 2, 128, 8, 32768)]
    if quick:
        shapes = shapes[:4]
    for (name, hq, kvh, d, B, L) in shapes:
        cache = Paged([L] * B, kvh, d, 6)
        r = d // 16
        q = torch.randn(B, hq, d, device=dev).bfloat16()
        channels = torch.stack([torch.randperm(d)[:r] for _ in range(kvh)]).int().to(dev)
        labels = make_labels(cache, channels)
        dec = Decoder(mod, B, hq, kvh, d, L, sms)
        dense = bench(lambda: dec(q, cache))
        ds = DS(mod, B, hq, kvh, d, L, sms, r=r)
        kper = ds.kper([L] * B)
        t_all = bench(lambda: ds(q, cache, labels, channels, kper))
        t_score = bench(lambda: ds(q, cache, labels, channels, kper, "s"))
        ds.hist.zero_()                      # scores alone keep adding to the histogram
        t_st = bench(lambda: ds(q, cache, labels, channels, kper, "st"))
        t_topk = t_st - t_score
        t_att = bench(lambda: ds(q, cache, labels, channels, kper, "a"))
        sweep = {}
        for sp in [512, 1024, 2048, 4096]:
            if sp <= L:
                d2 = DS(mod, B, hq, kvh, d, L, sms, r=r, split_pos=sp)
                sweep[sp] = bench(lambda: d2(q, cache, labels, channels, kper))
                del d2
        d2 = DS(mod, B, hq, kvh, d, L, sms, r=r, match=True)
        t_match = bench(lambda: d2(q, cache, labels, channels, kper)); del d2
        log(f"  DS split sweep: " + ", ".join(f"{k}:{v:.4f}" for k, v in sweep.items()) + f"; histogram by match_any: {t_match:.4f}")
        k = L // 16
        ideal = B * kvh * (L * r * 2 + 2 * k * d * 2)
        row = {"model": name, "B": B, "L": L, "r": r, "k": k, "dense_ms": dense, "ds_ms": t_all, "speedup": dense / t_all,
               "score_ms": t_score, "topk_ms": t_topk, "gather_attend_ms": t_att, "split_pos": ds.split, "split_sweep": sweep, "rounds": ds.rounds, "match_any_ms": t_match, "ds_ideal_bytes": ideal,
               "ds_GBps_ideal_bytes": ideal / (t_all * 1e-3) / 1e9}
        RESULTS["ds"].append(row)
        log(f"ds {name} B={B} L={L}: dense {dense:.4f} ms, DS {t_all:.4f} ms => {dense / t_all:.2f}x "
            f"(score+hist {t_score:.4f}, threshold (st-s) {t_topk:.4f}, select+attend+combine {t_att:.4f}; split {ds.split})")
        del cache, labels
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- prefill
def ref_prefill(q, k, v, window, q0):
    # q [T][Hq][D], k/v [N][KVH][D]; query i at position q0+i sees keys j <= q0+i (and > q0+i-window)
    T, hq, d = q.shape
    N, kvh, _ = k.shape
    g = hq // kvh
    qq = q.double().permute(1, 0, 2)
    kk = k.double().permute(1, 0, 2).repeat_interleave(g, 0)
    vv = v.double().permute(1, 0, 2).repeat_interleave(g, 0)
    s = qq @ kk.transpose(1, 2) / math.sqrt(d)
    pos = torch.arange(T, device=dev).view(-1, 1) + q0
    j = torch.arange(N, device=dev).view(1, -1)
    m = j <= pos
    if window > 0:
        m &= j > pos - window
    s = s.masked_fill(~m, float("-inf"))
    return (torch.softmax(s, -1) @ vv).permute(1, 0, 2)


PF_ROWS, PF_THREADS = 128, 256          # sift_prefill_d*: as CUDAAttentionKernels.prefill launches it


def pf_key_tile(d):
    return 32 if d == 256 else 64


def run_prefill(mod, q, k, v, window, q0, out, paged=None, warps=PF_THREADS // 32):
    T, hq, d = q.shape
    if paged is not None:
        kc, vc, pt, shift, N, kvh = paged
    else:
        N, kvh, _ = k.shape
        kc, vc, pt, shift = k, v, None, 0
    f = mod.get_function(f"sift_prefill_d{d}")
    args = (cpa(q), I(q.dtype == torch.float32), cpa(kc), cpa(vc), np.uint64(0) if pt is None else cpa(pt), I(shift), cpa(out),
            I(out.dtype == torch.float32), I(T), I(N), I(hq), I(kvh), I(q0), I(window), F(1.0 / math.sqrt(d)))
    stream = cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)
    with stream:
        smem = 2 * 2 * pf_key_tile(d) * d * 2
        if f.max_dynamic_shared_size_bytes < smem:      # set once, outside any graph capture
            f.max_dynamic_shared_size_bytes = smem
        f((-(-T // (16 * warps)) * hq,), (32 * warps,), args, shared_mem=smem)
    return out


def test_prefill(mod, gen):
    ok = True
    for (hq, kvh, d, T, q0, window) in [(32, 8, 128, 300, 0, 0), (12, 2, 128, 1000, 0, 0), (4, 1, 256, 200, 0, 0),
                                         (8, 2, 64, 513, 0, 0), (32, 8, 128, 700, 0, 128), (4, 1, 256, 333, 100, 64),
                                         (14, 2, 64, 129, 1000, 0), (12, 2, 128, 1, 0, 0), (12, 2, 128, 17, 40, 0),
                                         (12, 2, 128, 640, 2000, 0), (4, 1, 256, 700, 300, 512), (8, 2, 64, 900, 77, 200),
                                         (12, 2, 128, 2048, 4096, 512)]:
        N = q0 + T
        q = torch.randn(T, hq, d, device=dev).bfloat16(); k = torch.randn(N, kvh, d, device=dev).bfloat16()
        v = torch.randn_like(k)
        out = torch.full((T, hq, d), float("nan"), device=dev, dtype=torch.bfloat16)   # poisoned: every element must be written
        run_prefill(mod, q, k, v, window, q0, out); torch.cuda.synchronize()
        ref = ref_prefill(q, k, v, window, q0)
        ok &= check(f"prefill hq{hq} kvh{kvh} d{d} T{T} q0{q0} window{window}", out, ref, 1e-2)
        # the engine's convention: f32 query/output, keys and values in the paged cache
        cache = Paged([N], kvh, d, 5, gen=gen)
        pages = cache.page_table[0, : (N + cache.P - 1) // cache.P].long()
        kk = torch.zeros(len(pages) * cache.P, kvh, d, device=dev, dtype=torch.bfloat16); kk[:N] = k
        vv = torch.zeros_like(kk); vv[:N] = v
        cache.k[pages] = kk.view(len(pages), cache.P, kvh, d).permute(0, 2, 1, 3)
        cache.v[pages] = vv.view(len(pages), cache.P, kvh, d).permute(0, 2, 1, 3)
        out32 = torch.full((T, hq, d), float("nan"), device=dev, dtype=torch.float32)
        run_prefill(mod, q.float(), None, None, window, q0, out32, paged=(cache.k, cache.v, cache.page_table, cache.shift, N, kvh))
        torch.cuda.synchronize()
        ok &= check(f"prefill paged f32 hq{hq} kvh{kvh} d{d} T{T} q0{q0} window{window}", out32, ref, 1e-2)
    return ok


VARIANTS = {}   # name -> (module, warps), from --prefill-variants


def bench_prefill(mod, quick):
    from torch.nn.attention import sdpa_kernel, SDPBackend
    shapes = [("llama3-8b", 32, 8, 128, T, 0) for T in (4096, 8192, 16384, 32768)] + \
             [("qwen2.5-1.5b", 12, 2, 128, T, 0) for T in (4096, 8192, 16384, 32768)] + [("gemma3-270m local", 4, 1, 256, 8192, 512)]
    for (name, hq, kvh, d, T, window) in (shapes[:2] if quick else shapes):
        q = torch.randn(T, hq, d, device=dev).bfloat16(); k = torch.randn(T, kvh, d, device=dev).bfloat16()
        v = torch.randn_like(k)
        out = torch.empty_like(q)
        t = bench(lambda: run_prefill(mod, q, k, v, window, 0, out), reps=5, warm=1)
        qs, ks, vs = (x.permute(1, 0, 2).unsqueeze(0) for x in (q, k, v))
        if window == 0:
            def sd():
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    return torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=True)
        else:
            i = torch.arange(T, device=dev)
            mask = (i.view(1, -1) <= i.view(-1, 1)) & (i.view(1, -1) > i.view(-1, 1) - window)
            def sd():
                return torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, enable_gqa=True)
        try:
            ts = bench(sd, reps=5, warm=1)
        except Exception as e:
            ts = float("nan"); log("sdpa prefill failed", e)
        causal_flops = 4 * hq * d * T * (T + 1) / 2 if window == 0 else 4 * hq * d * T * window
        row = {"model": name, "T": T, "window": window, "sift_ms": t, "sdpa_ms": ts, "ratio_vs_sdpa": t / ts,
               "sift_TFLOPs": causal_flops / (t * 1e-3) / 1e12}
        for vname, (vmod, warps) in VARIANTS.items():
            if window == 0 and T in (8192, 32768):
                row[vname + "_ms"] = bench(lambda: run_prefill(vmod, q, k, v, window, 0, out, warps=warps), reps=5, warm=1)
                log(f"  variant {vname}: {row[vname + '_ms']:.3f} ms")
        RESULTS["prefill"].append(row)
        log(f"prefill {name} T={T} window={window}: sift {t:.3f} ms, sdpa {ts:.3f} ms, ratio {t / ts:.2f}, "
            f"{row['sift_TFLOPs']:.1f} TFLOP/s")


def write():
    with open(os.path.join(OUT, "attention_bench.json"), "w") as f:
        json.dump(RESULTS, f, indent=1)
    md = [f"# attention_bench on {RESULTS['device']} (torch {RESULTS['torch']})", "",
          f"copy bandwidth (D2D, read+write): {RESULTS.get('copy_GBps', 0):.0f} GB/s", ""]
    if RESULTS["decode"]:
        md += ["| shape | B | L | sift ms | split | SDPA flash ms | sift/SDPA | GB/s | of copy BW |", "|---|---|---|---|---|---|---|---|---|"]
        for r in RESULTS["decode"]:
            md.append(f"| {r['model']} {r['hq']}/{r['kvh']} d{r['d']} | {r['B']} | {r['L']} | {r['sift_ms']:.4f} | {r['split_tokens']} | "
                      f"{r['sdpa_ms']:.4f} | {r['ratio_vs_sdpa']:.3f} | {r['GBps']:.0f} | {r['frac_copy_bw']:.1%} |")
        md.append("")
    if RESULTS["ds"]:
        md += ["| DS shape | B | L | dense ms | DS ms | speedup | score ms | top-k ms | gather-attend ms |", "|---|---|---|---|---|---|---|---|---|"]
        for r in RESULTS["ds"]:
            md.append(f"| {r['model']} r={r['r']} k={r['k']} | {r['B']} | {r['L']} | {r['dense_ms']:.4f} | {r['ds_ms']:.4f} | "
                      f"{r['speedup']:.2f}x | {r['score_ms']:.4f} | {r['topk_ms']:.4f} | {r['gather_attend_ms']:.4f} |")
        md.append("")
    if RESULTS["prefill"]:
        vn = list(VARIANTS)
        md += ["| prefill shape | T | window | sift ms | SDPA ms | sift/SDPA | sift TFLOP/s |" + "".join(f" {v} ms |" for v in vn),
               "|---|---|---|---|---|---|---|" + "---|" * len(vn)]
        for r in RESULTS["prefill"]:
            md.append(f"| {r['model']} | {r['T']} | {r['window']} | {r['sift_ms']:.3f} | {r['sdpa_ms']:.3f} | {r['ratio_vs_sdpa']:.2f} | "
                      f"{r['sift_TFLOPs']:.1f} |" + "".join(f" {r.get(v + '_ms', float('nan')):.3f} |" for v in vn))
        md.append("")
    md += ["## checks", ""] + [f"- {'PASS' if c['ok'] else 'FAIL'} {c['name']}" for c in RESULTS["checks"]]
    with open(os.path.join(OUT, "attention_bench.md"), "w") as f:
        f.write("\n".join(md) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="decode,ds,prefill")
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--prefill-variants", default="",
                    help="tuning variants timed beside the prefill kernel: NAME=-DX=1:-DY=2,NAME2=... (SIFT_PF_WARPS sets the launch)")
    a = ap.parse_args()
    parts = a.only.split(",")
    mod = load_module(parts)
    for spec in filter(None, a.prefill_variants.split(",")):
        vname, defs = spec.split("=", 1)
        defs = defs.split(":")
        warps = next((int(d.split("=")[1]) for d in defs if d.startswith("-DSIFT_PF_WARPS=")), PF_THREADS // 32)
        VARIANTS[vname] = (load_prefill_variant(defs), warps)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    gen = torch.Generator().manual_seed(int(time.time()))
    bw = copy_bandwidth()
    RESULTS["copy_GBps"] = bw
    log(f"device {RESULTS['device']}, {sms} SMs, copy bandwidth {bw:.0f} GB/s")
    ok = True
    try:
        if "decode" in parts:
            ok &= test_decode(mod, sms, gen)
            if not a.no_bench:
                bench_decode(mod, sms, bw, a.quick)
            write()
        if "ds" in parts:
            ok &= test_ds(mod, sms, gen)
            if not a.no_bench:
                bench_ds(mod, sms, a.quick)
            write()
        if "prefill" in parts:
            ok &= test_prefill(mod, gen)
            if not a.no_bench:
                bench_prefill(mod, a.quick)
    finally:
        RESULTS["all_checks_pass"] = bool(ok)
        write()
    log("ALL CHECKS PASS" if ok else "SOME CHECKS FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
