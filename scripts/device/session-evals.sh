#!/usr/bin/env bash
# Final device run of this session: Qwen 1.5B reassembled from /tmp/q15/c*, then checks, benches, evals.
set -uo pipefail
B=${SIFT_BIN:-.dev-final/bin/sift}; M=/tmp/models; R=/tmp/res; mkdir -p $M $R ~/.cache/sift
cp -r .dev-final/haystack ~/.cache/sift/ 2>/dev/null
Q=$M/qwen2.5-coder-1.5b.gguf; C=.dev-final/calib/q15-qk-centered.json
[ -s $Q ] || { cat /tmp/q15/c* > $Q; sha256sum $Q | tee $R/sha256.txt; }
source "$(dirname "$0")/lib.sh"
case "${1:-a}" in
 a)
  step selftest 240 $B selftest --device cuda --models-only --golden .dev-final/bin/greedy.jsonl -m $Q
  step prefill-q15 60 $B bench -m $Q --device cuda -p 32768 -n 0 -d 0 -r 2
  step decode-q15 150 $B bench -m $Q --device cuda -p 0 -n 64 -d 32000 -r 1 --fill random --attention dense,double-sparse,quest,tidal --ds-config $C
  step decode-q15-b8 120 $B bench -m $Q --device cuda -p 0 -n 64 -d 32000 -r 1 --fill random --batch 8 --attention dense,double-sparse --ds-config $C ;;
 b)
  for m in double-sparse quest tidal; do
   X=""; [ $m = double-sparse ] && X="--ds-config $C"
   step niah-$m 150 $B eval niah -m $Q --device cuda --attention $m $X --out $R/eval/qwen2.5-coder-1.5b/niah-$m
   step kv-$m 80 $B eval kv -m $Q --device cuda --attention $m $X --lengths 1k,2k,4k,8k,16k --out $R/eval/qwen2.5-coder-1.5b/kv-$m
  done ;;
esac
cd $R && tar czf $OUT/res-${1:-a}.tgz --exclude='*.tmp' . ; for f in $R/*.log; do echo "== $f"; tail -n 8 $f | cut -c1-300; done
