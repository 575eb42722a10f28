// Pieces shared by the token-selection kernels (double_sparsity.cu, sparse_select.cu): the
// order-preserving uint32 key of a float score, a block-wide scan, the flush of a block's
// shared-memory key histogram, and the tie-cut scan of the exact top-k threshold.
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

// Adds a block's shared-memory histogram of 4096 bins into its global copy (nonzero bins only).
// The caller's barrier must order every thread's updates of sh before this.
__device__ __forceinline__ void flush_hist(const int* sh, int* gh) {
    for (int i = threadIdx.x; i < 4096; i += blockDim.x) if (sh[i]) atomicAdd(&gh[i], sh[i]);
}

// Tie cut of an exact top-k threshold T, for the whole block: of the elements 0 ..< len, in
// order, the `remaining`-th one (1-based) that ties with T; *cut gets its position from the one
// thread that finds it (nothing is written when there are fewer ties). tie_at(i, pos) says
// whether element i ties, called only for i < len; pos comes in as i, and tie_at sets it where
// the position differs from the index. Elements go `stride` (= blockDim.x) at a time through
// block_scan with a carry, stopping once `remaining` ties have gone by (the stop is uniform).
// No barrier after the last scan: the caller syncs before reading *cut. Used by
// sift_ds_threshold over its 32-bit keys (Quest, TidalDecode; Double Sparsity's own selection
// resolves ties from per-chunk counts in its attend kernel). Callers capture by value: a [&]
// capture changed NVVM's alias analysis of the whole kernel (its key loads became ld.global.nc).
template <typename TieAt>
__device__ __forceinline__ void tie_cut_scan(int len, int stride, int remaining, int* scan_sm, int* cut,
                                             TieAt tie_at) {
    int carry = 0;
    for (int c0 = 0; c0 < len; c0 += stride) {
        const int i = c0 + (int)threadIdx.x;
        int pos = i;
        const int tie = (i < len && tie_at(i, pos)) ? 1 : 0;
        int total;
        const int incl = block_scan(tie, scan_sm, &total) + carry;
        if (tie && incl == remaining) *cut = pos;
        carry += total;
        if (carry >= remaining) break;
    }
}

// The threshold (T, cut) when everything (k >= n) or nothing (k <= 0) is selected.
__device__ __forceinline__ void write_all_or_none(sift_u32* out, int k) {
    out[0] = k <= 0 ? 0xffffffffu : 0u;
    out[1] = k <= 0 ? 0xffffffffu : 0x7fffffffu;
}

#endif
