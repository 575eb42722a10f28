// Causal prefill attention, FlashAttention-2 style, on bf16 tensor cores (mma.sync m16n8k16).
//
//   q   [T][Hq][D] bf16 (or f32 with q_f32), query i at position q0 + i
//   k,v [N][KVH][D] bf16, key j at position j (N >= q0 + T); or, with page_table, the paged
//       cache [pages][KVH][1 << page_shift][D] (decode_attention.cu's layout)
//   out [T][Hq][D] bf16 (or f32 with out_f32)
// Query i sees keys j <= q0 + i, and with window > 0 only j > q0 + i - window (sliding window).
// Grid (ceil(T/64), Hq), 128 threads: each warp owns 16 query rows, Q stays in registers as mma
// A fragments; K and V tiles of KT keys go through shared memory; S = Q·Kᵀ and O += P·V run on
// tensor cores with f32 accumulation and an online softmax per row (log2 domain). No T×N matrix
// is ever stored.

#include "attention_common.cuh"

__device__ __forceinline__ void mma_bf16(float* c, sift_u32 a0, sift_u32 a1, sift_u32 a2, sift_u32 a3,
                                         sift_u32 b0, sift_u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <int D, int KT>
__device__ __forceinline__ void prefill(
    const void* __restrict__ q, int q_f32, const sift_bf16* __restrict__ k, const sift_bf16* __restrict__ v,
    const int* __restrict__ page_table, int page_shift,
    void* __restrict__ out, int out_f32, int T, int N, int Hq, int KVH, int q0, int window, float scale)
{
    constexpr int PAD = D + 8;            // row stride in shared memory (bf16), breaks bank conflicts
    constexpr int KSTEPS = D / 16, NT = KT / 8, DT = D / 8;
    __shared__ uint4 Ks_raw[KT * PAD / 8], Vs_raw[KT * PAD / 8];   // uint4 for 16-byte alignment
    sift_bf16* Ks = (sift_bf16*)Ks_raw;
    sift_bf16* Vs = (sift_bf16*)Vs_raw;
    const int h = blockIdx.y, kvh = h / (Hq / KVH);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int qb = blockIdx.x * 64;
    const int r0 = qb + warp * 16 + (lane >> 2);   // this thread's rows: r0 and r0 + 8
    const int cq = (lane & 3) * 2;                 // column pair inside an 8/16-wide fragment
    const float sl = scale * SIFT_LOG2E;

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

    const int last_pos = q0 + min(T, qb + 64) - 1;           // last query position in the block
    int lo = 0;
    if (window > 0) lo = max(0, q0 + qb - window + 1);
    lo = (lo / KT) * KT;
    const int hi = min(N, last_pos + 1);
    for (int kt = lo; kt < hi; kt += KT) {
        __syncthreads();
        for (int e = threadIdx.x; e < KT * D / 8; e += blockDim.x) {
            const int j = e / (D / 8), c = e % (D / 8);
            uint4 kw = make_uint4(0, 0, 0, 0), vw = make_uint4(0, 0, 0, 0);
            if (kt + j < N) {
                const int t = kt + j;
                const sift_size row = page_table
                    ? (((sift_size)page_table[t >> page_shift] * KVH + kvh) << page_shift) + (t & ((1 << page_shift) - 1))
                    : (sift_size)t * KVH + kvh;
                kw = *(const uint4*)(k + row * D + c * 8);
                vw = *(const uint4*)(v + row * D + c * 8);
            }
            *(uint4*)(Ks + j * PAD + c * 8) = kw;
            *(uint4*)(Vs + j * PAD + c * 8) = vw;
        }
        __syncthreads();
        // S = Q Kᵀ for this warp's 16 rows × KT keys.
        float s[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
            const sift_bf16* kr = Ks + (nt * 8 + (lane >> 2)) * PAD + cq;
#pragma unroll
            for (int kk = 0; kk < KSTEPS; kk++)
                mma_bf16(s[nt], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3],
                         *(const sift_u32*)(kr + kk * 16), *(const sift_u32*)(kr + kk * 16 + 8));
        }
        // Mask, scale, online softmax (rows r0 -> x = 0,1; r0 + 8 -> x = 2,3).
        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int x = 0; x < 4; x++) {
                const int pos = q0 + r0 + ((x & 2) ? 8 : 0);
                const int j = kt + nt * 8 + cq + (x & 1);
                const bool vis = j <= pos && j < N && (window <= 0 || j > pos - window);
                s[nt][x] = vis ? s[nt][x] * sl : SIFT_NEG_INF;
                mx[x >> 1] = fmaxf(mx[x >> 1], s[nt][x]);
            }
        float alpha[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            alpha[r] = exp2f(m[r] - mx[r]);
            m[r] = mx[r];
            l[r] *= alpha[r];
        }
#pragma unroll
        for (int i = 0; i < DT; i++) {
            o[i][0] *= alpha[0]; o[i][1] *= alpha[0]; o[i][2] *= alpha[1]; o[i][3] *= alpha[1];
        }
        sift_u32 pa[NT][2];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const float p0 = exp2f(s[nt][0] - m[0]), p1 = exp2f(s[nt][1] - m[0]);
            const float p2 = exp2f(s[nt][2] - m[1]), p3 = exp2f(s[nt][3] - m[1]);
            l[0] += p0 + p1; l[1] += p2 + p3;
            pa[nt][0] = pack_bf16(p0, p1);
            pa[nt][1] = pack_bf16(p2, p3);
        }
        // O += P V: P's C fragments of key tiles 2j, 2j+1 form the A fragment of k-step j.
#pragma unroll
        for (int j = 0; j < KT / 16; j++) {
            const sift_bf16* vr = Vs + (j * 16 + cq) * PAD + (lane >> 2);
#pragma unroll
            for (int dn = 0; dn < DT; dn++) {
                const sift_bf16* vp = vr + dn * 8;
                const sift_u32 b0 = (sift_u32)vp[0] | ((sift_u32)vp[PAD] << 16);
                const sift_u32 b1 = (sift_u32)vp[8 * PAD] | ((sift_u32)vp[9 * PAD] << 16);
                mma_bf16(o[dn], pa[2 * j][0], pa[2 * j][1], pa[2 * j + 1][0], pa[2 * j + 1][1], b0, b1);
            }
        }
    }
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

#define SIFT_PREFILL_KERNEL(D, KT) \
    extern "C" __global__ void __launch_bounds__(128) sift_prefill_d##D(const void* q, int q_f32, const sift_bf16* k, \
        const sift_bf16* v, const int* page_table, int page_shift, void* out, int out_f32, \
        int T, int N, int Hq, int KVH, int q0, int window, float scale) \
    { prefill<D, KT>(q, q_f32, k, v, page_table, page_shift, out, out_f32, T, N, Hq, KVH, q0, window, scale); }

SIFT_PREFILL_KERNEL(64, 64)
SIFT_PREFILL_KERNEL(128, 64)
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
