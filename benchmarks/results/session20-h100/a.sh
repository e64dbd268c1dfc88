#!/usr/bin/env bash
# Session 20 call 1 (here first: scripts/gpu-ab prepare main; carry [".whl", "out/ab"]): the cotangent cast
# fused into dy's gather (branch cotangent-into-gather) against main, the jax.grad step A B A B with HLO,
# and the gather probe.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout 90 python3 benchmarks/results/session20-h100/probe_cotangent_gather.py 2>&1 | grep -v Warn | tee $OUT/a-probe-gather.log
timeout 300 scripts/gpu-ab run --grad qwen3_30b_a3b:4096 > /dev/null 2>&1
mv $OUT/ab.log $OUT/a-grad-ab.log
timeout 100 python3 benchmarks/kernel_times.py --grad --calls 3 --hlo $OUT qwen3_30b_a3b:4096 > $OUT/a-branch-once.log 2>&1
gzip $OUT/*.hlo.txt
