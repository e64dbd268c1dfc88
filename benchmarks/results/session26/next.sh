#!/usr/bin/env bash
# For the next device call (session 27): down_backward on 256-column alternate items.
# Here first: `git checkout -b down-256 && git apply benchmarks/results/session26/down-256.patch` (CPU tests:
# `pytest tests/test_mosaic_gpu.py -k "output_staging or alternate_items_policy or lower_for_hopper"`), then
# `scripts/gpu-ab prepare main`; carry [".whl", "out/ab"]; one 600 s call:
# 1. tune_backward's down_backward candidates (training's gather form; each checked against the first, the
#    current default, before it is timed): 128 vs 256 columns on alternate items, tile bands 2/4/8 (~2 min);
# 2. the jax.grad step at Qwen3-30B-A3B T=4096 on the checkout (256-column default) and out/ab/main,
#    interleaved twice (scripts/gpu-ab run);
# 3. the gradient GPU tests (session 24's tests.sh, FORWARD=0) until START + END_S.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
START=$(date +%s)
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
PYTHONPATH=/tmp/site:. timeout 200 python3 -m benchmarks.tune_backward --kernels down_backward --out $OUT 2>&1 \
  | grep -v Warn | tee $OUT/tune-down-backward.log
echo "tune done at $(( $(date +%s) - START )) s"
scripts/gpu-ab run --grad --calls 9 qwen3_30b_a3b:4096  # the checkout, then out/ab/main, twice: $OUT/ab.log
echo "a/b done at $(( $(date +%s) - START )) s"
[ "${TESTS:-1}" = 1 ] && FORWARD=0 DEADLINE=$(( START + ${END_S:-570} )) bash benchmarks/results/session24/tests.sh 2>&1 | tail -45
echo "done at $(( $(date +%s) - START )) s"
