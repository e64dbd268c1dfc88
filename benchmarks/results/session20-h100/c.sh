#!/usr/bin/env bash
# Session 20 call 3 (branch contraction-partial-k; carry [".whl"]): the gradient GPU tests call 2 did not reach,
# in three pytest processes side by side (as session 18's c.sh).
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
L=$OUT/logs; mkdir -p $L
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
t() { XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 330 python3 -m pytest -v -rfE -m gpu tests/test_gpu.py -p no:cacheprovider \
        -k "$1" > $L/gpu-tests-$2.log 2>&1; }
t "gradients_on_benchmark_shapes and 4096 and (qwen3_30b_a3b or seed_nomic)" a &
t "gradients_on_benchmark_shapes and (333 or (4096 and seed_qwen3))" b &
t "compiled_contraction or gradient_epilogues or remat or auto_picks or (gradients_on_benchmark_shapes and (5- or (4096 and olmoe)))" c &
wait
tar -czf $OUT/c-gpu-tests.tgz -C $L .
grep -hE "(PASSED|FAILED|ERROR|SKIPPED)|passed|failed" $L/gpu-tests-*.log | grep -oE "(PASSED|FAILED|ERROR|SKIPPED).*|[0-9]+ (passed|failed).*" | cut -c1-150
grep -h "::" $L/gpu-tests-*.log | grep -E "PASSED|FAILED|ERROR" | sed 's/ \[.*//' | cut -c1-140
