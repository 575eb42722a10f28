#!/usr/bin/env bash
# Device runs behind docs/benchmarks.md "Merged DS kernels and 4-bit labels, real Qwen 1.5B batched
# decode and retrieval". checks: random models/inputs only; qwen: Qwen 1.5B reassembled from
# /tmp/q15/c* (see README.md here). Binary: $SIFT_BIN (default .dev-final/bin2/sift).
set -uo pipefail
B=${SIFT_BIN:-.dev-final/bin2/sift}
source "$(dirname "$0")/lib.sh"
case "${1:-checks}" in
 checks)
  step selftest 200 $B selftest --device cuda -t 16
  step kcheck 150 $B kernel-bench --check-only --models llama3-8b,qwen2.5-1.5b,gemma3-270m
  step kbench 200 $B kernel-bench --models llama3-8b --batches 1,8,16,32 --lengths 32768,65536,131072 --iterations 10
  step klabels 120 $B kernel-bench --ds-label-bits --models llama3-8b --batches 1,8,32 --lengths 32768,131072 --iterations 10
  step e2e-l8b 150 $B bench --device cuda --synthetic llama3-8b --attention dense,double-sparse --batch 8 -p 0 -n 32 -d 32768 --fill random -r 3
  step e2e-l8b-4 80 $B bench --device cuda --synthetic llama3-8b --attention double-sparse --ds-label-bits 4 --batch 8 -p 0 -n 32 -d 32768 --fill random -r 3 ;;
 qwen)
  qwen15b
  E=$R/eval/qwen2.5-coder-1.5b; X="--attention double-sparse --ds-config $C"
  step selftest 150 $B selftest --device cuda --models-only --golden .dev-final/bin2/greedy.jsonl -m $Q
  step batch 150 $B bench -m $Q --device cuda -p 0 -n 32 -d 32704 -r 2 --fill random --batch 1,8,16,32 --attention dense,double-sparse --ds-config $C
  step batch4 80 $B bench -m $Q --device cuda -p 0 -n 32 -d 32704 -r 2 --fill random --batch 8,32 $X --ds-channels 16 --ds-label-bits 4
  step batch4-8 100 $B bench -m $Q --device cuda -p 0 -n 32 -d 32704 -r 2 --fill random --batch 16,32 --attention dense,double-sparse --ds-config $C --ds-channels 16 --ds-label-bits 4 --budget 1/8
  step niah-16q4 170 $B eval niah -m $Q --device cuda $X --ds-channels 16 --ds-label-bits 4 --out $E/niah-double-sparse-16ch-4bit
  step kv-16q4 90 $B eval kv -m $Q --device cuda $X --ds-channels 16 --ds-label-bits 4 --lengths 1k,2k,4k,8k,16k --out $E/kv-double-sparse-16ch-4bit
  step niah-8 60 $B eval niah -m $Q --device cuda $X --out $E/niah-double-sparse-key16
  step kv-8 60 $B eval kv -m $Q --device cuda $X --lengths 1k,2k,4k,8k,16k --out $E/kv-double-sparse-key16
  step niah-8q4 60 $B eval niah -m $Q --device cuda $X --ds-label-bits 4 --out $E/niah-double-sparse-8ch-4bit
  step kv-16q4-8 60 $B eval kv -m $Q --device cuda $X --ds-channels 16 --ds-label-bits 4 --budget 1/8 --lengths 1k,2k,4k,8k,16k --out $E/kv-double-sparse-16ch-4bit-1of8
  step niah-16q4-8 60 $B eval niah -m $Q --device cuda $X --ds-channels 16 --ds-label-bits 4 --budget 1/8 --out $E/niah-double-sparse-16ch-4bit-1of8 ;;
esac
cd $R && tar czf $OUT/res-${1:-checks}.tgz --exclude='*.tmp' . ; grep -h "FAIL" $R/*.log | head; for f in $R/*.log; do echo "== $f"; tr '\r' '\n' < $f | grep "|\|checks passed\|ALL CHECKS\|accuracy" | cut -c1-250 | tail -16; done
