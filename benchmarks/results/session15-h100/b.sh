#!/usr/bin/env bash
# Session 15 call 5 (~9 min): the forward's expert_up gathering x's rows itself (cp.async in the
# producer warpgroup, no gathered copy) against main (out/ab/HEAD): forward kernel times A B A B at
# Qwen3-30B-A3B T=4096 and T=1, then the forward GPU tests. carry [".whl", "out/ab"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/s.tgz -C $L . 2>/dev/null; }
export PYTHONUNBUFFERED=1
OUT=$L timeout 230 scripts/gpu-ab run qwen3_30b_a3b:4096 qwen3_30b_a3b:1 > /dev/null; save
grep -E "^## |^== |jax_moe_expert|gather" $L/ab.log | head -40
export PYTHONPATH=/tmp/site:$R XLA_PYTHON_CLIENT_PREALLOCATE=false
timeout 270 python3 -m pytest -v -rfE -m gpu -n 4 --dist loadgroup tests/test_gpu.py \
  -k "row_gather or (benchmark_shapes and not gradients) or (epilogues and not gradient) or fused_moe_on_gpu" > $L/gpu-tests.log 2>&1
save; grep -E "(FAILED|ERROR|passed|failed)" $L/gpu-tests.log | tail -15
