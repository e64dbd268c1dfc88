#!/usr/bin/env bash
# Session 19 call 4 (here first: scripts/gpu-ab prepare HEAD; carry [".whl", "out/ab"]): call 3 again with the
# producer at 40 registers (the consumers' 232 fit the launch allocation), then the gradient GPU tests
# of Qwen3 at T=4096 and the gradient epilogues on the new contraction.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
timeout 150 python3 benchmarks/results/session19-h100/probe_mask_producer.py 2>&1 | grep -v Warn | tee $OUT/d-probe.log
grep -q "producer masks, 40 regs.*down" $OUT/d-probe.log || exit 3
L=$OUT/grad; mkdir -p $L
OUT=$L timeout 220 scripts/gpu-ab run --grad qwen3_30b_a3b:4096 > /dev/null
grep -E "^## |^== |contraction" $L/ab.log
XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 170 python3 -m pytest -v -rfE -m gpu tests/test_gpu.py -p no:cacheprovider \
  -k "gradient_epilogues or (gradients_on_benchmark_shapes and 4096 and qwen3_30b_a3b)" > $OUT/d-gpu-tests.log 2>&1
grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/d-gpu-tests.log | cut -c1-150
