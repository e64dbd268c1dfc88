#!/usr/bin/env bash
# Session 25's second device call (checkout: dy's rows read by down_backward, since landed; carry [".whl"]):
# session 24's expert_up store probe (cut by its 90 s before it timed anything; call 3 reran it alone with 200 s:
# probe-stores.log), then the gradient GPU tests (session 24's tests.sh, FORWARD=0: the change is the backward's)
# until END_S.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
START=$(date +%s)
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
PYTHONPATH=/tmp/site:. timeout 90 python3 benchmarks/results/session24/probe_expert_up_stores.py 2>&1 | grep -v Warn | tee $OUT/probe-stores.log
left=$(( ${END_S:-575} - ($(date +%s) - START) ))
echo "probe done at $(( $(date +%s) - START )) s; tests get $left s"
FORWARD=0 DEADLINE=$(( $(date +%s) + left )) bash benchmarks/results/session24/tests.sh 2>&1 | tail -45
