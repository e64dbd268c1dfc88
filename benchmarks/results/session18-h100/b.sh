#!/usr/bin/env bash
# Session 18 call 2, on main with w*h kept (hw-residual): GPU tests of the forward and the gradients
# (all but the T=4096 benchmark shapes), then ncu's DRAM bytes per kernel of the training step.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/b.tgz -C $L . 2>/dev/null; }
XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 330 python3 -m pytest -v -rfE -m gpu -n 6 --dist loadgroup tests/test_gpu.py \
  -k "fused_moe_on_gpu or epilogues or remat or auto_picks or row_gather or routing_kernel or (benchmark_shapes and not 4096)" \
  > $L/gpu-tests.log 2>&1; save
grep -cE " PASSED" $L/gpu-tests.log; grep -E "(FAILED|ERROR)" $L/gpu-tests.log | head; tail -2 $L/gpu-tests.log
timeout 120 /usr/local/cuda/bin/ncu --clock-control none --kernel-name regex:"jax_moe|loop_gather|input_convert|wrapped_convert" \
  --launch-skip 0 --launch-count 40 --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed \
  python3 benchmarks/results/session18-h100/ncu_step.py qwen3_30b_a3b 4096 > $L/ncu-dram.txt 2>&1; save
grep -vE "^==PROF==|Warning|^W1" $L/ncu-dram.txt | grep -E "^  [a-zA-Z_]|dram__|gpu__time|lts__t|tensor_op" | head -150
