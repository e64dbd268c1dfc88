#!/usr/bin/env bash
# Session 13 call 6 (~8 min): call 5's GPU suite again, verbose and stopping at the first failure
# (call 5 was cut at 560 s with one F and no summary). carry [".whl"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
L=$OUT/logs; mkdir -p $L
SKIP_TESTS=1 SKIP_BENCH=1 OUT=$L scripts/gpu-check > $L/setup.log 2>&1
export PYTHONPATH=/tmp/site:$PWD XLA_PYTHON_CLIENT_PREALLOCATE=false
timeout 500 python3 -m pytest -v -x -m gpu -n 6 --dist loadgroup tests -p no:cacheprovider > $L/gpu-tests.log 2>&1
tar -czf $OUT/s.tgz -C $L . 2>/dev/null
grep -E "FAILED|ERROR" $L/gpu-tests.log | head; grep -c PASSED $L/gpu-tests.log; grep -B5 -A60 "= FAILURES =" $L/gpu-tests.log | head -150
