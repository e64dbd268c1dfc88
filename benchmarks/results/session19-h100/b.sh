#!/usr/bin/env bash
# Session 19 call 2: what-if timings of expert_contraction without its boundary masking and/or epilogue.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
timeout 400 python3 benchmarks/results/session19-h100/probe_contraction.py 2>&1 | grep -v Warn | tee $OUT/b-probe-contraction.log
