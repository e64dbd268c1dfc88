#!/usr/bin/env bash
# Session 33's A/B (prepared; no device time was left to run it): the jax.grad step at Qwen3-30B-A3B
# T=4096 (kernel_times --grad --calls 9) on branch layout-ffi (the training layout from one FFI call, two
# CUDA kernels, instead of ~15 XLA kernels; results/session33/layout-ffi.patch on main) against main
# (out/ab/main), two interleaved rounds within AB_S; then the GPU tests of what changed until END_S:
# the routing kernel (its test now also checks aligned_layout's CUDA kernels against align_to_tiles
# bitwise) and the compiled contraction; the T=4096 gradients of Qwen3-30B-A3B and OLMoE in ONE process
# (side by side they ran out of an 80 GB card's memory, session 33); the T=333 and T=5 gradients.
# On branch layout-ffi (or main with the patch applied): scripts/gpu-ab prepare main; then run this with
# carry [".whl", "out/ab"] (~9.5 min).
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
START=$(date +%s)
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1  # writes gpu.txt
export PYTHONUNBUFFERED=1
END_S=$(( ${AB_S:-330} - $(date +%s) + START )) ROUNDS=${ROUNDS:-2} \
  scripts/gpu-ab run --grad --calls 9 qwen3_30b_a3b:4096 > /dev/null
grep -E "^##|step|jax_moe|Chunk|Place" $OUT/ab.log > $OUT/summary.log
g=gradients_on_benchmark_shapes
END_S=$(( START + ${END_S:-570} - $(date +%s) )) scripts/gpu-ab tests "routing_kernel or compiled_contraction" \
  "$g and 4096 and (qwen3_30b_a3b or olmoe)" "$g and (333 or 5-)"
