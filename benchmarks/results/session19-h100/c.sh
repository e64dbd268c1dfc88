#!/usr/bin/env bash
# Session 19 call 3 (here first: scripts/gpu-ab prepare HEAD; carry [".whl", "out/ab"]): the contraction's
# boundary blocks masked by the producer (working tree) vs by the consumers (HEAD): the kernel alone,
# then the jax.grad step A B A B.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
timeout 200 python3 benchmarks/results/session19-h100/probe_mask_producer.py 2>&1 | grep -v Warn | tee $OUT/c-probe.log
L=$OUT/grad; mkdir -p $L
OUT=$L timeout 280 scripts/gpu-ab run --grad qwen3_30b_a3b:4096 > /dev/null
grep -E "^## |^== |contraction|total" $L/ab.log
