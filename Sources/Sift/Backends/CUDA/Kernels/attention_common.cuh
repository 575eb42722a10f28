// Shared helpers for sift's attention kernels. Self-contained: NVRTC compiles these without the
// CUDA toolkit headers, so bf16 is handled as raw 16-bit storage (unsigned short) with our own
// conversions. The embed step concatenates this header before each kernel file.
#ifndef SIFT_ATTENTION_COMMON
#define SIFT_ATTENTION_COMMON

typedef unsigned short sift_bf16;   // raw bfloat16 bits
typedef unsigned int sift_u32;
typedef unsigned long long sift_size;  // NVRTC without headers has no size_t guarantee

// Programmatic dependent launch (sm_90+). A kernel launched with it (CUDAContext.launch,
// `dependent: true`) can start while the kernel before it on the stream is still running, so
// it must call this first, before touching memory: wait until that grid has finished and its
// writes are visible, then let the next kernel on the stream launch (its blocks start on the
// SMs this grid's last blocks leave, and wait there in turn). After an ordinary launch both
// instructions return at once; below sm_90 they are left out.
__device__ __forceinline__ void sift_pdl_entry() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ float bf16_to_f32(sift_bf16 x) { return __uint_as_float(((sift_u32)x) << 16); }
// Two bf16 packed in one 32-bit word: low half is the element at the lower address.
__device__ __forceinline__ float bf16lo(sift_u32 w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16hi(sift_u32 w) { return __uint_as_float(w & 0xffff0000u); }
// Round to nearest even (NaN kept quiet).
__device__ __forceinline__ sift_bf16 f32_to_bf16(float f) {
    sift_u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (sift_bf16)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (sift_bf16)(u >> 16);
}
__device__ __forceinline__ sift_u32 pack_bf16(float lo, float hi) {
    return (sift_u32)f32_to_bf16(lo) | ((sift_u32)f32_to_bf16(hi) << 16);
}
// Unpack 8 bf16 (one 16-byte load) into floats.
__device__ __forceinline__ void unpack8(uint4 w, float* f) {
    f[0] = bf16lo(w.x); f[1] = bf16hi(w.x); f[2] = bf16lo(w.y); f[3] = bf16hi(w.y);
    f[4] = bf16lo(w.z); f[5] = bf16hi(w.z); f[6] = bf16lo(w.w); f[7] = bf16hi(w.w);
}
// Scores are kept in the log2 domain: s = q·k · scale · log2(e), weights exp2(s - m).
#define SIFT_LOG2E 1.4426950408889634f
#define SIFT_NEG_BIG (-1.0e30f)
#define SIFT_NEG_INF (__int_as_float(0xff800000))

// Load through L2 only (data written by other blocks of the same grid, after a fence).
__device__ __forceinline__ float ld_cg(const float* p) {
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
    return v;
}

#endif
