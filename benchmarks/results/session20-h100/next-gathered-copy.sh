#!/usr/bin/env bash
# For the session after 20, on branch gathered-copy-by-product (here first: scripts/gpu-ab prepare main;
# carry [".whl", "out/ab"]; ~9 min): training's expert_up stores the x rows it gathers as the weight
# gradients' operand (no XLA gather of x in the jax.grad step) against main: the step A B A B, then the
# compiled copy test and the gradient GPU tests that touch it.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout 280 scripts/gpu-ab run --grad qwen3_30b_a3b:4096 > /dev/null 2>&1
mv $OUT/ab.log $OUT/grad-ab.log
grep -E "^##|==|expert_up|gather" $OUT/grad-ab.log
XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 200 python3 -m pytest -v -rfE -m gpu tests/test_gpu.py -p no:cacheprovider \
  -k "stores_the_rows or (gradients_on_benchmark_shapes and (4096 and qwen3_30b_a3b or 333)) or remat" \
  > $OUT/gpu-tests.log 2>&1
grep -E "::.*(PASSED|FAILED|ERROR)|passed|failed" $OUT/gpu-tests.log | sed 's/ \[.*//' | cut -c1-150
