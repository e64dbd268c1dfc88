#!/usr/bin/env bash
# Session 14 call 8 (~6 min): the README's Qwen3-30B-A3B T=16384 forward row (cut in call 7), every
# anchor of the row in the same process (bf16; ours and the two Mosaic GPU anchors). carry [".whl"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
export PYTHONPATH=/tmp/site:$R PYTHONUNBUFFERED=1
timeout 300 python3 -m benchmarks.run --suites models --shapes qwen3_30b_a3b --tokens 16384 --dtypes bfloat16 \
  --impls jax_moe_mosaic_gpu,tokamax_mosaic,jax_mgpu --out $L --tag fwd-qwen3-16384 > $L/run-16384.log 2>&1
grep -v "Warn\|^    @" $L/run-16384.log | grep "moe \|ceil\|^| qwen"
