# Session 20 call 5 (branch gathered-copy-by-product, the last ~4 device minutes; scripts/gpu-ab prepare main; carry [".whl", "out/ab"]): the step B A, the compiled copy test, B A.
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
k() { echo "## $1 $(date +%T)" >> $OUT/e-grad-ab.log; PYTHONPATH=/tmp/site:$1 python3 benchmarks/kernel_times.py --grad --calls 7 qwen3_30b_a3b:4096 2>&1 | grep -v Warn | head -12 >> $OUT/e-grad-ab.log; }
k $PWD; k out/ab/main
timeout 70 python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider -k "stores_the_rows and 4096" > $OUT/e-gpu-test.log 2>&1
k $PWD; k out/ab/main
