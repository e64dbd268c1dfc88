#!/usr/bin/env bash
# Session 29 ran this on branch `tail` = main 9573c71 + tail-parts.patch (GemmConfig.tail_parts; not landed), one
# 600 s call on an H100 (step.log). The jax.grad step at Qwen3-30B-A3B T=4096 (kernel_times --grad --calls 9, every
# kernel listed) on main (out/ab/main, from `scripts/gpu-ab prepare main`) and on the branch with the backward GEMMs'
# sparse last round split, down_backward / up_backward tail parts 2/2 (the patch's default), 4/2 and 1/1 (the code
# with no split), two interleaved rounds as long as END_S (default 520) allows. carry [".whl", "out/ab"].
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
START=$(date +%s)
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
left() { echo $(( START + ${END_S:-520} - $(date +%s) )); }
step() {  # tree down_parts up_parts [kernel_times args]
  [ $(left) -gt 60 ] || return 0
  echo "## $1 tail parts $2/$3 $(date +%T)"
  tree=$1 down=$2 up=$3; shift 3
  PYTHONPATH=/tmp/site:$tree timeout $(left) python3 $PWD/benchmarks/results/session29/tail_step.py $down $up \
    --grad --calls 9 "$@" qwen3_30b_a3b:4096 2>&1 | grep -v Warn
}
{ step $PWD 2 2; step out/ab/main 1 1; step $PWD 4 2; step $PWD 1 1
  step $PWD 2 2; step out/ab/main 1 1; step $PWD 4 2; step $PWD 1 1; } 2>&1 | tee $OUT/step.log
echo "done at $(( $(date +%s) - START )) s"
