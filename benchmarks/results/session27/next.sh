#!/usr/bin/env bash
# The contraction's cooperating consumers staggered (session 27: built and CPU-tested, not measured: no device
# came). Here: `git checkout -b stagger main && git apply benchmarks/results/session27/stagger.patch`
# (ContractionConfig.stagger, default 1 in choose_backward_configs), `scripts/gpu-ab prepare main`;
# carry [".whl", "out/ab"]; one 600 s call, END_S bounding it (default 540):
# 1. the jax.grad step at Qwen3-30B-A3B T=4096 (kernel_times --grad --calls 9) with the contraction's stagger
#    1 (the patch's default), main (out/ab/main, which also writes the step's optimized HLO to $OUT/hlo: which
#    fusions the ~17 small kernels are), stagger 2 and stagger 0 (main's synchronisation, the patch's masking
#    code), two interleaved rounds, as long as END_S allows: $OUT/step.log;
# 2. tune_contraction alone (the contraction's two calls, stagger 0-3) if time is left: $OUT/tune.log.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
START=$(date +%s)
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
left() { echo $(( START + ${END_S:-540} - $(date +%s) )); }
step() {  # tree stagger [kernel_times args]
  [ $(left) -gt 60 ] || return 0
  echo "## $1 stagger=$2 $(date +%T)"
  tree=$1 stagger=$2; shift 2
  PYTHONPATH=/tmp/site:$tree timeout $(left) python3 $PWD/benchmarks/results/session27/stagger_step.py $stagger \
    --grad --calls 9 "$@" qwen3_30b_a3b:4096 2>&1 | grep -v Warn | head -9
}
{ step $PWD 1; step out/ab/main 0 --hlo $OUT/hlo; step $PWD 2; step $PWD 0
  step $PWD 1; step out/ab/main 0; step $PWD 2; step $PWD 0; } 2>&1 | tee $OUT/step.log
gzip -f $OUT/hlo/*.txt 2>/dev/null
[ $(left) -gt 60 ] && PYTHONPATH=/tmp/site:. timeout $(left) python3 -m benchmarks.tune_contraction \
  --configs 128x256x64x4x2x1xc,128x256x64x4x2x1xcxs1,128x256x64x4x2x1xcxs2,128x256x64x4x2x1xcxs3 --out $OUT 2>&1 \
  | grep -v Warn | tee $OUT/tune.log
echo "done at $(( $(date +%s) - START )) s"
