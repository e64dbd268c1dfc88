#!/usr/bin/env bash
# Session 26's device calls (checkout: branch slot-layout = down-alternate + training's per-row layout;
# `scripts/gpu-ab prepare main down-alternate`; carry [".whl", "out/ab"]):
# 1. ROUNDS (default 1) interleaved rounds of the jax.grad step at Qwen3-30B-A3B T=4096 on the checkout,
#    main and down-alternate (each tree's jax_moe, this checkout's timer), into $OUT/grad-ab.log;
# 2. TESTS=1: the gradient GPU tests on the checkout (session 24's tests.sh, FORWARD=0) until START + END_S.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
START=$(date +%s)
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
echo "setup $(( $(date +%s) - START )) s"
kt() { PYTHONPATH=/tmp/site:$1 timeout 100 python3 benchmarks/kernel_times.py $3 2>&1 \
        | grep -v Warn | grep -v "^ *[0-9]\.[0-9] us " | sed "s|^|$2 |" | tee -a $OUT/$4.log; }
for round in $(seq ${ROUNDS:-1}); do
  for tree in $PWD out/ab/main out/ab/down-alternate; do
    name=$(basename $tree); [ "$tree" = "$PWD" ] && name=slot-layout
    kt $tree $name "--grad --calls 9 ${SHAPE:-qwen3_30b_a3b:4096}" grad-ab
  done
  echo "round $round done at $(( $(date +%s) - START )) s"
done
[ "${TESTS:-1}" = 1 ] && FORWARD=0 DEADLINE=$(( START + ${END_S:-570} )) bash benchmarks/results/session24/tests.sh 2>&1 | tail -45
echo "done at $(( $(date +%s) - START )) s"
