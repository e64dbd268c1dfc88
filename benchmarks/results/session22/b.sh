#!/usr/bin/env bash
# After a.sh, on the same checkout (the patch applied; carry [".whl"]): the gradient GPU tests a.sh does not run,
# in nine pytest processes side by side (session 21's a.sh less the compiled contraction, the silu-nomic epilogue and
# the Qwen3 T=4096 gradients).
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1  # a warm machine has it
L=$OUT/logs; mkdir -p $L
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
t() { XLA_PYTHON_CLIENT_PREALLOCATE=false timeout ${TEST_TIMEOUT:-330} python3 -m pytest -v -rfE -m gpu tests/test_gpu.py -p no:cacheprovider \
        -k "$1" > $L/gpu-tests-$2.log 2>&1; }
g=gradients_on_benchmark_shapes
t "$g and 4096 and seed_nomic" a &
t "$g and 333 and (qwen3_30b_a3b or olmoe)" b &
t "$g and 333 and (seed_nomic or seed_qwen3)" c &
t "$g and 4096 and (olmoe or seed_qwen3)" d &
t "gradient_epilogues and (silu-qwen3 or gelu-)" e &
t "gradient_epilogues and (gelu_exact or relu)" f &
t "remat or auto_picks or compiled_expert_up" g &
t "$g and 1-" h &
t "$g and 5-" i &
wait
tar -czf $OUT/gpu-tests.tgz -C $L .
grep -h "::" $L/gpu-tests-*.log | grep -E "PASSED|FAILED|ERROR" | sed 's/ \[.*//' | cut -c1-140
grep -hE "[0-9]+ (passed|failed)" $L/gpu-tests-*.log
