#!/usr/bin/env bash
# Device runs behind docs/benchmarks.md "GPU decode at batch 1: host time, one-token GEMV".
# checks: selftest (now with a long-row one-token linear) and, with gemma 3 270M reassembled from
# /tmp/gem/c* (README.md here), its greedy tokens against llama.cpp's (Tests/Golden/greedy.jsonl);
# bench: decode at batch 1 with `--host-time` (host time issuing a step: kernel launches, cuBLAS
# calls; then the wait for the GPU) on the synthetic qwen2.5-1.5b and llama3-8b shapes, with the
# one-token GEMV off (SIFT_GEMV=0: f32→bf16 conversion + cuBLAS + bias add) and on, alternating.
# Binary: $SIFT_BIN (default .dev-final/bin12/sift).
set -uo pipefail
B=${SIFT_BIN:-.dev-final/bin12/sift}
source "$(dirname "$0")/lib.sh"
case "${1:-checks}" in
 checks)
  step selftest 240 $B selftest --device cuda -t 16
  G=/tmp/models/gemma3-270m.gguf; mkdir -p /tmp/models; [ -s $G ] || cat /tmp/gem/c* > $G
  step gselftest 120 $B selftest --device cuda --models-only --golden ${B%/sift}/greedy.jsonl -m $G ;;
 bench)
  for m in qwen2.5-1.5b llama3-8b; do
   for g in 0 1 0 1; do
    SIFT_GEMV=$g step host-$m-gemv$g-$RANDOM 200 $B bench --device cuda --synthetic $m --attention dense,double-sparse --batch 1 -p 0 -n 64 -d 0,32704 --fill random -r 3 --host-time
   done
  done ;;
esac
report ${1:-checks} "|\|checks passed\|ALL CHECKS" 10 400
