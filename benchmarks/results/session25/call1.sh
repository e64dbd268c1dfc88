#!/usr/bin/env bash
# Session 25's first device call, as it ran (checkout: dy's rows read by down_backward, since landed, with
# split-rows.patch applied: GemmConfig.split_rows, off by default; carry [".whl", "out/ab"], out/ab holding main
# (c0511d5) and split-rows-default (the checkout with split-rows-default.patch: 128-row split-rows tilings as defaults)):
# 1. kernel times of the jax.grad step (Qwen3-30B-A3B T=4096; dx, d topk_weights checked first) on the checkout
#    (dy's rows read by down_backward), main and split-rows-default (128-row split-rows tilings as defaults),
#    interleaved, ROUNDS (2) rounds;
# 2. session 25's tile-rows probe (each kernel on four tilings, routed and balanced rows) until END_S.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
START=$(date +%s)
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
echo "setup done at $(( $(date +%s) - START )) s"
for round in $(seq ${ROUNDS:-2}); do
  for tree in $PWD out/ab/*; do
    name=$(basename $tree); [ "$tree" = "$PWD" ] && name=checkout
    PYTHONPATH=/tmp/site:$tree timeout 100 python3 benchmarks/kernel_times.py --grad --calls 9 qwen3_30b_a3b:4096 2>&1 \
      | grep -v Warn | grep -v "^ *[0-9]\.[0-9] us " | sed "s|^|$name |" | tee -a $OUT/grad-ab.log
  done
done
echo "a/b done at $(( $(date +%s) - START )) s"
left=$(( ${END_S:-580} - ($(date +%s) - START) ))
[ $left -gt 40 ] && PYTHONPATH=/tmp/site:. timeout $left python3 benchmarks/results/session25/probe_tile_rows.py 2>&1 \
  | grep -v Warn | tee $OUT/probe-tiles.log
echo "done at $(( $(date +%s) - START )) s"
