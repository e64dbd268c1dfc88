#!/usr/bin/env bash
# Session 14 call 2 (~9 min): the contraction's expert tables read from SMEM (one bulk copy per CTA)
# instead of scalar global loads per item, with shared 128x256 items as the default (call 1: 454 vs
# 468 us), against main (out/ab/HEAD): tune_contraction of both trees (T=4096; this tree's configs at 16384 too), then the
# jax.grad step of both (gpu-ab, A B A B). carry [".whl", "out/ab"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/s.tgz -C $L . 2>/dev/null; }
export PYTHONUNBUFFERED=1
C=128x128x64x5x1,128x256x64x4x2x1xc,128x128x64x6x2
tune() { # tree tag tokens
  (cd $1 && PYTHONPATH=/tmp/site:$PWD timeout 110 python3 -m benchmarks.tune_contraction --configs $C --tokens $3 --out $L/$2-$3 2>&1 | grep -v Warn >> $L/tune.log); }
echo "== main T=4096" >> $L/tune.log; tune out/ab/HEAD main 4096
for T in 4096 16384; do echo "== smem tables T=$T" >> $L/tune.log; tune $R tables $T; save; done
OUT=$L timeout 230 scripts/gpu-ab run --grad qwen3_30b_a3b:4096 > /dev/null; save
cat $L/tune.log; grep -E "^## |^== |contraction" $L/ab.log
