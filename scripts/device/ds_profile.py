#!/usr/bin/env python3
"""Runs the Double Sparsity pipeline and dense decode once per shape, for Nsight Compute:
  ncu --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed \
      -k regex:sift_ python3 scripts/device/ds_profile.py"""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch
import attention_bench as ab

mod = ab.load_module()
sms = torch.cuda.get_device_properties(0).multi_processor_count
for (B, L) in [(1, 32768), (8, 32768), (8, 131072)]:
    hq, kvh, d, r = 32, 8, 128, 8
    cache = ab.Paged([L] * B, kvh, d, 6)
    q = torch.randn(B, hq, d, device=ab.dev).bfloat16()
    channels = torch.stack([torch.randperm(d)[:r] for _ in range(kvh)]).int().to(ab.dev)
    labels = ab.make_labels(cache, channels)
    ds = ab.DS(mod, B, hq, kvh, d, L, sms, r=r)
    kper = ds.kper([L] * B)
    ds(q, cache, labels, channels, kper)
    torch.cuda.synchronize()
    print(f"B={B} L={L} candidates: see kernel list", flush=True)
    dec = ab.Decoder(mod, B, hq, kvh, d, L, sms)
    dec(q, cache)
    torch.cuda.synchronize()
    del cache, labels
