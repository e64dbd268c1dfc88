#!/usr/bin/env bash
# Session 13 call 2 (~8 min): the contraction's boundary blocks masked 16 rows at a time (chunks of
# other experts' rows cleared without a load) against main (a4cf799, out/ab/HEAD) in the jax.grad step;
# the contraction's consumers on the new code; ncu of the new dWg + dWu contraction.
# carry [".whl", "out/ab"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/s.tgz -C $L . 2>/dev/null; }
export PYTHONUNBUFFERED=1
OUT=$L timeout 300 scripts/gpu-ab run --grad qwen3_30b_a3b:4096; save
export PYTHONPATH=/tmp/site:$R
timeout 80 python3 -m benchmarks.tune_contraction --configs 128x128x64x6x1,128x128x64x6x2 --out $L > $L/tune-contraction.log 2>&1; save
timeout 120 /usr/local/cuda/bin/ncu --clock-control none --kernel-name regex:contraction --launch-count 1 --set full \
  -o $L/ncu-contraction -f python3 benchmarks/kernel_times.py --grad --calls 1 qwen3_30b_a3b:4096 > $L/ncu.log 2>&1
/usr/local/cuda/bin/ncu --import $L/ncu-contraction.ncu-rep --page details > $L/ncu-contraction.txt 2>&1; rm -f $L/ncu-contraction.ncu-rep; save
grep -E "^== |contraction" $L/ab.log; tail -4 $L/tune-contraction.log; grep -E "Duration|Throughput|Stall|stall" $L/ncu-contraction.txt | head -30
