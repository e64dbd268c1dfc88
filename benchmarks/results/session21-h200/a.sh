#!/usr/bin/env bash
# Session 21 call 1 (main 2d767ea; carry [".whl"]): every gradient GPU test, in six pytest processes side by side
# (session 20 ran none of them on expert_up's stored rows).
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > $OUT/gpu.txt
L=$OUT/logs; mkdir -p $L
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
t() { XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 430 python3 -m pytest -v -rfE -m gpu tests/test_gpu.py -p no:cacheprovider \
        -k "$1" > $L/gpu-tests-$2.log 2>&1; }
g=gradients_on_benchmark_shapes
t "$g and 4096 and (qwen3_30b_a3b or seed_nomic)" a &
t "$g and 333" b &
t "$g and 4096 and (olmoe or seed_qwen3)" c &
t "gradient_epilogues" d &
t "remat or auto_picks or compiled_contraction or compiled_expert_up" e &
t "$g and (1- or 5-)" f &
wait
tar -czf $OUT/gpu-tests.tgz -C $L .
grep -h "::" $L/gpu-tests-*.log | grep -E "PASSED|FAILED|ERROR" | sed 's/ \[.*//' | cut -c1-140
grep -hE "[0-9]+ (passed|failed)" $L/gpu-tests-*.log
