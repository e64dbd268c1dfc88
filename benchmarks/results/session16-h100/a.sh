#!/usr/bin/env bash
# For session 16 (~8 min, NOT run yet): the training row gathers (BackwardConfigs.gather_rows,
# landed off in 547e146) against main with them off.
#   here first:  scripts/gpu-ab prepare HEAD        (the baseline tree, gathers off)
#   run with carry [".whl", "out/ab"]
# This script turns the gathers on in the device's copy of the working tree, then: the jax.grad
# step A B A B (kernel times), the compiled bitwise test against the copies, the gradient tests.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
sed -i 's/^    gather_rows: bool = False$/    gather_rows: bool = True/' jax_moe/backends/mosaic_gpu_grad.py
grep -q "gather_rows: bool = True" jax_moe/backends/mosaic_gpu_grad.py || { echo "flip failed"; exit 1; }
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/s.tgz -C $L . 2>/dev/null; }
export PYTHONUNBUFFERED=1
OUT=$L timeout 260 scripts/gpu-ab run --grad qwen3_30b_a3b:4096 > /dev/null; save
grep -E "^## |^== |contraction|down_backward|expert_up|gather" $L/ab.log | head -60
export PYTHONPATH=/tmp/site:$R XLA_PYTHON_CLIENT_PREALLOCATE=false
timeout 200 python3 -m pytest -v -rfE -m gpu -n 3 --dist loadgroup tests/test_gpu.py \
  -k "training_row_gathers or gradient_epilogues or under_remat" > $L/gpu-tests.log 2>&1
save; grep -E "(FAILED|ERROR|passed|failed)" $L/gpu-tests.log | tail -15
