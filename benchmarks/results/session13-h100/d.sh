#!/usr/bin/env bash
# Session 13 call 4 (~4 min): the contraction's epilogue storing its accumulator straight from the
# registers to HBM (no SMEM staging: the whole SMEM to the ring) against main's staged epilogue
# (out/ab/HEAD's tune_contraction, before and after). carry [".whl", "out/ab"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/s.tgz -C $L . 2>/dev/null; }
export PYTHONUNBUFFERED=1
main() { (cd out/ab/HEAD && PYTHONPATH=/tmp/site:$PWD timeout 60 python3 -m benchmarks.tune_contraction --configs 128x128x64x6x1 --out $L/main >> $L/tune-main.log 2>&1); }
main
PYTHONPATH=/tmp/site:$R timeout 120 python3 -m benchmarks.tune_contraction --configs 128x128x64x7x1,128x256x64x4x2x0xc,128x128x64x7x2 --out $L > $L/tune-direct.log 2>&1; save
main; save
grep -v Warn $L/tune-main.log; grep -v Warn $L/tune-direct.log
