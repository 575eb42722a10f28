#!/usr/bin/env bash
# GPU checks, run on a GPU machine from the repository root (no build there: SIFT_BIN names a
# sift binary built elsewhere with --static-swift-stdlib). Kernels vs float64, random models
# GPU vs CPU, then each real model given in SIFT_MODELS (space-separated .gguf paths): logits
# GPU vs CPU and the golden greedy continuations. Exits non-zero if any check fails.
#   SIFT_BIN=path/to/sift SIFT_MODELS="m1.gguf m2.gguf" scripts/device-test.sh
set -uo pipefail
bin=${SIFT_BIN:-.build/release/sift}
out=${OUT:-/tmp/sift-device-test}
golden=${SIFT_GOLDEN:-Tests/Golden/greedy.jsonl}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader || true
args=()
for m in ${SIFT_MODELS:-}; do args+=(-m "$m"); done
"$bin" selftest --device "${SIFT_DEVICE:-cuda}" --golden "$golden" ${SIFT_SELFTEST_FLAGS:-} "${args[@]}" 2>&1 | tee "$out/selftest.log"
exit "${PIPESTATUS[0]}"
