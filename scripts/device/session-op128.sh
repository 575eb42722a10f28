#!/usr/bin/env bash
# Device runs behind docs/benchmarks.md "The 128K op gap" (issue 5): where the grid-label Double
# Sparsity op spends its time on llama3-8b at batch 32, 128K.
#   phases  kernel-bench --ds-label-bits --ds-grid-phases (the grid column's scores, threshold and
#           attend phases timed alone; the scores kernel with a __match_any histogram, at 6 blocks
#           an SM, and without a histogram), batch 8/32 at 128K; then the bf16 attend/split sweep
#   ncu     Nsight Compute over one grid-label DS call at batch 32, 128K: each kernel's duration,
#           DRAM bytes and throughput, issue activity and warp stall reasons
#   checks  the synthetic selftest and the kernel checks of three shapes
#   final   the committed build: selftest, kernel checks, the op table (batch 1/8/32 at 32K/128K,
#           8/32 at 256K) and the grid phases at batch 32, 128K
#   all     one call: kernel checks of the new build, the phases of the old build ($OLD, batch 32)
#           and of the new (batch 32), then the selftest
# Binary $SIFT_BIN (default .dev-final/bin20/sift: the committed build; bin18 = the ticket build
# before, with the scores variants; bin19 = the new threshold with the grid kernel at 4 blocks an SM); results in $R (default /tmp/res).
set -uo pipefail
B=${SIFT_BIN:-.dev-final/bin20/sift}
source "$(dirname "$0")/lib.sh"
case "${1:-phases}" in
 checks)
  gpu_checks
  report checks "PASS\|FAIL\|checks\|passed" 6 ;;
 phases)
  step phases${TAG:-} 300 $B kernel-bench --ds-label-bits --ds-grid-phases --models llama3-8b --batches 8,32 --lengths 131072 --iterations 10
  [ -n "${TAG:-}" ] || step sweep 200 $B kernel-bench --ds-sweep --models llama3-8b --batches 32 --lengths 131072 --iterations 10
  report phases "^|" 20 900 ;;
 final)
  step selftest 150 $B selftest --device cuda -t 16
  step kcheck 150 $B kernel-bench --check-only --models llama3-8b,qwen2.5-1.5b,gemma3-270m
  step op 200 $B kernel-bench --ds-label-bits --models llama3-8b --batches 1,8,32 --lengths 32768,131072 --iterations 10
  step op256 150 $B kernel-bench --ds-label-bits --models llama3-8b --batches 8,32 --lengths 262144 --max-tokens 8388608 --iterations 10
  step phases 120 $B kernel-bench --ds-label-bits --ds-grid-phases --models llama3-8b --batches 32 --lengths 131072 --iterations 10
  report final "^|\|FAIL\|ALL CHECKS\|passed" 20 900 ;;
 all)
  step kcheck 150 $B kernel-bench --check-only --models llama3-8b,qwen2.5-1.5b,gemma3-270m
  step phases-old 120 ${OLD:-.dev-final/bin18/sift} kernel-bench --ds-label-bits --ds-grid-phases --models llama3-8b --batches 32 --lengths 131072 --iterations 10
  step phases-new 150 $B kernel-bench --ds-label-bits --ds-grid-phases --models llama3-8b --batches 32 --lengths 131072 --iterations 10
  step selftest 150 $B selftest --device cuda -t 16
  report all "^|\|PASS\|FAIL\|passed" 40 900 ;;
 ncu)
  K='regex:sift_ds_(scores4g_r|pick|candidates|attend)|sift_decode_combine'
  M=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,smsp__issue_active.avg.pct_of_peak_sustained_active,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread,launch__grid_size
  # kernel-bench --ds-label-bits with --iterations 1 makes 4 calls a column (3 warm-up): matching
  # launches are the dense column's 4 combines, then 16 each for the bf16 and per-token columns
  # (pick, candidates, attend, combine), then the grid column's 5 a call. Metrics: all of them;
  # sections: the grid's first two calls (skip 36).
  step ncu-metrics 400 ncu --clock-control none --metrics $M -k "$K" --launch-skip 0 --launch-count 60 \
    $B kernel-bench --ds-label-bits --models llama3-8b --batches 32 --lengths 131072 --iterations 1
  step ncu-stalls 400 ncu --clock-control none --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
    -k "$K" --launch-skip 36 --launch-count 10 $B kernel-bench --ds-label-bits --models llama3-8b --batches 32 --lengths 131072 --iterations 1
  report ncu "sift_ds\|combine\|duration\|bytes\|throughput\|Stall\|stall\|Issue\|Warp Cycles\|registers\|grid_size\|Active\|Eligible" 400 300 ;;
esac
