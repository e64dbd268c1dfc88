#!/usr/bin/env bash
# Session 16, call i (~7 min): expert_down's tilings at the seed shapes, T=512 (probe_expert_down.py)
# on main b45aa73+; the GPU tests of the session's code (routing kernel, fused_moe, epilogues,
# row gather, gradient epilogues and remat).
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
L=$OUT/logs; mkdir -p $L
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
timeout 150 python3 benchmarks/results/session16-h100/probe_expert_down.py 2>&1 | grep -v Warn | tee $L/probe-expert-down.log
XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 220 python3 -m pytest -q -rfE -m gpu -n 3 --dist loadgroup tests/test_gpu.py \
  -k "routing_kernel or fused_moe_on_gpu or (epilogues and not gradient) or row_gather or gradient_epilogues or under_remat" \
  > $L/gpu-tests.log 2>&1
grep -E "(FAILED|ERROR|passed|failed)" $L/gpu-tests.log | tail -8
