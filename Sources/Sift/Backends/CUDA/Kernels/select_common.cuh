// Pieces shared by the token-selection kernels (double_sparsity.cu, sparse_select.cu): the
// order-preserving uint32 key of a float score and a block-wide scan.
#ifndef SIFT_SELECT_COMMON
#define SIFT_SELECT_COMMON
#include "attention_common.cuh"

// Larger float -> larger unsigned key.
__device__ __forceinline__ sift_u32 float_key(float f) {
    const sift_u32 u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Block-wide inclusive scan of one int per thread (1024 threads max). Returns the inclusive prefix;
// *total gets the block sum.
__device__ __forceinline__ int block_scan(int v, int* sm, int* total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        const int o = __shfl_up_sync(0xffffffffu, v, off);
        if (lane >= off) v += o;
    }
    if (lane == 31) sm[warp] = v;
    __syncthreads();
    if (warp == 0) {
        int w = lane < nw ? sm[lane] : 0;
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
            const int o = __shfl_up_sync(0xffffffffu, w, off);
            if (lane >= off) w += o;
        }
        sm[lane] = w;   // inclusive warp totals
    }
    __syncthreads();
    const int r = v + (warp > 0 ? sm[warp - 1] : 0);
    *total = sm[nw - 1];
    __syncthreads();
    return r;
}

#endif
