// GPU-side sampling helpers: per row of logits (f32, [rows][vocab]) the argmax, or the k
// largest logits (k <= 64) with their ids, sorted, so that only ids or k candidates go back
// to the host.
//
// Order: larger logit first; equal logits: lower id first (so the argmax of a row with ties
// is its lowest id, as the host Sampler). NaN ranks below every number (it is never picked
// while a number is left); -inf ranks below every finite value. Logits are compared through
// an order-preserving map of their bits to unsigned integers.
#include "common.cuh"

#define SIFT_SAMPLE_THREADS 1024
#define SIFT_TOPK_MAX 64

// Bits of f mapped so that unsigned comparison orders like the floats; NaN -> 0 (lowest).
__device__ __forceinline__ unsigned sift_order_key(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0u;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Does (ka, ia) come before (kb, ib)?
__device__ __forceinline__ bool sift_before(unsigned ka, int ia, unsigned kb, int ib) {
    return ka > kb || (ka == kb && ia < ib);
}

// grid (rows), block SIFT_SAMPLE_THREADS. ids[row] = argmax (lowest id among ties; a row of
// only NaN gives 0).
extern "C" __global__ void sift_argmax_rows(const float* __restrict__ logits, int vocab, int* __restrict__ ids) {
    __shared__ unsigned skey[32];
    __shared__ int sid[32];
    const float* x = logits + (size_t)blockIdx.x * vocab;
    unsigned best = 0u;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        unsigned k = sift_order_key(x[i]);
        if (sift_before(k, i, best, bi)) { best = k; bi = i; }
    }
    for (int o = 16; o > 0; o >>= 1) {
        unsigned k2 = __shfl_xor_sync(0xffffffffu, best, o);
        int i2 = __shfl_xor_sync(0xffffffffu, bi, o);
        if (sift_before(k2, i2, best, bi)) { best = k2; bi = i2; }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { skey[warp] = best; sid[warp] = bi; }
    __syncthreads();
    if (warp == 0) {
        int nw = blockDim.x >> 5;
        best = lane < nw ? skey[lane] : 0u;
        bi = lane < nw ? sid[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            unsigned k2 = __shfl_xor_sync(0xffffffffu, best, o);
            int i2 = __shfl_xor_sync(0xffffffffu, bi, o);
            if (sift_before(k2, i2, best, bi)) { best = k2; bi = i2; }
        }
        if (lane == 0) ids[blockIdx.x] = bi < vocab ? bi : 0;
    }
}

// grid (rows), block SIFT_SAMPLE_THREADS. The k (1...64, k <= vocab) first logits of each row
// in the order above: ids[row][0..<k], values[row][0..<k].
// Radix select of the k-th key (4 passes of 8 bits over a 256-bin shared histogram), then
// every key above it and the lowest ids among the keys equal to it, then a rank sort.
extern "C" __global__ void sift_topk_rows(const float* __restrict__ logits, int vocab, int k,
                                          int* __restrict__ ids, float* __restrict__ values) {
    __shared__ unsigned hist[256];
    __shared__ unsigned s_prefix, s_need;
    __shared__ unsigned cand_key[SIFT_TOPK_MAX];
    __shared__ int cand_id[SIFT_TOPK_MAX];
    __shared__ int s_count;
    __shared__ int warp_ties[32];
    const float* x = logits + (size_t)blockIdx.x * vocab;
    const int tid = threadIdx.x;
    if (tid == 0) { s_prefix = 0u; s_need = (unsigned)k; s_count = 0; }
    unsigned mask = 0u;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = tid; b < 256; b += blockDim.x) hist[b] = 0u;
        __syncthreads();
        const unsigned prefix = s_prefix;
        for (int i = tid; i < vocab; i += blockDim.x) {
            unsigned key = sift_order_key(x[i]);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (tid == 0) {
            unsigned need = s_need, above = 0u;
            int b = 255;
            for (; b > 0; --b) {
                if (above + hist[b] >= need) break;
                above += hist[b];
            }
            s_need = need - above;
            s_prefix = prefix | ((unsigned)b << shift);
        }
        mask |= 255u << shift;
        __syncthreads();
    }
    const unsigned T = s_prefix;      // the k-th key
    const unsigned ties = s_need;     // how many keys equal to T are taken (>= 1)
    // Keys above T: fewer than k of them, any order.
    for (int i = tid; i < vocab; i += blockDim.x) {
        unsigned key = sift_order_key(x[i]);
        if (key > T) {
            int slot = atomicAdd(&s_count, 1);
            cand_key[slot] = key; cand_id[slot] = i;
        }
    }
    __syncthreads();
    // Keys equal to T: the `ties` lowest ids, in id order (block-wide prefix counts per chunk).
    const int base_slot = s_count;
    int taken = 0;
    const int lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
    for (int start = 0; start < vocab && taken < (int)ties; start += blockDim.x) {
        int i = start + tid;
        bool tie = i < vocab && sift_order_key(x[i]) == T;
        unsigned ballot = __ballot_sync(0xffffffffu, tie);
        if (lane == 0) warp_ties[warp] = __popc(ballot);
        __syncthreads();
        int before = 0, total = 0;
        for (int w = 0; w < nw; ++w) { if (w < warp) before += warp_ties[w]; total += warp_ties[w]; }
        int rank = taken + before + __popc(ballot & ((1u << lane) - 1u));
        if (tie && rank < (int)ties) { cand_key[base_slot + rank] = T; cand_id[base_slot + rank] = i; }
        taken += total;
        __syncthreads();
    }
    __syncthreads();
    // Rank sort of the k candidates.
    if (tid < k) {
        unsigned key = cand_key[tid];
        int id = cand_id[tid], r = 0;
        for (int j = 0; j < k; ++j) r += sift_before(cand_key[j], cand_id[j], key, id) ? 1 : 0;
        ids[(size_t)blockIdx.x * k + r] = id;
        values[(size_t)blockIdx.x * k + r] = x[id];
    }
}
