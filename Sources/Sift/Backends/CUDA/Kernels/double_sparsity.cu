// Double Sparsity decode on the GPU (sift, issue 5): label scores, exact top-k by radix select,
// then the split decode kernel of decode_attention.cu in selection mode gathers the chosen rows.
//
//   labels     [pages][KVH][P][R] bf16, paged like the KV cache (same page table)
//   channels   [KVH][R] int32: the calibrated channels of this layer, per KV head
//   keys       [B][KVH][key_stride] uint32: order-preserving keys of the approximate scores
//   sel_idx    [B][KVH][max_sel] int32, sel_count [B][KVH]
// One selection per KV group, from the group's summed query (as the CPU path does):
//   s_j = (Σ_{h∈group} q_h[C]) · label_j.  The first `sinks` tokens always win (key 0xffffffff).

// Larger float -> larger unsigned key.
__device__ __forceinline__ sift_u32 float_key(float f) {
    const sift_u32 u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Grid (ceil(maxLen / (256*4)), KVH, B), 256 threads, each thread 4 tokens.
template <int R>
__device__ __forceinline__ void ds_scores(
    const sift_bf16* __restrict__ q, const sift_bf16* __restrict__ labels, const int* __restrict__ channels,
    const int* __restrict__ page_table, const int* __restrict__ seq_lens, int G, int D,
    int page_shift, int max_pages, int sinks, sift_u32* __restrict__ keys, int key_stride)
{
    const int kvh = blockIdx.y, b = blockIdx.z, KVH = gridDim.y, Hq = KVH * G;
    const int n = seq_lens[b];
    __shared__ float qs[R];
    if (threadIdx.x < R) {
        const int ch = channels[kvh * R + threadIdx.x];
        float s = 0.f;
        for (int g = 0; g < G; g++) s += bf16_to_f32(q[(sift_size)(b * Hq + kvh * G + g) * D + ch]);
        qs[threadIdx.x] = s;
    }
    __syncthreads();
    const int* pt = page_table + (sift_size)b * max_pages;
    const int pmask = (1 << page_shift) - 1;
    sift_u32* kout = keys + (sift_size)(b * KVH + kvh) * key_stride;
    const int t0 = blockIdx.x * blockDim.x * 4 + threadIdx.x;
    uint4 lr[4][R / 8];
#pragma unroll
    for (int u = 0; u < 4; u++) {
        const int t = t0 + u * blockDim.x;
        if (t < n) {
            const sift_size row = (((sift_size)pt[t >> page_shift] * KVH + kvh) << page_shift) + (t & pmask);
            const uint4* lp = (const uint4*)(labels + row * R);
#pragma unroll
            for (int c = 0; c < R / 8; c++) lr[u][c] = lp[c];
        }
    }
#pragma unroll
    for (int u = 0; u < 4; u++) {
        const int t = t0 + u * blockDim.x;
        if (t < n) {
            float s = 0.f;
#pragma unroll
            for (int c = 0; c < R / 8; c++) {
                float f[8];
                unpack8(lr[u][c], f);
#pragma unroll
                for (int e = 0; e < 8; e++) s = fmaf(qs[c * 8 + e], f[e], s);
            }
            kout[t] = t < sinks ? 0xffffffffu : float_key(s);
        }
    }
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

#define TOPK_THREADS 1024
#define TOPK_BINS 4096

// Exact top-k per (b, KVH): grid (KVH, B), 1024 threads. k_per_seq[b] tokens (clamped to the length).
// Radix select on the keys, 12 + 12 + 8 bits, then an in-order compaction where ties at the
// threshold are taken lowest position first.
__device__ __forceinline__ void ds_topk(
    const sift_u32* __restrict__ keys, int key_stride, const int* __restrict__ seq_lens,
    const int* __restrict__ k_per_seq, int* __restrict__ sel_idx, int* __restrict__ sel_count, int max_sel)
{
    const int kvh = blockIdx.x, b = blockIdx.y, KVH = gridDim.x;
    const int n = seq_lens[b];
    const int k = min(min(k_per_seq[b], n), max_sel);
    const sift_u32* kp = keys + (sift_size)(b * KVH + kvh) * key_stride;
    int* out = sel_idx + (sift_size)(b * KVH + kvh) * max_sel;
    __shared__ int hist[TOPK_BINS];
    __shared__ int scan_sm[32];
    __shared__ sift_u32 s_prefix;
    __shared__ int s_remaining;
    const int tid = threadIdx.x;
    if (tid == 0) sel_count[b * KVH + kvh] = k;
    if (k >= n) {
        for (int i = tid; i < n; i += blockDim.x) out[i] = i;
        return;
    }
    sift_u32 prefix = 0, mask = 0;
    int remaining = k;   // how many still to take among keys matching prefix
    const int shifts[3] = {20, 8, 0};
    const int widths[3] = {12, 12, 8};
    for (int pass = 0; pass < 3; pass++) {
        const int shift = shifts[pass], nb = 1 << widths[pass];
        for (int i = tid; i < nb; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        for (int i = tid; i < n; i += blockDim.x) {
            const sift_u32 key = kp[i];
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & (nb - 1)], 1);
        }
        __syncthreads();
        // Counts from the top bin down: thread t owns bins [nb-1-t*per .. ] descending.
        const int per = nb / blockDim.x;  // 4 or 0 (nb = 256 -> handled below)
        int local = 0;
        if (per > 0) { for (int j = 0; j < per; j++) local += hist[nb - 1 - (tid * per + j)]; }
        else if (tid < nb) local = hist[nb - 1 - tid];
        int total;
        const int incl = block_scan(local, scan_sm, &total);
        const int excl = incl - local;     // count in bins above my range
        if (excl < remaining && remaining <= incl) {
            int above = excl;
            const int cnt = per > 0 ? per : 1;
            for (int j = 0; j < cnt; j++) {
                const int bin = nb - 1 - (tid * cnt + j);
                const int c = hist[bin];
                if (above + c >= remaining) {
                    s_prefix = prefix | ((sift_u32)bin << shift);
                    s_remaining = remaining - above;
                    break;
                }
                above += c;
            }
        }
        __syncthreads();
        prefix = s_prefix; remaining = s_remaining;
        mask |= (sift_u32)(nb - 1) << shift;
        __syncthreads();
    }
    // prefix is the k-th largest key; take every key above it and the first `remaining` equal ones.
    const sift_u32 T = prefix;
    int carry_sel = 0, carry_tie = 0;
    constexpr int PER = 16;
    for (int chunk = 0; chunk < n; chunk += blockDim.x * PER) {
        const int i0 = chunk + tid * PER;
        sift_u32 kk[PER];
        int ties = 0;
#pragma unroll
        for (int j = 0; j < PER; j++) {
            kk[j] = (i0 + j < n) ? kp[i0 + j] : 0u;
            ties += (i0 + j < n && kk[j] == T) ? 1 : 0;
        }
        int tie_total;
        int tie_before = block_scan(ties, scan_sm, &tie_total) - ties + carry_tie;
        int sel = 0;
        unsigned takeMask = 0;
#pragma unroll
        for (int j = 0; j < PER; j++) {
            bool take = false;
            if (i0 + j < n) {
                if (kk[j] > T) take = true;
                else if (kk[j] == T) { take = tie_before < remaining; tie_before++; }
            }
            if (take) { takeMask |= 1u << j; sel++; }
        }
        int sel_total;
        int pos = block_scan(sel, scan_sm, &sel_total) - sel + carry_sel;
#pragma unroll
        for (int j = 0; j < PER; j++) if (takeMask & (1u << j)) out[pos++] = i0 + j;
        carry_sel += sel_total; carry_tie += tie_total;
    }
}

extern "C" __global__ void sift_ds_scores_r8(const sift_bf16* q, const sift_bf16* labels, const int* channels,
    const int* page_table, const int* seq_lens, int G, int D, int page_shift, int max_pages, int sinks,
    sift_u32* keys, int key_stride)
{ ds_scores<8>(q, labels, channels, page_table, seq_lens, G, D, page_shift, max_pages, sinks, keys, key_stride); }

extern "C" __global__ void sift_ds_scores_r16(const sift_bf16* q, const sift_bf16* labels, const int* channels,
    const int* page_table, const int* seq_lens, int G, int D, int page_shift, int max_pages, int sinks,
    sift_u32* keys, int key_stride)
{ ds_scores<16>(q, labels, channels, page_table, seq_lens, G, D, page_shift, max_pages, sinks, keys, key_stride); }

extern "C" __global__ void __launch_bounds__(TOPK_THREADS) sift_ds_topk(const sift_u32* keys, int key_stride,
    const int* seq_lens, const int* k_per_seq, int* sel_idx, int* sel_count, int max_sel)
{ ds_topk(keys, key_stride, seq_lens, k_per_seq, sel_idx, sel_count, max_sel); }
