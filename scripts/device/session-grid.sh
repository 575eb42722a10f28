#!/usr/bin/env bash
# Device runs behind docs/benchmarks.md "4-bit labels on a per-channel grid".
#   checks  the synthetic selftest (with the channel-grid checks: records against the CPU's bytes,
#           top-k of its own scores, output against float64, batched vs single) and the kernel checks
#   op      the decode attention op: dense, DS with bf16, 4-bit per-token and 4-bit channel-grid
#           labels side by side (kernel-bench --ds-label-bits), llama3-8b, batch 1/8/32, 32K/128K,
#           then 256K at batch 8/32
#   e2e     end-to-end decode on synthetic llama3-8b and qwen2.5-1.5b at 32K: dense vs DS with
#           4-bit per-token labels, and dense vs DS with channel-grid labels (one invocation each)
# Binary $SIFT_BIN (default .dev-final/bin17/sift).
set -uo pipefail
B=${SIFT_BIN:-.dev-final/bin17/sift}
source "$(dirname "$0")/lib.sh"
case "${1:-checks}" in
 checks)
  gpu_checks
  report checks "PASS\|FAIL\|checks\|passed" 6 ;;
 op)
  step op 300 $B kernel-bench --ds-label-bits --models llama3-8b --batches 1,8,32 --lengths 32768,131072 --iterations 10
  step op256 200 $B kernel-bench --ds-label-bits --models llama3-8b --batches 8,32 --lengths 262144 --max-tokens 8388608 --iterations 10
  report op "^|" 20 400 ;;
 e2e)
  for m in llama3-8b qwen2.5-1.5b; do
    for s in token channel; do
      step e2e-$m-$s 200 $B bench --device cuda --synthetic $m -p 0 -n 32 -d 32704 -r 2 --fill random --batch 1,8,32 \
        --attention dense,double-sparse --ds-label-bits 4 --ds-label-scale $s
    done
  done
  report e2e "tok/s\||" 12 300 ;;
esac
