#!/usr/bin/env bash
# Device runs behind docs/benchmarks.md "Per-head selection on the GPU". checks: selftest (now with
# per-head selections against the CPU and float64) and kernel checks (per-head configurations);
# qwen: Qwen 1.5B reassembled from /tmp/q15/c* (README.md here): sparse-aware perplexity, NIAH/KV
# and batched decode with one selection per query head; gemma: gemma 3 270M from /tmp/gem/c*,
# sparse-aware perplexity, shared and per-head; recall: the recall calibrations (the runs behind
# "Recall-maximising calibration on the GPU"; they were run as inline commands, collected here).
# Binary: $SIFT_BIN (default .dev-final/bin8/sift).
set -uo pipefail
B=${SIFT_BIN:-.dev-final/bin8/sift}
source "$(dirname "$0")/lib.sh"
case "${1:-checks}" in
 checks)
  gpu_checks ;;
 qwen)
  qwen15b
  E=$R/eval/qwen2.5-coder-1.5b; X="--attention double-sparse --ds-config $C"; P="-m $Q --device cuda -f heldout -c 4096 --chunks 2"
  step mselftest 100 $B selftest --device cuda --models-only --golden ${B%/sift}/greedy.jsonl -m $Q
  step ppl8-shared 60 $B ppl $P $X
  step ppl8-perhead 60 $B ppl $P $X --ds-group per-head
  step ppl24q4-perhead 60 $B ppl $P $X --ds-group per-head --ds-channels 24 --ds-label-bits 4
  step niah-8-perhead 100 $B eval niah -m $Q --device cuda $X --ds-group per-head --out $E/niah-double-sparse-per-head
  step kv-8-perhead 80 $B eval kv -m $Q --device cuda $X --ds-group per-head --lengths 1k,2k,4k,8k,16k --out $E/kv-double-sparse-per-head
  step bench-perhead 150 $B bench -m $Q --device cuda -p 0 -n 32 -d 32704 -r 2 --fill random --batch 1,16,32 --attention dense,double-sparse --ds-config $C --ds-group per-head
  step bench-shared 150 $B bench -m $Q --device cuda -p 0 -n 32 -d 32704 -r 2 --fill random --batch 1,16,32 --attention dense,double-sparse --ds-config $C ;;
 qwen24)
  qwen15b
  E=$R/eval/qwen2.5-coder-1.5b; X="--attention double-sparse --ds-config $C --ds-group per-head --ds-channels 24 --ds-label-bits 4"
  step niah-24q4-perhead 100 $B eval niah -m $Q --device cuda $X --out $E/niah-double-sparse-24ch-4bit-per-head
  step kv-24q4-perhead 80 $B eval kv -m $Q --device cuda $X --lengths 1k,2k,4k,8k,16k --out $E/kv-double-sparse-24ch-4bit-per-head
  step bench-24q4-perhead 150 $B bench -m $Q --device cuda -p 0 -n 32 -d 32704 -r 2 --fill random --batch 1,16,32 --attention dense,double-sparse --ds-config $C --ds-group per-head --ds-channels 24 --ds-label-bits 4 ;;
 recall)
  # The recall calibrations (docs/ds-recall-calibration.md), from copies in .dev-final/calib whose
  # statistic field the ea2d794 binary knows: Qwen per-head and shared, gemma per-head.
  qwen15b
  E=$R/eval/qwen2.5-coder-1.5b
  for g in per-head shared; do
   X="--attention double-sparse --ds-config .dev-final/calib/q15-recall-${g/per-head/ph}.json"; X=${X/recall-shared/recall-sh}
   P="-m $Q --device cuda -f heldout -c 4096 --chunks 2 $X"
   step ppl8-$g-ph 60 $B ppl $P --ds-group per-head; step ppl8-$g-sh 60 $B ppl $P
   step ppl24q4-$g 60 $B ppl $P --ds-group $g --ds-channels 24 --ds-label-bits 4
   step niah-8-$g 100 $B eval niah -m $Q --device cuda $X --ds-group $g --out $E/niah-double-sparse-recall-calib-$g
   step kv-8-$g 80 $B eval kv -m $Q --device cuda $X --ds-group $g --lengths 1k,2k,4k,8k,16k --out $E/kv-double-sparse-recall-calib-$g
  done ;;
 gemma)
  G=/tmp/models/gemma3-270m.gguf; mkdir -p /tmp/models; [ -s $G ] || { cat /tmp/gem/c* > $G; sha256sum $G | tee $R/sha256-gemma.txt; }
  X="--attention double-sparse --ds-config .dev-final/calib/gemma-qk.json"; P="-m $G --device cuda -f heldout -c 4096 --chunks 2"
  step gppl-dense 60 $B ppl $P
  step gppl16-shared 60 $B ppl $P $X
  step gppl16-perhead 60 $B ppl $P $X --ds-group per-head
  X="--attention double-sparse --ds-config .dev-final/calib/gemma-recall-ph.json"
  for g in per-head shared; do step gppl16-recall-$g 60 $B ppl $P $X --ds-group $g; done
  step gppl8-recall-per-head 60 $B ppl $P $X --ds-group per-head --ds-channels 8 ;;
esac
report ${1:-checks} "|\|checks passed\|ALL CHECKS\|accuracy\|^ppl\|per-head"
