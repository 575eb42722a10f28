#!/usr/bin/env bash
# Device runs behind docs/benchmarks.md "Double Sparsity recent window". checks: random models and
# inputs only (selftest, kernel checks, op table); qwen: Qwen 1.5B reassembled from /tmp/q15/c*
# (README.md here), sparse-aware perplexity on the GPU and NIAH/KV retrieval with the recent window.
# Binary: $SIFT_BIN (default .dev-final/bin5/sift, greedy.jsonl beside it).
set -uo pipefail
B=${SIFT_BIN:-.dev-final/bin5/sift}
source "$(dirname "$0")/lib.sh"
case "${1:-checks}" in
 checks)
  step selftest 200 $B selftest --device cuda -t 16
  step kcheck 150 $B kernel-bench --check-only --models llama3-8b,qwen2.5-1.5b,gemma3-270m
  step kbench 120 $B kernel-bench --models llama3-8b --batches 8,32 --lengths 32768,131072 --iterations 10 ;;
 qwen)
  qwen15b
  E=$R/eval/qwen2.5-coder-1.5b; X="--attention double-sparse --ds-config $C"
  step selftest 150 $B selftest --device cuda --models-only --golden ${B%/sift}/greedy.jsonl -m $Q
  step niah-8 70 $B eval niah -m $Q --device cuda $X --out $E/niah-double-sparse-recent64
  step kv-8 70 $B eval kv -m $Q --device cuda $X --lengths 1k,2k,4k,8k,16k --out $E/kv-double-sparse-recent64
  step niah-16q4 90 $B eval niah -m $Q --device cuda $X --ds-channels 16 --ds-label-bits 4 --out $E/niah-double-sparse-16ch-4bit-recent64
  step kv-16q4 70 $B eval kv -m $Q --device cuda $X --ds-channels 16 --ds-label-bits 4 --lengths 1k,2k,4k,8k,16k --out $E/kv-double-sparse-16ch-4bit-recent64
  for w in 0 64; do
   step ppl8-r$w 90 $B ppl -m $Q --device cuda -f heldout -c 4096 --chunks 2 $X --recent $w
   step ppl16q4-r$w 90 $B ppl -m $Q --device cuda -f heldout -c 4096 --chunks 2 $X --ds-channels 16 --ds-label-bits 4 --recent $w
  done
  step ppl-dense 60 $B ppl -m $Q --device cuda -f heldout -c 4096 --chunks 2 ;;
esac
cd $R && tar czf $OUT/res-${1:-checks}.tgz --exclude='*.tmp' . ; grep -h "FAIL" $R/*.log | head; for f in $R/*.log; do echo "== $f"; tr '\r' '\n' < $f | grep "|\|checks passed\|ALL CHECKS\|accuracy\|^ppl" | cut -c1-250 | tail -12; done
