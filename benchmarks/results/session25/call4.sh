#!/usr/bin/env bash
# Session 25's fourth device call (main at 0c89bae + probe_down_backward.py; carry [".whl"]): down_backward on
# alternate items, and training's kernels on a balanced routing.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 timeout ${PROBE_S:-190} python3 benchmarks/results/session25/probe_down_backward.py 2>&1 \
  | grep -v Warn | tee $OUT/probe-down-backward.log
