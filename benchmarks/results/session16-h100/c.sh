#!/usr/bin/env bash
# Session 16, call c (~3 min, no install: the probe needs no FFI library): XLA's row gathers
# against jax_moe's gather_copy kernel (probe_gather.py) at Qwen3 T=4096 (training rows) and the
# seed's H=768 T=512.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
L=$OUT/logs; mkdir -p $L
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > $OUT/gpu.txt
P=benchmarks/results/session16-h100/probe_gather.py
timeout 150 python3 $P 4096 2048 8 128 2>&1 | grep -v Warn | tee $L/probe-4096.log
timeout 90 python3 $P 512 768 2 8 2>&1 | grep -v Warn | tee $L/probe-512.log
