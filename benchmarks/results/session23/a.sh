#!/usr/bin/env bash
# Session 23's device call (NOT run: no machine came). Here first: check out swap-partial-tiles (or, on a branch
# of main, apply session22/down-backward-deferred-epilogue.patch, then this folder's
# contraction-async-last-block.patch, dy-rows-in-down-backward.patch and swap-partial-tiles.patch), then
#   scripts/gpu-ab prepare main deferred-epilogue-s23 contraction-async-last-block dy-rows-deferred
# (the branches, or trees with the patches applied one by one), and run this with carry [".whl", "out/ab"].
# The jax.grad step per kernel (Qwen3-30B-A3B T=4096; kernel_times checks dx and d topk_weights against the
# reference before timing) on this checkout and every out/ab tree (TREES="out/ab/main ..." picks and orders
# them; up to 90 s a tree), FWD=1 the forward too on this checkout and main (Qwen3 T=4096, seed qwen3 T=512;
# only the swap changes the forward), then GPU tests on this
# checkout: the compiled contraction (its partial last block issued in the wgmma chain), the swapped partial
# tiles, a gradient epilogue and the Qwen3 T=4096 gradients (down_backward storing dy's rows).
# NO_TESTS=1 skips the tests; ROUNDS=2 times twice. All of it: ~11 min, so two calls, e.g.
#   1. NO_TESTS=1 FWD=1 TREES="out/ab/main out/ab/dy-rows-deferred"   (~6 min: the swap alone, and all against main)
#   2. TREES="out/ab/deferred-epilogue-s23 out/ab/contraction-async-last-block"   (~7 min: the other steps, tests)
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1  # a warm machine has it
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
kt() { PYTHONPATH=/tmp/site:$1 timeout 90 python3 benchmarks/kernel_times.py $3 qwen3_30b_a3b:4096 $4 2>&1 \
        | grep -v Warn | grep -v "^ *[0-9]\.[0-9] us " | sed "s|^|$2 |" | tee -a $OUT/$5.log; }
for round in $(seq ${ROUNDS:-1}); do
  for tree in $PWD ${TREES:-out/ab/*/}; do
    name=$(basename ${tree%/}); [ "$tree" = "$PWD" ] && name=checkout
    kt ${tree%/} $name "--grad --calls 9" "" grad-ab
    case "${FWD:-}:$name" in :*) ;; *:checkout|*:main) kt ${tree%/} $name "--calls 9" seed_qwen3:512 fwd-ab ;; esac
  done
done
t() { XLA_PYTHON_CLIENT_PREALLOCATE=false timeout ${TEST_TIMEOUT:-200} python3 -m pytest -v -rfE -m gpu tests/test_gpu.py -p no:cacheprovider \
        -k "$1" > $OUT/gpu-tests-$2.log 2>&1; }
if [ -z "${NO_TESTS:-}" ]; then
t "compiled_contraction or compiled_swapped or (gradient_epilogues and silu-nomic)" a &
t "gradients_on_benchmark_shapes and 4096 and qwen3_30b_a3b" b &
wait; grep -h "PASSED\|FAILED\|ERROR\|passed\|failed" $OUT/gpu-tests-*.log | sed 's/ \[.*//' | cut -c1-150; fi
