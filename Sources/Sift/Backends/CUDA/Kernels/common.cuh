// Shared helpers for sift's CUDA kernels (compiled at run time by NVRTC; no CUDA headers are
// needed: bf16 is handled as raw 16-bit patterns).
#pragma once

typedef unsigned short bf16_t;

// No <math.h> under NVRTC: infinity from its bits.
#define SIFT_INF __int_as_float(0x7f800000)

// bf16 -> f32: the 16 bits are the high half of the f32.
__device__ __forceinline__ float bf16_to_f32(bf16_t v) { return __uint_as_float(((unsigned)v) << 16); }

// f32 -> bf16, rounded to nearest even (NaN stays NaN).
__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

// f16 <-> f32 through PTX (no cuda_fp16.h under NVRTC).
__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ unsigned short f32_to_f16(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// Element `i` of a weight stored as dtype 0 = bf16, 1 = f16, 2 = f32.
__device__ __forceinline__ float load_weight(const void* w, size_t i, int dtype) {
    if (dtype == 0) return bf16_to_f32(((const bf16_t*)w)[i]);
    if (dtype == 1) return f16_to_f32(((const unsigned short*)w)[i]);
    return ((const float*)w)[i];
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    float t = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.0f;
    return warp_sum(t);
}

// The paged KV cache (see CUDAKVCache.swift): per layer, K and V pools of
// [page][kv_head][page_size][head_dim] bf16; a sequence's position p lives in physical page
// page_table[p / page_size], slot p % page_size.
__device__ __forceinline__ size_t kv_offset(const int* page_table, int pos, int kv_head, int kv_heads,
                                            int page_size, int head_dim) {
    int page = page_table[pos / page_size];
    return (((size_t)page * kv_heads + kv_head) * page_size + (pos % page_size)) * head_dim;
}
