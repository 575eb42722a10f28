#!/usr/bin/env bash
# Device runs behind docs/benchmarks.md "Projected labels (qk-svd) on the GPU".
#   checks  the synthetic selftest (with the projected-label checks against float64 and the CPU)
#   qwen    Qwen 1.5B (reassembled from /tmp/q15/c*, README.md here), qk-svd calibration:
#           sparse-aware perplexity and NIAH
#   qwen2   KV retrieval and batched decode
#   qwen3   the same at 16 projected channels and 4 bits
#   qwen4   24 and 32 projected channels at 4 bits (rank-32 calibration; not run yet)
#   gemma   gemma 3 270M from /tmp/gem/c*: perplexity (16 bf16, 32 at 4 bits), NIAH and KV
# Binary $SIFT_BIN (default .dev-final/bin17/sift; checks|qwen|qwen2|qwen3|gemma ran on bin16, the
# same engine before the self-test refactor); calibrations: copies of
# docs/eval/cuda/*/ds-calibration-qk-svd.json in .dev-final/calib.
set -uo pipefail
B=${SIFT_BIN:-.dev-final/bin17/sift}
source "$(dirname "$0")/lib.sh"
CQ=.dev-final/calib/q15-qk-svd.json; CG=.dev-final/calib/gemma-qk-svd.json
E=$R/eval/qwen2.5-coder-1.5b
case "${1:-checks}" in
 checks)
  step selftest 300 $B selftest --device cuda -t 16 ;;
 qwen)
  qwen15b
  X="--attention double-sparse --ds-config $CQ"; P="-m $Q --device cuda -f heldout -c 4096 --chunks 2"
  step ppl8-shared 60 $B ppl $P $X
  step ppl8-perhead 60 $B ppl $P $X --ds-group per-head
  step ppl16q4-shared 60 $B ppl $P $X --ds-channels 16 --ds-label-bits 4
  step niah-8-shared 120 $B eval niah -m $Q --device cuda $X --out $E/niah-double-sparse-qk-svd
  step niah-8-perhead 120 $B eval niah -m $Q --device cuda $X --ds-group per-head --out $E/niah-double-sparse-qk-svd-per-head ;;
 qwen2)
  qwen15b
  X="--attention double-sparse --ds-config $CQ"
  step kv-8-shared 90 $B eval kv -m $Q --device cuda $X --lengths 1k,2k,4k,8k,16k --out $E/kv-double-sparse-qk-svd
  step kv-8-perhead 90 $B eval kv -m $Q --device cuda $X --ds-group per-head --lengths 1k,2k,4k,8k,16k --out $E/kv-double-sparse-qk-svd-per-head
  step bench-shared 170 $B bench -m $Q --device cuda -p 0 -n 32 -d 32704 -r 2 --fill random --batch 1,16,32 --attention dense,double-sparse --ds-config $CQ ;;
 qwen3)
  qwen15b
  X="--attention double-sparse --ds-config $CQ --ds-channels 16 --ds-label-bits 4"; P="-m $Q --device cuda -f heldout -c 4096 --chunks 2"
  step ppl16q4-perhead 60 $B ppl $P $X --ds-group per-head
  step niah-16q4-shared 120 $B eval niah -m $Q --device cuda $X --out $E/niah-double-sparse-qk-svd-16ch-4bit
  step kv-16q4-shared 90 $B eval kv -m $Q --device cuda $X --lengths 1k,2k,4k,8k,16k --out $E/kv-double-sparse-qk-svd-16ch-4bit
  step kv-16q4-perhead 90 $B eval kv -m $Q --device cuda $X --ds-group per-head --lengths 1k,2k,4k,8k,16k --out $E/kv-double-sparse-qk-svd-16ch-4bit-per-head
  step bench-16q4-shared 170 $B bench -m $Q --device cuda -p 0 -n 32 -d 32704 -r 2 --fill random --batch 1,16,32 --attention dense,double-sparse --ds-config $CQ --ds-channels 16 --ds-label-bits 4 ;;
 qwen4)
  # 24 and 32 projected channels at 4 bits (16 and 20 bytes a token): calibration of rank 32.
  qwen15b
  X="--attention double-sparse --ds-config $CQ --ds-label-bits 4"; P="-m $Q --device cuda -f heldout -c 4096 --chunks 2"
  step ppl24q4-shared 60 $B ppl $P $X --ds-channels 24
  step ppl32q4-shared 60 $B ppl $P $X --ds-channels 32
  step ppl24q4-perhead 60 $B ppl $P $X --ds-channels 24 --ds-group per-head
  step niah-24q4-shared 120 $B eval niah -m $Q --device cuda $X --ds-channels 24 --out $E/niah-double-sparse-qk-svd-24ch-4bit
  step kv-24q4-shared 90 $B eval kv -m $Q --device cuda $X --ds-channels 24 --lengths 1k,2k,4k,8k,16k --out $E/kv-double-sparse-qk-svd-24ch-4bit
  step kv-32q4-shared 90 $B eval kv -m $Q --device cuda $X --ds-channels 32 --lengths 1k,2k,4k,8k,16k --out $E/kv-double-sparse-qk-svd-32ch-4bit
  step bench-24q4-shared 170 $B bench -m $Q --device cuda -p 0 -n 32 -d 32704 -r 2 --fill random --batch 1,16,32 --attention dense,double-sparse --ds-config $CQ --ds-channels 24 --ds-label-bits 4 ;;
 gemma)
  G=/tmp/models/gemma3-270m.gguf; mkdir -p /tmp/models; [ -s $G ] || { cat /tmp/gem/c* > $G; sha256sum $G | tee $R/sha256-gemma.txt; }
  X="--attention double-sparse --ds-config $CG"; P="-m $G --device cuda -f heldout -c 4096 --chunks 2"
  step gppl-dense 60 $B ppl $P
  step gppl16-shared 60 $B ppl $P $X
  step gppl16-perhead 60 $B ppl $P $X --ds-group per-head
  step gppl32q4-shared 60 $B ppl $P $X --ds-channels 32 --ds-label-bits 4
  step gppl32q4-perhead 60 $B ppl $P $X --ds-channels 32 --ds-label-bits 4 --ds-group per-head
  GE=$R/eval/gemma3-270m
  step gniah-16-shared 120 $B eval niah -m $G --device cuda $X --out $GE/niah-double-sparse-qk-svd
  step gniah-16-perhead 120 $B eval niah -m $G --device cuda $X --ds-group per-head --out $GE/niah-double-sparse-qk-svd-per-head
  step gkv-16-perhead 90 $B eval kv -m $G --device cuda $X --ds-group per-head --lengths 1k,2k,4k,8k,16k --out $GE/kv-double-sparse-qk-svd-per-head ;;
esac
report ${1:-checks} "|\|checks passed\|ALL CHECKS\|accuracy\|^ppl\|tok/s\|FAIL"
