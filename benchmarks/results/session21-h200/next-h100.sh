#!/usr/bin/env bash
# For the next session with an H100 (NOT run): main's deferred contraction stores against 2d767ea, and the README's
# training row. Here first: scripts/gpu-ab prepare 2d767ea; carry [".whl", "out/ab"]; ~8 min. Then the gradient GPU
# tests with session21-h200/a.sh (~7 min, carry [".whl"]).
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > $OUT/gpu.txt
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout 260 scripts/gpu-ab run --grad --calls 9 qwen3_30b_a3b:4096 > /dev/null 2>&1  # A B A B into $OUT/ab.log
grep "==\|contraction" $OUT/ab.log
timeout 250 python3 -m benchmarks.run --suites train --shapes qwen3_30b_a3b --tokens 4096 --dtypes bfloat16 \
  --impls jax_moe_mosaic_gpu,tokamax_mosaic --out $OUT --tag train-qwen3-4096 > $OUT/run-train.log 2>&1
grep -v "Warn\|^    @" $OUT/run-train.log | grep "moe-grad\|^| qwen"
