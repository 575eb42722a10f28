// Double Sparsity decode on the GPU (sift, issue 5). Four launches plus the split combine:
//   1. sift_ds_scores_r<R>: approximate scores of every token from the label cache, stored as
//      16-bit order-preserving keys (the score truncated to bf16, ds_key16), and a histogram of
//      the keys' top 12 bits per (b, KV head);
//   2. sift_ds_pick_d1: per (b, KV head), the histogram bin D1 of the k-th largest key and how
//      many keys of that bin are taken; it zeroes the histogram for the next call;
//   3. sift_ds_candidates_c<CPB>: the selection lists, one block per chunk (= attend split): each
//      block writes its chunk's list — the pool rows of the keys whose top 12 bits are above D1,
//      then its candidates (top 12 bits = D1) — and a 16-bin histogram of its candidates' low 4
//      bits;
//   4. sift_ds_attend_d<D>_g<G>: one block per chunk sums the chunks' low-digit histograms into
//      the exact k-th largest key T and the number of keys equal to T it takes (the first ones
//      by position), copies its list's rows and the candidates it takes into shared memory and
//      runs decode_core (decode_core.cuh) over just those rows. It never reads the keys.
//      The selection is {j : key_j > T} ∪ {the first keys equal to T by position}, exactly k
//      tokens, the top-k by 16-bit key, ties by lowest position.
// Bytes a token per KV head (r = 8, k = L/16, d = 128): labels 16, keys 2 written + 2 read, lists
// ~0.3, selected K/V rows 32 (dense: 512).
//
//   labels     [pages][KVH][P][R] bf16, paged like the KV cache (same page table); or, for the
//              4-bit variant (sift_ds_scores4_r<R>), [pages][KVH][P][1 + R/8] words of f16 scale |
//              f16 offset and R 4-bit codes (ds_labels.cu), scored with the query scaled by
//              qscale [KVH][R] (the channels' σ): s_j = m·Σq' + s·Σ q'_c·u_c, q' = q·σ; or, per-channel
//              grid (sift_ds_scores4g_r<R>), R/8 words of codes alone: s = step, m = -7.5·step
//              (labels 4 bytes a token at r = 8)
//   channels   [KVH][R] int32: the calibrated channels of this layer, per KV head
//   keys       [B][S][key_stride] u16 (key_stride a multiple of 4)
//   hist       [B][S][4096] int32, zero before the first call (sift_ds_pick_d1 re-zeroes it)
//   thr        [B][S][2] uint32: T and the tie cut (the last position equal to T taken; 2^31 - 1 when
//              all are), written by the attend kernel for the host's checks
// By default one selection per KV group, from the group's summed query (as the CPU path does):
//   s_j = (Σ_{h∈group} q_h[C]) · label_j;  with spk > 1 (`--ds-group per-head`) one selection per
//   query head, s_j = q_h[C] · label_j, each reading its KV head's labels and rows (grid.y and the
//   keys, histogram, lists and thresholds are per selection: DS_SELECTION_INDICES). The first
//   `sinks` tokens and the recent window (ds_recent_from) always win (key 0xffff).

#include "decode_core.cuh"

// meta [B][S][DS_META] int: [2] D1 and [3] how many keys of bin D1 are taken (sift_ds_pick_d1;
// [0] and [1] unused).
#define DS_META 4

// float_key, block_scan, flush_hist, tie_cut_scan and write_all_or_none live in select_common.cuh
// (shared with sparse_select.cu).
#include "select_common.cuh"

// Bin containing the `remaining`-th largest of hist[0..nb) (counted from the top), for the whole
// block (blockDim.x a multiple of 32 dividing nb, or nb <= blockDim.x): sets *digit and *rem (how
// many to take inside that bin). nb is 4096 or 256. hist may be global (read once per thread).
__device__ __forceinline__ void pick_bin(const int* hist, int nb, int remaining, int* scan_sm,
                                         int* digit, int* rem) {
    const int tid = threadIdx.x;
    const int per = nb >= (int)blockDim.x ? nb / blockDim.x : 1;
    int local = 0;
    if (tid * per < nb) for (int j = 0; j < per; j++) local += hist[nb - 1 - (tid * per + j)];
    int total;
    const int incl = block_scan(local, scan_sm, &total);
    const int excl = incl - local;
    if (tid * per < nb && excl < remaining && remaining <= incl) {
        int above = excl;
        for (int j = 0; j < per; j++) {
            const int bin = nb - 1 - (tid * per + j);
            if (above + hist[bin] >= remaining) { *digit = bin; *rem = remaining - above; break; }
            above += hist[bin];
        }
    }
    __syncthreads();
}

// Grid (ceil(maxLen / (rounds*256*DS_TPT)), KVH, B), 256 threads, each thread DS_TPT tokens a
// round; the block flushes its histogram once. HIST_MATCH: lanes with equal bins add once
// (__match_any_sync) instead of each lane adding (smem atomics on few hot bins).
#define DS_TPT 8
// The 16-bit selection key of a score: the top half of its order-preserving uint32 key, i.e. the
// score truncated (toward zero) to bf16 precision, ordered. The labels are bf16 already; the
// selection is exactly the top-k by this key, ties to the lowest position.
__device__ __forceinline__ sift_u32 ds_key16(float s) { return float_key(s) >> 16; }

// How the bf16 scores kernel loads and scores one label row (R bf16 values). The 4-bit labels
// have their own kernel (ds_scores4 below), which reads 4 tokens' records at a time.
template <int R> struct ds_label16 {
    struct raw { uint4 w[R / 8]; };
    static __device__ __forceinline__ void load(const void* labels, sift_size row, raw& r) {
        const uint4* lp = (const uint4*)((const sift_bf16*)labels + row * R);
#pragma unroll
        for (int c = 0; c < R / 8; c++) r.w[c] = lp[c];
    }
    static __device__ __forceinline__ float dot(const float* qs, const raw& r) {
        float s = 0.f;
#pragma unroll
        for (int c = 0; c < R / 8; c++) {
            float f[8];
            unpack8(r.w[c], f);
#pragma unroll
            for (int e = 0; e < 8; e++) s = fmaf(qs[c * 8 + e], f[e], s);
        }
        return s;
    }
};
__device__ __forceinline__ float ds_f16_to_f32(unsigned h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"((unsigned short)h));
    return f;
}

// The selection a scores block works for: grid.y holds S = KVH·spk selections per sequence (spk 1:
// one per KV group, from the group's summed query; spk = heads per KV head: one per query head,
// `--ds-group per-head`); G is the query heads one selection sums (heads per KV head / spk).
// Selection sel reads the labels of KV head kvh = sel / spk and the queries sel·G ... sel·G + G - 1.
#define DS_SELECTION_INDICES \
    const int sel = blockIdx.y, b = blockIdx.z, S = gridDim.y, KVH = S / spk, kvh = sel / spk, Hq = S * G

// The recent window (AttentionOptions.pinned on the CPU): with k the sequence's budget, the last
// w = min(recent, (k - min(sinks, k)) / 2, n - min(sinks, k)) positions always win, like the sinks.
// Returns the first of them (n when w = 0).
__device__ __forceinline__ int ds_recent_from(int n, int k, int sinks, int recent) {
    const int s = min(min(sinks, k), n);
    return n - max(0, min(recent, min((k - s) / 2, n - s)));
}

template <int R, bool HIST_MATCH>
__device__ __forceinline__ void ds_scores(
    const sift_bf16* __restrict__ q, const void* __restrict__ labels, const int* __restrict__ channels,
    const int* __restrict__ page_table, const int* __restrict__ seq_lens, int G, int D,
    int page_shift, int max_pages, int sinks, const int* __restrict__ k_per_seq, int recent,
    unsigned short* __restrict__ keys, int key_stride, int* __restrict__ hist, int rounds, int spk)
{
    typedef ds_label16<R> L;
    DS_SELECTION_INDICES;
    const int n = seq_lens[b];
    const int recent_from = ds_recent_from(n, k_per_seq[b], sinks, recent);
    __shared__ float qs[R];
    const int* pt = page_table + (sift_size)b * max_pages;
    const int pmask = (1 << page_shift) - 1;
    unsigned short* kout = keys + (sift_size)(b * S + sel) * key_stride;
    __shared__ int sh[4096];
    for (int i = threadIdx.x; i < 4096; i += blockDim.x) sh[i] = 0;
    const unsigned lane = threadIdx.x & 31;
    for (int round = 0; round < rounds; round++) {
    const int t0 = (blockIdx.x * rounds + round) * blockDim.x * DS_TPT + threadIdx.x;
    typename L::raw lr[DS_TPT];
    sift_u32 key[DS_TPT];
#pragma unroll
    for (int u = 0; u < DS_TPT; u++) {
        key[u] = 0u;
        const int t = t0 + u * blockDim.x;
        if (t < n) {
            const sift_size row = (((sift_size)pt[t >> page_shift] * KVH + kvh) << page_shift) + (t & pmask);
            L::load(labels, row, lr[u]);
        }
    }
    if (round == 0) {   // the summed group query, while the first labels are in flight
        if (threadIdx.x < R) {
            const int ch = channels[kvh * R + threadIdx.x];
            float s = 0.f;
            for (int g = 0; g < G; g++) s += bf16_to_f32(q[(sift_size)(b * Hq + sel * G + g) * D + ch]);
            qs[threadIdx.x] = s;
        }
        __syncthreads();   // qs, and the zeroed histogram
    }
#pragma unroll
    for (int u = 0; u < DS_TPT; u++) {
        const int t = t0 + u * blockDim.x;
        if (t < n) {
            const float s = L::dot(qs, lr[u]);
            key[u] = t < sinks || t >= recent_from ? 0xffffu : ds_key16(s);
            kout[t] = (unsigned short)key[u];
        }
    }
    // Top-12-bit histogram: lanes with equal bins add once (scores bunch into few bins).
#pragma unroll
    for (int u = 0; u < DS_TPT; u++) {
        const bool live = t0 + u * (int)blockDim.x < n;
        const unsigned act = __ballot_sync(0xffffffffu, live);
        if (live) {
            const unsigned bin = key[u] >> 4;
            if (HIST_MATCH) {
                const unsigned peers = __match_any_sync(act, bin);
                if (lane == (unsigned)(__ffs(peers) - 1)) atomicAdd(&sh[bin], __popc(peers));
            } else {
                atomicAdd(&sh[bin], 1);
            }
        }
    }
    }
    __syncthreads();
    flush_hist(sh, hist + (sift_size)(b * S + sel) * 4096);
}

// The 4-bit scores kernel (issue 5): a thread owns groups of 4 consecutive tokens (one page-table
// entry and WORDS 16-byte loads a group, one 8-byte store of the 4 keys) instead of one token
// a load: the per-token address arithmetic and page-table loads were most of its instructions
// (it ran at ~60 % of the copy bandwidth, instruction bound). The summed, scaled query and its
// sum are kept in registers for the block's rounds. Same grid and token coverage as ds_scores
// (each round 256·DS_TPT tokens a block). Pages of 1 or 2 tokens load record by record.
// Nibble p of a code word as a float without an int-to-float conversion (a slower pipe): masked
// in place into the low 20 bits of the mantissa of 2^23 (nibbles 5 to 7 after one shift by 12,
// shared by the word; bit 23 would reach the exponent), minus 2^23: exactly code·2^e, e = 4p
// (p < 5) or 4p - 12. The query channel is pre-scaled by 2^-e (ds_nibble_scale, exact), so each
// product, hence the score, is the same as q·code.
__device__ __forceinline__ int ds_nibble_exp(int p) { return p < 5 ? 4 * p : 4 * p - 12; }
__device__ __forceinline__ float ds_nibble(sift_u32 w, int p) {
    const sift_u32 x = p < 5 ? (w & (15u << (4 * p))) : ((w >> 12) & (15u << (4 * p - 12)));
    return __uint_as_float(0x4B000000u | x) - 8388608.f;
}
__device__ __forceinline__ float ds_nibble_scale(int p) { return __uint_as_float((sift_u32)(127 - ds_nibble_exp(p)) << 23); }

// META false (`--ds-label-scale channel`): records are the R/8 code words alone, on the fixed grid
// (u - 7.5)·step of every channel: s_j = step·Σq'_c·u_c - 7.5·step·Σq', as the CPU.
// HM, the histogram: 0 one shared-memory atomic a token (the default); 1 lanes with equal bins add
// once (__match_any_sync); 2 none — a benchmark diagnostic only (the selection is then wrong), to
// time what the histogram costs.
template <int R, bool META, int HM = 0>
__device__ __forceinline__ void ds_scores4(
    const sift_bf16* __restrict__ q, const sift_u32* __restrict__ labels, const int* __restrict__ channels,
    const int* __restrict__ page_table, const int* __restrict__ seq_lens, int G, int D,
    int page_shift, int max_pages, int sinks, const int* __restrict__ k_per_seq, int recent,
    unsigned short* __restrict__ keys, int key_stride, int* __restrict__ hist, int rounds, const float* __restrict__ qscale,
    float step, int spk)
{
    constexpr int M = META ? 1 : 0;          // the scale|offset word
    constexpr int W = M + R / 8;             // words a record
    constexpr int GPT = DS_TPT / 4;         // groups of 4 tokens a thread a round
    DS_SELECTION_INDICES;
    const int n = seq_lens[b];
    const int recent_from = ds_recent_from(n, k_per_seq[b], sinks, recent);
    __shared__ float qs[R];
    const int* pt = page_table + (sift_size)b * max_pages;
    const int pmask = (1 << page_shift) - 1;
    unsigned short* kout = keys + (sift_size)(b * S + sel) * key_stride;
    __shared__ int sh[4096];
    for (int i = threadIdx.x; i < 4096; i += blockDim.x) sh[i] = 0;
    float qr[R];
    float qsum = 0.f;
    for (int round = 0; round < rounds; round++) {
        const int rbase = (blockIdx.x * rounds + round) * (int)blockDim.x * DS_TPT;
        sift_u32 wd[GPT][4 * W];
#pragma unroll
        for (int g = 0; g < GPT; g++) {
            const int t = rbase + (g * (int)blockDim.x + (int)threadIdx.x) * 4;
#pragma unroll
            for (int i = 0; i < 4 * W; i++) wd[g][i] = 0u;
            if (t < n) {
                if (page_shift >= 2) {   // the 4 tokens lie in one page: 4·W consecutive words, 16-byte aligned
                    const sift_size row = (((sift_size)pt[t >> page_shift] * KVH + kvh) << page_shift) + (t & pmask);
                    const uint4* p = (const uint4*)(labels + row * W);
#pragma unroll
                    for (int i = 0; i < W; i++) {
                        const uint4 v = p[i];
                        wd[g][4 * i] = v.x; wd[g][4 * i + 1] = v.y; wd[g][4 * i + 2] = v.z; wd[g][4 * i + 3] = v.w;
                    }
                } else {
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        if (t + j < n) {
                            const sift_size row = (((sift_size)pt[(t + j) >> page_shift] * KVH + kvh) << page_shift) + ((t + j) & pmask);
#pragma unroll
                            for (int i = 0; i < W; i++) wd[g][j * W + i] = labels[row * W + i];
                        }
                    }
                }
            }
        }
        if (round == 0) {   // the summed, scaled group query, while the first labels are in flight
            if (threadIdx.x < R) {
                const int ch = channels[kvh * R + threadIdx.x];
                float s = 0.f;
                for (int g = 0; g < G; g++) s += bf16_to_f32(q[(sift_size)(b * Hq + sel * G + g) * D + ch]);
                qs[threadIdx.x] = s * qscale[kvh * R + threadIdx.x];
            }
            __syncthreads();   // qs, and the zeroed histogram
#pragma unroll
            for (int c = 0; c < R; c++) { qsum += qs[c]; qr[c] = qs[c] * ds_nibble_scale(c % 8); }
        }
#pragma unroll
        for (int g = 0; g < GPT; g++) {
            const int t = rbase + (g * (int)blockDim.x + (int)threadIdx.x) * 4;
            sift_u32 key[4];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const sift_u32* r = &wd[g][j * W];
                float acc = 0.f;
#pragma unroll
                for (int c = 0; c < R; c++) acc = fmaf(qr[c], ds_nibble(r[M + c / 8], c % 8), acc);
                const float s = META ? fmaf(ds_f16_to_f32(r[0] >> 16), qsum, ds_f16_to_f32(r[0] & 0xffffu) * acc)
                                     : fmaf(-7.5f * step, qsum, step * acc);
                key[j] = t + j < sinks || t + j >= recent_from ? 0xffffu : ds_key16(s);
            }
            if (t + 3 < n) {
                *(uint2*)(kout + t) = make_uint2(key[0] | (key[1] << 16), key[2] | (key[3] << 16));
            } else {
#pragma unroll
                for (int j = 0; j < 4; j++) if (t + j < n) kout[t + j] = (unsigned short)key[j];
            }
            if (HM == 0) {
#pragma unroll
                for (int j = 0; j < 4; j++) if (t + j < n) atomicAdd(&sh[key[j] >> 4], 1);
            } else if (HM == 1) {
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const bool live = t + j < n;
                    const unsigned act = __ballot_sync(0xffffffffu, live);
                    if (live) {
                        const unsigned peers = __match_any_sync(act, key[j] >> 4);
                        if ((threadIdx.x & 31) == (unsigned)(__ffs(peers) - 1)) atomicAdd(&sh[key[j] >> 4], __popc(peers));
                    }
                }
            }
        }
    }
    __syncthreads();
    flush_hist(sh, hist + (sift_size)(b * S + sel) * 4096);
}

// 2b. The selection lists, over the grid (ceil(chunks / CPB), S, B) of DS_CAND_THREADS threads,
// each block CPB consecutive chunks; chunk = the attend kernel's split (a multiple of 4, at most
// DS_CHUNK). Every block puts its keys in flight, reads the bin D1 holding the k-th largest key
// (picked once per (b, selection) by sift_ds_pick_d1), then writes each chunk's list in position
// order: first the pool rows of the keys whose top 12 bits are above D1 (all selected), then the
// candidates (top 12 bits = D1) as key << 16 | position in the chunk; and the chunk's histogram of
// its candidates' low 4 bits. No block waits for another: the attend kernel resolves the exact
// k-th key T and the tie cut from those 16-bin histograms (ds_attend). Neither kernel reads a
// key twice; the attend kernel reads only its chunk's list (k·4 bytes in all) and the histograms.
//   lists     [B][S][list_stride] u32, chunk c's list at c·chunk
//   counts    [B][S][max_chunks] int2: (rows above D1, candidates)
//   low_hist  [B][S][max_chunks][16] int: the candidates' low 4 key bits, per chunk
#define DS_CAND_THREADS 256
#define DS_CHUNK 4096
#define DS_KPT (DS_CHUNK / DS_CAND_THREADS)   // keys a thread owns in a chunk (consecutive positions)

// Bin of the `remaining`-th largest of a 4096-bin global histogram, 256 threads, 16 bins a thread
// in one go (four 16-byte loads, kept in registers for the winning thread's search).
__device__ __forceinline__ void pick_bin4096(const int* hist, int remaining, int* scan_sm, int* digit, int* rem) {
    const int tid = threadIdx.x;
    const int4* hp = (const int4*)(hist + 4096 - 16 * (tid + 1));   // bins 4096-16(tid+1) .. 4095-16 tid
    const int4 a = hp[0], b = hp[1], c = hp[2], d = hp[3];
    const int h[16] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w, c.x, c.y, c.z, c.w, d.x, d.y, d.z, d.w};
    int local = 0;
#pragma unroll
    for (int j = 0; j < 16; j++) local += h[j];
    int total;
    const int incl = block_scan(local, scan_sm, &total);
    const int excl = incl - local;
    if (excl < remaining && remaining <= incl) {
        // Descending bins: h[15] is bin 4095 - 16 tid. Unrolled over the registers (was a loop of
        // dependent shared-memory loads from a copy).
        int above = excl, dg = -1, rm = 0;
#pragma unroll
        for (int j = 15; j >= 0; j--) {
            if (dg < 0 && above + h[j] >= remaining) { dg = j; rm = remaining - above; }
            above += h[j];
        }
        *digit = 4096 - 16 * (tid + 1) + dg; *rem = rm;
    }
    __syncthreads();
}

// 2a. Grid (S, B), 256 threads: the bin D1 of the k-th largest key and how many to take inside
// it, from the scores kernel's histogram, into meta[2] and meta[3] for the candidates and attend
// kernels; then zeroes the histogram for the next call (each thread the 16 bins it read).
extern "C" __global__ void __launch_bounds__(256) sift_ds_pick_d1(int* __restrict__ hist,
    const int* __restrict__ seq_lens, const int* __restrict__ k_per_seq, int* __restrict__ meta)
{
    sift_pdl_entry();
    const int kvh = blockIdx.x, b = blockIdx.y, bh = b * gridDim.x + kvh;
    const int n = seq_lens[b], k = min(k_per_seq[b], n);
    __shared__ int scan_sm[32];
    __shared__ int s_digit, s_rem;
    if (threadIdx.x == 0) { s_digit = 0; s_rem = 0; }
    __syncthreads();
    if (k > 0 && k < n) pick_bin4096(hist + (sift_size)bh * 4096, k, scan_sm, &s_digit, &s_rem);
    if (threadIdx.x == 0) { meta[(sift_size)bh * DS_META + 2] = s_digit; meta[(sift_size)bh * DS_META + 3] = s_rem; }
    int4* hp = (int4*)(hist + (sift_size)bh * 4096 + 4096 - 16 * (threadIdx.x + 1));
#pragma unroll
    for (int i = 0; i < 4; i++) hp[i] = make_int4(0, 0, 0, 0);
}

template <int CPB>
__device__ __forceinline__ void ds_candidates(
    const unsigned short* __restrict__ keys, int key_stride, const int* __restrict__ seq_lens,
    const int* __restrict__ k_per_seq, const int* __restrict__ page_table, int page_shift, int max_pages,
    int chunk, sift_u32* __restrict__ lists, int list_stride, int2* __restrict__ counts, int max_chunks,
    const int* __restrict__ meta, int* __restrict__ low_hist, int spk)
{
    const int sel = blockIdx.y, b = blockIdx.z, S = gridDim.y, tid = threadIdx.x;
    const int KVH = S / spk, kvh = sel / spk;   // the KV head whose rows the lists name
    const int bh = b * S + sel;
    const int n = seq_lens[b];
    const int k = min(k_per_seq[b], n);
    const unsigned short* kp = keys + (sift_size)bh * key_stride;
    const int* pt = page_table + (sift_size)b * max_pages;
    const int pmask = (1 << page_shift) - 1;
    __shared__ int scan_sm[32];
    __shared__ int s_digit, s_low[CPB][16];
    const bool partial = k > 0 && k < n;    // else everything (or nothing) is selected
    // Keys in flight first (packed pairs), with the page-table entries of this thread's positions.
    sift_u32 w[CPB][DS_KPT / 2];
    int pg0[CPB], pg1[CPB];
    const bool two = page_shift >= 4;       // a thread's 16 positions touch at most two pages
#pragma unroll
    for (int cb = 0; cb < CPB; cb++) {
        const int start = (blockIdx.x * CPB + cb) * chunk, end = min(n, start + chunk);
        const int i0 = start + tid * DS_KPT;
#pragma unroll
        for (int c = 0; c < DS_KPT / 4; c++) {
            const int i = i0 + 4 * c;
            if (partial && i + 3 < end) {
                const uint2 a = *(const uint2*)(kp + i);
                w[cb][2 * c] = a.x; w[cb][2 * c + 1] = a.y;
            } else {
                sift_u32 x[4];
#pragma unroll
                for (int j = 0; j < 4; j++) x[j] = partial && i + j < end ? kp[i + j] : 0u;
                w[cb][2 * c] = x[0] | (x[1] << 16); w[cb][2 * c + 1] = x[2] | (x[3] << 16);
            }
        }
        const bool any = k > 0 && i0 < end && tid * DS_KPT < chunk;
        pg0[cb] = any && two ? pt[i0 >> page_shift] : 0;
        pg1[cb] = any && two ? pt[(min(i0 + DS_KPT, end) - 1) >> page_shift] : 0;
    }
    // D1, picked once per (b, selection) by sift_ds_pick_d1.
    if (tid == 0) s_digit = partial ? meta[(sift_size)bh * DS_META + 2] : 0;
    if (tid < 16 * CPB) s_low[tid >> 4][tid & 15] = 0;
    __syncthreads();
    const sift_u32 d1 = (sift_u32)s_digit;
#pragma unroll
    for (int cb = 0; cb < CPB; cb++) {
        const int ci = blockIdx.x * CPB + cb;
        if (ci >= max_chunks) break;   // uniform
        const int start = ci * chunk, end = min(n, start + chunk);
        const int i0 = start + tid * DS_KPT;
        // Classify: bit j of `above` / `cand` for position i0 + j, branch-free: above = key > hi
        // (top 12 bits above D1), cand = key >= lo and not above (top 12 bits = D1); when
        // everything is selected hi = lo = -1 (all above, no candidates); then the positions past
        // the chunk or the row masked off at once.
        const int hi = partial ? (int)((d1 << 4) | 15u) : -1, lo = partial ? (int)(d1 << 4) : -1;
        const int nv = k > 0 ? max(0, min(min(end - i0, chunk - tid * DS_KPT), DS_KPT)) : 0;
        const unsigned valid = nv >= 32 ? 0xffffffffu : (1u << nv) - 1u;
        unsigned above = 0, ge = 0;
#pragma unroll
        for (int j = 0; j < DS_KPT; j++) {
            const int v = (int)((w[cb][j >> 1] >> (16 * (j & 1))) & 0xffffu);
            above |= (v > hi ? 1u : 0u) << j;
            ge |= (v >= lo ? 1u : 0u) << j;
        }
        above &= valid;
        unsigned cand = ge & ~above & valid;
        const int na = __popc(above), nc = __popc(cand);
        int tot;
        const int incl = block_scan(na | (nc << 16), scan_sm, &tot);
        const int ta = tot & 0xffff, tc = tot >> 16;
        int pa = (incl & 0xffff) - na, pc = ta + (incl >> 16) - nc;
        sift_u32* lp = lists + (sift_size)bh * list_stride + (sift_size)ci * chunk;
        while (above) {
            const int j = __ffs(above) - 1;
            above &= above - 1;
            const int t = i0 + j;
            const int pg = !two ? pt[t >> page_shift] : (t >> page_shift) == (i0 >> page_shift) ? pg0[cb] : pg1[cb];
            lp[pa++] = (((sift_u32)pg * KVH + kvh) << page_shift) + (t & pmask);
        }
        while (cand) {
            const int j = __ffs(cand) - 1;
            cand &= cand - 1;
            sift_u32 word = w[cb][0];   // selects, not a dynamic index (which would copy w to local memory)
#pragma unroll
            for (int q = 1; q < DS_KPT / 2; q++) if ((j >> 1) == q) word = w[cb][q];
            const sift_u32 key = (j & 1) ? word >> 16 : word & 0xffffu;
            lp[pc++] = (key << 16) | (sift_u32)(tid * DS_KPT + j);
            atomicAdd(&s_low[cb][key & 15u], 1);
        }
        if (tid == 0) counts[(sift_size)bh * max_chunks + ci] = make_int2(ta, tc);
    }
    __syncthreads();
    if (tid < 16 * CPB) {
        const int ci = blockIdx.x * CPB + (tid >> 4);
        if (ci < max_chunks) low_hist[((sift_size)bh * max_chunks + ci) * 16 + (tid & 15)] = s_low[tid >> 4][tid & 15];
    }
}

// The single-block exact threshold (one 1024-thread block per (b, KV head)): Double Sparsity now
// uses the multi-block candidates kernel above; Quest and TidalDecode (sparse_select.cu,
// SparseSelectKernels.swift) still select through this one.
#define TOPK_THREADS 1024
#define TOPK_CAP 3072

// Grid (KVH, B), TOPK_THREADS threads.
__device__ __forceinline__ void ds_threshold(
    const sift_u32* __restrict__ keys, int key_stride, int* __restrict__ hist, const int* __restrict__ seq_lens,
    const int* __restrict__ k_per_seq, sift_u32* __restrict__ thr)
{
    const int kvh = blockIdx.x, b = blockIdx.y, KVH = gridDim.x, tid = threadIdx.x;
    const int n = seq_lens[b];
    const int k = min(k_per_seq[b], n);
    const sift_u32* kp = keys + (sift_size)(b * KVH + kvh) * key_stride;
    int* gh = hist + (sift_size)(b * KVH + kvh) * 4096;
    sift_u32* out = thr + (sift_size)(b * KVH + kvh) * 2;
    __shared__ int sh[4096];
    __shared__ sift_u32 ckey[TOPK_CAP];
    __shared__ int cidx[TOPK_CAP];
    __shared__ int scan_sm[32];
    __shared__ int s_digit, s_rem, s_count, s_cut;
    for (int i = tid; i < 4096; i += blockDim.x) { sh[i] = gh[i]; gh[i] = 0; }
    if (tid == 0) { s_count = 0; s_cut = -1; }
    __syncthreads();
    if (k >= n || k <= 0) {                      // everything (or nothing) is selected
        if (tid == 0) write_all_or_none(out, k);
        return;
    }
    pick_bin(sh, 4096, k, scan_sm, &s_digit, &s_rem);
    sift_u32 prefix = (sift_u32)s_digit << 20;
    int remaining = s_rem;
    // Gather the keys with this 12-bit prefix (positions ascending inside each thread's quad).
    const int lane = tid & 31;
    constexpr int QPT = 8;   // 16-byte loads in flight per thread
    for (int base0 = 0; base0 < n; base0 += blockDim.x * 4 * QPT) {   // uniform trip count: full-warp votes
        uint4 w[QPT];
#pragma unroll
        for (int qd = 0; qd < QPT; qd++) {
            const int i0 = base0 + (qd * blockDim.x + tid) * 4;
            w[qd] = make_uint4(0, 0, 0, 0);
            if (i0 + 3 < n) w[qd] = *(const uint4*)(kp + i0);
            else if (i0 < n) { w[qd].x = kp[i0]; if (i0 + 1 < n) w[qd].y = kp[i0 + 1]; if (i0 + 2 < n) w[qd].z = kp[i0 + 2]; }
        }
#pragma unroll
        for (int qd = 0; qd < QPT; qd++) {
            const int i0 = base0 + (qd * blockDim.x + tid) * 4;
            const sift_u32 v[4] = {w[qd].x, w[qd].y, w[qd].z, w[qd].w};
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const bool hit = i0 + j < n && (v[j] >> 20) == (prefix >> 20);
                const unsigned bal = __ballot_sync(0xffffffffu, hit);
                if (bal) {
                    int base = 0;
                    const int leader = __ffs(bal) - 1;
                    if (lane == leader) base = atomicAdd(&s_count, __popc(bal));
                    base = __shfl_sync(0xffffffffu, base, leader);
                    if (hit) {
                        const int pos = base + __popc(bal & ((1u << lane) - 1u));
                        if (pos < TOPK_CAP) { ckey[pos] = v[j]; cidx[pos] = i0 + j; }
                    }
                }
            }
        }
    }
    __syncthreads();
    const int cnt = s_count;
    const bool fits = cnt <= TOPK_CAP;
    const int shifts[2] = {8, 0}, widths[2] = {12, 8};
    int s_digit_last = 0;
    sift_u32 mask = 0xfff00000u;
    for (int pass = 0; pass < 2; pass++) {
        const int shift = shifts[pass], nb = 1 << widths[pass];
        for (int i = tid; i < nb; i += blockDim.x) sh[i] = 0;
        __syncthreads();
        if (fits) {
            for (int i = tid; i < cnt; i += blockDim.x)
                if ((ckey[i] & mask) == prefix) atomicAdd(&sh[(ckey[i] >> shift) & (nb - 1)], 1);
        } else {
            for (int i = tid; i < n; i += blockDim.x) {
                const sift_u32 key = kp[i];
                if ((key & mask) == prefix) atomicAdd(&sh[(key >> shift) & (nb - 1)], 1);
            }
        }
        __syncthreads();
        pick_bin(sh, nb, remaining, scan_sm, &s_digit, &s_rem);
        prefix |= (sift_u32)s_digit << shift;
        remaining = s_rem;
        s_digit_last = s_digit;
        mask |= (sift_u32)(nb - 1) << shift;
        if (pass == 0) __syncthreads();   // the last pass keeps sh for the tie count
    }
    const sift_u32 T = prefix;
    // Tie cut: the position of the remaining-th key equal to T, in position order. The last pass's
    // bin count is the number of keys equal to T; when all of them are taken no cut is needed.
    const int ties = sh[s_digit_last];
    if (ties == remaining) {
        if (tid == 0) s_cut = 0x7fffffff;
    } else if (fits) {
        for (int i = tid; i < cnt; i += blockDim.x) {
            if (ckey[i] != T) continue;
            int rank = 0;
            for (int j = 0; j < cnt; j++) rank += (ckey[j] == T && cidx[j] < cidx[i]) ? 1 : 0;
            if (rank == remaining - 1) s_cut = cidx[i];
        }
    } else {   // over the keys, in position order
        tie_cut_scan(n, (int)blockDim.x, remaining, scan_sm, &s_cut,
                     [kp, T](int i, int&) -> bool { return kp[i] == T; });
    }
    __syncthreads();
    if (tid == 0) { out[0] = T; out[1] = (sift_u32)s_cut; }
}

extern "C" __global__ void __launch_bounds__(TOPK_THREADS) sift_ds_threshold(const sift_u32* keys, int key_stride,
    int* hist, const int* seq_lens, const int* k_per_seq, sift_u32* thr)
{ ds_threshold(keys, key_stride, hist, seq_lens, k_per_seq, thr); }

// Grid (ceil(maxLen / split_pos), S, B), 128 threads; split_pos = the candidates kernel's chunk.
// Each block first resolves the exact k-th key T of its selection: its top 12 bits are D1 and
// `rem` keys of that bin are taken (meta, from sift_ds_pick_d1); the chunks' 16-bin histograms
// of their candidates' low 4 bits, summed, give T's low 4 bits and how many keys equal to T are
// taken (`rem` after the search, ties by position), and summed over the chunks before this one,
// how many of those ties this chunk takes (`quota`: the first ones of its list, which is in
// position order).
// Then it takes its chunk's list: the rows above D1 as they are, then the candidates with key >
// T and the first `quota` equal to T, and attends over those rows. The block of chunk 0 writes T
// (thr[0]) and the block holding the last tie taken its position (thr[1], the tie cut; 2^31 - 1
// when every key equal to T is taken), for the host's checks.
#define DS_LIST 4096
#define DS_ATTEND_PAGES 256
// L2 prefetch of one K or V row (D bf16, a multiple of 16 bytes): the bulk-copy engine's
// prefetch (sm_90), one instruction a row; a hint with no result to wait for.
template <int D>
__device__ __forceinline__ void prefetch_row_l2(const sift_bf16* p) {
#if __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" :: "l"(p), "r"(D * 2) : "memory");
#else
    for (int o = 0; o < D * 2; o += 128) asm volatile("prefetch.global.L2 [%0];" :: "l"((const char*)p + o));
#endif
}

// PF > 0 (experimental variant v6): as soon as the chunk's count is known, the first PF rows
// above D1 (the start of the list, selected whatever T turns out to be) are prefetched into L2,
// so that their loads are in flight during the rest of the prologue (the low-digit histograms,
// T, the candidates pass) instead of starting after it.
template <int D, int G, int DPL, int UF, bool FUSED, int PF = 0>
__device__ __forceinline__ void ds_attend(
    const sift_bf16* __restrict__ q, const sift_bf16* __restrict__ kc, const sift_bf16* __restrict__ vc,
    const int* __restrict__ page_table, const int* __restrict__ seq_lens, const int* __restrict__ k_per_seq,
    const sift_u32* __restrict__ lists, int list_stride, const int2* __restrict__ counts, const int* __restrict__ meta,
    const int* __restrict__ low_hist, sift_u32* __restrict__ thr,
    float* __restrict__ part_o, float* __restrict__ part_lse,
    int page_shift, int max_pages, int split_pos, int max_splits, float scale, int* counters, sift_bf16* out, int spk)
{
    const int split = blockIdx.x, sel = blockIdx.y, b = blockIdx.z, S = gridDim.y;
    const int KVH = S / spk, kvh = sel / spk;   // the KV head whose rows it reads
    const int n = seq_lens[b];
    const int start = split * split_pos;
    const int bh = b * S + sel;
    const int k = min(k_per_seq[b], n);
    const bool partial = k > 0 && k < n;
    if (start >= n) {
        if (split == 0 && threadIdx.x == 0) write_all_or_none(thr + (sift_size)bh * 2, k);
        return;
    }
    constexpr int SCRATCH = DEC_WARPS * G * (D + 2);
    constexpr int WORDS = SCRATCH > DS_LIST ? SCRATCH : DS_LIST;
    __shared__ float smem[WORDS];
    __shared__ int scan_sm[32];
    __shared__ int s_red[DEC_WARPS][16][2];   // per warp and low digit: candidates in all chunks, in the chunks before this one
    int* list = (int*)smem;
    __shared__ int spt[DS_ATTEND_PAGES];   // the page-table entries of this chunk (when they fit)
    const sift_u32* lp = lists + (sift_size)bh * list_stride + (sift_size)split * split_pos;
    const int* pt = page_table + (sift_size)b * max_pages;
    const int pmask = (1 << page_shift) - 1;
    const int tid = threadIdx.x, nt = blockDim.x, lane = tid & 31, warp = tid >> 5;
    // Counts, D1 and rem, the low-digit histograms and this chunk's page-table entries in flight
    // together; then one pass over the list (rows above the bin, then candidates).
    const int2 cnt = counts[(sift_size)bh * max_splits + split];
    if (PF > 0) {
        // The list entries load with the count (one round trip); only those below it are rows.
        for (int i = threadIdx.x; i < min(PF, split_pos); i += blockDim.x) {   // within this chunk's list
            const sift_u32 row = lp[i];
            if (i < cnt.x) { prefetch_row_l2<D>(kc + (sift_size)row * D); prefetch_row_l2<D>(vc + (sift_size)row * D); }
        }
    }
    const sift_u32 d1 = partial ? (sift_u32)meta[(sift_size)bh * DS_META + 2] : 0u;
    int rem = partial ? meta[(sift_size)bh * DS_META + 3] : 0;
    {
        int tot = 0, bef = 0;
        if (partial) {
            const int nch = (n + split_pos - 1) / split_pos;
            const int* lh = low_hist + (sift_size)bh * max_splits * 16 + (tid & 15);
            const int st = nt >> 4;   // chunk stripes; 4 loads in flight a thread
            for (int c0 = tid >> 4; c0 < nch; c0 += 4 * st) {
                int h[4];
#pragma unroll
                for (int u = 0; u < 4; u++) h[u] = c0 + u * st < nch ? lh[(c0 + u * st) * 16] : 0;
#pragma unroll
                for (int u = 0; u < 4; u++) { tot += h[u]; bef += c0 + u * st < split ? h[u] : 0; }
            }
        }
        tot += __shfl_xor_sync(0xffffffffu, tot, 16);
        bef += __shfl_xor_sync(0xffffffffu, bef, 16);
        if (lane < 16) { s_red[warp][lane][0] = tot; s_red[warp][lane][1] = bef; }
    }
    const int p0 = start >> page_shift, np = ((min(n, start + split_pos) - 1) >> page_shift) - p0 + 1;
    const bool cached = np <= DS_ATTEND_PAGES;
    if (cached) for (int i = threadIdx.x; i < np; i += blockDim.x) spt[i] = pt[p0 + i];
    __syncthreads();
    // T's low digit: the bin of the rem-th largest among the 16 (every thread, the same answer).
    int low = 15, ties = 0;
    for (;; low--) {
        ties = 0;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) ties += s_red[w][low][0];
        if (low == 0 || ties >= rem) break;
        rem -= ties;
    }
    const sift_u32 T = (d1 << 4) | (sift_u32)low;
    int before = 0;
#pragma unroll
    for (int w = 0; w < DEC_WARPS; w++) before += s_red[w][low][1];
    const bool all_ties = ties == rem;            // every key equal to T is taken: no cut
    const int quota = max(0, rem - before);        // ties this chunk takes (its first ones)
    if (split == 0 && tid == 0) {
        if (partial) { thr[(sift_size)bh * 2] = T; if (all_ties) thr[(sift_size)bh * 2 + 1] = 0x7fffffffu; }
        else write_all_or_none(thr + (sift_size)bh * 2, k);
    }
    const sift_u32 xc = tid < cnt.y ? lp[cnt.x + tid] : 0u;   // the first candidate pass, in flight with the rows
    for (int r0 = 0; r0 < cnt.x; r0 += 4 * nt) {
        sift_u32 v[4];
#pragma unroll
        for (int u = 0; u < 4; u++) { const int i = r0 + u * nt + tid; v[u] = i < cnt.x ? lp[i] : 0u; }
#pragma unroll
        for (int u = 0; u < 4; u++) { const int i = r0 + u * nt + tid; if (i < cnt.x) list[i] = (int)v[u]; }
    }
    int count = cnt.x, seen = 0;   // seen: this chunk's ties so far
    for (int c0 = 0; c0 < cnt.y; c0 += nt) {
        const int i = c0 + tid;
        const sift_u32 x = c0 == 0 ? xc : i < cnt.y ? lp[cnt.x + i] : 0u;
        const sift_u32 key = x >> 16;
        const int t = start + (int)(x & 0xffffu);
        const int gt = i < cnt.y && key > T, tie = i < cnt.y && key == T;
        int total;
        const int inc = block_scan(gt | (tie << 16), scan_sm, &total);
        const int gt_ex = (inc & 0xffff) - gt, tie_ex = (inc >> 16) - tie;
        const int left = max(0, quota - seen);    // ties still to take in this chunk
        if (gt || (tie && tie_ex < left)) {
            const int pg = cached ? spt[(t >> page_shift) - p0] : pt[t >> page_shift];
            list[count + gt_ex + min(tie_ex, left)] = (int)((((sift_u32)pg * KVH + kvh) << page_shift) + (t & pmask));
        }
        if (tie && !all_ties && before + seen + tie_ex == rem - 1) thr[(sift_size)bh * 2 + 1] = (sift_u32)t;   // the cut
        count += (total & 0xffff) + min(total >> 16, left);
        seen += total >> 16;
    }
    __syncthreads();
    decode_core<D, G, DPL, FUSED, UF, true>(q, 0, kc, vc, pt, list, 0, count, b, sel, S,
                           part_o, part_lse, split, max_splits, page_shift, scale, smem,
                           (n + split_pos - 1) / split_pos, counters, out);
}

#define SIFT_DS_SCORES(R, M, NAME) \
    extern "C" __global__ void __launch_bounds__(256, (R) == 8 ? 4 : 1) NAME(const sift_bf16* q, const sift_bf16* labels, const int* channels, \
        const int* page_table, const int* seq_lens, int G, int D, int page_shift, int max_pages, int sinks, \
        const int* k_per_seq, int recent, unsigned short* keys, int key_stride, int* hist, int rounds, int spk) \
    { sift_pdl_entry(); ds_scores<R, M>(q, labels, channels, page_table, seq_lens, G, D, page_shift, max_pages, sinks, k_per_seq, recent, \
                      keys, key_stride, hist, rounds, spk); }
SIFT_DS_SCORES(8, false, sift_ds_scores_r8)
SIFT_DS_SCORES(16, false, sift_ds_scores_r16)
SIFT_DS_SCORES(8, true, sift_ds_scores_match_r8)
SIFT_DS_SCORES(16, true, sift_ds_scores_match_r16)
// 4-bit labels: qscale [KVH][R] f32, the σ of each label channel (1 without normalisation); step:
// the grid step of the per-channel variants (sift_ds_scores4g_r<R>; ignored by the per-token ones).
#define SIFT_DS_SCORES4(R, META, NAME) SIFT_DS_SCORES4_H(R, META, 0, ((R) == 8 ? 4 : 1), NAME)
#define SIFT_DS_SCORES4_H(R, META, HM, MINB, NAME) \
    extern "C" __global__ void __launch_bounds__(256, MINB) NAME(const sift_bf16* q, const unsigned* labels, const int* channels, \
        const int* page_table, const int* seq_lens, int G, int D, int page_shift, int max_pages, int sinks, \
        const int* k_per_seq, int recent, unsigned short* keys, int key_stride, int* hist, int rounds, const float* qscale, \
        float step, int spk) \
    { sift_pdl_entry(); ds_scores4<R, META, HM>(q, labels, channels, page_table, seq_lens, G, D, page_shift, max_pages, sinks, k_per_seq, recent, \
                    keys, key_stride, hist, rounds, qscale, step, spk); }
SIFT_DS_SCORES4(8, true, sift_ds_scores4_r8)
SIFT_DS_SCORES4(16, true, sift_ds_scores4_r16)
SIFT_DS_SCORES4(24, true, sift_ds_scores4_r24)
SIFT_DS_SCORES4(32, true, sift_ds_scores4_r32)
// The grid kernel at r = 8 runs 6 blocks an SM (40 registers, no spills): 7% faster than at 4
// (H100, B = 32, 128K: 0.1236 -> 0.1142 ms; docs/benchmarks.md).
SIFT_DS_SCORES4_H(8, false, 0, 6, sift_ds_scores4g_r8)
SIFT_DS_SCORES4(16, false, sift_ds_scores4g_r16)
SIFT_DS_SCORES4(24, false, sift_ds_scores4g_r24)
SIFT_DS_SCORES4(32, false, sift_ds_scores4g_r32)
// Variants of the grid kernel, for `kernel-bench --ds-grid-phases`: the histogram by
// __match_any (2x slower), none (a diagnostic: what the histogram costs), and the other
// occupancy (r = 8 at 4 blocks an SM, the earlier default; r = 16 at 6).
SIFT_DS_SCORES4_H(8, false, 1, 4, sift_ds_scores4g_match_r8)   // spills at 6 blocks an SM
SIFT_DS_SCORES4_H(16, false, 1, 1, sift_ds_scores4g_match_r16)
SIFT_DS_SCORES4_H(8, false, 2, 6, sift_ds_scores4g_nohist_r8)
SIFT_DS_SCORES4_H(16, false, 2, 1, sift_ds_scores4g_nohist_r16)
SIFT_DS_SCORES4_H(8, false, 0, 4, sift_ds_scores4g_occ_r8)
SIFT_DS_SCORES4_H(16, false, 0, 6, sift_ds_scores4g_occ_r16)

#define SIFT_DS_CANDIDATES(CPB, MINB) \
    extern "C" __global__ void __launch_bounds__(DS_CAND_THREADS, MINB) sift_ds_candidates_c##CPB(const unsigned short* keys, \
        int key_stride, const int* seq_lens, const int* k_per_seq, const int* page_table, int page_shift, \
        int max_pages, int chunk, sift_u32* lists, int list_stride, int2* counts, int max_chunks, const int* meta, \
        int* low_hist, int spk) \
    { sift_pdl_entry(); ds_candidates<CPB>(keys, key_stride, seq_lens, k_per_seq, page_table, page_shift, max_pages, chunk, lists, \
                         list_stride, counts, max_chunks, meta, low_hist, spk); }
SIFT_DS_CANDIDATES(1, 8)   // 32 registers, no spills (no shared candidate buffer any more): full occupancy
SIFT_DS_CANDIDATES(2, 4)
SIFT_DS_CANDIDATES(4, 3)

#define SIFT_DS_ATTEND_V(NAME, D, G, DPL, UF, MINB, FUSED) SIFT_DS_ATTEND_VP(NAME, D, G, DPL, UF, MINB, FUSED, 0)
#define SIFT_DS_ATTEND_VP(NAME, D, G, DPL, UF, MINB, FUSED, PF) \
    extern "C" __global__ void __launch_bounds__(DEC_WARPS * 32, MINB) NAME( \
        const sift_bf16* q, const sift_bf16* kc, const sift_bf16* vc, const int* page_table, const int* seq_lens, \
        const int* k_per_seq, const sift_u32* lists, int list_stride, const int2* counts, const int* meta, const int* low_hist, \
        sift_u32* thr, float* part_o, float* part_lse, \
        int page_shift, int max_pages, int split_pos, int max_splits, float scale, int* counters, sift_bf16* out, int spk) \
    { sift_pdl_entry(); ds_attend<D, G, DPL, UF, FUSED, PF>(q, kc, vc, page_table, seq_lens, k_per_seq, lists, list_stride, counts, meta, \
                               low_hist, thr, part_o, part_lse, page_shift, max_pages, split_pos, max_splits, scale, counters, out, spk); }
// Default: up to 4 heads a group, 8 dims a lane and 4 token steps in flight at <= 128 registers
// (4 blocks of 4 warps per SM; measured 5-10% faster than the dense kernel's layout on an H100 at
// B >= 8, docs/cuda-attention.md); larger groups keep the dense kernel's layout (no spills).
#define SIFT_DS_ATTEND(D, G, DPL) SIFT_DS_ATTEND_V(sift_ds_attend_d##D##_g##G, D, G, ((G) <= 4 ? 8 : (DPL)), \
    ((G) <= 4 ? 4 : 0), ((G) <= 4 ? 4 : 1), false)
#define SIFT_DS_ATTENDS(D) \
    SIFT_DS_ATTEND(D, 1, SIFT_DPL(D, 1)) SIFT_DS_ATTEND(D, 2, SIFT_DPL(D, 2)) SIFT_DS_ATTEND(D, 3, SIFT_DPL(D, 3)) \
    SIFT_DS_ATTEND(D, 4, SIFT_DPL(D, 4)) SIFT_DS_ATTEND(D, 5, SIFT_DPL(D, 5)) SIFT_DS_ATTEND(D, 6, SIFT_DPL(D, 6)) \
    SIFT_DS_ATTEND(D, 7, SIFT_DPL(D, 7)) SIFT_DS_ATTEND(D, 8, SIFT_DPL(D, 8))
// As decode_attention.cu: SIFT_DECODE_D / SIFT_DECODE_G restrict the attend kernels to one variant.
#if defined(SIFT_DECODE_D) && defined(SIFT_DECODE_G)
#define SIFT_DS_ATTEND_ONE(D, G) SIFT_DS_ATTEND(D, G, SIFT_DPL(D, G))
SIFT_DS_ATTEND_ONE(SIFT_DECODE_D, SIFT_DECODE_G)
// Experimental variants (per-variant builds only): 8 dims a lane, U token steps in flight, min blocks
// per SM; v4, v5: v1, v2 with the split combine fused (the last block of each (b, KV head) merges);
// v6: the default's layout with the first 128 rows of its list prefetched into L2 (PF, above).
#define SIFT_DS_ATTEND_VARIANTS(D, G) \
    SIFT_DS_ATTEND_VP(sift_ds_attend_v6_d##D##_g##G, D, G, ((G) <= 4 ? 8 : SIFT_DPL(D, G)), ((G) <= 4 ? 4 : 0), \
                      ((G) <= 4 ? 4 : 1), false, 128) \
    SIFT_DS_ATTEND_V(sift_ds_attend_v1_d##D##_g##G, D, G, 8, 8, 3, false) \
    SIFT_DS_ATTEND_V(sift_ds_attend_v2_d##D##_g##G, D, G, 8, 4, 4, false) \
    SIFT_DS_ATTEND_V(sift_ds_attend_v3_d##D##_g##G, D, G, 8, 16, 2, false) \
    SIFT_DS_ATTEND_V(sift_ds_attend_v4_d##D##_g##G, D, G, 8, 8, 3, true) \
    SIFT_DS_ATTEND_V(sift_ds_attend_v5_d##D##_g##G, D, G, 8, 4, 4, true)
#define SIFT_DS_ATTEND_VARIANTS_ONE(D, G) SIFT_DS_ATTEND_VARIANTS(D, G)
SIFT_DS_ATTEND_VARIANTS_ONE(SIFT_DECODE_D, SIFT_DECODE_G)
#else
SIFT_DS_ATTENDS(64)
SIFT_DS_ATTENDS(128)
SIFT_DS_ATTENDS(256)
#endif
