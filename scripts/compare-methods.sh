#!/usr/bin/env bash
# Compares every attention method with dense at equal token budgets on one model: sparse-aware
# perplexity, needle-in-a-haystack and key-value retrieval through `sift eval`, then merges the
# runs into one Markdown table with `sift eval report`. Runs are resumable (re-run the same
# command to continue). Defaults are the full grid of issue 3; shrink it with the variables:
#   MODEL=qwen2.5-coder-1.5b BUDGETS="1/16 1/8" METHODS="…" PPL_LENGTHS=4k PPL_CHUNKS=2 \
#   NIAH_LENGTHS=1k,…,32k NIAH_DEPTHS=0,10,…,100 KV_LENGTHS=1k,…,16k KV_DEPTHS=0,25,50,75,100 \
#   DEVICE=cpu OUT=eval-results/compare REPORT=docs/methods-comparison.md scripts/compare-methods.sh
# Double Sparsity and Loki need their calibrations (`sift calibrate -m MODEL`,
# `sift calibrate --method loki -m MODEL`); they are made here if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SIFT=${SIFT:-.build/release/sift}
MODEL=${MODEL:-qwen2.5-coder-1.5b}
BUDGETS=${BUDGETS:-"1/16 1/8"}
METHODS=${METHODS:-"double-sparse quest tidal sparq loki streaming h2o"}
PPL_LENGTHS=${PPL_LENGTHS:-4k}; PPL_CHUNKS=${PPL_CHUNKS:-2}
NIAH_LENGTHS=${NIAH_LENGTHS:-1k,2k,4k,8k,16k,32k}; NIAH_DEPTHS=${NIAH_DEPTHS:-0,10,20,30,40,50,60,70,80,90,100}
KV_LENGTHS=${KV_LENGTHS:-1k,2k,4k,8k,16k}; KV_DEPTHS=${KV_DEPTHS:-0,25,50,75,100}
DEVICE=${DEVICE:-cpu}
OUT=${OUT:-eval-results/compare-$MODEL}
REPORT=${REPORT:-$OUT/report.md}
TASKS=${TASKS:-"ppl niah kv"}

run_all() {  # $1 = folder label, rest = attention flags
  local label=$1; shift
  for t in $TASKS; do
    case $t in
      ppl)  "$SIFT" eval ppl  -m "$MODEL" --device "$DEVICE" "$@" --lengths "$PPL_LENGTHS" --chunks "$PPL_CHUNKS" --out "$OUT/$label/ppl" ;;
      niah) "$SIFT" eval niah -m "$MODEL" --device "$DEVICE" "$@" --lengths "$NIAH_LENGTHS" --depths "$NIAH_DEPTHS" --out "$OUT/$label/niah" ;;
      kv)   "$SIFT" eval kv   -m "$MODEL" --device "$DEVICE" "$@" --lengths "$KV_LENGTHS" --depths "$KV_DEPTHS" --out "$OUT/$label/kv" ;;
    esac
  done
}

# Calibrate once per model file (the cache is keyed by the file's sha256).
path=$("$SIFT" pull "$MODEL" | tail -1)
sha=$(sha256sum "$path" | cut -d' ' -f1)
cal=${SIFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sift}/calibration
case " $METHODS " in *" double-sparse "*)
  [ -f "$cal/$sha.double-sparsity.json" ] || "$SIFT" calibrate -m "$MODEL" >/dev/null ;; esac
case " $METHODS " in *" loki "*)
  [ -f "$cal/$sha.loki.json" ] || "$SIFT" calibrate --method loki -m "$MODEL" >/dev/null ;; esac

run_all dense --attention dense
for b in $BUDGETS; do
  for m in $METHODS; do
    run_all "$m-${b/\//_}" --attention "$m" --budget "$b"
  done
done
mkdir -p "$(dirname "$REPORT")"
"$SIFT" eval report $(find "$OUT" -name results.json -exec dirname {} \; | sort) -o "$REPORT"
echo "report: $REPORT"
