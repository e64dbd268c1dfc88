#!/usr/bin/env bash
# Session 33's A/B (prepared; no device time was left to run it), in two device calls on the warm machine:
#   bash benchmarks/results/session33/ab.sh step    (~9.5 min) the jax.grad step at Qwen3-30B-A3B T=4096
#       (kernel_times --grad --calls 9) on this checkout (branch slot-dots: layout-ffi + d topk_weights from
#       the per-tile row sums in one FFI kernel) against out/ab/layout-ffi (the training layout from one FFI
#       call) and out/ab/main, two interleaved rounds within AB_S; then the GPU tests of the FFI kernels:
#       the routing test (it compares aligned_layout's CUDA kernels with align_to_tiles bitwise), slot_dots,
#       the compiled contraction.
#   bash benchmarks/results/session33/ab.sh tests   (~8 min) the gradient tests: T=4096 Qwen3-30B-A3B and
#       OLMoE in ONE process (side by side they ran out of an 80 GB card's memory, session 33), T=333 and
#       T=5 in another.
# Before: git checkout slot-dots (or from main: git checkout -b layout-ffi, git apply
# benchmarks/results/session33/layout-ffi.patch, commit, git apply benchmarks/results/session33/slot-dots.patch),
# then scripts/gpu-ab prepare main layout-ffi; carry [".whl", "out/ab"] in both calls.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
START=$(date +%s)
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1  # writes gpu.txt
export PYTHONUNBUFFERED=1
g=gradients_on_benchmark_shapes
case "${1:-step}" in
  step)
    END_S=$(( ${AB_S:-420} - $(date +%s) + START )) ROUNDS=${ROUNDS:-2} \
      scripts/gpu-ab run --grad --calls 9 qwen3_30b_a3b:4096 > /dev/null
    grep -E "^##|step|jax_moe|Chunk|Place|Slot" $OUT/ab.log > $OUT/summary.log
    END_S=$(( START + ${END_S:-570} - $(date +%s) )) scripts/gpu-ab tests \
      "routing_kernel or slot_dots or compiled_contraction" ;;
  tests)
    END_S=$(( START + ${END_S:-570} - $(date +%s) )) scripts/gpu-ab tests \
      "$g and 4096 and (qwen3_30b_a3b or olmoe)" "$g and (333 or 5-)" ;;
esac
