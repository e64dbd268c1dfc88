#!/usr/bin/env bash
# Session 12 call 2 (~7 min): down_backward tilings (borrowed staging, 5-7 stages), the jax.grad
# step per kernel of this tree (down_backward: borrowed staging, 7 stages) against out/wt-base
# (4e7bc80), order-scatter-operand's forward against this tree. carry [".whl","out"].
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/q.tgz -C $L . 2>/dev/null; }
run() { local tag=$1 tree=$2; shift 2; echo "## $tag $(date +%T)" >> $L/$tag.log;
  PYTHONPATH=/tmp/site:$tree timeout ${TMO:-150} python3 $R/out/fwd_kernels.py "$@" >> $L/$tag.log 2>&1; save; }
export PYTHONPATH=/tmp/site:$R
timeout 170 python3 -m benchmarks.tune_backward --kernels down_backward --out $L > $L/tune-down.log 2>&1; save
run grad-new $R --grad qwen3_30b_a3b:4096
run grad-base $R/out/wt-base --grad qwen3_30b_a3b:4096
run fwd-main $R qwen3_30b_a3b:4096 qwen3_30b_a3b:16384
run fwd-order $R/out/wt-order qwen3_30b_a3b:4096 qwen3_30b_a3b:16384
run grad-new2 $R --grad qwen3_30b_a3b:4096
cat $L/tune-down.log | grep -v Warn | cut -c1-250; grep "==" $L/*.log
