#!/usr/bin/env bash
# Session 14 call 5 (~9 min): the two benchmark-shape gradient tests that call 4 cut (olmoe and seed
# qwen3 at T=4096, side by side), then the README's Qwen3 T=4096 training row (value_and_grad; ours
# and tokamax's ragged_dot pipeline). carry [".whl"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/s.tgz -C $L . 2>/dev/null; }
export PYTHONPATH=/tmp/site:$R PYTHONUNBUFFERED=1
t() { XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 260 python3 -m pytest -v -rfE -m gpu tests/test_gpu.py -p no:cacheprovider \
        -k "gradients_on_benchmark_shapes and 4096 and $1" > $L/gpu-tests-$1.log 2>&1; }
t olmoe & t seed_qwen3 & wait; save
timeout 220 python3 -m benchmarks.run --suites train --shapes qwen3_30b_a3b --tokens 4096 \
  --impls jax_moe_mosaic_gpu,tokamax_mosaic --out $L --tag train-qwen3-4096 > $L/run-train.log 2>&1; save
grep -hE "(PASSED|FAILED|ERROR) |passed|failed" $L/gpu-tests-*.log | cut -c1-150
grep -v "Warn\|^    @" $L/run-train.log | grep "moe\|ceil\|^| qwen"
