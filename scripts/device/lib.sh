# Shared by the device scripts here (sourced): step NAME TIMEOUT CMD… runs CMD with a time limit,
# its output in $R/NAME.log, and appends "NAME rc=… Ns" to $R/steps.txt; qwen15b reassembles Qwen
# 1.5B from the carried pieces /tmp/q15/c* into $Q (once) and installs the carried haystack.
# Sets R (results, default /tmp/res) and C (Qwen 1.5B's committed DS calibration).
R=${R:-/tmp/res}; mkdir -p $R ~/.cache/sift
C=docs/eval/cuda/qwen2.5-coder-1.5b/ds-calibration-qk-centered.json
step() { local name=$1 t=$2; shift 2; local s=$(date +%s); timeout $t "$@" > $R/$name.log 2>&1; echo "$name rc=$? $(( $(date +%s) - s ))s" | tee -a $R/steps.txt; }
qwen15b() {
  cp -r .dev-final/haystack ~/.cache/sift/ 2>/dev/null
  Q=/tmp/models/qwen2.5-coder-1.5b.gguf; mkdir -p /tmp/models
  [ -s $Q ] || { cat /tmp/q15/c* > $Q; sha256sum $Q | tee $R/sha256.txt; }
}
# gpu_checks: the synthetic selftest and the kernel checks of the three shapes, binary $B.
gpu_checks() {
  step selftest 240 $B selftest --device cuda -t 16
  step kcheck 200 $B kernel-bench --check-only --models llama3-8b,qwen2.5-1.5b,gemma3-270m
}
# report NAME PATTERN [LINES] [WIDTH]: $R packed into $OUT/res-NAME.tgz; the FAIL lines, then per
# log its last LINES (14) lines matching the grep PATTERN, cut to WIDTH (250) characters.
report() {
  local n=$1 p=$2 k=${3:-14} w=${4:-250}
  cd $R && tar czf $OUT/res-$n.tgz --exclude='*.tmp' . ; grep -h "FAIL" $R/*.log | head
  for f in $R/*.log; do echo "== $f"; tr '\r' '\n' < $f | grep "$p" | cut -c1-$w | tail -$k; done
}
