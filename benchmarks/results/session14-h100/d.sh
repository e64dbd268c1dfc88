#!/usr/bin/env bash
# Session 14 call 4 (~9.5 min): the 8 benchmark-shape gradient tests that call 3 did not reach
# (T=333 and 4096; two pytest processes side by side, each running its fp32 references in turn),
# then the README's Qwen3 T=4096 forward row (ours and the two Mosaic GPU anchors). carry [".whl"]
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
R=$PWD; L=$OUT/logs; mkdir -p $L
save() { tar -czf $OUT/s.tgz -C $L . 2>/dev/null; }
export PYTHONPATH=/tmp/site:$R PYTHONUNBUFFERED=1
t() { XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 330 python3 -m pytest -v -rfE -m gpu tests/test_gpu.py -p no:cacheprovider \
        -k "gradients_on_benchmark_shapes and ($1)" > $L/gpu-tests-$2.log 2>&1; }
t "4096 and (qwen3_30b_a3b or seed_nomic)" a & t "333 or (4096 and (olmoe or seed_qwen3))" b & wait; save
timeout 200 python3 -m benchmarks.run --suites models --shapes qwen3_30b_a3b --tokens 4096 --dtypes bfloat16 \
  --impls jax_moe_mosaic_gpu,tokamax_mosaic,jax_mgpu --out $L --tag fwd-qwen3-4096 > $L/run-fwd.log 2>&1; save
grep -hE "^(PASSED|FAILED|ERROR)|passed|failed" $L/gpu-tests-*.log | cut -c1-150
grep -v "Warn\|^    @" $L/run-fwd.log | grep "moe \|ceil\|^| qwen"
