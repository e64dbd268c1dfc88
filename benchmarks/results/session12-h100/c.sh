#!/usr/bin/env bash
# Session 12 call 3 (~9 min): M-tile band widths (tile_width) of the grouped GEMMs, the jax.grad step
# of this tree (down_backward: borrowed staging, 7 stages, bands of 4), GPU gradient tests.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/r.tgz -C $L . 2>/dev/null; }
export PYTHONPATH=/tmp/site:$R
timeout 100 python3 -m benchmarks.tune_backward --kernels down_backward --out $L/down > $L/tune-down.log 2>&1; save
timeout 120 python3 -m benchmarks.tune_backward --kernels up_backward,expert_up,expert_up_keep,expert_down --first 2 --out $L/others > $L/tune-others.log 2>&1; save
timeout 100 python3 $R/out/fwd_kernels.py --grad qwen3_30b_a3b:4096 > $L/grad.log 2>&1; save
export XLA_PYTHONCLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_PREALLOCATE=false
timeout 200 python3 -m pytest -q -m gpu -n 3 --dist loadgroup tests/test_gpu.py \
  -k "gradient_epilogues or under_remat or (gradients_on_benchmark_shapes and (333 or 4096)) or (mosaic_gpu_on_benchmark_shapes and 4096)" > $L/gpu-tests.log 2>&1; save
grep -v Warn $L/tune-*.log | cut -c1-220; grep "==" $L/grad.log; tail -5 $L/gpu-tests.log
