#!/usr/bin/env bash
# Prepares models for the lent GPU machine, which cannot download anything and receives at most
# 64 MiB of working tree per call: splits each cached model into 62 MiB chunks under
# .dev-final/<model>/cNN/p (a git-ignored folder). Each device call then carries one chunk
# (`carry: [".dev-final/<model>/c00"]`) and copies it out of the tree (`cp .dev-final/<model>/c00/p
# /tmp/<model>/c00`): carried paths are replaced on every call, /tmp survives while the machine
# stays warm (30 s between calls). scripts/device/run-evals.sh reassembles and checks sha256.
#   scripts/device/split-models.sh qwen2.5-coder-1.5b gemma3-270m
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.dev-\*/' .git/info/exclude 2>/dev/null || echo '/.dev-*/' >> .git/info/exclude
for m in "$@"; do
  path=$(.build/release/sift pull "$m" | tail -1)
  dir=.dev-final/$m
  rm -rf "$dir"; mkdir -p "$dir"
  (cd "$dir" && split -b 65011712 -d -a 2 "$path" c && for f in c??; do mkdir "d$f" && mv "$f" "d$f/p" && mv "d$f" "$f"; done)
  sha256sum "$path"
  ls "$dir" | wc -l | xargs echo "chunks:"
done
