#!/bin/sh
# Copy what a device run needs (kernels, bench script, optional stripped sift binary) into the
# main checkout's ignored .dev-cuda-kernels folder, which `run` carries to the GPU machine.
set -e
WT=$(cd "$(dirname "$0")/../.." && pwd)
D=/work/main/.dev-cuda-kernels
rm -rf "$D"; mkdir -p "$D/scripts/device" "$D/Sources/Sift/Backends/CUDA/Kernels"
cp "$WT"/scripts/device/attention_bench.py "$D/scripts/device/"
cp "$WT"/Sources/Sift/Backends/CUDA/Kernels/*.cu* "$D/Sources/Sift/Backends/CUDA/Kernels/"
[ -n "$1" ] && cp "$1" "$D/sift" || true
du -sh "$D"
