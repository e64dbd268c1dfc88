#!/usr/bin/env bash
# Session 17 call 3, on branch dense-walk (here first: scripts/gpu-ab prepare main; carry [".whl", "out/ab"]):
# the walk over used tiles only vs main, forward and training kernel times A B A B, then GPU tests.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
L=$OUT; mkdir -p $L/fwd $L/grad
OUT=$L/fwd timeout 150 scripts/gpu-ab run seed_qwen3:512 seed_nomic:512 qwen3_30b_a3b:64 qwen3_30b_a3b:4096 > /dev/null
grep -E "^## |^== " $L/fwd/ab.log
OUT=$L/grad timeout 200 scripts/gpu-ab run --grad seed_qwen3:512 qwen3_30b_a3b:4096 > /dev/null
grep -E "^## |^== " $L/grad/ab.log
XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 150 python3 -m pytest -q -rfE -m gpu -n 3 --dist loadgroup tests/test_gpu.py \
  -k "(benchmark_shapes and seed and not gradients) or gradient_epilogues or fused_moe_on_gpu" > $L/gpu-tests.log 2>&1
grep -E "(FAILED|ERROR|passed|failed)" $L/gpu-tests.log | tail -8
