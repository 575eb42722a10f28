// Split-KV flash-decoding entry points (the kernels are in decode_core.cuh, shared with
// double_sparsity.cu): sift_decode_split_d<D>_g<G> for D in {64, 128, 256}, G = 1...8 query heads
// per KV head, and sift_decode_combine_d<D>.
// With SIFT_DECODE_D and SIFT_DECODE_G defined (the engine prepends them), only that head_dim's
// combine and that group size's split kernel are built: NVRTC compiles one variant in about a
// second instead of all 27 kernels at once.
#include "decode_core.cuh"

#if defined(SIFT_DECODE_D) && defined(SIFT_DECODE_G)
// (one macro level more, so that the names are pasted from the values, not the macro names)
#define SIFT_DECODE_ONE(D, G) SIFT_DECODE_KERNEL(D, G, SIFT_DPL(D, G)) SIFT_DECODE_COMBINE(D)
SIFT_DECODE_ONE(SIFT_DECODE_D, SIFT_DECODE_G)
#else
SIFT_DECODE_KERNELS(64)
SIFT_DECODE_KERNELS(128)
SIFT_DECODE_KERNELS(256)
#endif
