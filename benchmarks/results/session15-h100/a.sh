#!/usr/bin/env bash
# Session 15 call 1 (~3 min): probe_row_gather.py (1-row TMA lhs gathers vs a block TMA). carry [".whl"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
R=$PWD; L=$OUT/logs; mkdir -p $L
nvidia-smi --query-gpu=name --format=csv,noheader > $L/gpu.txt
export PYTHONPATH=$R PYTHONUNBUFFERED=1
timeout 100 python3 benchmarks/results/session15-h100/probe_row_gather.py > $L/probe.log 2>&1
timeout 60 python3 benchmarks/results/session15-h100/probe_row_gather.py --steps 3200 --reps 10 >> $L/probe.log 2>&1
grep -v "^ \|Warn" $L/probe.log | tail -20
