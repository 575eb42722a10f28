// Split-KV flash-decoding entry points (the kernels are in decode_core.cuh, shared with
// double_sparsity.cu): sift_decode_split_d<D>_g<G> for D in {64, 128, 256}, G = 1...8 query heads
// per KV head, and sift_decode_combine_d<D>.
#include "decode_core.cuh"

SIFT_DECODE_KERNELS(64)
SIFT_DECODE_KERNELS(128)
SIFT_DECODE_KERNELS(256)
