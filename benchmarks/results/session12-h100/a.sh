#!/usr/bin/env bash
# Session 12 call 1 (~9 min): forward A/B of compare-rank-1024 and order-scatter-operand against main,
# main's jax.grad step per kernel, down_backward tilings, ncu of down_backward.
# carry [".whl","out"]; worktrees out/wt-compare, out/wt-order.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD
save() { tar -czf $OUT/p.tgz -C $OUT --exclude p.tgz . 2>/dev/null; }
run() { local tag=$1 tree=$2; shift 2; echo "## $tag $(date +%T)" >> $OUT/p-$tag.log;
  PYTHONPATH=/tmp/site:$tree timeout ${TMO:-150} python3 $R/out/fwd_kernels.py "$@" >> $OUT/p-$tag.log 2>&1; save; }
run main1 $R seed_qwen3:512 seed_nomic:512 qwen3_30b_a3b:64 qwen3_30b_a3b:4096 qwen3_30b_a3b:16384
run compare $R/out/wt-compare seed_qwen3:512 seed_nomic:512 qwen3_30b_a3b:64
run order $R/out/wt-order qwen3_30b_a3b:4096 qwen3_30b_a3b:16384
run grad $R --grad qwen3_30b_a3b:4096
export PYTHONPATH=/tmp/site:$R
timeout 150 python3 -m benchmarks.tune_backward --kernels down_backward --out $OUT > $OUT/p-tune-down.log 2>&1; save
timeout 110 /usr/local/cuda/bin/ncu --clock-control none --kernel-name regex:down_backward --launch-count 1 --set full \
  -o $OUT/p-down -f python3 $R/out/fwd_kernels.py --grad qwen3_30b_a3b:4096 > $OUT/p-ncu.log 2>&1
/usr/local/cuda/bin/ncu --import $OUT/p-down.ncu-rep --page details > $OUT/p-ncu-details.txt 2>&1; save
run main2 $R seed_qwen3:512 seed_nomic:512 qwen3_30b_a3b:64 qwen3_30b_a3b:4096
