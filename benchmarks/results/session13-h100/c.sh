#!/usr/bin/env bash
# Session 13 call 3 (~9 min): the contraction's consumers sharing 128 x 256 items (64 rows each: one
# rhs read per 64 x 256 wgmma; ncu of call 2 had the tensor pipe 52 % busy, L2 71 %, DRAM 63 %)
# against one consumer on 128 x 128 items: tune_contraction (every config checked against the first),
# the jax.grad step of this tree (cooperative default) against main (out/ab/HEAD), then the GPU
# gradient tests at the benchmark shapes. carry [".whl", "out/ab"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/s.tgz -C $L . 2>/dev/null; }
export PYTHONUNBUFFERED=1
PYTHONPATH=/tmp/site:$R timeout 100 python3 -m benchmarks.tune_contraction --out $L > $L/tune-contraction.log 2>&1; save
OUT=$L timeout 260 scripts/gpu-ab run --grad qwen3_30b_a3b:4096 > /dev/null; save
export PYTHONPATH=/tmp/site:$R XLA_PYTHON_CLIENT_PREALLOCATE=false
timeout 150 python3 -m pytest -q -m gpu -n 4 --dist loadgroup tests/test_gpu.py -rA \
  -k "gradients_on_benchmark_shapes or gradient_epilogues or remat" > $L/gpu-tests.log 2>&1; save
cat $L/tune-contraction.log | grep -v Warn; grep -E "^## |^== |contraction" $L/ab.log; grep -E "PASSED|FAILED|ERROR|passed|failed" $L/gpu-tests.log | tail -40
