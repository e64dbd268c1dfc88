#!/usr/bin/env bash
# Session 29's last call: the jax.grad step at Qwen3-30B-A3B T=4096 (kernel_times --grad --calls 9) with
# down_backward on 192- and 256-column items (main's), interleaved while END_S (default 230 s) allows.
# carry [".whl"].
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
START=$(date +%s)
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
for n in 192 256 192 256; do
  left=$(( START + ${END_S:-230} - $(date +%s) )); [ $left -gt 45 ] || break
  timeout $left python3 benchmarks/results/session29/down_width.py $n --grad --calls 9 qwen3_30b_a3b:4096 2>&1 \
    | grep -v Warn | grep -E "^##|step|down_backward|up_backward"
done | tee $OUT/width.log
