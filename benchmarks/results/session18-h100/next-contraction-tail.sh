#!/usr/bin/env bash
# For the next session, on main (CPU-tested, NOT measured; the option is off by default; carry [".whl"], ~4 min):
# the weight-gradient contraction multiplying only the parts of an expert's last row block that hold
# its rows (ContractionConfig.tail_rows; the ring's swizzle narrowed to 64 or 32 bytes so that wgmma
# takes K = 32 or 16), and 32-row blocks in 8 stages, against the default (first config: every other
# config's outputs are compared with its outputs, max_abs_diff_vs_first, expected 0).
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
timeout 300 python3 -m benchmarks.tune_contraction --out $OUT \
  --configs 128x256x64x4x2x1xc,128x256x64x4x2x1xcxt32,128x256x64x4x2x1xcxt16,128x256x32x8x2x1xc,128x256x64x4x2x1xc 2>&1 \
  | grep -v Warn | tee $OUT/tune-contraction-tail.log
# The README's training row on main (session 18's w*h residual; the row is session 16's), anchors in
# the same process (~150 s: tokamax compiles at T=4096).
timeout 240 python3 -m benchmarks.run --suites train --shapes qwen3_30b_a3b --tokens 4096 --dtypes bfloat16 \
  --impls jax_moe_mosaic_gpu,tokamax_mosaic --out $OUT --tag train-qwen3-4096 > $OUT/run-train.log 2>&1
grep -v "Warn\|^    @" $OUT/run-train.log | grep "moe-grad\|^| qwen"
