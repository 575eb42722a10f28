#!/usr/bin/env bash
# Device run (from the repo root on the GPU machine): reassemble the carried models, then
#   run-evals.sh check       GPU selftest with all models + Qwen 1.5B prefill/decode bench
#   run-evals.sh eval        Qwen 1.5B: NIAH 1k-32k, KV and RULER 1k-16k (--device cuda)
#   run-evals.sh eval-small  gemma3-270m and Qwen 0.5B: NIAH to 32k, KV and RULER to 8k
# Binary: a static, stripped sift in .dev-final/bin; the haystack in .dev-final/haystack.
set -uo pipefail
B=.dev-final/bin/sift; M=/tmp/models; R=/tmp/res; mkdir -p $M $R ~/.cache/sift
cp -r .dev-final/haystack ~/.cache/sift/ 2>/dev/null
# Models arrive as chunks copied to /tmp/<model>/cNN by earlier calls (scripts/device/split-models.sh).
for d in /tmp/gemma3-270m /tmp/qwen2.5-coder-0.5b /tmp/qwen2.5-coder-1.5b; do
  m=$M/$(basename $d).gguf
  [ -s $m ] || [ ! -d $d ] || { cat $d/c* > $m && sha256sum $m | tee -a $R/sha256.txt; }
done
G=$M/gemma3-270m.gguf; Q05=$M/qwen2.5-coder-0.5b.gguf; Q15=$M/qwen2.5-coder-1.5b.gguf
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $R/gpu.txt
source "$(dirname "$0")/lib.sh"
case "${1:-all}" in
 check)
  step selftest 240 $B selftest --device cuda --golden .dev-final/bin/greedy.jsonl -m $G -m $Q05 -m $Q15
  step bench-q15-prefill 90 $B bench -m $Q15 --device cuda -p 32768 -n 0 -d 0 -r 2
  step bench-q15-decode 90 $B bench -m $Q15 --device cuda -p 0 -n 64 -d 0,8192,32000 -r 1 ;;
 eval)
  step niah-q15 200 $B eval niah -m $Q15 --device cuda --out $R/eval/qwen2.5-coder-1.5b/niah
  step kv-q15 120 $B eval kv -m $Q15 --device cuda --lengths 1k,2k,4k,8k,16k --max-new 96 --out $R/eval/qwen2.5-coder-1.5b/kv
  step ruler-q15 200 $B eval ruler -m $Q15 --device cuda --lengths 1k,2k,4k,8k,16k --out $R/eval/qwen2.5-coder-1.5b/ruler ;;
 eval-small)
  for m in $G $Q05; do n=$(basename $m .gguf)
   step niah-$n 120 $B eval niah -m $m --device cuda --out $R/eval/$n/niah
   step kv-$n 60 $B eval kv -m $m --device cuda --lengths 1k,2k,4k,8k --out $R/eval/$n/kv
   step ruler-$n 90 $B eval ruler -m $m --device cuda --lengths 1k,2k,4k,8k --out $R/eval/$n/ruler
  done ;;
esac
cd $R && tar czf $OUT/res.tgz --exclude='*.tmp' . && cp steps.txt $OUT/ 2>/dev/null; for f in $R/*.log; do echo "== $f"; tail -n 6 $f; done
