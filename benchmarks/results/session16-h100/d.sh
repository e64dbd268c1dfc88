#!/usr/bin/env bash
# Session 16, call d (~5 min): the backward's dy gather kept apart from x's (optimization barrier
# from 16 MiB copies; uncommitted on 56af649) against 56af649 (out/ab/HEAD): jax.grad step A B A B
# at Qwen3 T=4096; the forward-and-backward GPU tests of the gradient epilogues.
#   here first: scripts/gpu-ab prepare HEAD ; carry [".whl", "out/ab"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$R
OUT=$L timeout 230 scripts/gpu-ab run --grad qwen3_30b_a3b:4096 > /dev/null
grep -E "^## |^== |gather|contraction" $L/ab.log | head -40
XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 150 python3 -m pytest -q -rfE -m gpu -n 3 --dist loadgroup \
  tests/test_gpu.py -k "gradient_epilogues" > $L/gpu-tests.log 2>&1
grep -E "(FAILED|ERROR|passed|failed)" $L/gpu-tests.log | tail -8
