#!/usr/bin/env bash
# Session 21 call 4 (branch contraction-deferred-stores against main 2d767ea in out/ab/main; carry [".whl", "out/ab"]):
# the compiled contraction and a gradient test on the branch, the contraction alone B A B, the jax.grad step B A.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
t() { XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 150 python3 -m pytest -q -rfE -m gpu tests/test_gpu.py -p no:cacheprovider \
        -k "$1" > $OUT/gpu-tests-$2.log 2>&1; }
t "compiled_contraction or (gradient_epilogues and silu-nomic)" a &
t "gradients_on_benchmark_shapes and 4096 and qwen3_30b_a3b" b &
wait; tail -n 2 $OUT/gpu-tests-*.log
tc() { PYTHONPATH=/tmp/site:$1 timeout 70 python3 -m benchmarks.tune_contraction --configs 128x256x64x4x2x1xc --out /tmp/tc 2>&1 \
        | grep -v Warn | sed "s|^|$2 |" | tee -a $OUT/tune-contraction-ab.log; }
tc $PWD branch; tc out/ab/main main; tc $PWD branch
kt() { PYTHONPATH=/tmp/site:$1 timeout 100 python3 benchmarks/kernel_times.py --grad --calls 9 qwen3_30b_a3b:4096 2>&1 \
        | grep -v Warn | head -8 | sed "s|^|$2 |" | tee -a $OUT/grad-ab.log; }
kt $PWD branch; kt out/ab/main main
