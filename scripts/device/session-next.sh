#!/usr/bin/env bash
# Prepared without a GPU (2026-12-08) for the next device session (issue 5's open items).
#   attend  the kernel checks (they run every attend variant, v6 included: the first 128 rows of
#           a chunk's list prefetched into L2 while its prologue resolves T), then the attend
#           variant / split sweep (v0, v5, v6 at 1024/2048/4096-position splits) at batch 8 and
#           32, 32K and 128K, llama3-8b shape
#   kv      key-value retrieval with the teacher-forced score, Qwen 1.5B (reassembled by qwen15b
#           from /tmp/q15/c*), 1K-16K, 4 samples a cell (100 cells): dense, and the 12-byte-or-less
#           Double Sparsity settings of docs/double-sparsity.md (16 projected channels at 4 bits:
#           per-channel grid shared, per-token scale shared and per-head); and the grid shared with
#           --ds-dense-below 4096 (SGLang's default threshold)
# Binary $SIFT_BIN (default .dev-final/bin/sift), results in $R (default /tmp/res) and $OUT.
set -uo pipefail
B=${SIFT_BIN:-.dev-final/bin/sift}
source "$(dirname "$0")/lib.sh"
case "${1:-attend}" in
 attend)
  step kcheck 200 $B kernel-bench --check-only --models llama3-8b,qwen2.5-1.5b,gemma3-270m
  step sweep 400 $B kernel-bench --ds-sweep --models llama3-8b --batches 8,32 --lengths 32768,131072 --iterations 10
  report attend "^|\|FAIL\|ALL CHECKS\|passed" 30 1200 ;;
 kv)
  qwen15b
  P=docs/eval/cuda/qwen2.5-coder-1.5b/ds-calibration-qk-svd.json
  DS="--attention double-sparse --ds-config $P --ds-channels 16 --ds-label-bits 4"
  E="eval kv -m $Q --device cuda --lengths 1k,2k,4k,8k,16k --samples 4"
  step kv-dense 200 $B $E --out $R/kv-forced-dense
  step kv-grid 200 $B $E $DS --ds-label-scale channel --out $R/kv-forced-grid
  step kv-token 200 $B $E $DS --out $R/kv-forced-token
  step kv-token-perhead 200 $B $E $DS --ds-group per-head --out $R/kv-forced-token-perhead
  step kv-grid-below4k 200 $B $E $DS --ds-label-scale channel --ds-dense-below 4096 --out $R/kv-forced-grid-below4k
  step kv-report 30 $B eval report $R/kv-forced-*
  report kv "accuracy\|teacher-forced\|^|" 40 400 ;;
esac
