#!/usr/bin/env bash
# Session 12 call 4 (~6 min): the training row of this tree against tokamax, then GPU gradient tests at 4096.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/s.tgz -C $L . 2>/dev/null; }
export PYTHONPATH=/tmp/site:$R PYTHONUNBUFFERED=1
timeout 200 python3 -m benchmarks.run --suites train --impls jax_moe_mosaic_gpu,tokamax_mosaic --shapes qwen3_30b_a3b \
  --tokens 4096 --dtypes bfloat16 --out $L > $L/train-row.log 2>&1; save
export XLA_PYTHON_CLIENT_PREALLOCATE=false
timeout 100 python3 -m pytest -q -m gpu -n 2 --dist loadgroup tests/test_gpu.py -rA \
  -k "(gradients_on_benchmark_shapes and 4096 and qwen3_30b) or (mosaic_gpu_on_benchmark_shapes and 4096 and qwen3_30b)" > $L/gpu-tests.log 2>&1; save
tail -30 $L/train-row.log; grep -E "PASSED|FAILED|passed|failed" $L/gpu-tests.log | tail
