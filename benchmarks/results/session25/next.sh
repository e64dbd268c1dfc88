#!/usr/bin/env bash
# For session 26's first device call (checkout: branch down-alternate; `scripts/gpu-ab prepare main` first;
# carry [".whl", "out/ab"]; ~600 s):
# 1. probe_down_backward.py: down_backward split / alternate / alternate with the chunked epilogue, and the
#    balanced routing's training kernels, outputs checked first (~3 min);
# 2. the jax.grad step at Qwen3-30B-A3B T=4096 on the checkout (down_backward on alternate items, chunked
#    epilogue) and out/ab/main, interleaved twice (session 24's one.sh);
# 3. the gradient GPU tests (session 24's tests.sh, FORWARD=0) until END_S.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
START=$(date +%s)
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
PYTHONPATH=/tmp/site:. timeout 200 python3 benchmarks/results/session25/probe_down_backward.py 2>&1 | grep -v Warn \
  | tee $OUT/probe-down-backward.log
echo "probe done at $(( $(date +%s) - START )) s"
ROUNDS=2 NO_FWD=1 NO_TESTS=1 bash benchmarks/results/session24/one.sh
left=$(( ${END_S:-575} - ($(date +%s) - START) ))
echo "a/b done at $(( $(date +%s) - START )) s; tests get $left s"
[ $left -gt 100 ] && FORWARD=0 DEADLINE=$(( $(date +%s) + left )) bash benchmarks/results/session24/tests.sh 2>&1 | tail -45
