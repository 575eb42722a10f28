#!/usr/bin/env bash
# Device runs behind docs/benchmarks.md "4-bit labels on a per-channel grid".
#   checks  the synthetic selftest (with the channel-grid checks: records against the CPU's bytes,
#           top-k of its own scores, output against float64, batched vs single) and the kernel checks
#   op      the decode attention op: dense, DS with bf16, 4-bit per-token and 4-bit channel-grid
#           labels side by side (kernel-bench --ds-label-bits), llama3-8b, batch 1/8/32, 32K/128K,
#           then 256K at batch 8/32
#   e2e     end-to-end decode on synthetic llama3-8b and qwen2.5-1.5b at 32K: dense vs DS with
#           4-bit per-token labels, and dense vs DS with channel-grid labels (one invocation each)
#   qwen    Qwen 1.5B (reassembled from /tmp/q15/c*, README.md here), 16 projected channels on the
#           grid (8 bytes a token, first token pinned): GPU perplexity, NIAH, KV, batched decode;
#           then 24 and 32 projected channels with per-token 4-bit records (session-projected qwen4)
# Binary $SIFT_BIN (default .dev-final/bin17/sift); calibration .dev-final/calib/q15-qk-svd.json
# (= docs/eval/cuda/qwen2.5-coder-1.5b/ds-calibration-qk-svd.json). bin17 predates the CLI's
# default --sinks 1 for the grid, so the commands give --sinks 1.
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
 qwen)
  qwen15b
  CQ=.dev-final/calib/q15-qk-svd.json; E=$R/eval/qwen2.5-coder-1.5b
  X="--attention double-sparse --ds-config $CQ --ds-channels 16 --ds-label-bits 4 --sinks 1"
  P="-m $Q --device cuda -f heldout -c 4096 --chunks 2"
  step ppl16g 60 $B ppl $P $X --ds-label-scale channel
  step ppl16t 60 $B ppl $P $X --ds-label-scale token
  step niah-16g 150 $B eval niah -m $Q --device cuda $X --ds-label-scale channel --out $E/niah-double-sparse-qk-svd-16ch-grid
  step kv-16g 100 $B eval kv -m $Q --device cuda $X --ds-label-scale channel --lengths 1k,2k,4k,8k,16k --out $E/kv-double-sparse-qk-svd-16ch-grid
  report qwen "ppl \|accuracy\|%" 8 300 ;;
 qwen-b)
  qwen15b
  CQ=.dev-final/calib/q15-qk-svd.json
  P="-m $Q --device cuda -f heldout -c 4096 --chunks 2"
  step bench-16g 170 $B bench -m $Q --device cuda -p 0 -n 32 -d 32704 -r 2 --fill random --batch 1,16,32 --attention dense,double-sparse \
    --ds-config $CQ --ds-channels 16 --ds-label-bits 4 --ds-label-scale channel --sinks 1
  step ppl24q4-shared 60 $B ppl $P --attention double-sparse --ds-config $CQ --ds-label-bits 4 --ds-channels 24
  step ppl32q4-shared 60 $B ppl $P --attention double-sparse --ds-config $CQ --ds-label-bits 4 --ds-channels 32
  step ppl24q4-perhead 60 $B ppl $P --attention double-sparse --ds-config $CQ --ds-label-bits 4 --ds-channels 24 --ds-group per-head
  report qwen-b "ppl \|t/s\||" 8 300 ;;
 e2e)
  for m in llama3-8b qwen2.5-1.5b; do
    for s in token channel; do
      step e2e-$m-$s 200 $B bench --device cuda --synthetic $m -p 0 -n 32 -d 32704 -r 2 --fill random --batch 1,8,32 \
        --attention dense,double-sparse --ds-label-bits 4 --ds-label-scale $s
    done
  done
  report e2e "tok/s\||" 12 300 ;;
esac
