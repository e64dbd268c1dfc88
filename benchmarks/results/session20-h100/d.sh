#!/usr/bin/env bash
# Session 20 call 4 (branch contraction-partial-k; carry [".whl"]): the gradient GPU tests calls 2-3 did not reach.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
L=$OUT/logs; mkdir -p $L
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
t() { XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 260 python3 -m pytest -v -rfE -m gpu tests/test_gpu.py -p no:cacheprovider \
        -k "$1" > $L/gpu-tests-$2.log 2>&1; }
t "gradient_epilogues" d &
t "remat or (gradients_on_benchmark_shapes and 4096 and (seed_qwen3 or olmoe))" e &
wait
grep -h "::" $L/gpu-tests-*.log | grep -E "PASSED|FAILED|ERROR" | sed 's/ \[.*//' | cut -c1-140
grep -hE "passed|failed" $L/gpu-tests-*.log | tail -3
