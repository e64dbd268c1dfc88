#!/usr/bin/env bash
# Session 13 call 5 (~9 min): the whole GPU test suite on main (a4cf799; it last ran whole in session 10),
# six pytest-xdist processes sharing the GPU. carry [".whl"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
L=$OUT/logs; mkdir -p $L
PYTEST_PROCS=6 SKIP_BENCH=1 OUT=$L timeout 560 scripts/gpu-check > $L/gpu-check.log 2>&1
tar -czf $OUT/s.tgz -C $L . 2>/dev/null
tail -3 $L/gpu-check.log; grep -E "FAILED|ERROR" $L/gpu-tests.log | head -30; tail -3 $L/gpu-tests.log
