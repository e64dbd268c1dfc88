#!/usr/bin/env bash
# Session 16, call g (~8 min): align_to_tiles without the routed-rows count and with its tile
# tables as masked sums over the experts (uncommitted on bf921d7) against bf921d7 (out/ab/HEAD):
# forward kernel times A B A B at seed qwen3 T=512, Qwen3 T=64 and 4096, then the jax.grad step.
#   here first: scripts/gpu-ab prepare HEAD ; carry [".whl", "out/ab"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L/fwd $L/grad
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$R
OUT=$L/fwd timeout 250 scripts/gpu-ab run seed_qwen3:512 qwen3_30b_a3b:64 qwen3_30b_a3b:4096 > /dev/null
grep -E "^## |^== " $L/fwd/ab.log
OUT=$L/grad timeout 230 scripts/gpu-ab run --grad qwen3_30b_a3b:4096 > /dev/null
grep -E "^## |^== " $L/grad/ab.log
