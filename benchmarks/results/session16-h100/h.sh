#!/usr/bin/env bash
# Session 16, call h (~9 min): README rows of main b45aa73 against the anchors in the same process:
# the training step at Qwen3 T=4096 (tokamax), the seed shapes' forward at T=512 (every anchor).
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/h.tgz -C $L . 2>/dev/null; }
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
timeout 220 python3 -m benchmarks.run --suites train --shapes qwen3_30b_a3b --tokens 4096 --dtypes bfloat16 \
  --impls jax_moe_mosaic_gpu,tokamax_mosaic --out $L --tag train-qwen3-4096 > $L/run-train.log 2>&1; save
grep -v "Warn\|^    @" $L/run-train.log | grep "^| qwen"
timeout 260 python3 -m benchmarks.run --suites seed --tokens 512 --dtypes bfloat16 \
  --impls jax_moe_mosaic_gpu,tokamax_mosaic,jax_mgpu --out $L --tag fwd-seed-512 > $L/run-seed.log 2>&1; save
grep -v "Warn\|^    @" $L/run-seed.log | grep "^| seed"
