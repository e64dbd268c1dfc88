#!/usr/bin/env bash
# Session 17 call 4, on branch dense-walk (here first: scripts/gpu-ab prepare main walk-tw1 walk-tw2 dense-tw2;
# carry [".whl", "out/ab"]): forward kernel times A B C D, twice: the walk over used tiles only
# (this tree) vs main's static walk with the forward's tile_width 8 (main), 1 and 2 (walk-tw1/2), and the walk over used tiles with tile_width 2 (dense-tw2).
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu-check > $OUT/setup.log 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
L=$OUT; mkdir -p $L/fwd
OUT=$L/fwd timeout 400 scripts/gpu-ab run seed_qwen3:512 seed_nomic:512 qwen3_30b_a3b:64 qwen3_30b_a3b:4096 > /dev/null
grep -E "^## |^== |expert_up|expert_down" $L/fwd/ab.log
