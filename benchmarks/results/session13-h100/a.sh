#!/usr/bin/env bash
# Session 13 call 1 (~8 min): the ready candidates of session 12 (bands of 4 for the forward kernels and
# expert_up keeping g, u; down_backward with 32-row k-blocks; the contraction staged 64 columns at a time),
# then the first GPU runs of kernel_times (grad step and forward, Qwen3 T=4096).
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/s.tgz -C $L . 2>/dev/null; }
export PYTHONPATH=/tmp/site:$R PYTHONUNBUFFERED=1
timeout 200 python3 -m benchmarks.tune_backward --kernels down_backward,expert_up,expert_up_keep,expert_down --first 2 --out $L > $L/tune-backward.log 2>&1; save
timeout 120 python3 -m benchmarks.tune_contraction --configs 128x128x64x6x1,128x128x64x6x1x1,128x128x64x6x2x1 --out $L > $L/tune-contraction.log 2>&1; save
timeout 90 python3 -m benchmarks.kernel_times --grad qwen3_30b_a3b:4096 > $L/kt-grad.log 2>&1; save
timeout 60 python3 -m benchmarks.kernel_times qwen3_30b_a3b:4096 > $L/kt-fwd.log 2>&1; save
tail -25 $L/tune-backward.log; tail -12 $L/tune-contraction.log; tail -40 $L/kt-grad.log; tail -25 $L/kt-fwd.log
