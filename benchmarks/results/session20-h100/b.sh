#!/usr/bin/env bash
# Session 20 call 2 (branch contraction-partial-k; here first: scripts/gpu-ab prepare main; carry [".whl", "out/ab"]):
# the compiled partial products' GPU test and gradient tests, the contraction alone B A B, the jax.grad step A B A B.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout 170 python3 -m pytest -v -m gpu -x tests/test_gpu.py -k "compiled_contraction or (gradients_on_benchmark_shapes and qwen3_30b_a3b) or gradient_epilogues" 2>&1 | grep -E "PASS|FAIL|Error|error|passed|failed" | head -40 | tee $OUT/b-gpu-tests.log
C=128x256x64x4x2x1xc
for tree in $PWD out/ab/main $PWD; do
  echo "== $tree"
  PYTHONPATH=/tmp/site:$tree timeout 60 python3 -m benchmarks.tune_contraction --out $OUT/t --configs $C 2>&1 | grep -v Warn
done | tee $OUT/b-tune-contraction-ab.log
rm -rf $OUT/t
timeout 280 scripts/gpu-ab run --grad qwen3_30b_a3b:4096 > /dev/null 2>&1
mv $OUT/ab.log $OUT/b-grad-ab.log
grep -E "^##|==|contraction" $OUT/b-grad-ab.log
