#!/usr/bin/env bash
# For the next device time (NOT run in session 22: no machine came). Here first:
#   git checkout -b down-backward-deferred-epilogue
#   git apply benchmarks/results/session22/down-backward-deferred-epilogue.patch && git commit -am "..."
#   scripts/gpu-ab prepare main            (main, before the patch, in out/ab/main)
# then this script with carry [".whl", "out/ab"] (~9 min): GPU tests of the patch (the compiled contraction,
# a gradient epilogue, Qwen3 T=4096 gradients), then the jax.grad step per kernel: patch, main, patch.
# NO_TESTS=1 (kernel_times' own check of dx and d topk_weights only) and SHORT=1 (one timing each) cut it.
# Then b.sh (carry [".whl"], ~6 min): every other gradient GPU test, on the same checkout.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
t() { XLA_PYTHON_CLIENT_PREALLOCATE=false timeout ${TEST_TIMEOUT:-200} python3 -m pytest -v -rfE -m gpu tests/test_gpu.py -p no:cacheprovider \
        -k "$1" > $OUT/gpu-tests-$2.log 2>&1; }
if [ -z "${NO_TESTS:-}" ]; then
t "compiled_contraction or (gradient_epilogues and silu-nomic)" a &
t "gradients_on_benchmark_shapes and 4096 and qwen3_30b_a3b" b &
wait; grep -h "PASSED\|FAILED\|ERROR\|passed\|failed" $OUT/gpu-tests-*.log | sed 's/ \[.*//' | cut -c1-150; fi
kt() { PYTHONPATH=/tmp/site:$1 timeout 80 python3 benchmarks/kernel_times.py --grad --calls 9 qwen3_30b_a3b:4096 2>&1 \
        | grep -v Warn | head -12 | sed "s|^|$2 |" | tee -a $OUT/grad-ab.log; }
kt $PWD patch; kt out/ab/main main
[ -n "${SHORT:-}" ] || kt $PWD patch
