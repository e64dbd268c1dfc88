#!/usr/bin/env bash
# Session 14 call 7 (~9 min): README forward rows measured in session 8 whose targets have the
# smallest margins, every anchor of the row in the same process: Qwen3-30B-A3B and Mixtral-8x7B at
# T=64, then Qwen3 T=16384 if time is left (bf16; ours and the two Mosaic GPU anchors). carry [".whl"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/s.tgz -C $L . 2>/dev/null; }
export PYTHONPATH=/tmp/site:$R PYTHONUNBUFFERED=1
I=jax_moe_mosaic_gpu,tokamax_mosaic,jax_mgpu
timeout 330 python3 -m benchmarks.run --suites models --shapes qwen3_30b_a3b,mixtral_8x7b --tokens 64 --dtypes bfloat16 --impls $I --out $L --tag fwd-64 > $L/run-64.log 2>&1; save
timeout 150 python3 -m benchmarks.run --suites models --shapes qwen3_30b_a3b --tokens 16384 --dtypes bfloat16 --impls $I --out $L --tag fwd-qwen3-16384 > $L/run-16384.log 2>&1; save
grep -hv "Warn\|^    @" $L/run-64.log $L/run-16384.log | grep "moe \|ceil\|^| qwen\|^| mixtral"
