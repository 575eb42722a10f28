#!/usr/bin/env bash
# Device run 1 (no real model): all GPU checks on random inputs/models, then synthetic benches.
set -uo pipefail
B=${SIFT_BIN:-.dev-final/bin/sift}; R=/tmp/res1; mkdir -p $R
source "$(dirname "$0")/lib.sh"
step selftest 200 $B selftest --device cuda --seed 5
step kcheck 120 $B kernel-bench --check-only --models llama3-8b,qwen2.5-1.5b,qwen2.5-0.5b,gemma3-270m
step methods 90 $B kernel-bench --methods --lengths 32768,65536 --batches 1,8 --models llama3-8b,qwen2.5-1.5b --iterations 10
step prefill 60 $B bench --synthetic qwen2.5-1.5b --device cuda -p 32768 -n 0 -r 2
step l8b-b1 120 $B bench --synthetic llama3-8b --device cuda -p 0 -n 32 -d 32768,65536 -r 1 --fill random --attention dense,double-sparse,quest,tidal
step l8b-b8 120 $B bench --synthetic llama3-8b --device cuda -p 0 -n 32 -d 32768 -r 1 --fill random --batch 8 --attention dense,double-sparse
cd $R && tar czf $OUT/res1.tgz . ; grep -h "FAIL\|fail" $R/selftest.log $R/kcheck.log | head -20; tail -n 4 $R/selftest.log $R/kcheck.log; for f in methods prefill l8b-b1 l8b-b8; do echo "== $f"; grep "|" $R/$f.log | cut -c1-220 | tail -14; done
