#!/usr/bin/env bash
# Session 13 call 7 (~8 min): issue 3's Qwen3 T=4096 row with its anchors (benchmarks.run), then the GPU
# tests call 6 did not reach (gradients at T=333 / 4096) and the tests near call 5's unnamed failure.
# carry [".whl"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
L=$OUT/logs; mkdir -p $L
SKIP_TESTS=1 SKIP_BENCH=1 OUT=$L scripts/gpu-check > $L/setup.log 2>&1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
save() { tar -czf $OUT/s.tgz -C $L . 2>/dev/null; }
timeout 170 python3 -m benchmarks.run --suites models --shapes qwen3_30b_a3b --tokens 4096 --dtypes bfloat16 --out $L > $L/fwd-row.log 2>&1; save
export XLA_PYTHON_CLIENT_PREALLOCATE=false
timeout 300 python3 -m pytest -v -m gpu -n 3 tests/test_gpu.py -p no:cacheprovider -rA \
  -k "(gradients_on_benchmark_shapes and (333 or 4096)) or (on_benchmark_shapes and mixtral)" > $L/gpu-tests.log 2>&1; save
tail -12 $L/fwd-row.log; grep -E "^(PASSED|FAILED|ERROR|SKIPPED)" $L/gpu-tests.log; tail -2 $L/gpu-tests.log
