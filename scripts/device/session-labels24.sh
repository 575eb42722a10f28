#!/usr/bin/env bash
# Device runs behind docs/benchmarks.md "4-bit labels with 24 and 32 channels": selftest (the 4-bit
# record/selection/output checks now also at r = 24 and 32), kernel checks, then Qwen 1.5B
# (reassembled from /tmp/q15/c*, README.md here): GPU sparse-aware perplexity, NIAH/KV and batched
# decode with 24 and 32 label channels at 4 bits. Binary: $SIFT_BIN (default .dev-final/bin6/sift).
set -uo pipefail
B=${SIFT_BIN:-.dev-final/bin6/sift}
source "$(dirname "$0")/lib.sh"
qwen15b
E=$R/eval/qwen2.5-coder-1.5b; X="--attention double-sparse --ds-config $C"; P="-m $Q --device cuda -f heldout -c 4096 --chunks 2 $X"
step selftest 200 $B selftest --device cuda -t 16
step kcheck 100 $B kernel-bench --check-only --models llama3-8b
step mselftest 100 $B selftest --device cuda --models-only --golden ${B%/sift}/greedy.jsonl -m $Q
for r in 24 32; do step ppl$r-q4-r64 60 $B ppl $P --ds-channels $r --ds-label-bits 4; done
step ppl24-q4-r0 60 $B ppl $P --ds-channels 24 --ds-label-bits 4 --recent 0
step ppl24-q4-b8 60 $B ppl $P --ds-channels 24 --ds-label-bits 4 --budget 1/8
step niah-24q4 90 $B eval niah -m $Q --device cuda $X --ds-channels 24 --ds-label-bits 4 --out $E/niah-double-sparse-24ch-4bit-recent64
step kv-24q4 70 $B eval kv -m $Q --device cuda $X --ds-channels 24 --ds-label-bits 4 --lengths 1k,2k,4k,8k,16k --out $E/kv-double-sparse-24ch-4bit-recent64
step bench 150 $B bench -m $Q --device cuda -p 0 -n 32 -d 32704 -r 2 --fill random --batch 16,32 --attention dense,double-sparse --ds-config $C --ds-channels 24 --ds-label-bits 4
cd $R && tar czf $OUT/res-labels24.tgz --exclude='*.tmp' . ; grep -h "FAIL\|error" $R/*.log | head; for f in $R/*.log; do echo "== $f"; tr '\r' '\n' < $f | grep "|\|checks passed\|ALL CHECKS\|accuracy\|^ppl\|r=24\|r=32" | cut -c1-250 | tail -12; done
