#!/usr/bin/env bash
# Session 16, call f (~3 min): kernel times and the optimized HLO (kernel_times --hlo) of the
# forward at seed qwen3 T=512 and Qwen3 T=64, and of the jax.grad step at Qwen3 T=4096 (bf921d7 +
# the --hlo option), to see which small fusions the layout leaves.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
L=$OUT/logs; mkdir -p $L
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
timeout 120 python3 -m benchmarks.kernel_times --hlo $L seed_qwen3:512 qwen3_30b_a3b:64 2>&1 | grep -v Warn | tee $L/kernels-fwd.log
timeout 120 python3 -m benchmarks.kernel_times --grad --hlo $L qwen3_30b_a3b:4096 2>&1 | grep -v Warn | tee $L/kernels-grad.log
