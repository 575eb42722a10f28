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
