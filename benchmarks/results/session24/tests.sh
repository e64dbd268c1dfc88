#!/usr/bin/env bash
# Session 24: every gradient GPU test of session 23's a.sh and session 22's b.sh and the forward's, in one call, on this checkout
# (carry [".whl"]): thirteen pytest processes side by side, ~6-7 min.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1  # a warm machine has it
L=$OUT/logs; mkdir -p $L
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
[ -s $OUT/gpu.txt ] || nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
t() { XLA_PYTHON_CLIENT_PREALLOCATE=false timeout ${TEST_TIMEOUT:-400} python3 -m pytest -v -rfE -m gpu tests/test_gpu.py -p no:cacheprovider \
        -k "$1" > $L/gpu-tests-$2.log 2>&1; }
g=gradients_on_benchmark_shapes
t "compiled_contraction or compiled_swapped or (gradient_epilogues and silu-nomic)" a1 &
t "$g and 4096 and qwen3_30b_a3b" b1 &
t "$g and 4096 and seed_nomic" a &
t "$g and 333 and (qwen3_30b_a3b or olmoe)" b &
t "$g and 333 and (seed_nomic or seed_qwen3)" c &
t "$g and 4096 and (olmoe or seed_qwen3)" d &
t "gradient_epilogues and (silu-qwen3 or gelu-)" e &
t "gradient_epilogues and (gelu_exact or relu)" f &
t "remat or auto_picks or compiled_expert_up" g &
t "$g and 1-" h &
t "$g and 5-" i &
t "mosaic_gpu_on_benchmark_shapes" j &
t "fused_moe_on_gpu or mosaic_gpu_epilogues or row_gather" k &
wait
tar -czf $OUT/gpu-tests.tgz -C $L .
grep -h "::" $L/gpu-tests-*.log | grep -E "PASSED|FAILED|ERROR" | sed 's/ \[.*//' | cut -c1-140
grep -hE "[0-9]+ (passed|failed)|Timeout|timeout" $L/gpu-tests-*.log
