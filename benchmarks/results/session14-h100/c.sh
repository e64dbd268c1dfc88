#!/usr/bin/env bash
# Session 14 call 3 (~9.5 min): the GPU gradient tests on this session's default contraction (shared
# 128x256 items, expert tables in SMEM): every benchmark shape (fp32 references, one worker in turn),
# every epilogue, remat; then the jax.grad step's kernels at Qwen3 T=16384. carry [".whl"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
R=$PWD; L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/s.tgz -C $L . 2>/dev/null; }
OUT=$L PYTEST_K="gradient" PYTEST_PROCS=4 SKIP_BENCH=1 timeout 450 scripts/gpu-check > $L/gpu-check.log 2>&1; save
export PYTHONPATH=/tmp/site:$R PYTHONUNBUFFERED=1
timeout 90 python3 -m benchmarks.kernel_times --grad qwen3_30b_a3b:16384 > $L/kt-grad-16384.log 2>&1; save
grep -E "(PASSED|FAILED|ERROR|SKIPPED) " $L/gpu-tests.log | sed 's/^\[gw[0-9]*\] \[ *[0-9]*%\] //' | cut -c1-140; tail -2 $L/gpu-tests.log
grep -v Warn $L/kt-grad-16384.log | head -12
