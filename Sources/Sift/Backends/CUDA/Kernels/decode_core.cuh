// Split-KV flash-decoding over a paged bf16 KV cache, GQA-aware (sift, issue 6).
//
// Layouts (all row-major):
//   q          [B][Hq][D] bf16, query head h belongs to KV head h / G (G = Hq / KVH)
//   k/v cache  [pages][KVH][P][D] bf16, P = 1 << page_shift tokens per page
//   page_table [B][max_pages] int32 (physical page of each logical page), seq_lens [B] int32
//   sel_idx    optional [B][KVH][max_sel] int32 token positions (Double Sparsity's selection),
//              with sel_count [B][KVH]; when given, the kernel attends over those rows only.
//   part_o     [B][Hq][max_splits][D] f32 (normalised partial outputs), part_lse [B][Hq][max_splits]
//   out        [B][Hq][D] bf16
// Grid of the split kernel: (max_splits, KVH, B), 128 threads. One block reads one KV head's rows
// once for all G query heads of its group. A lane group of LPT = D/DPL lanes holds one token (each
// lane DPL dims, as 16-byte loads); a warp holds 32/LPT tokens per step and U steps are unrolled
// so that K and V loads for U·32/LPT tokens are in flight before any arithmetic. Each lane group
// keeps its own online-softmax state; states merge by shuffles, then across warps in shared memory.
// The splits merge by their log-sum-exp in the separate combine kernel (grid (Hq, B)). decode_core
// can also fuse it (FUSED: the last block of each (b, KV head) to finish combines, counted in
// `counters`), but on an H100 that cost registers (242 -> 254) and time (B=1, L=32K: 0.067 -> 0.075
// ms), so the entry points use the separate kernel; counters and out are ignored.

#ifndef SIFT_DECODE_CORE
#define SIFT_DECODE_CORE
#include "attention_common.cuh"

#define DEC_WARPS 4

// The attention of one block over rows start..<end of a token list (positions idx[i], or i when
// idx is null; with ROWS, idx[i] is the row of the K/V pools, page table already applied) of KV
// head kvh of sequence b; writes the normalised partial output and its
// log2-sum-exp to slot `split`. `scratch` is shared memory of DEC_WARPS*G*(D+2) floats; it may
// alias idx (the block synchronises before writing it).
template <int D, int G, int DPL, bool FUSED, int UF = 0, bool ROWS = false>
__device__ __forceinline__ void decode_core(
    const void* __restrict__ q, int q_f32, const sift_bf16* __restrict__ kc, const sift_bf16* __restrict__ vc,
    const int* __restrict__ pt, const int* idx, int start, int end, int b, int kvh, int KVH,
    float* __restrict__ part_o, float* __restrict__ part_lse, int split, int max_splits,
    int page_shift, float scale, float* scratch, int nsplits, int* counters, sift_bf16* __restrict__ out)
{
    constexpr int LPT = D / DPL;        // lanes per token
    constexpr int TPW = 32 / LPT;       // tokens per warp step
    constexpr int NCH = DPL / 8;        // 16-byte chunks per lane
    constexpr int U = UF > 0 ? UF : ((G * DPL <= 64) ? 4 : 2);   // token steps with loads in flight
    const int Hq = KVH * G;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int grp = lane / LPT, lig = lane % LPT;

    float qr[G][DPL];
    const float qscale = scale * SIFT_LOG2E;
#pragma unroll
    for (int g = 0; g < G; g++) {
        const sift_size row = (sift_size)(b * Hq + kvh * G + g) * D;
#pragma unroll
        for (int c = 0; c < NCH; c++) {
            float f[8];
            if (q_f32) {   // the engine's activations are f32
                const float4* qp = (const float4*)((const float*)q + row) + 2 * (c * LPT + lig);
                const float4 a = qp[0], bq = qp[1];
                f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w; f[4] = bq.x; f[5] = bq.y; f[6] = bq.z; f[7] = bq.w;
            } else {
                unpack8(((const uint4*)((const sift_bf16*)q + row))[c * LPT + lig], f);
            }
#pragma unroll
            for (int e = 0; e < 8; e++) qr[g][c * 8 + e] = f[e] * qscale;
        }
    }
    float m[G], l[G], acc[G][DPL];
#pragma unroll
    for (int g = 0; g < G; g++) {
        m[g] = SIFT_NEG_BIG; l[g] = 0.f;
#pragma unroll
        for (int e = 0; e < DPL; e++) acc[g][e] = 0.f;
    }
    const int pmask = (1 << page_shift) - 1;

    for (int base = start + warp * TPW * U; base < end; base += DEC_WARPS * TPW * U) {
        uint4 kr[U][NCH], vr[U][NCH];
        bool valid[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int i = base + u * TPW + grp;
            valid[u] = i < end;
            if (valid[u]) {
                sift_size row;
                if (ROWS) row = (sift_u32)idx[i];   // the list holds pool rows: no page-table load here
                else {
                    const int t = idx ? idx[i] : i;
                    row = (((sift_size)pt[t >> page_shift] * KVH + kvh) << page_shift) + (t & pmask);
                }
                const uint4* kp = (const uint4*)(kc + row * D);
                const uint4* vp = (const uint4*)(vc + row * D);
#pragma unroll
                for (int c = 0; c < NCH; c++) { kr[u][c] = kp[c * LPT + lig]; vr[u][c] = vp[c * LPT + lig]; }
            } else {
#pragma unroll
                for (int c = 0; c < NCH; c++) { kr[u][c] = make_uint4(0, 0, 0, 0); vr[u][c] = make_uint4(0, 0, 0, 0); }
            }
        }
        float s[U][G];
#pragma unroll
        for (int u = 0; u < U; u++) {
#pragma unroll
            for (int g = 0; g < G; g++) s[u][g] = 0.f;
#pragma unroll
            for (int c = 0; c < NCH; c++) {
                float f[8];
                unpack8(kr[u][c], f);
#pragma unroll
                for (int g = 0; g < G; g++)
#pragma unroll
                    for (int e = 0; e < 8; e++) s[u][g] = fmaf(qr[g][c * 8 + e], f[e], s[u][g]);
            }
#pragma unroll
            for (int off = LPT / 2; off > 0; off >>= 1)
#pragma unroll
                for (int g = 0; g < G; g++) s[u][g] += __shfl_xor_sync(0xffffffffu, s[u][g], off);
        }
#pragma unroll
        for (int g = 0; g < G; g++) {
            float mx = m[g];
#pragma unroll
            for (int u = 0; u < U; u++) if (valid[u]) mx = fmaxf(mx, s[u][g]);
            const float alpha = exp2f(m[g] - mx);
            m[g] = mx;
            l[g] *= alpha;
#pragma unroll
            for (int e = 0; e < DPL; e++) acc[g][e] *= alpha;
#pragma unroll
            for (int u = 0; u < U; u++) s[u][g] = valid[u] ? exp2f(s[u][g] - mx) : 0.f;
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
#pragma unroll
            for (int c = 0; c < NCH; c++) {
                float f[8];
                unpack8(vr[u][c], f);
#pragma unroll
                for (int g = 0; g < G; g++)
#pragma unroll
                    for (int e = 0; e < 8; e++) acc[g][c * 8 + e] = fmaf(s[u][g], f[e], acc[g][c * 8 + e]);
            }
#pragma unroll
            for (int g = 0; g < G; g++) l[g] += s[u][g];
        }
    }
    // l is per lane but identical within a lane group (all lanes of a token saw the same weights).
    // Merge the lane groups of the warp (lanes with equal lig hold equal dims).
#pragma unroll
    for (int off = LPT; off < 32; off <<= 1) {
#pragma unroll
        for (int g = 0; g < G; g++) {
            const float om = __shfl_xor_sync(0xffffffffu, m[g], off);
            const float ol = __shfl_xor_sync(0xffffffffu, l[g], off);
            const float mx = fmaxf(m[g], om);
            const float a = exp2f(m[g] - mx), bb = exp2f(om - mx);
            l[g] = l[g] * a + ol * bb;
#pragma unroll
            for (int e = 0; e < DPL; e++) {
                const float oa = __shfl_xor_sync(0xffffffffu, acc[g][e], off);
                acc[g][e] = acc[g][e] * a + oa * bb;
            }
            m[g] = mx;
        }
    }
    __syncthreads();   // scratch may alias the token list
    float* sm_acc = scratch;                       // [DEC_WARPS][G][D]
    float* sm_m = scratch + DEC_WARPS * G * D;     // [DEC_WARPS][G]
    float* sm_l = sm_m + DEC_WARPS * G;
    if (grp == 0) {
#pragma unroll
        for (int g = 0; g < G; g++) {
#pragma unroll
            for (int c = 0; c < NCH; c++)
#pragma unroll
                for (int e = 0; e < 8; e++) sm_acc[(warp * G + g) * D + c * LPT * 8 + lig * 8 + e] = acc[g][c * 8 + e];
            if (lig == 0) { sm_m[warp * G + g] = m[g]; sm_l[warp * G + g] = l[g]; }
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < G * D; e += blockDim.x) {
        const int g = e / D, d = e % D;
        float mx = SIFT_NEG_BIG;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) mx = fmaxf(mx, sm_m[w * G + g]);
        float L = 0.f, O = 0.f;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) {
            const float a = exp2f(sm_m[w * G + g] - mx);
            L += sm_l[w * G + g] * a;
            O += sm_acc[(w * G + g) * D + d] * a;
        }
        const sift_size slot = (sift_size)(b * Hq + kvh * G + g) * max_splits + split;
        part_o[slot * D + d] = L > 0.f ? O / L : 0.f;          // an empty list leaves weight 0
        if (d == 0) part_lse[slot] = L > 0.f ? mx + log2f(L) : SIFT_NEG_INF;
    }
    if (FUSED && counters) {
        // Fused combine: the last block of this (b, KV head) to finish merges all its splits.
        __shared__ int s_last;
        __threadfence();
        __syncthreads();
        if (threadIdx.x == 0) s_last = atomicAdd(&counters[b * KVH + kvh], 1) == nsplits - 1;
        __syncthreads();
        if (!s_last) return;
        __threadfence();
        for (int e = threadIdx.x; e < G * D; e += blockDim.x) {
            const int g = e / D, d = e % D;
            const sift_size slot0 = (sift_size)(b * Hq + kvh * G + g) * max_splits;
            float mx = SIFT_NEG_BIG;
            for (int sp = 0; sp < nsplits; sp++) mx = fmaxf(mx, ld_cg(part_lse + slot0 + sp));
            float L = 0.f, O = 0.f;
#pragma unroll 4
            for (int sp = 0; sp < nsplits; sp++) {
                const float w = exp2f(ld_cg(part_lse + slot0 + sp) - mx);
                L += w;
                O = fmaf(w, ld_cg(part_o + (slot0 + sp) * D + d), O);
            }
            out[(sift_size)(b * Hq + kvh * G + g) * D + d] = f32_to_bf16(L > 0.f ? O / L : 0.f);
        }
        if (threadIdx.x == 0) counters[b * KVH + kvh] = 0;   // ready for the next call
    }
}

template <int D, int G, int DPL>
__device__ __forceinline__ void decode_split(
    const void* __restrict__ q, const sift_bf16* __restrict__ kc, const sift_bf16* __restrict__ vc,
    const int* __restrict__ page_table, const int* __restrict__ seq_lens,
    const int* __restrict__ sel_idx, const int* __restrict__ sel_count, int max_sel,
    float* __restrict__ part_o, float* __restrict__ part_lse,
    int page_shift, int max_pages, int split_tokens, int max_splits, float scale, int* counters, sift_bf16* out,
    int fixed_len, int window, int q_f32)
{
    const int split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
    const int KVH = gridDim.y;
    const int* idx = nullptr;
    int n, lo = 0;
    if (sel_idx) { n = sel_count[b * KVH + kvh]; idx = sel_idx + (sift_size)(b * KVH + kvh) * max_sel; }
    else {
        n = seq_lens ? seq_lens[b] : fixed_len;
        if (window > 0) lo = max(0, n - window);      // sliding window: the last `window` tokens
    }
    const int start = lo + split * split_tokens;
    if (start >= n) return;
    const int end = min(n, start + split_tokens);
    __shared__ float scratch[DEC_WARPS * G * (D + 2)];
    decode_core<D, G, DPL, false>(q, q_f32, kc, vc, page_table + (sift_size)b * max_pages, idx, start, end, b, kvh, KVH,
                           part_o, part_lse, split, max_splits, page_shift, scale, scratch,
                           (n - lo + split_tokens - 1) / split_tokens, counters, out);
}

// Merge the splits of each (b, h). Block of D threads, grid (Hq, B).
template <int D>
__device__ __forceinline__ void decode_combine(
    const float* __restrict__ part_o, const float* __restrict__ part_lse,
    const int* __restrict__ seq_lens, const int* __restrict__ sel_count, int G,
    int split_tokens, int max_splits, void* __restrict__ out, int fixed_len, int window, int out_f32)
{
    const int h = blockIdx.x, b = blockIdx.y, Hq = gridDim.x, KVH = Hq / G;
    int n, lo = 0;
    if (sel_count) n = sel_count[b * KVH + h / G];
    else {
        n = seq_lens ? seq_lens[b] : fixed_len;
        if (window > 0) lo = max(0, n - window);
    }
    const int ns = (n - lo + split_tokens - 1) / split_tokens;
    const sift_size slot0 = (sift_size)(b * Hq + h) * max_splits;
    extern __shared__ float sm_w[];
    __shared__ float sm_norm;
    float mx = SIFT_NEG_BIG;
    for (int s = 0; s < ns; s++) mx = fmaxf(mx, part_lse[slot0 + s]);
    for (int s = threadIdx.x; s < ns; s += blockDim.x) sm_w[s] = exp2f(part_lse[slot0 + s] - mx);
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.f;
        for (int s = 0; s < ns; s++) t += sm_w[s];
        sm_norm = t > 0.f ? 1.f / t : 0.f;
    }
    __syncthreads();
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float o = 0.f;
        for (int s = 0; s < ns; s++) o = fmaf(sm_w[s], part_o[(slot0 + s) * D + d], o);
        const sift_size at = (sift_size)(b * Hq + h) * D + d;
        if (out_f32) ((float*)out)[at] = o * sm_norm;
        else ((sift_bf16*)out)[at] = f32_to_bf16(o * sm_norm);
    }
}

#define SIFT_DECODE_ARGS \
    const void* q, const sift_bf16* kc, const sift_bf16* vc, const int* page_table, const int* seq_lens, \
    const int* sel_idx, const int* sel_count, int max_sel, float* part_o, float* part_lse, \
    int page_shift, int max_pages, int split_tokens, int max_splits, float scale, int* counters, sift_bf16* out, \
    int fixed_len, int window, int q_f32
#define SIFT_DECODE_PASS q, kc, vc, page_table, seq_lens, sel_idx, sel_count, max_sel, part_o, part_lse, \
    page_shift, max_pages, split_tokens, max_splits, scale, counters, out, fixed_len, window, q_f32

// Entry points: sift_decode_split_d<D>_g<G>, sift_decode_combine_d<D>.
#define SIFT_DECODE_KERNEL(D, G, DPL) \
    extern "C" __global__ void __launch_bounds__(DEC_WARPS * 32) sift_decode_split_d##D##_g##G(SIFT_DECODE_ARGS) \
    { sift_pdl_entry(); decode_split<D, G, DPL>(SIFT_DECODE_PASS); }
// Dims a lane holds: 16 up to 4 heads a group; 5 or 6 heads: 16 up to d=128, 8 above; 7-8: 8.
#define DPL56(D) ((D) <= 128 ? 16 : 8)
#define SIFT_DPL(D, G) ((G) <= 4 ? 16 : ((G) <= 6 ? DPL56(D) : 8))
#define SIFT_DECODE_COMBINE(D) \
    extern "C" __global__ void sift_decode_combine_d##D(const float* part_o, const float* part_lse, \
        const int* seq_lens, const int* sel_count, int G, int split_tokens, int max_splits, void* out, \
        int fixed_len, int window, int out_f32) \
    { sift_pdl_entry(); decode_combine<D>(part_o, part_lse, seq_lens, sel_count, G, split_tokens, max_splits, out, fixed_len, window, out_f32); }
#define SIFT_DECODE_KERNELS(D) \
    SIFT_DECODE_KERNEL(D, 1, SIFT_DPL(D, 1)) SIFT_DECODE_KERNEL(D, 2, SIFT_DPL(D, 2)) SIFT_DECODE_KERNEL(D, 3, SIFT_DPL(D, 3)) \
    SIFT_DECODE_KERNEL(D, 4, SIFT_DPL(D, 4)) SIFT_DECODE_KERNEL(D, 5, SIFT_DPL(D, 5)) SIFT_DECODE_KERNEL(D, 6, SIFT_DPL(D, 6)) \
    SIFT_DECODE_KERNEL(D, 7, SIFT_DPL(D, 7)) SIFT_DECODE_KERNEL(D, 8, SIFT_DPL(D, 8)) \
    SIFT_DECODE_COMBINE(D)

#endif
