#!/usr/bin/env bash
# Session 14 call 6 (~8 min): the README forward rows at the edge of issue 3's targets, every anchor of
# the row in the same process: seed qwen3 and seed nomic at T=512, Qwen3-30B-A3B at T=1 (bf16;
# ours and the two Mosaic GPU anchors). carry [".whl"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/s.tgz -C $L . 2>/dev/null; }
export PYTHONPATH=/tmp/site:$R PYTHONUNBUFFERED=1
I=jax_moe_mosaic_gpu,tokamax_mosaic,jax_mgpu
timeout 250 python3 -m benchmarks.run --suites seed --tokens 512 --dtypes bfloat16 --impls $I --out $L --tag fwd-seed-512 > $L/run-seed.log 2>&1; save
timeout 170 python3 -m benchmarks.run --suites models --shapes qwen3_30b_a3b --tokens 1 --dtypes bfloat16 --impls $I --out $L --tag fwd-qwen3-1 > $L/run-t1.log 2>&1; save
grep -hv "Warn\|^    @" $L/run-seed.log $L/run-t1.log | grep "moe \|ceil\|^| seed\|^| qwen"
