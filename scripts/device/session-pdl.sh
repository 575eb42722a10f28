#!/usr/bin/env bash
# Device runs behind docs/benchmarks.md "Programmatic dependent launch". checks: selftest and
# kernel checks with PDL on (the default); bench: the decode attention op (kernel-bench, each cell
# with PDL off and on in the same run) and end-to-end decode at batch 1 and 8 on the synthetic
# llama3-8b and qwen2.5-1.5b shapes, with SIFT_PDL=0 and with the default, one after the other.
# Binary: $SIFT_BIN (default .dev-final/bin9/sift).
set -uo pipefail
B=${SIFT_BIN:-.dev-final/bin9/sift}
source "$(dirname "$0")/lib.sh"
case "${1:-checks}" in
 checks)
  gpu_checks ;;
 bench)
  step op 300 $B kernel-bench --ds-label-bits --pdl --models llama3-8b --batches 1,8,32 --lengths 32768,131072 --iterations 10
  for m in llama3-8b qwen2.5-1.5b; do
   for p in 0 1; do
    SIFT_PDL=$p step e2e-$m-pdl$p 200 $B bench --device cuda --synthetic $m --attention dense,double-sparse --batch 1,8 -p 0 -n 32 -d 32768 --fill random -r 2
   done
  done ;;
esac
report ${1:-checks} "|\|checks passed\|ALL CHECKS\|accuracy\|tok/s" 16
