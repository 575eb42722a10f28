// The transformer operations of CUDABackend other than matrix products (cuBLAS does those):
// f32 activations, bf16 weights and KV cache. Simple, correct kernels.
#include "common.cuh"

// out[i, :] = table[tokens[i], :] * scale; table of dtype (0 bf16, 1 f16, 2 f32).
// grid (ceil(dim/256), rows), block 256
extern "C" __global__ void sift_embed(const void* table, const int* tokens, float* out, int dim, float scale, int dtype) {
    int i = blockIdx.y;
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j < dim) out[(size_t)i * dim + j] = load_weight(table, (size_t)tokens[i] * dim + j, dtype) * scale;
}

// out = x / rms(x) * w over groups of `group` values; out may be x.   grid (groups), block 256
extern "C" __global__ void sift_rms_norm(const float* x, const float* w, float* out, int group, float eps) {
    const float* src = x + (size_t)blockIdx.x * group;
    float* dst = out + (size_t)blockIdx.x * group;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < group; j += blockDim.x) { float v = src[j]; ss += v * v; }
    ss = block_sum(ss);
    float inv = 1.0f / sqrtf(ss / (float)group + eps);
    for (int j = threadIdx.x; j < group; j += blockDim.x) dst[j] = src[j] * inv * w[j];
}

// Rotates channel pairs of every head of row t by angle (pos[t] / scale) * inv_freq[i].
// interleaved: pairs (2i, 2i+1); else (i, i + head_dim/2).   grid (rows), block 128
extern "C" __global__ void sift_rope(float* x, const int* pos, const float* inv_freq, int cols, int head_dim,
                                     float scale, int interleaved) {
    int t = blockIdx.x, half = head_dim / 2, heads = cols / head_dim;
    float p = (float)pos[t] / scale;
    float* row = x + (size_t)t * cols;
    for (int idx = threadIdx.x; idx < heads * half; idx += blockDim.x) {
        int h = idx / half, i = idx % half;
        float s, c;
        sincosf(p * inv_freq[i], &s, &c);
        float* v = row + h * head_dim;
        int i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
        float a = v[i0], b = v[i1];
        v[i0] = a * c - b * s;
        v[i1] = a * s + b * c;
    }
}

// x += y.   grid ceil(n/256), block 256
extern "C" __global__ void sift_add(float* x, const float* y, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

// out[t, j] += b[j] over rows×cols.
extern "C" __global__ void sift_add_bias(float* out, const float* b, int cols, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] += b[i % cols];
}

// gate = act(gate) * up; kind 0 = SiLU, 1 = GELU (tanh approximation).
extern "C" __global__ void sift_gated(float* gate, const float* up, long n, int kind) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = gate[i];
    float a = kind == 0 ? v / (1.0f + expf(-v))
                        : 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    gate[i] = a * up[i];
}

// One token through a linear layer: y[r] = W[r]·x (+ bias[r]), W [m][n] bf16 (dtype 0) or f16
// (1), x and y f32, n a multiple of 8. x is rounded to W's precision first, so the products are
// those of the cuBLAS path (which converts x, then multiplies with f32 accumulation). Decode at
// batch 1 is bound by issuing work on the host: this is one launch instead of a conversion, a
// cuBLAS call (~13 µs of host time on the lent H100's host) and a bias add.
// One warp a row, 8 rows a block, 16-byte weight loads, 4 in flight a lane.   grid (ceil(m/8)), block 256
__device__ __forceinline__ float round_to(float v, int dtype) {
    return dtype == 0 ? bf16_to_f32(f32_to_bf16(v)) : f16_to_f32(f32_to_f16(v));
}
__device__ __forceinline__ float gemv_dot8(uint4 w, const float4* x, int dtype) {
    const float4 a = x[0], b = x[1];
    const float xs[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    const unsigned ws[4] = {w.x, w.y, w.z, w.w};
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const unsigned short lo = (unsigned short)(ws[i] & 0xffffu), hi = (unsigned short)(ws[i] >> 16);
        const float wl = dtype == 0 ? bf16_to_f32(lo) : f16_to_f32(lo);
        const float wh = dtype == 0 ? bf16_to_f32(hi) : f16_to_f32(hi);
        s = fmaf(wl, round_to(xs[2 * i], dtype), s);
        s = fmaf(wh, round_to(xs[2 * i + 1], dtype), s);
    }
    return s;
}
extern "C" __global__ void __launch_bounds__(256) sift_gemv(const void* __restrict__ w, const float* __restrict__ x,
                                                            const float* __restrict__ bias, float* __restrict__ y,
                                                            int m, int n, int dtype) {
    const int row = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= m) return;
    const uint4* wr = (const uint4*)((const unsigned short*)w + (long)row * n);
    const float4* x4 = (const float4*)x;
    const int chunks = n >> 3;
    float acc = 0.f;
    int c = lane;
    for (; c + 96 < chunks; c += 128) {
        const uint4 a0 = wr[c], a1 = wr[c + 32], a2 = wr[c + 64], a3 = wr[c + 96];
        acc += gemv_dot8(a0, x4 + 2 * c, dtype) + gemv_dot8(a1, x4 + 2 * (c + 32), dtype)
             + gemv_dot8(a2, x4 + 2 * (c + 64), dtype) + gemv_dot8(a3, x4 + 2 * (c + 96), dtype);
    }
    for (; c < chunks; c += 32) acc += gemv_dot8(wr[c], x4 + 2 * c, dtype);
    acc = warp_sum(acc);
    if (lane == 0) y[row] = acc + (bias ? bias[row] : 0.f);
}

// f32 -> bf16 (activations before a cuBLAS product).
extern "C" __global__ void sift_f32_to_bf16(const float* x, bf16_t* y, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = f32_to_bf16(x[i]);
}

// f32 -> f16 (activations before an f16 cuBLAS product).
extern "C" __global__ void sift_f32_to_f16(const float* x, unsigned short* y, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = f32_to_f16(x[i]);
}

// Writes rows of k and v (f32, [rows][kv_heads*head_dim]) at positions start... into the
// paged bf16 cache of one layer.   grid (rows), block 128
extern "C" __global__ void sift_kv_store(const float* k, const float* v, bf16_t* kpool, bf16_t* vpool,
                                         const int* page_table, int start, int kv_heads, int head_dim, int page_size) {
    int t = blockIdx.x, width = kv_heads * head_dim;
    for (int idx = threadIdx.x; idx < width; idx += blockDim.x) {
        int h = idx / head_dim, d = idx % head_dim;
        size_t off = kv_offset(page_table, start + t, h, kv_heads, page_size, head_dim) + d;
        kpool[off] = f32_to_bf16(k[(size_t)t * width + idx]);
        vpool[off] = f32_to_bf16(v[(size_t)t * width + idx]);
    }
}

// Batched decode store: row t of k and v (kv_heads * head_dim floats) is the new token of
// sequence t, at position seq_lens[t] - 1, through that sequence's page-table row
// (page_table + t * max_pages).
// grid (rows), block 128
extern "C" __global__ void sift_kv_store_batch(const float* k, const float* v, bf16_t* kpool, bf16_t* vpool,
                                               const int* page_table, const int* seq_lens, int max_pages,
                                               int kv_heads, int head_dim, int page_size) {
    int t = blockIdx.x, width = kv_heads * head_dim;
    int pos = seq_lens[t] - 1;
    const int* table = page_table + (size_t)t * max_pages;
    for (int idx = threadIdx.x; idx < width; idx += blockDim.x) {
        int h = idx / head_dim, d = idx % head_dim;
        size_t off = kv_offset(table, pos, h, kv_heads, page_size, head_dim) + d;
        kpool[off] = f32_to_bf16(k[(size_t)t * width + idx]);
        vpool[off] = f32_to_bf16(v[(size_t)t * width + idx]);
    }
}

// Dense causal attention over the paged cache, one block of 4 warps per (query head, query
// row): warp w takes keys first+w, first+w+4, … with an online softmax (each lane holds
// head_dim/32 output channels), then the 4 partial states are merged. Query row t is at
// position start+t and sees keys max(0, pos-window+1)...pos (window 0 = all). GQA: query
// head h reads KV head h / (heads / kv_heads). head_dim <= 256.
// grid (heads, rows), block 128
#define SIFT_ATT_WARPS 4
#define SIFT_ATT_MAXD 256
extern "C" __global__ void sift_attention_dense(const float* q, float* out, const bf16_t* kpool, const bf16_t* vpool,
                                                const int* page_table, int start, int heads, int kv_heads,
                                                int head_dim, int page_size, int window, float scale) {
    int h = blockIdx.x, t = blockIdx.y;
    int kvh = h / (heads / kv_heads);
    int pos = start + t;
    int first = window > 0 ? max(0, pos - window + 1) : 0;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const float* qr = q + ((size_t)t * heads + h) * head_dim;
    float qv[SIFT_ATT_MAXD / 32], acc[SIFT_ATT_MAXD / 32];
#pragma unroll
    for (int i = 0; i < SIFT_ATT_MAXD / 32; i++) {
        int d = i * 32 + lane;
        qv[i] = d < head_dim ? qr[d] * scale : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -SIFT_INF, s = 0.0f;
    for (int j = first + warp; j <= pos; j += SIFT_ATT_WARPS) {
        size_t base = kv_offset(page_table, j, kvh, kv_heads, page_size, head_dim);
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < SIFT_ATT_MAXD / 32; i++) {
            int d = i * 32 + lane;
            if (d < head_dim) dot += qv[i] * bf16_to_f32(kpool[base + d]);
        }
        dot = warp_sum(dot);
        float mn = fmaxf(m, dot);
        float corr = expf(m - mn), p = expf(dot - mn);
        s = s * corr + p;
#pragma unroll
        for (int i = 0; i < SIFT_ATT_MAXD / 32; i++) {
            int d = i * 32 + lane;
            if (d < head_dim) acc[i] = acc[i] * corr + p * bf16_to_f32(vpool[base + d]);
        }
        m = mn;
    }
    __shared__ float wm[SIFT_ATT_WARPS], ws[SIFT_ATT_WARPS];
    __shared__ float wacc[SIFT_ATT_WARPS][SIFT_ATT_MAXD];
    if (lane == 0) { wm[warp] = m; ws[warp] = s; }
#pragma unroll
    for (int i = 0; i < SIFT_ATT_MAXD / 32; i++) {
        int d = i * 32 + lane;
        if (d < head_dim) wacc[warp][d] = acc[i];
    }
    __syncthreads();
    float M = -SIFT_INF;
    for (int w = 0; w < SIFT_ATT_WARPS; w++) M = fmaxf(M, wm[w]);
    float S = 0.0f;
    for (int w = 0; w < SIFT_ATT_WARPS; w++) if (wm[w] > -SIFT_INF) S += ws[w] * expf(wm[w] - M);
    float* o = out + ((size_t)t * heads + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc_d = 0.0f;
        for (int w = 0; w < SIFT_ATT_WARPS; w++) if (wm[w] > -SIFT_INF) acc_d += wacc[w][d] * expf(wm[w] - M);
        o[d] = acc_d / S;
    }
}

// Random weights for synthetic benchmark models: y[i] = offset + scale * u, u uniform in
// [-1, 1) from a hash of (seed, i). dtype 0 = bf16, 1 = f16, 2 = f32.
extern "C" __global__ void sift_fill_random(void* y, long n, unsigned seed, float offset, float scale, int dtype) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned long long h = (unsigned long long)i * 0x9E3779B97F4A7C15ull ^ ((unsigned long long)seed << 32 | seed);
    h ^= h >> 33; h *= 0xff51afd7ed558ccdull; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ull; h ^= h >> 33;
    float u = (float)(h >> 40) * (1.0f / 8388608.0f) - 1.0f;
    float v = offset + scale * u;
    if (dtype == 0) ((bf16_t*)y)[i] = f32_to_bf16(v);
    else if (dtype == 1) ((unsigned short*)y)[i] = f32_to_f16(v);
    else ((float*)y)[i] = v;
}
