#!/usr/bin/env bash
# Session 23's device call (NOT run: no machine came). Here first: check out dy-rows-deferred (or apply
# session22/down-backward-deferred-epilogue.patch, then this folder's contraction-async-last-block.patch and
# dy-rows-in-down-backward.patch, on a branch), then
#   scripts/gpu-ab prepare main deferred-epilogue-s23 contraction-async-last-block dy-rows-in-down-backward
# and run this with carry [".whl", "out/ab"]. The jax.grad step per kernel (Qwen3-30B-A3B T=4096; kernel_times
# checks dx and d topk_weights against the reference before timing) on this checkout and every out/ab tree
# (TREES="out/ab/main ..." picks and orders them), then GPU tests on this checkout: the compiled contraction
# (its partial last block issued in the wgmma chain), a gradient epilogue and the Qwen3 T=4096 gradients
# (down_backward storing dy's rows). NO_TESTS=1 skips the tests; ROUNDS=2 times twice. up to 90 s a tree.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
kt() { PYTHONPATH=/tmp/site:$1 timeout 90 python3 benchmarks/kernel_times.py --grad --calls 9 qwen3_30b_a3b:4096 2>&1 \
        | grep -v Warn | head -14 | sed "s|^|$2 |" | tee -a $OUT/grad-ab.log; }
for round in $(seq ${ROUNDS:-1}); do
  kt $PWD checkout; for tree in ${TREES:-out/ab/*/}; do kt ${tree%/} $(basename $tree); done
done
t() { XLA_PYTHON_CLIENT_PREALLOCATE=false timeout ${TEST_TIMEOUT:-200} python3 -m pytest -v -rfE -m gpu tests/test_gpu.py -p no:cacheprovider \
        -k "$1" > $OUT/gpu-tests-$2.log 2>&1; }
if [ -z "${NO_TESTS:-}" ]; then
t "compiled_contraction or (gradient_epilogues and silu-nomic)" a &
t "gradients_on_benchmark_shapes and 4096 and qwen3_30b_a3b" b &
wait; grep -h "PASSED\|FAILED\|ERROR\|passed\|failed" $OUT/gpu-tests-*.log | sed 's/ \[.*//' | cut -c1-150; fi
