#!/usr/bin/env bash
# Session 19 call 6, on branch contraction-zero-gaps (here first: scripts/gpu-ab prepare main; carry [".whl", "out/ab"]):
# the contraction without masks (working tree) against main, the kernel alone, B A B.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1
C=128x256x64x4x2x1xc
for tree in $PWD out/ab/main $PWD; do
  echo "== $tree"
  PYTHONPATH=/tmp/site:$tree timeout 45 python3 -m benchmarks.tune_contraction --out $OUT/t --configs $C 2>&1 | grep -v Warn
done | tee $OUT/f-tune-contraction-ab.log
