#!/usr/bin/env bash
# Session 21 call 5 (the machine still warm from call 4, so no setup; carry [".whl", "out/ab"]): the jax.grad step
# in the other order, main then branch contraction-deferred-stores.
export PYTHONUNBUFFERED=1
for t in out/ab/main:main $PWD:branch; do
  PYTHONPATH=/tmp/site:${t%%:*} timeout 90 python3 benchmarks/kernel_times.py --grad --calls 9 qwen3_30b_a3b:4096 2>&1 \
    | grep -v Warn | head -4 | sed "s|^|${t##*:} |" | tee -a $OUT/grad-ab2.log
done
