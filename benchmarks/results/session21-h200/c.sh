#!/usr/bin/env bash
# Session 21 call 3 (main 2d767ea; carry [".whl"]): where the H200's training step goes (CUPTI per kernel), the
# forward row Qwen3 T=4096 with every anchor, the training row Qwen3 T=16384 with tokamax.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout 100 python3 -m benchmarks.kernel_times --grad --calls 9 qwen3_30b_a3b:4096 2>&1 | grep -v Warn > $OUT/kernels-grad.log
timeout 60 python3 -m benchmarks.kernel_times --calls 9 qwen3_30b_a3b:4096 2>&1 | grep -v Warn > $OUT/kernels-fwd.log
head -30 $OUT/kernels-grad.log; head -14 $OUT/kernels-fwd.log
timeout 150 python3 -m benchmarks.run --suites models --shapes qwen3_30b_a3b --tokens 4096 --dtypes bfloat16 \
  --out $OUT --tag fwd-qwen3-4096 > $OUT/run-fwd.log 2>&1
grep -v "Warn\|^    @" $OUT/run-fwd.log | grep "^| qwen\|\] moe"
timeout 200 python3 -m benchmarks.run --suites train --shapes qwen3_30b_a3b --tokens 16384 --dtypes bfloat16 \
  --impls jax_moe_mosaic_gpu,tokamax_mosaic --out $OUT --tag train-qwen3-16384 > $OUT/run-train-16384.log 2>&1
grep -v "Warn\|^    @" $OUT/run-train-16384.log | grep "moe-grad\|^| qwen"
