#!/usr/bin/env bash
# Session 32's second A/B (prepared; no machine started for it): the jax.grad step at Qwen3-30B-A3B T=4096
# (kernel_times --grad --calls 9) on this checkout (main from 0d3315d: session 30's layout changes without the
# two contraction changes, session 31's counts, 192-column down_backward) against f43da3c (out/ab/f43da3c: the
# code of session 27), plus this checkout with down_backward's bands of 8 M-tiles (VARIANTS), two interleaved
# rounds within AB_S; then the GPU tests of what changed, in parallel processes, until END_S.
# On main: scripts/gpu-ab prepare f43da3c; run with carry [".whl", "out/ab"] (~9.5 min with the defaults).
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
START=$(date +%s)
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1  # writes gpu.txt
export PYTHONUNBUFFERED=1
END_S=$(( ${AB_S:-390} - $(date +%s) + START )) VARIANTS=${VARIANTS---backward-config down.tile_width=8} \
  ROUNDS=${ROUNDS:-2} scripts/gpu-ab run --grad --calls 9 qwen3_30b_a3b:4096 > /dev/null
grep -E "^##|step|jax_moe" $OUT/ab.log > $OUT/summary.log
g=gradients_on_benchmark_shapes
END_S=$(( START + ${END_S:-570} - $(date +%s) )) scripts/gpu-ab tests "routing_kernel or compiled_contraction" \
  "$g and 4096 and qwen3_30b_a3b" "$g and 4096 and olmoe" "$g and 4096 and seed" "$g and 333" "$g and 5-"
