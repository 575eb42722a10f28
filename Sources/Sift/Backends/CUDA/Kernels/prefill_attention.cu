// Causal prefill attention, FlashAttention-2 style, on bf16 tensor cores (mma.sync m16n8k16).
//
//   q   [T][Hq][D] bf16 (or f32 with q_f32), query i at position q0 + i
//   k,v [N][KVH][D] bf16, key j at position j (N >= q0 + T); or, with page_table, the paged
//       cache [pages][KVH][1 << page_shift][D] (decode_attention.cu's layout)
//   out [T][Hq][D] bf16 (or f32 with out_f32)
// Query i sees keys j <= q0 + i, and with window > 0 only j > q0 + i - window (sliding window).
// 1-D grid of ceil(T/128) × Hq blocks, 256 threads: each warp owns 16 query rows, Q stays in
// registers as mma A fragments; K and V tiles of KT keys go through shared memory; S = Q·Kᵀ and
// O += P·V run on tensor cores with f32 accumulation and an online softmax per row (log2 domain).
// No T×N matrix is ever stored.

#include "attention_common.cuh"

__device__ __forceinline__ void mma_bf16(float* c, sift_u32 a0, sift_u32 a1, sift_u32 a2, sift_u32 a3,
                                         sift_u32 b0, sift_u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// How it is fast (2.2-2.9x the first version of this kernel on an H100, docs/cuda-attention.md):
//  - 128 query rows per block (8 warps × 16 rows): each K/V tile brought from L2 serves twice as
//    many rows (half the L2 -> SM traffic per FLOP).
//  - K/V tiles arrive by cp.async into two shared-memory stages: tile i+1 is in flight while
//    tile i is computed (one barrier per tile).
//  - Shared rows are D bf16 without padding; 16-byte chunk c of row j sits at chunk c ^ (j & 7)
//    (XOR swizzle), so the 8 row addresses of every ldmatrix and every 8-lane phase of the
//    cp.async stores hit distinct bank groups.
//  - mma B fragments come from ldmatrix.x4 (K: two k-steps per instruction) and ldmatrix.x4.trans
//    (V: two 8-dim column tiles per instruction) instead of scalar shared loads.
//  - Masks are evaluated only on tiles that cross the diagonal or the window edge, per warp; a
//    warp skips tiles entirely above its diagonal or below its window.
//  - Blocks run longest query tiles first (1-D grid, head fastest: the G heads of a KV group run
//    side by side and share their K/V tiles in L2).
//  - exp2 with the scale folded into one FMA (ex2.approx.ftz).
// Launch: grid (ceil(T / 128) * Hq), 256 threads, dynamic shared 2 * 2 * KT * D * 2 bytes.

#ifndef SIFT_PF_WARPS
#define SIFT_PF_WARPS 8
#endif
#define SIFT_PF_ROWS (16 * SIFT_PF_WARPS)

__device__ __forceinline__ sift_u32 smem_u32(const void* p) { return (sift_u32)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void cp_async16(sift_u32 dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }
__device__ __forceinline__ void ldsm_x4(sift_u32 a, sift_u32& r0, sift_u32& r1, sift_u32& r2, sift_u32& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(a));
}
__device__ __forceinline__ void ldsm_x4_t(sift_u32 a, sift_u32& r0, sift_u32& r1, sift_u32& r2, sift_u32& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(a));
}
__device__ __forceinline__ float ex2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

template <int D, int KT>
__device__ __forceinline__ void prefill_tc(
    const void* __restrict__ q, int q_f32, const sift_bf16* __restrict__ k, const sift_bf16* __restrict__ v,
    const int* __restrict__ page_table, int page_shift,
    void* __restrict__ out, int out_f32, int T, int N, int Hq, int KVH, int q0, int window, float scale)
{
    constexpr int ROWS = SIFT_PF_ROWS, NTHREADS = 32 * SIFT_PF_WARPS;
    constexpr int KSTEPS = D / 16, NT = KT / 8, DT = D / 8, CH = D / 8;   // CH: 16-byte chunks a row
    constexpr int TILE_BYTES = KT * D * 2;                                 // one K (or V) tile
    constexpr int LOADS = KT * CH / NTHREADS;                              // chunks a thread, per tile
    static_assert((KT * CH) % NTHREADS == 0 && NTHREADS % CH == 0, "tile chunks must divide among threads");
    static_assert(KSTEPS % 2 == 0 && DT % 2 == 0 && KT % 16 == 0, "x4 ldmatrix pairs");
    extern __shared__ uint4 sift_pf_smem[];                // [stage 0: K, V][stage 1: K, V]
    const sift_u32 sbase = smem_u32(sift_pf_smem);

    const int nqb = (T + ROWS - 1) / ROWS;
    const int h = blockIdx.x % Hq;
    const int qb = (nqb - 1 - (int)(blockIdx.x / Hq)) * ROWS;   // longest (last) query tiles first
    const int kvh = h / (Hq / KVH);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wr = qb + warp * 16;                 // this warp's first row
    const int r0 = wr + (lane >> 2);               // this thread's rows: r0 and r0 + 8
    const int cq = (lane & 3) * 2;                 // column pair inside an 8/16-wide fragment
    const float sl = scale * SIFT_LOG2E;
    const bool wactive = wr < T;
    const int wfirst = q0 + wr, wlast = q0 + min(T, wr + 16) - 1;   // the warp's query positions

    sift_u32 qa[KSTEPS][4];
#pragma unroll
    for (int kk = 0; kk < KSTEPS; kk++) {
#pragma unroll
        for (int x = 0; x < 4; x++) {
            const int row = r0 + ((x & 1) ? 8 : 0);
            const int col = kk * 16 + cq + ((x & 2) ? 8 : 0);
            const sift_size at = ((sift_size)row * Hq + h) * D + col;
            if (row >= T) qa[kk][x] = 0u;
            else if (q_f32) { const float2 f = *(const float2*)((const float*)q + at); qa[kk][x] = pack_bf16(f.x, f.y); }
            else qa[kk][x] = *(const sift_u32*)((const sift_bf16*)q + at);
        }
    }
    float o[DT][4];
#pragma unroll
    for (int i = 0; i < DT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m[2] = {SIFT_NEG_BIG, SIFT_NEG_BIG}, l[2] = {0.f, 0.f};

    const int last_pos = q0 + min(T, qb + ROWS) - 1;         // last query position in the block
    int lo = 0;
    if (window > 0) lo = max(0, q0 + qb - window + 1);
    lo = (lo / KT) * KT;
    const int hi = min(N, last_pos + 1);
    const int ntiles = hi > lo ? (hi - lo + KT - 1) / KT : 0;

    // This thread's share of a tile: chunk lc of rows lj, lj + NTHREADS/CH, ... (K and V alike).
    const int lc = threadIdx.x % CH, lj = threadIdx.x / CH;
    auto load_tile = [&](int kt, int stage) {
        const sift_u32 ks = sbase + stage * 2 * TILE_BYTES, vs = ks + TILE_BYTES;
#pragma unroll
        for (int i = 0; i < LOADS; i++) {
            const int j = lj + i * (NTHREADS / CH);
            const int t = kt + j;
            const bool ok = t < N;
            const int tt = ok ? t : 0;                   // rows past N are zero-filled
            const sift_size row = page_table
                ? (((sift_size)page_table[tt >> page_shift] * KVH + kvh) << page_shift) + (tt & ((1 << page_shift) - 1))
                : (sift_size)tt * KVH + kvh;
            const sift_u32 off = (sift_u32)(j * D + ((lc ^ (j & 7)) * 8)) * 2;
            cp_async16(ks + off, k + row * D + lc * 8, ok);
            cp_async16(vs + off, v + row * D + lc * 8, ok);
        }
    };

    if (ntiles > 0) load_tile(lo, 0);
    cp_async_commit();
    for (int it = 0; it < ntiles; it++) {
        const int kt = lo + it * KT;
        cp_async_wait_all();        // this thread's copies of tile it have landed
        __syncthreads();            // everyone's have, and everyone is done with tile it - 1
        if (it + 1 < ntiles) load_tile(kt + KT, (it + 1) & 1);
        cp_async_commit();
        // Tiles entirely above this warp's diagonal or entirely below its window: nothing visible.
        if (!wactive || kt > wlast || (window > 0 && kt + KT - 1 <= wfirst - window)) continue;
        const bool masked = kt + KT - 1 > wfirst || (window > 0 && kt <= wlast - window);
        const sift_u32 ks = sbase + (it & 1) * 2 * TILE_BYTES, vs = ks + TILE_BYTES;

        // S = Q Kᵀ for this warp's 16 rows × KT keys; one ldmatrix.x4 gives the B fragments of
        // two k-steps (matrices: dims +0, +8, +16, +24 of keys nt*8 .. nt*8+7).
        float s[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
            const int key = nt * 8 + (lane & 7);
#pragma unroll
            for (int kk = 0; kk < KSTEPS; kk += 2) {
                const int c = kk * 2 + (lane >> 3);
                sift_u32 b0, b1, b2, b3;
                ldsm_x4(ks + (sift_u32)(key * D + ((c ^ (lane & 7)) * 8)) * 2, b0, b1, b2, b3);
                mma_bf16(s[nt], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], b0, b1);
                mma_bf16(s[nt], qa[kk + 1][0], qa[kk + 1][1], qa[kk + 1][2], qa[kk + 1][3], b2, b3);
            }
        }
        // Mask (edge tiles only), online softmax on raw scores (rows r0 -> x = 0,1; r0 + 8 -> x = 2,3).
        if (masked) {
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int x = 0; x < 4; x++) {
                    const int pos = q0 + r0 + ((x & 2) ? 8 : 0);
                    const int j = kt + nt * 8 + cq + (x & 1);
                    if (j > pos || (window > 0 && j <= pos - window)) s[nt][x] = SIFT_NEG_INF;
                }
        }
        float mx[2] = {SIFT_NEG_INF, SIFT_NEG_INF};
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            mx[0] = fmaxf(mx[0], fmaxf(s[nt][0], s[nt][1]));
            mx[1] = fmaxf(mx[1], fmaxf(s[nt][2], s[nt][3]));
        }
        float alpha[2], nm[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            const float mn = fmaxf(m[r], mx[r] * sl);
            alpha[r] = ex2_approx(m[r] - mn);
            m[r] = mn;
            nm[r] = -mn;
            l[r] *= alpha[r];
        }
#pragma unroll
        for (int i = 0; i < DT; i++) {
            o[i][0] *= alpha[0]; o[i][1] *= alpha[0]; o[i][2] *= alpha[1]; o[i][3] *= alpha[1];
        }
        sift_u32 pa[NT][2];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const float p0 = ex2_approx(fmaf(s[nt][0], sl, nm[0])), p1 = ex2_approx(fmaf(s[nt][1], sl, nm[0]));
            const float p2 = ex2_approx(fmaf(s[nt][2], sl, nm[1])), p3 = ex2_approx(fmaf(s[nt][3], sl, nm[1]));
            l[0] += p0 + p1; l[1] += p2 + p3;
            pa[nt][0] = pack_bf16(p0, p1);
            pa[nt][1] = pack_bf16(p2, p3);
        }
        // O += P V: P's C fragments of key tiles 2j, 2j+1 form the A fragment of k-step j; one
        // ldmatrix.x4.trans gives the B fragments of two 8-dim column tiles (matrices: keys
        // +0..7 and +8..15 of dims dn*8.., then of dims (dn+1)*8..).
#pragma unroll
        for (int j = 0; j < KT / 16; j++) {
            const int key = j * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
            for (int dn = 0; dn < DT; dn += 2) {
                const int c = dn + (lane >> 4);
                sift_u32 b0, b1, b2, b3;
                ldsm_x4_t(vs + (sift_u32)(key * D + ((c ^ (lane & 7)) * 8)) * 2, b0, b1, b2, b3);
                mma_bf16(o[dn], pa[2 * j][0], pa[2 * j][1], pa[2 * j + 1][0], pa[2 * j + 1][1], b0, b1);
                mma_bf16(o[dn + 1], pa[2 * j][0], pa[2 * j][1], pa[2 * j + 1][0], pa[2 * j + 1][1], b2, b3);
            }
        }
    }
    cp_async_wait_all();
    if (!wactive) return;
    // Row sums: each of the 4 lanes of a row holds part of it.
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
    const float inv0 = l[0] > 0.f ? 1.f / l[0] : 0.f, inv1 = l[1] > 0.f ? 1.f / l[1] : 0.f;
#pragma unroll
    for (int dn = 0; dn < DT; dn++) {
        const int col = dn * 8 + cq;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int row = r0 + 8 * r;
            if (row >= T) continue;
            const float inv = r ? inv1 : inv0;
            const sift_size at = ((sift_size)row * Hq + h) * D + col;
            if (out_f32) *(float2*)((float*)out + at) = make_float2(o[dn][2 * r] * inv, o[dn][2 * r + 1] * inv);
            else *(sift_u32*)((sift_bf16*)out + at) = pack_bf16(o[dn][2 * r] * inv, o[dn][2 * r + 1] * inv);
        }
    }
}

// Tuning knobs (attention_bench.py --prefill-variants compiles with -D overrides; the Swift launcher
// assumes the defaults). Measured on the H100 (docs/cuda-attention.md): 8 warps, 1 block an SM
// (222 registers at d=128), KT = 64 beat 4 warps, KT = 32 and a 2-blocks-an-SM register cap.
#ifndef SIFT_PF_MIN_BLOCKS
#define SIFT_PF_MIN_BLOCKS 1
#endif
#define SIFT_PREFILL_KERNEL(D, KT) \
    extern "C" __global__ void __launch_bounds__(32 * SIFT_PF_WARPS, SIFT_PF_MIN_BLOCKS) sift_prefill_d##D(const void* q, \
        int q_f32, const sift_bf16* k, const sift_bf16* v, const int* page_table, int page_shift, void* out, int out_f32, \
        int T, int N, int Hq, int KVH, int q0, int window, float scale) \
    { prefill_tc<D, KT>(q, q_f32, k, v, page_table, page_shift, out, out_f32, T, N, Hq, KVH, q0, window, scale); }

// Key-tile sizes: the Swift launcher (CUDAAttentionKernels.prefillKeyTile) and
// scripts/device/attention_bench.py size the dynamic shared memory from these.
#ifndef SIFT_PF_KT128
#define SIFT_PF_KT128 64
#endif
SIFT_PREFILL_KERNEL(64, 64)
SIFT_PREFILL_KERNEL(128, SIFT_PF_KT128)
SIFT_PREFILL_KERNEL(256, 32)

// Deterministic pseudo-random bf16 fill for synthetic benchmarks and device checks: uniform in
// [-√3, √3]·scale (unit variance), from a hash of (seed, index).
extern "C" __global__ void sift_fill_random_bf16(sift_bf16* dst, long long n, unsigned seed, float scale) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned h = (unsigned)i * 0x9E3779B1u ^ (unsigned)(i >> 32) * 0x85EBCA77u ^ seed * 0xC2B2AE3Du;
    h ^= h >> 16; h *= 0x7feb352du; h ^= h >> 15; h *= 0x846ca68bu; h ^= h >> 16;
    const float u = (float)(h >> 8) * (1.0f / 16777216.0f);        // [0, 1)
    dst[i] = f32_to_bf16((u * 2.f - 1.f) * 1.7320508f * scale);
}
