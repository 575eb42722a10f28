// Double Sparsity's GPU label cache (CUDADoubleSparsity.swift) and the conversions around the
// DS decode kernels of double_sparsity.cu (which read bf16 queries and write bf16 outputs).
//
//   labels   [pages][KVH][P][R] bf16, paged like the KV cache: position p of KV head h lives at
//            row (page_table[p / P] * KVH + h) * P + p % P, R values (kv_offset with head_dim R)
//   channels [KVH][R] int32: the calibrated channels of one layer, per KV head
#include "common.cuh"

// Stores the labels of `rows` keys (f32, post-RoPE, [rows][KVH * D]) at positions start...:
// label[c] = bf16(key[channels[h][c]]).   grid (rows), block min(KVH * R, 256) rounded to warps
extern "C" __global__ void sift_ds_label_store(const float* k, bf16_t* labels, const int* channels,
                                               const int* page_table, int start, int kv_heads, int head_dim,
                                               int r, int page_size) {
    const int t = blockIdx.x, width = kv_heads * head_dim;
    for (int idx = threadIdx.x; idx < kv_heads * r; idx += blockDim.x) {
        const int h = idx / r, c = idx % r;
        const int ch = channels[h * r + c];
        labels[kv_offset(page_table, start + t, h, kv_heads, page_size, r) + c] =
            f32_to_bf16(k[(size_t)t * width + h * head_dim + ch]);
    }
}

// bf16 -> f32 (the DS kernels' bf16 output back into the engine's f32 activations).
extern "C" __global__ void sift_bf16_to_f32(const bf16_t* x, float* y, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = bf16_to_f32(x[i]);
}

// Batched decode: row t of k is the new key of sequence t, at position seq_lens[t] - 1, through
// that sequence's page-table row (page_table [B][max_pages]).   grid (B), block as above
extern "C" __global__ void sift_ds_label_store_batch(const float* k, bf16_t* labels, const int* channels,
                                                     const int* page_table, const int* seq_lens, int max_pages,
                                                     int kv_heads, int head_dim, int r, int page_size) {
    const int t = blockIdx.x, width = kv_heads * head_dim, pos = seq_lens[t] - 1;
    const int* table = page_table + (size_t)t * max_pages;
    for (int idx = threadIdx.x; idx < kv_heads * r; idx += blockDim.x) {
        const int h = idx / r, c = idx % r;
        const int ch = channels[h * r + c];
        labels[kv_offset(table, pos, h, kv_heads, page_size, r) + c] = f32_to_bf16(k[(size_t)t * width + h * head_dim + ch]);
    }
}

// 4-bit labels (`--ds-label-bits 4`, KV/LabelCache.swift defines the encoding): per position and
// KV head a record of W = 1 + R/8 words, paged like the bf16 labels (kv_offset with head_dim W):
//   word 0: f16 scale s (low half) | f16 offset m (high half); then R 4-bit codes, code c in bits
//   4*(c%8) of word 1 + c/8 (the CPU's bytes, little-endian). Normalised per channel:
//   x_c = (key[ch_c] - mean_c) * inv_std_c, m = f16(min x), s = f16(max(max x - m, 0) / 15),
//   u_c = clamp(round((x_c - m) / s), 0, 15) (0 where s = 0): the same f32 operations, each
//   rounded once (no contraction), as the CPU, so the codes are bit-identical.
//   mean, inv_std [KVH][R] f32 of this layer. R <= 32, a multiple of 8.
// With inv_step = 1/Δ > 0 (`--ds-label-scale channel`, LabelScale in KV/LabelCache.swift) the record
// is the R/8 code words alone: u_c = clamp(floor(x_c * inv_step + 8), 0, 15), one fixed grid per
// channel ((u - 7.5)·Δ in units of σ), again the CPU's f32 operations.
__device__ __forceinline__ void ds_label4_encode(const float* key, const int* ch, const float* mean,
                                                 const float* inv_std, int r, float inv_step, unsigned* rec) {
    if (inv_step > 0.f) {
        for (int w = 0; w < r / 8; w++) {
            unsigned word = 0;
            for (int e = 0; e < 8; e++) {
                const int c = w * 8 + e;
                const float x = __fmul_rn(__fsub_rn(key[ch[c]], mean[c]), inv_std[c]);
                const float t = floorf(__fadd_rn(__fmul_rn(x, inv_step), 8.f));
                const int u = t >= 15.f ? 15 : (t >= 0.f ? (int)t : 0);   // NaN: 0, as the CPU
                word |= (unsigned)u << (4 * e);
            }
            rec[w] = word;
        }
        return;
    }
    float x[32];
    float lo = __int_as_float(0x7f800000), hi = -lo;
    for (int c = 0; c < r; c++) {
        x[c] = __fmul_rn(__fsub_rn(key[ch[c]], mean[c]), inv_std[c]);
        lo = fminf(lo, x[c]);
        hi = fmaxf(hi, x[c]);
    }
    const unsigned short m16 = f32_to_f16(lo);
    const float m = f16_to_f32(m16);
    const unsigned short s16 = f32_to_f16(__fdiv_rn(fmaxf(__fsub_rn(hi, m), 0.f), 15.f));
    const float s = f16_to_f32(s16);
    rec[0] = (unsigned)s16 | ((unsigned)m16 << 16);
    for (int w = 0; w < r / 8; w++) {
        unsigned word = 0;
        for (int e = 0; e < 8; e++) {
            const int c = w * 8 + e;
            const int u = s > 0.f ? min(15, max(0, (int)roundf(__fdiv_rn(__fsub_rn(x[c], m), s)))) : 0;
            word |= (unsigned)u << (4 * e);
        }
        rec[1 + w] = word;
    }
}

// grid (rows), block KVH rounded up to a warp: thread h encodes KV head h of row t at start + t.
// inv_step: 0 per-token scale and offset (1 + r/8 words a record), > 0 the per-channel grid (r/8).
extern "C" __global__ void sift_ds_label4_store(const float* k, unsigned* labels, const int* channels,
                                                const float* mean, const float* inv_std, const int* page_table,
                                                int start, int kv_heads, int head_dim, int r, int page_size, float inv_step) {
    const int t = blockIdx.x, h = threadIdx.x, words = (inv_step > 0.f ? 0 : 1) + r / 8;
    if (h >= kv_heads) return;
    ds_label4_encode(k + (size_t)t * kv_heads * head_dim + h * head_dim, channels + h * r, mean + h * r, inv_std + h * r, r,
                     inv_step, labels + kv_offset(page_table, start + t, h, kv_heads, page_size, words));
}

// Batched decode, as sift_ds_label_store_batch.   grid (B), block as above
extern "C" __global__ void sift_ds_label4_store_batch(const float* k, unsigned* labels, const int* channels,
                                                      const float* mean, const float* inv_std, const int* page_table,
                                                      const int* seq_lens, int max_pages, int kv_heads, int head_dim,
                                                      int r, int page_size, float inv_step) {
    const int t = blockIdx.x, h = threadIdx.x, words = (inv_step > 0.f ? 0 : 1) + r / 8;
    if (h >= kv_heads) return;
    ds_label4_encode(k + (size_t)t * kv_heads * head_dim + h * head_dim, channels + h * r, mean + h * r, inv_std + h * r, r,
                     inv_step, labels + kv_offset(page_table + (size_t)t * max_pages, seq_lens[t] - 1, h, kv_heads, page_size, words));
}

// Projected labels (`sift calibrate --statistic qk-svd`, Attention/LabelProjection.swift): the
// label channels are rows of a calibrated matrix P instead of key channels.
//   y[t][h][c] = sum_i P[h / per][c][i] * x[t][h][i]      P [groups][R][D] f32, x [rows][heads][D] f32
// Keys: heads = KV heads, per = 1, y f32 [rows][KVH][R], then stored by the label store kernels
// above with head_dim R and the channel list 0..R-1. Queries: heads = query heads, per = G (a
// query head uses its KV head's matrix), y bf16 [rows][Hq][R]: the scores kernels read it as a
// query of head_dim R (the group sum of the projections is the projection of the group sum).
// grid (rows, heads), block 128: warp w computes channels w, w + 4, ...
__device__ __forceinline__ void ds_project_store(float* y, float s) { *y = s; }
__device__ __forceinline__ void ds_project_store(bf16_t* y, float s) { *y = f32_to_bf16(s); }
template <typename OUT>
__device__ __forceinline__ void ds_project(const float* x, const float* P, OUT* y, int heads, int per, int D, int R) {
    const int t = blockIdx.x, h = blockIdx.y, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    const float* xr = x + ((size_t)t * heads + h) * D;
    const float* ph = P + (size_t)(h / per) * R * D;
    for (int c = threadIdx.x >> 5; c < R; c += warps) {
        float s = 0.f;
        for (int i = lane; i < D; i += 32) s = fmaf(ph[(size_t)c * D + i], xr[i], s);
        s = warp_sum(s);
        if (lane == 0) ds_project_store(y + ((size_t)t * heads + h) * R + c, s);
    }
}

extern "C" __global__ void sift_ds_project_f32(const float* x, const float* P, float* y, int heads, int per, int D, int R) {
    ds_project(x, P, y, heads, per, D, R);
}
extern "C" __global__ void sift_ds_project_bf16(const float* x, const float* P, bf16_t* y, int heads, int per, int D, int R) {
    ds_project(x, P, y, heads, per, D, R);
}
