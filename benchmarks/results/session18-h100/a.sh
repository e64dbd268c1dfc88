#!/usr/bin/env bash
# Session 18 call 1, on branch hw-residual (here first: scripts/gpu-ab prepare main; carry [".whl", "out/ab"]):
# expert_up writing w*h (kept for the backward) vs main: forward and training kernel times A B A B;
# ncu's DRAM bytes per kernel of the new training step (where the bytes over the floors go).
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
L=$OUT/logs; mkdir -p $L/fwd $L/grad
save() { tar -czf $OUT/a.tgz -C $L . 2>/dev/null; }
OUT=$L/fwd timeout 130 scripts/gpu-ab run seed_qwen3:512 seed_nomic:512 qwen3_30b_a3b:4096 > /dev/null; save
grep -E "^## |^== " $L/fwd/ab.log
OUT=$L/grad timeout 260 scripts/gpu-ab run --grad qwen3_30b_a3b:4096 > /dev/null; save
grep -E "^## |^== " $L/grad/ab.log
timeout 120 /usr/local/cuda/bin/ncu --clock-control none --kernel-name regex:"jax_moe|loop_gather|input_convert|wrapped_convert" \
  --launch-count 30 --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed \
  python3 benchmarks/kernel_times.py --grad --calls 1 qwen3_30b_a3b:4096 > $L/ncu-dram.txt 2>&1; save
grep -E "^  [a-z_]+.*\(|dram__bytes|gpu__time|lts__t_bytes|tensor_op" $L/ncu-dram.txt | head -120
