#!/usr/bin/env bash
# Session 17 call 2: the seed T=512 tiling probe (expert_up and expert_down) on main bb115ab, and
# the forward's kernel times with its optimized HLO at seed qwen3 T=512.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
timeout 330 python3 benchmarks/results/session17-h100/probe_seed_tilings.py 2>&1 | grep -v Warn | tee $OUT/a-probe-seed-tilings.log
mkdir -p $OUT/hlo
timeout 100 python3 benchmarks/kernel_times.py --hlo $OUT/hlo seed_qwen3:512 2>&1 | grep -v Warn | tee $OUT/a-kernels-fwd.log
