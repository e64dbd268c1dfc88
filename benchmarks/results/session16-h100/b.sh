#!/usr/bin/env bash
# Session 16, call b (~7 min): where the gathered contraction's time goes. The weight-gradient
# contraction on the gathered copy vs reading x's rows itself, this tree (copy_rows loads every row
# id before its first cp.async) vs HEAD's (5ce5611: loads and copies interleaved); then the
# jax.grad step with the training gathers on (this tree) vs off (HEAD).
#   here first: scripts/gpu-ab prepare HEAD ; carry [".whl", "out/ab"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/b.tgz -C $L . 2>/dev/null; }
export PYTHONUNBUFFERED=1
CFGS=128x256x64x4x2x1xc,128x128x64x5x1
PYTHONPATH=/tmp/site:$R timeout 150 python3 benchmarks/tune_contraction.py --gathered --configs $CFGS \
  --out $L/new > $L/tune-new.log 2>&1; save; grep -v Warn $L/tune-new.log | tail -8
PYTHONPATH=/tmp/site:$R/out/ab/HEAD timeout 100 python3 benchmarks/tune_contraction.py --gathered \
  --configs 128x256x64x4x2x1xc --out $L/head > $L/tune-head.log 2>&1; save; grep -v Warn $L/tune-head.log | tail -4
sed -i 's/^    gather_rows: bool = False$/    gather_rows: bool = True/' jax_moe/backends/mosaic_gpu_grad.py
grep -q "gather_rows: bool = True" jax_moe/backends/mosaic_gpu_grad.py || { echo "flip failed"; exit 1; }
export PYTHONPATH=/tmp/site:$R
OUT=$L timeout 200 scripts/gpu-ab run --grad qwen3_30b_a3b:4096 > /dev/null; save
grep -E "^## |^== |contraction|down_backward|expert_up|gather" $L/ab.log | head -40
