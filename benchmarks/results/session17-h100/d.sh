#!/usr/bin/env bash
# Session 17 call 5, on main eb94603+ (here first: scripts/gpu-ab prepare bb115ab; carry [".whl", "out/ab"]):
# the training step at Qwen3 T=4096 with the walk over used tiles (this tree) and without (bb115ab),
# one run each; README rows of the seed shapes' forward at T=512 against every anchor; GPU tests.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/d.tgz -C $L . 2>/dev/null; }
export PYTHONUNBUFFERED=1
for tree in $PWD out/ab/bb115ab; do
  echo "## $tree" >> $L/grad-ab.log
  PYTHONPATH=/tmp/site:$tree timeout 80 python3 benchmarks/kernel_times.py --grad qwen3_30b_a3b:4096 2>&1 | grep -v Warn >> $L/grad-ab.log
done; save
grep -E "^## |^== " $L/grad-ab.log
export PYTHONPATH=/tmp/site:$PWD
timeout 250 python3 -m benchmarks.run --suites seed --tokens 512 --dtypes bfloat16 \
  --impls jax_moe_mosaic_gpu,tokamax_mosaic,jax_mgpu --out $L --tag fwd-seed-512 > $L/run-seed.log 2>&1; save
grep -v "Warn\|^    @" $L/run-seed.log | grep "^| seed"
XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 110 python3 -m pytest -q -rfE -m gpu -n 3 --dist loadgroup tests/test_gpu.py \
  -k "fused_moe_on_gpu or gradient_epilogues" > $L/gpu-tests.log 2>&1; save
grep -E "(FAILED|ERROR|passed|failed)" $L/gpu-tests.log | tail -8
