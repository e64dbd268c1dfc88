#!/usr/bin/env bash
# Session 15 call 7 (~6 min): main with the row gather (bfa44a6 + the decode fallback): the README's
# Qwen3-30B-A3B T=4096 forward row with every anchor in the same process, and forward kernel times
# at T=1 (decode batches keep XLA's gather). carry [".whl"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/s.tgz -C $L . 2>/dev/null; }
export PYTHONPATH=/tmp/site:$R PYTHONUNBUFFERED=1
timeout 60 python3 -m benchmarks.kernel_times qwen3_30b_a3b:1 qwen3_30b_a3b:4096 2>&1 | grep -v Warn > $L/kernels-fwd.log; save
grep "^==" $L/kernels-fwd.log
timeout 230 python3 -m benchmarks.run --suites models --shapes qwen3_30b_a3b --tokens 4096 --dtypes bfloat16 \
  --impls jax_moe_mosaic_gpu,tokamax_mosaic,jax_mgpu --out $L --tag fwd-qwen3-4096 > $L/run-4096.log 2>&1; save
grep "^| qwen\|ceil" $L/*.md | head
