#!/usr/bin/env bash
# Session 24: the gradient GPU tests of session 23's a.sh and session 22's b.sh, and the forward's, in one call on
# this checkout (carry [".whl"]), at most PROCS (default 6) pytest processes side by side, most important first.
# Session 24 ran thirteen at once on an 80 GB H100 (this file's first version): the Qwen3 T=4096 gradients ran out of
# memory. FORWARD=0 skips the forward's tests (a change to the backward only).
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1  # a warm machine has it
L=$OUT/logs; mkdir -p $L
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
[ -s $OUT/gpu.txt ] || nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
# DEADLINE (epoch seconds, from one.sh): every process stops by then, so that the logs' tarball is written.
t() { left=$(( ${DEADLINE:-$(( $(date +%s) + 400 ))} - $(date +%s) )); [ $left -gt 30 ] || return 0
      XLA_PYTHON_CLIENT_PREALLOCATE=false timeout $left python3 -m pytest -v -rfE -m gpu tests/test_gpu.py -p no:cacheprovider \
        -k "$1" > $L/gpu-tests-$2.log 2>&1; }
g=gradients_on_benchmark_shapes
jobs_list=(
  "$g and 4096 and qwen3_30b_a3b|b1"
  "compiled_contraction or compiled_swapped or compiled_expert_up or (gradient_epilogues and silu-nomic)|a1"
  "$g and 333 and (qwen3_30b_a3b or olmoe)|b"
  "$g and 4096 and seed_nomic|a"
  "gradient_epilogues and (silu-qwen3 or gelu-)|e"
  "gradient_epilogues and (gelu_exact or relu)|f"
  "$g and 333 and (seed_nomic or seed_qwen3)|c"
  "$g and 4096 and (olmoe or seed_qwen3)|d"
  "remat or auto_picks|g"
  "$g and 1-|h"
  "$g and 5-|i"
)
[ "${FORWARD:-1}" = 0 ] || jobs_list+=("mosaic_gpu_on_benchmark_shapes|j" "fused_moe_on_gpu or mosaic_gpu_epilogues or row_gather|k")
for job in "${jobs_list[@]}"; do
  while [ $(jobs -rp | wc -l) -ge ${PROCS:-6} ]; do wait -n; done
  t "${job%|*}" "${job#*|}" &
done
wait
tar -czf $OUT/gpu-tests.tgz -C $L .
grep -h "::" $L/gpu-tests-*.log | grep -E "PASSED|FAILED|ERROR" | sed 's/ \[.*//' | cut -c1-140
grep -hE "[0-9]+ (passed|failed)" $L/gpu-tests-*.log
