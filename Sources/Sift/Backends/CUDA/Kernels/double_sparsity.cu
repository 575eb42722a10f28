// Double Sparsity decode on the GPU (sift, issue 5). Three launches plus the split combine:
//   1. sift_ds_scores_r<R>: approximate scores of every token from the label cache, stored as
//      order-preserving uint32 keys, and a histogram of the keys' top 12 bits per (b, KV head);
//   2. sift_ds_candidates: the exact k-th largest key T and the tie cut, spread over many blocks
//      per (b, KV head): each block appends the keys of its chunk that share the top 12 bits of
//      the k-th (from the histogram) to a global candidate list; the last block to finish resolves
//      the candidates (radix passes over bits 19..8 and 7..0, then the tie cut). The selection is
//      {j : key_j > T} ∪ {j : key_j == T, j <= cut}, exactly k tokens, ties by lowest position;
//   3. sift_ds_attend_d<D>_g<G>: split over positions; each block lists the K/V pool rows of its
//      selected positions in shared memory and runs decode_core (decode_core.cuh) over just those.
//
//   labels     [pages][KVH][P][R] bf16, paged like the KV cache (same page table); or, for the
//              4-bit variant (sift_ds_scores4_r<R>), [pages][KVH][P][1 + R/8] words of f16 scale |
//              f16 offset and R 4-bit codes (ds_labels.cu), scored with the query scaled by
//              qscale [KVH][R] (the channels' σ): s_j = m·Σq' + s·Σ q'_c·u_c, q' = q·σ
//   channels   [KVH][R] int32: the calibrated channels of this layer, per KV head
//   keys       [B][KVH][key_stride] uint32 (key_stride a multiple of 4)
//   hist       [B][KVH][4096] int32, zero before the first call (the candidates kernel re-zeroes it)
//   thr        [B][KVH][2] uint32: T and the tie cut
// One selection per KV group, from the group's summed query (as the CPU path does):
//   s_j = (Σ_{h∈group} q_h[C]) · label_j.  The first `sinks` tokens always win (key 0xffffffff).

#include "decode_core.cuh"

// meta [B][KVH][DS_META] int, zero before the first call: [0] candidate count, [1] ticket (the
// candidates kernel's last block of each (b, KV head) resets both).
#define DS_META 4

// float_key and block_scan live in select_common.cuh (shared with sparse_select.cu).
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

// How the scores kernel loads and scores one label row: BITS 16, R bf16 values; BITS 4, a
// record of 1 + R/8 words (f16 scale | f16 offset, then the codes; ds_labels.cu).
template <int R, int BITS> struct ds_label;
template <int R> struct ds_label<R, 16> {
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
template <int R> struct ds_label<R, 4> {
    static constexpr int WORDS = 1 + R / 8;
    struct raw { sift_u32 w[WORDS]; };
    static __device__ __forceinline__ void load(const void* labels, sift_size row, raw& r) {
        const sift_u32* p = (const sift_u32*)labels + row * WORDS;
        if (WORDS == 2) {
            const uint2 v = *(const uint2*)p;
            r.w[0] = v.x; r.w[WORDS - 1] = v.y;
        } else {
#pragma unroll
            for (int i = 0; i < WORDS; i++) r.w[i] = p[i];
        }
    }
    static __device__ __forceinline__ float dot(const float* qs, const raw& r) {
        float qsum = 0.f, acc = 0.f;
#pragma unroll
        for (int c = 0; c < R; c++) {
            qsum += qs[c];
            acc = fmaf(qs[c], (float)((r.w[1 + c / 8] >> (4 * (c % 8))) & 15u), acc);
        }
        return fmaf(ds_f16_to_f32(r.w[0] >> 16), qsum, ds_f16_to_f32(r.w[0] & 0xffffu) * acc);
    }
};

template <int R, bool HIST_MATCH, int BITS = 16>
__device__ __forceinline__ void ds_scores(
    const sift_bf16* __restrict__ q, const void* __restrict__ labels, const int* __restrict__ channels,
    const int* __restrict__ page_table, const int* __restrict__ seq_lens, int G, int D,
    int page_shift, int max_pages, int sinks, sift_u32* __restrict__ keys, int key_stride, int* __restrict__ hist,
    int rounds, const float* __restrict__ qscale = nullptr)
{
    typedef ds_label<R, BITS> L;
    const int kvh = blockIdx.y, b = blockIdx.z, KVH = gridDim.y, Hq = KVH * G;
    const int n = seq_lens[b];
    __shared__ float qs[R];
    const int* pt = page_table + (sift_size)b * max_pages;
    const int pmask = (1 << page_shift) - 1;
    sift_u32* kout = keys + (sift_size)(b * KVH + kvh) * key_stride;
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
            for (int g = 0; g < G; g++) s += bf16_to_f32(q[(sift_size)(b * Hq + kvh * G + g) * D + ch]);
            qs[threadIdx.x] = BITS == 4 ? s * qscale[kvh * R + threadIdx.x] : s;
        }
        __syncthreads();   // qs, and the zeroed histogram
    }
#pragma unroll
    for (int u = 0; u < DS_TPT; u++) {
        const int t = t0 + u * blockDim.x;
        if (t < n) {
            const float s = L::dot(qs, lr[u]);
            key[u] = t < sinks ? 0xffffffffu : float_key(s);
            kout[t] = key[u];
        }
    }
    // Top-12-bit histogram: lanes with equal bins add once (scores bunch into few bins).
#pragma unroll
    for (int u = 0; u < DS_TPT; u++) {
        const bool live = t0 + u * (int)blockDim.x < n;
        const unsigned act = __ballot_sync(0xffffffffu, live);
        if (live) {
            const unsigned bin = key[u] >> 20;
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
    int* gh = hist + (sift_size)(b * KVH + kvh) * 4096;
    for (int i = threadIdx.x; i < 4096; i += blockDim.x) if (sh[i]) atomicAdd(&gh[i], sh[i]);
}

// 2. The exact threshold, spread over the grid (ceil(maxLen / DS_CHUNK), KVH, B) of DS_CAND_THREADS
// threads. Every block reads the 12-bit histogram of its (b, KV head) and picks the bin D1 holding
// the k-th largest key (redundantly; its own keys are already in flight), then appends the keys of
// its chunk whose top 12 bits are D1 (the candidates, ~1-3% of the keys) with their positions to a
// global list. The last block of each (b, KV head) to finish (ticket in meta[1]) resolves the
// candidates: two radix passes (bits 19..8, 7..0) give the exact k-th key T, then the tie cut (the
// position of the remaining-th key equal to T, by position). It writes thr, and leaves the
// histogram and meta zero for the next call. A candidate list longer than `cand_cap` (or more
// than DS_TIE_SMALL keys equal to T) falls back to passes over all keys of the row in that block:
// slow but exact. (Picking D1 once in the scores kernel's last block instead, with a ticket there,
// made the scores kernel 2.5x slower on an H100: docs/cuda-attention.md.)
//   cand  [B][KVH][cand_cap] (key, position)
#define DS_CAND_THREADS 256
#define DS_CHUNK 4096
#define DS_TIE_SMALL 512
__device__ __forceinline__ void ds_candidates(
    const sift_u32* __restrict__ keys, int key_stride, int* __restrict__ hist, const int* __restrict__ seq_lens,
    const int* __restrict__ k_per_seq, uint2* __restrict__ cand, int cand_cap, int* __restrict__ meta,
    sift_u32* __restrict__ thr)
{
    constexpr int QPT = DS_CHUNK / (4 * DS_CAND_THREADS);   // 16-byte loads a thread
    const int kvh = blockIdx.y, b = blockIdx.z, KVH = gridDim.y, tid = threadIdx.x, lane = tid & 31;
    const int bh = b * KVH + kvh;
    const int n = seq_lens[b];
    const int k = min(k_per_seq[b], n);
    const sift_u32* kp = keys + (sift_size)bh * key_stride;
    int* gh = hist + (sift_size)bh * 4096;
    int* mt = meta + (sift_size)bh * DS_META;
    uint2* cp = cand + (sift_size)bh * cand_cap;
    __shared__ sift_u32 sm[2 * DS_CHUNK];   // this block's candidates (keys | positions); the tail's bins | tie positions
    __shared__ int scan_sm[32];
    __shared__ int s_digit, s_rem, s_count, s_base, s_last, s_cut;
    const bool partial = k > 0 && k < n;    // else everything (or nothing) is selected
    const int start = blockIdx.x * DS_CHUNK;
    uint4 w[QPT];
#pragma unroll
    for (int qd = 0; qd < QPT; qd++) {
        const int i0 = start + (qd * DS_CAND_THREADS + tid) * 4;
        w[qd] = make_uint4(0, 0, 0, 0);
        if (!partial) continue;
        if (i0 + 3 < n) w[qd] = *(const uint4*)(kp + i0);
        else if (i0 < n) { w[qd].x = kp[i0]; if (i0 + 1 < n) w[qd].y = kp[i0 + 1]; if (i0 + 2 < n) w[qd].z = kp[i0 + 2]; }
    }
    if (tid == 0) { s_count = 0; s_digit = 0; s_rem = 0; }
    __syncthreads();
    if (partial) pick_bin(gh, 4096, k, scan_sm, &s_digit, &s_rem);
    const sift_u32 d1 = (sift_u32)s_digit;
    if (partial) {
#pragma unroll
        for (int qd = 0; qd < QPT; qd++) {
            const int i0 = start + (qd * DS_CAND_THREADS + tid) * 4;
            const sift_u32 v[4] = {w[qd].x, w[qd].y, w[qd].z, w[qd].w};
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const bool hit = i0 + j < n && (v[j] >> 20) == d1;
                const unsigned bal = __ballot_sync(0xffffffffu, hit);
                if (bal) {
                    int base = 0;
                    const int leader = __ffs(bal) - 1;
                    if (lane == leader) base = atomicAdd(&s_count, __popc(bal));
                    base = __shfl_sync(0xffffffffu, base, leader);
                    if (hit) {
                        const int pos = base + __popc(bal & ((1u << lane) - 1u));
                        sm[pos] = v[j]; sm[DS_CHUNK + pos] = (sift_u32)(i0 + j);
                    }
                }
            }
        }
    }
    __syncthreads();
    const int lc = s_count;
    if (lc > 0) {
        if (tid == 0) s_base = atomicAdd(&mt[0], lc);
        __syncthreads();
        for (int i = tid; i < lc; i += DS_CAND_THREADS) {
            const int at = s_base + i;
            if (at < cand_cap) cp[at] = make_uint2(sm[i], sm[DS_CHUNK + i]);
        }
    }
    // Ticket: the last block of this (b, KV head) resolves.
    __threadfence();
    __syncthreads();
    if (tid == 0) s_last = atomicAdd(&mt[1], 1) == (int)gridDim.x - 1;
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    sift_u32* out = thr + (sift_size)bh * 2;
    if (!partial) {
        if (tid == 0) { out[0] = k <= 0 ? 0xffffffffu : 0u; out[1] = k <= 0 ? 0xffffffffu : 0x7fffffffu; }
    } else {
        const int total = __ldcg(&mt[0]);
        const bool fits = total <= cand_cap;
        int* sh = (int*)sm;                 // bins
        int* tpos = (int*)sm + DS_CHUNK;    // tie positions
        sift_u32 prefix = d1 << 20, mask = 0xfff00000u;
        int remaining = s_rem, last_digit = 0;
        const int shifts[2] = {8, 0}, widths[2] = {12, 8};
        for (int pass = 0; pass < 2; pass++) {
            const int shift = shifts[pass], nb = 1 << widths[pass];
            for (int i = tid; i < nb; i += DS_CAND_THREADS) sh[i] = 0;
            __syncthreads();
            if (fits) {
                for (int i = tid; i < total; i += DS_CAND_THREADS) {
                    const sift_u32 key = __ldcg(&cp[i]).x;
                    if ((key & mask) == prefix) atomicAdd(&sh[(key >> shift) & (nb - 1)], 1);
                }
            } else {
                for (int i = tid; i < n; i += DS_CAND_THREADS) {
                    const sift_u32 key = kp[i];
                    if ((key & mask) == prefix) atomicAdd(&sh[(key >> shift) & (nb - 1)], 1);
                }
            }
            __syncthreads();
            pick_bin(sh, nb, remaining, scan_sm, &s_digit, &s_rem);
            prefix |= (sift_u32)s_digit << shift;
            remaining = s_rem;
            last_digit = s_digit;
            mask |= (sift_u32)(nb - 1) << shift;
            __syncthreads();
        }
        const sift_u32 T = prefix;
        // Tie cut: the position of the remaining-th key equal to T in position order (the last
        // pass's bin holds exactly the keys equal to T); none when all of them are taken.
        const int ties = sh[last_digit];
        if (tid == 0) { s_cut = -1; s_count = 0; }
        __syncthreads();
        if (ties == remaining) {
            if (tid == 0) s_cut = 0x7fffffff;
        } else if (fits && ties <= DS_TIE_SMALL) {
            for (int i = tid; i < total; i += DS_CAND_THREADS) {
                const uint2 c = __ldcg(&cp[i]);
                if (c.x == T) tpos[atomicAdd(&s_count, 1)] = (int)c.y;
            }
            __syncthreads();
            for (int i = tid; i < ties; i += DS_CAND_THREADS) {
                const int p = tpos[i];
                int rank = 0;
                for (int j = 0; j < ties; j++) rank += tpos[j] < p ? 1 : 0;
                if (rank == remaining - 1) s_cut = p;
            }
        } else {
            int carry = 0;
            for (int chunk = 0; chunk < n; chunk += DS_CAND_THREADS) {
                const int i = chunk + tid;
                const int tie = (i < n && kp[i] == T) ? 1 : 0;
                int tot;
                const int incl = block_scan(tie, scan_sm, &tot) + carry;
                if (tie && incl == remaining) s_cut = i;
                carry += tot;
                if (carry >= remaining) break;
            }
        }
        __syncthreads();
        if (tid == 0) { out[0] = T; out[1] = (sift_u32)s_cut; }
    }
    for (int i = tid; i < 4096; i += DS_CAND_THREADS) gh[i] = 0;
    if (tid == 0) { mt[0] = 0; mt[1] = 0; }
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
        if (tid == 0) { out[0] = k <= 0 ? 0xffffffffu : 0u; out[1] = k <= 0 ? 0xffffffffu : 0x7fffffffu; }
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
    } else {
        int carry = 0;
        for (int chunk = 0; chunk < n; chunk += blockDim.x) {
            const int i = chunk + tid;
            const int tie = (i < n && kp[i] == T) ? 1 : 0;
            int total;
            const int incl = block_scan(tie, scan_sm, &total) + carry;
            if (tie && incl == remaining) s_cut = i;
            carry += total;
            if (carry >= remaining) break;
        }
    }
    __syncthreads();
    if (tid == 0) { out[0] = T; out[1] = (sift_u32)s_cut; }
}

extern "C" __global__ void __launch_bounds__(TOPK_THREADS) sift_ds_threshold(const sift_u32* keys, int key_stride,
    int* hist, const int* seq_lens, const int* k_per_seq, sift_u32* thr)
{ ds_threshold(keys, key_stride, hist, seq_lens, k_per_seq, thr); }

// Grid (ceil(maxLen / split_pos), KVH, B), 128 threads; split_pos a multiple of 4, at most DS_LIST. Each block attends over the selected positions of its range.
#define DS_LIST 4096
template <int D, int G, int DPL, int UF, bool FUSED>
__device__ __forceinline__ void ds_attend(
    const sift_bf16* __restrict__ q, const sift_bf16* __restrict__ kc, const sift_bf16* __restrict__ vc,
    const int* __restrict__ page_table, const int* __restrict__ seq_lens,
    const sift_u32* __restrict__ keys, int key_stride, const sift_u32* __restrict__ thr,
    float* __restrict__ part_o, float* __restrict__ part_lse,
    int page_shift, int max_pages, int split_pos, int max_splits, float scale, int* counters, sift_bf16* out)
{
    const int split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z, KVH = gridDim.y;
    const int n = seq_lens[b];
    const int start = split * split_pos;
    if (start >= n) return;
    const int end = min(n, start + split_pos);
    constexpr int SCRATCH = DEC_WARPS * G * (D + 2);
    constexpr int WORDS = SCRATCH > DS_LIST ? SCRATCH : DS_LIST;
    __shared__ float smem[WORDS];
    __shared__ int scan_sm[32];
    int* list = (int*)smem;
    const sift_u32* kp = keys + (sift_size)(b * KVH + kvh) * key_stride;
    const int* pt = page_table + (sift_size)b * max_pages;
    const int pmask = (1 << page_shift) - 1;
    const sift_u32 T = thr[(b * KVH + kvh) * 2];
    const int cut = (int)thr[(b * KVH + kvh) * 2 + 1];
    int count = 0;
    constexpr int KPT = 32;   // keys per thread per round: a round covers 4096 positions
    for (int r0 = start; r0 < end; r0 += blockDim.x * KPT) {
        const int i0 = r0 + threadIdx.x * KPT;
        sift_u32 v[KPT];
#pragma unroll
        for (int c = 0; c < KPT / 4; c++) {
            if (i0 + 4 * c + 3 < end) {
                const uint4 a = *(const uint4*)(kp + i0 + 4 * c);
                v[4 * c] = a.x; v[4 * c + 1] = a.y; v[4 * c + 2] = a.z; v[4 * c + 3] = a.w;
            } else {
#pragma unroll
                for (int j = 0; j < 4; j++) v[4 * c + j] = i0 + 4 * c + j < end ? kp[i0 + 4 * c + j] : 0u;
            }
        }
        unsigned take = 0;
#pragma unroll
        for (int j = 0; j < KPT; j++) {
            const int i = i0 + j;
            if (i < end && (v[j] > T || (v[j] == T && i <= cut))) take |= 1u << j;
        }
        const int mine = __popc(take);
        int total;
        int pos = count + block_scan(mine, scan_sm, &total) - mine;
        // The list holds pool rows: with pages of >= KPT tokens this thread's positions span at
        // most two pages (two page-table loads, issued together); smaller pages load per row.
        const bool two = page_shift >= 5;
        const int lastp = min(i0 + KPT, end) - 1;
        const int pg0 = take && two ? pt[i0 >> page_shift] : 0, pg1 = take && two ? pt[lastp >> page_shift] : 0;
        while (take) {
            const int j = __ffs(take) - 1;
            take &= take - 1;
            const int t = i0 + j;
            const int pg = !two ? pt[t >> page_shift] : (t >> page_shift) == (i0 >> page_shift) ? pg0 : pg1;
            list[pos++] = (int)((((sift_u32)pg * KVH + kvh) << page_shift) + (t & pmask));
        }
        count += total;
    }
    __syncthreads();
    decode_core<D, G, DPL, FUSED, UF, true>(q, 0, kc, vc, page_table + (sift_size)b * max_pages, list, 0, count, b, kvh, KVH,
                           part_o, part_lse, split, max_splits, page_shift, scale, smem,
                           (n + split_pos - 1) / split_pos, counters, out);
}

#define SIFT_DS_SCORES(R, M, NAME) \
    extern "C" __global__ void __launch_bounds__(256) NAME(const sift_bf16* q, const sift_bf16* labels, const int* channels, \
        const int* page_table, const int* seq_lens, int G, int D, int page_shift, int max_pages, int sinks, \
        sift_u32* keys, int key_stride, int* hist, int rounds) \
    { ds_scores<R, M>(q, labels, channels, page_table, seq_lens, G, D, page_shift, max_pages, sinks, keys, key_stride, hist, rounds); }
SIFT_DS_SCORES(8, false, sift_ds_scores_r8)
SIFT_DS_SCORES(16, false, sift_ds_scores_r16)
SIFT_DS_SCORES(8, true, sift_ds_scores_match_r8)
SIFT_DS_SCORES(16, true, sift_ds_scores_match_r16)
// 4-bit labels: qscale [KVH][R] f32, the σ of each label channel (1 without normalisation).
#define SIFT_DS_SCORES4(R, NAME) \
    extern "C" __global__ void __launch_bounds__(256) NAME(const sift_bf16* q, const unsigned* labels, const int* channels, \
        const int* page_table, const int* seq_lens, int G, int D, int page_shift, int max_pages, int sinks, \
        sift_u32* keys, int key_stride, int* hist, int rounds, const float* qscale) \
    { ds_scores<R, false, 4>(q, labels, channels, page_table, seq_lens, G, D, page_shift, max_pages, sinks, keys, key_stride, \
                             hist, rounds, qscale); }
SIFT_DS_SCORES4(8, sift_ds_scores4_r8)
SIFT_DS_SCORES4(16, sift_ds_scores4_r16)

extern "C" __global__ void __launch_bounds__(DS_CAND_THREADS) sift_ds_candidates(const sift_u32* keys, int key_stride,
    int* hist, const int* seq_lens, const int* k_per_seq, uint2* cand, int cand_cap, int* meta, sift_u32* thr)
{ ds_candidates(keys, key_stride, hist, seq_lens, k_per_seq, cand, cand_cap, meta, thr); }

#define SIFT_DS_ATTEND_V(NAME, D, G, DPL, UF, MINB, FUSED) \
    extern "C" __global__ void __launch_bounds__(DEC_WARPS * 32, MINB) NAME( \
        const sift_bf16* q, const sift_bf16* kc, const sift_bf16* vc, const int* page_table, const int* seq_lens, \
        const sift_u32* keys, int key_stride, const sift_u32* thr, float* part_o, float* part_lse, \
        int page_shift, int max_pages, int split_pos, int max_splits, float scale, int* counters, sift_bf16* out) \
    { ds_attend<D, G, DPL, UF, FUSED>(q, kc, vc, page_table, seq_lens, keys, key_stride, thr, part_o, part_lse, \
                               page_shift, max_pages, split_pos, max_splits, scale, counters, out); }
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
// per SM; v4, v5: v1, v2 with the split combine fused (the last block of each (b, KV head) merges).
#define SIFT_DS_ATTEND_VARIANTS(D, G) \
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
