#!/usr/bin/env bash
# Session 21 call 2 (branch routing-runs-per-cta, then uncommitted: the routing kernel with runs of chunks per CTA; carry [".whl"]): its GPU test,
# the per-CTA probe, then the training row (Qwen3 T=4096) with tokamax in the same process.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout 120 python3 -m pytest -q -rfE -m gpu tests/test_gpu.py -p no:cacheprovider -k "routing_kernel_sorts_like_xla" \
  > $OUT/gpu-test-routing.log 2>&1; tail -2 $OUT/gpu-test-routing.log
timeout 150 python3 benchmarks/results/session21-h200/probe_routing.py 2>&1 | grep -v Warn | tee $OUT/probe-routing.log
timeout 250 python3 -m benchmarks.run --suites train --shapes qwen3_30b_a3b --tokens 4096 --dtypes bfloat16 \
  --impls jax_moe_mosaic_gpu,tokamax_mosaic --out $OUT --tag train-qwen3-4096 > $OUT/run-train.log 2>&1
grep -v "Warn\|^    @" $OUT/run-train.log | grep "moe-grad\|^| qwen"
