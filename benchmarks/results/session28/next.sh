#!/usr/bin/env bash
# Session 28 ran this on branch stagger2 = main at 840f8ba + session27/stagger.patch (ContractionConfig.stagger,
# default 1) + d-topk-gather.patch (d topk_weights gathered straight from down_backward's per-tile row sums);
# neither landed (NOTES "Session 28"). carry [".whl", "out/ab"], out/ab from `scripts/gpu-ab prepare main`; one
# 600 s call, 440 s on an H100 (step.log, gpu.txt; the HLO of the branch's step: grad-qwen3_30b_a3b-4096.hlo.txt.gz).
# The jax.grad step at Qwen3-30B-A3B T=4096 (kernel_times --grad --calls 9, every kernel listed) with the
# contraction at stagger 1, main, stagger 2 and stagger 0 (main's synchronisation, the patch's masking code),
# two interleaved rounds as long as END_S (default 520) allows.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
START=$(date +%s)
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
left() { echo $(( START + ${END_S:-520} - $(date +%s) )); }
step() {  # tree stagger [kernel_times args]
  [ $(left) -gt 60 ] || return 0
  echo "## $1 stagger=$2 $(date +%T)"
  tree=$1 stagger=$2; shift 2
  PYTHONPATH=/tmp/site:$tree timeout $(left) python3 $PWD/benchmarks/results/session27/stagger_step.py $stagger \
    --grad --calls 9 "$@" qwen3_30b_a3b:4096 2>&1 | grep -v Warn
}
{ step $PWD 1 --hlo $OUT/hlo/new; step out/ab/main 0 --hlo $OUT/hlo/main; step $PWD 2; step $PWD 0
  step $PWD 1; step out/ab/main 0; step $PWD 2; step $PWD 0; } 2>&1 | tee $OUT/step.log
(cd $OUT && tar czf hlo.tgz hlo && rm -rf hlo)
echo "done at $(( $(date +%s) - START )) s"
