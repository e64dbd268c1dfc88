#!/usr/bin/env bash
# Session 18 call 4, on main with w*h kept: the two GPU tests call 3 did not reach (remat and
# recompute, whose backward recomputes w*h; olmoe's T=4096 gradients). carry [".whl"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 250 python3 -m pytest -v -rfE -m gpu tests/test_gpu.py -p no:cacheprovider \
  -k "remat or (gradients_on_benchmark_shapes and 4096 and olmoe)" > $OUT/gpu-tests-d.log 2>&1
grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/gpu-tests-d.log | cut -c1-150
