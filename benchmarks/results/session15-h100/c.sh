#!/usr/bin/env bash
# Session 15 call 6 (~9 min): expert_up's row gather with mbarrier-tracked cp.async (each producer
# thread's copies arrive on a raw per-slot mbarrier: the producer never waits; call 5's version
# waited with cp.async.wait_group, 2 steps behind) against main (out/ab/HEAD): forward kernel times
# A B A B at Qwen3-30B-A3B T=4096 / 1 / 64 and seed qwen3 T=512, then the forward GPU tests.
# carry [".whl", "out/ab"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/s.tgz -C $L . 2>/dev/null; }
export PYTHONUNBUFFERED=1
OUT=$L timeout 250 scripts/gpu-ab run qwen3_30b_a3b:4096 qwen3_30b_a3b:1 qwen3_30b_a3b:64 seed_qwen3:512 > /dev/null; save
grep -E "^## |^== |jax_moe_expert_up|gather" $L/ab.log | head -60
export PYTHONPATH=/tmp/site:$R XLA_PYTHON_CLIENT_PREALLOCATE=false
timeout 240 python3 -m pytest -v -rfE -m gpu -n 4 --dist loadgroup tests/test_gpu.py \
  -k "row_gather or (benchmark_shapes and not gradients) or (epilogues and not gradient) or fused_moe_on_gpu" > $L/gpu-tests.log 2>&1
save; grep -E "(FAILED|ERROR|passed|failed)" $L/gpu-tests.log | tail -15
