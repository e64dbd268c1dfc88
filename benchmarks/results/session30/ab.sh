#!/usr/bin/env bash
# Session 30's A/B (prepared, NOT run: no device machine started in the session). The jax.grad step at
# Qwen3-30B-A3B T=4096 (kernel_times --grad --calls 9, every kernel listed) on this checkout (plain, then with each
# of the ';'-separated VARIANTS; default: down_backward on 192-column items) and on main (out/ab/main), interleaved
# rounds within AB_S (default 380 s), then the GPU tests of the changed kernels while END_S (default 560) allows.
# On main:  git apply benchmarks/results/session30/layout.patch && scripts/gpu-ab prepare main
# then run it with carry [".whl", "out/ab"] (the working tree, patch applied, is what the device copies).
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
START=$(date +%s)
[ -d /tmp/site/tokamax ] || SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
export PYTHONUNBUFFERED=1
END_S=$(( ${AB_S:-380} - $(date +%s) + START )) VARIANTS=${VARIANTS---backward-config down.block_n=192} \
  ROUNDS=${ROUNDS:-2} scripts/gpu-ab run --grad --calls 9 qwen3_30b_a3b:4096 > /dev/null
grep -E "^##|step|down_backward|chunk_ranks|contraction|fusion|convert" $OUT/ab.log > $OUT/summary.log
# The GPU tests of what changed (the routing kernel, the contraction, the gradients), three processes.
left=$(( START + ${END_S:-560} - $(date +%s) ))
g=gradients_on_benchmark_shapes
n=0
for k in "routing_kernel or compiled_contraction" "$g and 4096 and qwen3_30b_a3b" "$g and (333 or 5-)"; do
  n=$((n + 1))
  [ $left -gt 30 ] && XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONPATH=/tmp/site:$PWD timeout $left \
    python3 -m pytest -q -rfE -p no:cacheprovider -m gpu tests/test_gpu.py -k "$k" > "$OUT/tests-$n.log" 2>&1 &
done
wait
tail -n 4 $OUT/tests-*.log > $OUT/tests.log
echo "done at $(( $(date +%s) - START )) s" >> $OUT/tests.log
