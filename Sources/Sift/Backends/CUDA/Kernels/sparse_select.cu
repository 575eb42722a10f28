// Quest and TidalDecode decode on the GPU (sift, issue 3). Both pick positions per (sequence,
// KV head) and then attend only to them with the split-KV decode kernel's index-list mode
// (decode_core.cuh: sel_idx / sel_count). The exact top-k reuses Double Sparsity's radix
// threshold (sift_ds_threshold in double_sparsity.cu, launched from the engine): scores become
// order-preserving uint32 keys (float_key) plus a histogram of their top 12 bits; the threshold
// kernel finds (T, cut) and sift_select_list below turns {key > T} ∪ {key == T, index <= cut}
// into the list of positions, ascending.
//
// Quest (Attention/Quest.swift):
//   sift_quest_bounds   per Quest page (qpage tokens) and KV head, the channel-wise min and max
//                       of the stored keys, bf16 (exact: min and max of bf16 values);
//                       bounds [B][max_qpages][KVH][2][D] (min row, then max row)
//   sift_quest_scores   U(page) = Σ_{h∈group} Σ_c max(q_hc·min_c, q_hc·max_c) as keys + histogram
//   (threshold over pages, k = selected pages), sift_select_list with unit = qpage (a page
//   stands for its tokens < len), then the gather decode.
// TidalDecode (Attention/Tidal.swift), token-selection layer:
//   dense split decode (its partial log-sum-exps give each head's softmax normaliser), then
//   sift_tidal_scores_d<D>_g<G>: mass_j = Σ_{h∈group} exp2(s_hj − LSE_h), s in the log2 domain
//   as decode_core; the first `sinks` positions get the top key (as Double Sparsity);
//   (threshold, k tokens), sift_select_list with unit 1. Later layers: the gather decode over
//   that list.
//
//   keys  [B][KVH][key_stride] uint32, hist [B][KVH][4096] int32 (zero; the threshold kernel
//   re-zeroes it), meta [2][B] int32: number of keys and k per sequence (written here for the
//   threshold kernel), sel_idx [B][KVH][max_sel] int32, sel_count [B][KVH] int32.

#include "decode_core.cuh"
#include "select_common.cuh"

// Grid (pages to update, KVH, B), D threads: one thread per channel. Pages first_qpage...;
// positions >= len are not read (the page holding the newest position is bounded by its stored keys).
extern "C" __global__ void sift_quest_bounds(const sift_bf16* __restrict__ kc, const int* __restrict__ page_table,
    int page_shift, int max_pages, int first_qpage, int qpage, int len, sift_bf16* __restrict__ bounds, int max_qpages)
{
    const int p = first_qpage + blockIdx.x, kvh = blockIdx.y, b = blockIdx.z, KVH = gridDim.y;
    const int D = blockDim.x, c = threadIdx.x;
    const int lo = p * qpage, hi = min(len, lo + qpage);
    if (lo >= hi || p >= max_qpages) return;
    const int* pt = page_table + (sift_size)b * max_pages;
    const int pmask = (1 << page_shift) - 1;
    float mn = __int_as_float(0x7f800000), mx = __int_as_float(0xff800000);
    for (int t = lo; t < hi; t++) {
        const sift_size row = (((sift_size)pt[t >> page_shift] * KVH + kvh) << page_shift) + (t & pmask);
        const float x = bf16_to_f32(kc[row * D + c]);
        mn = fminf(mn, x);
        mx = fmaxf(mx, x);
    }
    sift_bf16* o = bounds + (((sift_size)b * max_qpages + p) * KVH + kvh) * 2 * D;
    o[c] = f32_to_bf16(mn);        // exact: the keys are bf16
    o[D + c] = f32_to_bf16(mx);
}

// Grid (ceil(n_pages / (8 * QS_PAGES)), KVH, B), 256 threads: a warp per page, lanes over channel
// pairs, QS_PAGES pages per warp. q [B][Hq][D] f32 (q_f32) or bf16; G * D <= 2048.
#define QS_PAGES 8
extern "C" __global__ void __launch_bounds__(256) sift_quest_scores(const void* __restrict__ q, int q_f32,
    const sift_bf16* __restrict__ bounds, int max_qpages, int n_pages, int k_pages, int G, int D,
    sift_u32* __restrict__ keys, int key_stride, int* __restrict__ hist, int* __restrict__ meta)
{
    const int kvh = blockIdx.y, b = blockIdx.z, KVH = gridDim.y, B = gridDim.z, Hq = KVH * G;
    __shared__ float qs[2048];
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
        const sift_size at = (sift_size)(b * Hq + kvh * G) * D + i;
        qs[i] = q_f32 ? ((const float*)q)[at] : bf16_to_f32(((const sift_bf16*)q)[at]);
    }
    if (blockIdx.x == 0 && kvh == 0 && threadIdx.x == 0) { meta[b] = n_pages; meta[B + b] = k_pages; }
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    sift_u32* kout = keys + (sift_size)(b * KVH + kvh) * key_stride;
    int* gh = hist + (sift_size)(b * KVH + kvh) * 4096;
    const int p0 = (blockIdx.x * (blockDim.x >> 5) + warp) * QS_PAGES;
    const int p1 = min(n_pages, p0 + QS_PAGES);
    for (int p = p0; p < p1; p++) {
        const sift_u32* bp = (const sift_u32*)(bounds + (((sift_size)b * max_qpages + p) * KVH + kvh) * 2 * D);
        float u = 0.f;
        for (int c2 = lane; c2 < D / 2; c2 += 32) {
            const sift_u32 wmin = bp[c2], wmax = bp[D / 2 + c2];
            const float lo0 = bf16lo(wmin), lo1 = bf16hi(wmin), hi0 = bf16lo(wmax), hi1 = bf16hi(wmax);
            for (int g = 0; g < G; g++) {
                const float q0 = qs[g * D + 2 * c2], q1 = qs[g * D + 2 * c2 + 1];
                u += fmaxf(q0 * lo0, q0 * hi0) + fmaxf(q1 * lo1, q1 * hi1);
            }
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) u += __shfl_xor_sync(0xffffffffu, u, off);
        if (lane == 0) {
            const sift_u32 key = float_key(u);
            kout[p] = key;
            atomicAdd(&gh[key >> 20], 1);
        }
    }
}

// Grid (KVH, B), 1024 threads: the positions selected by the threshold (T, cut) of each
// (b, KV head), ascending. Key i stands for positions i*unit ..< min(len, (i+1)*unit).
#define SL_KPT 4
extern "C" __global__ void __launch_bounds__(1024) sift_select_list(const sift_u32* __restrict__ keys, int key_stride,
    const sift_u32* __restrict__ thr, int n_keys, int unit, int len, int* __restrict__ sel_idx, int max_sel,
    int* __restrict__ sel_count)
{
    const int kvh = blockIdx.x, b = blockIdx.y, KVH = gridDim.x;
    const sift_u32* kp = keys + (sift_size)(b * KVH + kvh) * key_stride;
    const sift_u32 T = thr[(b * KVH + kvh) * 2];
    const int cut = (int)thr[(b * KVH + kvh) * 2 + 1];
    int* out = sel_idx + (sift_size)(b * KVH + kvh) * max_sel;
    __shared__ int scan_sm[32];
    int count = 0;
    for (int base = 0; base < n_keys; base += blockDim.x * SL_KPT) {   // uniform trip count
        const int i0 = base + threadIdx.x * SL_KPT;
        int mine = 0;
        unsigned take = 0;
#pragma unroll
        for (int j = 0; j < SL_KPT; j++) {
            const int i = i0 + j;
            if (i < n_keys) {
                const sift_u32 v = kp[i];
                if (v > T || (v == T && i <= cut)) { take |= 1u << j; mine += max(0, min(unit, len - i * unit)); }
            }
        }
        int total;
        int pos = count + block_scan(mine, scan_sm, &total) - mine;
        while (take) {
            const int j = __ffs(take) - 1;
            take &= take - 1;
            const int t0 = (i0 + j) * unit, t1 = min(len, t0 + unit);
            for (int t = t0; t < t1; t++, pos++) if (pos < max_sel) out[pos] = t;
        }
        count += total;
    }
    if (threadIdx.x == 0) sel_count[b * KVH + kvh] = min(count, max_sel);
}

// Grid (ceil(len / per_block), KVH, B), 256 threads. Each lane group of D/8 lanes holds one token
// (8 dims a lane, one 16-byte load), U tokens in flight per group. part_lse [B][Hq][max_splits]
// from the dense decode of this step (nsplits splits). One histogram per block in shared memory.
template <int D, int G>
__device__ __forceinline__ void tidal_scores(
    const void* __restrict__ q, int q_f32, const sift_bf16* __restrict__ kc, const int* __restrict__ page_table,
    int page_shift, int max_pages, int len, const float* __restrict__ part_lse, int max_splits, int nsplits,
    float scale, int sinks, int per_block, int k_tokens, sift_u32* __restrict__ keys, int key_stride,
    int* __restrict__ hist, int* __restrict__ meta)
{
    constexpr int LPT = D / 8, TPW = 32 / LPT, U = 4;
    const int kvh = blockIdx.y, b = blockIdx.z, KVH = gridDim.y, B = gridDim.z, Hq = KVH * G;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, grp = lane / LPT, lig = lane % LPT;
    const int nw = blockDim.x >> 5;
    __shared__ int sh[4096];
    __shared__ float s_lse[G];
    for (int i = threadIdx.x; i < 4096; i += blockDim.x) sh[i] = 0;
    if (threadIdx.x < G) {
        const sift_size slot0 = (sift_size)(b * Hq + kvh * G + threadIdx.x) * max_splits;
        float mx = SIFT_NEG_BIG;
        for (int s = 0; s < nsplits; s++) mx = fmaxf(mx, part_lse[slot0 + s]);
        float t = 0.f;
        for (int s = 0; s < nsplits; s++) t += exp2f(part_lse[slot0 + s] - mx);
        s_lse[threadIdx.x] = mx + log2f(t);
    }
    if (blockIdx.x == 0 && kvh == 0 && threadIdx.x == 0) { meta[b] = len; meta[B + b] = k_tokens; }
    __syncthreads();
    float qr[G][8], lse[G];
    const float qscale = scale * SIFT_LOG2E;
#pragma unroll
    for (int g = 0; g < G; g++) {
        const sift_size row = (sift_size)(b * Hq + kvh * G + g) * D + lig * 8;
        float f[8];
        if (q_f32) {
            const float4* qp = (const float4*)((const float*)q + row);
            const float4 a = qp[0], c = qp[1];
            f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w; f[4] = c.x; f[5] = c.y; f[6] = c.z; f[7] = c.w;
        } else {
            unpack8(*(const uint4*)((const sift_bf16*)q + row), f);
        }
#pragma unroll
        for (int e = 0; e < 8; e++) qr[g][e] = f[e] * qscale;
        lse[g] = s_lse[g];
    }
    const int* pt = page_table + (sift_size)b * max_pages;
    const int pmask = (1 << page_shift) - 1;
    sift_u32* kout = keys + (sift_size)(b * KVH + kvh) * key_stride;
    const int lo = blockIdx.x * per_block, hi = min(len, lo + per_block);
    for (int base = lo + warp * TPW * U; base < hi; base += nw * TPW * U) {
        uint4 kr[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int i = base + u * TPW + grp;
            kr[u] = make_uint4(0, 0, 0, 0);
            if (i < hi) {
                const sift_size row = (((sift_size)pt[i >> page_shift] * KVH + kvh) << page_shift) + (i & pmask);
                kr[u] = ((const uint4*)(kc + row * D))[lig];
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int i = base + u * TPW + grp;
            float f[8], s[G];
            unpack8(kr[u], f);
#pragma unroll
            for (int g = 0; g < G; g++) {
                s[g] = 0.f;
#pragma unroll
                for (int e = 0; e < 8; e++) s[g] = fmaf(qr[g][e], f[e], s[g]);
            }
#pragma unroll
            for (int off = LPT / 2; off > 0; off >>= 1)
#pragma unroll
                for (int g = 0; g < G; g++) s[g] += __shfl_xor_sync(0xffffffffu, s[g], off);
            if (i < hi && lig == 0) {
                float mass = 0.f;
#pragma unroll
                for (int g = 0; g < G; g++) mass += exp2f(s[g] - lse[g]);
                const sift_u32 key = i < sinks ? 0xffffffffu : float_key(mass);
                kout[i] = key;
                atomicAdd(&sh[key >> 20], 1);
            }
        }
    }
    __syncthreads();
    flush_hist(sh, hist + (sift_size)(b * KVH + kvh) * 4096);
}

#define SIFT_TIDAL_SCORES(D, G) \
    extern "C" __global__ void __launch_bounds__(256) sift_tidal_scores_d##D##_g##G( \
        const void* q, int q_f32, const sift_bf16* kc, const int* page_table, int page_shift, int max_pages, int len, \
        const float* part_lse, int max_splits, int nsplits, float scale, int sinks, int per_block, int k_tokens, \
        sift_u32* keys, int key_stride, int* hist, int* meta) \
    { tidal_scores<D, G>(q, q_f32, kc, page_table, page_shift, max_pages, len, part_lse, max_splits, nsplits, scale, \
                         sinks, per_block, k_tokens, keys, key_stride, hist, meta); }
#if defined(SIFT_DECODE_D) && defined(SIFT_DECODE_G)
#define SIFT_TIDAL_ONE(D, G) SIFT_TIDAL_SCORES(D, G)
SIFT_TIDAL_ONE(SIFT_DECODE_D, SIFT_DECODE_G)
#else
#define SIFT_TIDAL_ALL(D) SIFT_TIDAL_SCORES(D, 1) SIFT_TIDAL_SCORES(D, 2) SIFT_TIDAL_SCORES(D, 3) SIFT_TIDAL_SCORES(D, 4) \
    SIFT_TIDAL_SCORES(D, 5) SIFT_TIDAL_SCORES(D, 6) SIFT_TIDAL_SCORES(D, 7) SIFT_TIDAL_SCORES(D, 8)
SIFT_TIDAL_ALL(64)
SIFT_TIDAL_ALL(128)
SIFT_TIDAL_ALL(256)
#endif
