#!/usr/bin/env bash
# Session 19 call 5 (carry [".whl"]): the contraction with consumers on alternate 64 x 256 items and
# double-buffered 64-column output chunks (one's epilogue overlapping the other's MMAs), against the default.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
timeout 200 python3 -m benchmarks.tune_contraction --out $OUT \
  --configs 128x256x64x4x2x1xc,64x256x64x4x2x1,64x256x64x5x2x1,128x128x64x5x2x1,128x256x64x4x2x1xc 2>&1 \
  | grep -v Warn | tee $OUT/e-tune-contraction.log
