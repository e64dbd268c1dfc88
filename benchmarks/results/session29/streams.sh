#!/usr/bin/env bash
# Session 29: probe_streams.py's three ways of putting two kernels on two streams, each in its own process (a
# failure leaves the others), carry [".whl"]; one call of ~450 s with setup.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader > $OUT/gpu.txt
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
probe() { timeout $1 python3 benchmarks/results/session29/probe_streams.py "${@:2}" 2>&1 | grep -v Warn | tail -25; }
{ probe 170 --variant one --pairs 0,1; probe 120 --variant group --pairs 0; probe 120 --variant both --pairs 0; } \
  | tee $OUT/streams.log
