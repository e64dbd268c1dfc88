#!/usr/bin/env bash
# Session 14 call 1 (~9.5 min): the contraction's untried configs (6 ring stages; shared 128x256 items
# with double-buffered 64-column chunks), the jax.grad and forward kernel breakdowns at Qwen3 T=4096,
# then the README's Qwen3 forward rows (ours and the two Mosaic GPU anchors, bf16). carry [".whl"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/s.tgz -C $L . 2>/dev/null; }
export PYTHONPATH=/tmp/site:$R PYTHONUNBUFFERED=1
timeout 130 python3 -m benchmarks.tune_contraction --out $L > $L/tune-contraction.log 2>&1; save
timeout 80 python3 -m benchmarks.kernel_times --grad qwen3_30b_a3b:4096 > $L/kt-grad.log 2>&1; save
timeout 50 python3 -m benchmarks.kernel_times qwen3_30b_a3b:4096 > $L/kt-fwd.log 2>&1; save
timeout 250 python3 -m benchmarks.run --suites models --shapes qwen3_30b_a3b --tokens 1,64,4096,16384 --dtypes bfloat16 \
  --impls jax_moe_mosaic_gpu,tokamax_mosaic,jax_mgpu --out $L --tag fwd-qwen3 > $L/run-qwen3.log 2>&1; save
grep -v Warn $L/tune-contraction.log | tail -12; grep -v Warn $L/kt-grad.log | head -14; grep -v Warn $L/kt-fwd.log | head -8; grep "moe \|ceil" $L/run-qwen3.log
