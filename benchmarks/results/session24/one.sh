#!/usr/bin/env bash
# Session 24's one-shot device call (carry [".whl", "out/ab"], out/ab from `scripts/gpu-ab prepare main`), for when
# the budget leaves one 600 s call: kernel times of the jax.grad step at Qwen3-30B-A3B T=4096 and the forward
# (Qwen3 T=4096, seed qwen3 T=512) on this checkout and on main, interleaved (checkout, main, checkout, main
# with ROUNDS=2), then the GPU tests of tests.sh (at most PROCS side by side) in the time left before END_S (default 580 s).
# Session 24 ran it with TEST_TIMEOUT for the tests (each process), and thirteen of them at once (tests.sh then).
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
START=$(date +%s)
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
echo "setup $(( $(date +%s) - START )) s"
kt() { PYTHONPATH=/tmp/site:$1 timeout 100 python3 benchmarks/kernel_times.py $3 2>&1 \
        | grep -v Warn | grep -v "^ *[0-9]\.[0-9] us " | sed "s|^|$2 |" | tee -a $OUT/$4.log; }
for round in $(seq ${ROUNDS:-1}); do
  for tree in $PWD out/ab/main; do
    name=$(basename $tree); [ "$tree" = "$PWD" ] && name=checkout
    kt $tree $name "--grad --calls 9 qwen3_30b_a3b:4096" grad-ab
    [ -n "${NO_FWD:-}" ] || kt $tree $name "--calls 9 qwen3_30b_a3b:4096 seed_qwen3:512" fwd-ab
  done
done
left=$(( ${END_S:-580} - ($(date +%s) - START) ))
echo "timings done at $(( $(date +%s) - START )) s; tests get $left s"
[ $left -gt 120 ] && [ -z "${NO_TESTS:-}" ] && DEADLINE=$(( $(date +%s) + left )) bash benchmarks/results/session24/tests.sh 2>&1 | tail -40
