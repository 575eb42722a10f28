#!/usr/bin/env bash
# CI (no GPU): the embedded kernel sources are up to date, and the sift binary itself compiles
# every one of them, and the per-shape builds holding the experimental variants, through NVRTC
# (the real run-time code path) to sm_90 cubins (so the assembler checks the inline PTX too). NVRTC comes from
# NVIDIA's pip wheel, installed once into sift's private folder ~/.cache/sift/nvrtc.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/embed-kernels.sh --check

dest="${SIFT_NVRTC_DIR:-$HOME/.cache/sift/nvrtc}"
if ! ls "$dest"/nvidia/*/lib/libnvrtc.so* >/dev/null 2>&1; then
  echo "installing nvidia-cuda-nvrtc into $dest (once)"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$dest" "nvidia-cuda-nvrtc>=12.4"
fi
lib=$(ls -1 "$dest"/nvidia/*/lib/libnvrtc.so* | grep -v builtins | head -1)
bin=.build/release/sift
[ -x "$bin" ] || swift build -c release
SIFT_NVRTC="$lib" "$bin" kernels --check --arch 90 --cubin
