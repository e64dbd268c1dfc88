"""Session 17 probe: expert_up's and expert_down's tilings at the seed shapes, T=512 (1024 routed
rows over 8 experts, ~21 tiles of 64 rows). Issue 3's seed qwen3 T=512 target is 80 us and the
forward sits at 79-80 (expert_up ~42.6, expert_down ~23). Each tiling's output on the routed rows
(the others are never written) is compared with the default's, then timed alone (CUPTI, median
of 9). expert_up also runs on a gathered copy of x (gather=False) to show what the in-kernel row
gather costs."""
import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.mosaic.gpu import profiler

from benchmarks.run import MoECase
from jax_moe.backends import mosaic_gpu
from jax_moe.moe import describe
from jax_moe.permutation import align_to_tiles
from jax_moe.shapes import SHAPES

UP_VARIANTS = (dict(stages=4), dict(stages=6), dict(stages=7), dict(tile_width=2), dict(tile_width=4),
               dict(tile_width=16), dict(consumers=1), dict(alternate=True), dict(block_n=64, consumers=1),
               dict(block_n=256), dict(block_n=256, block_k=32, stages=8), dict(staging_chunks=1))
DOWN_VARIANTS = (dict(block_n=192, consumers=1, stages=7), dict(block_n=192, consumers=1, stages=8),
                 dict(block_n=128, consumers=1, stages=7), dict(block_n=128, consumers=1, stages=9),
                 dict(block_n=256, consumers=1, stages=7), dict(block_n=256, alternate=True, stages=6),
                 dict(block_n=192, consumers=1, stages=7, tile_width=4), dict(block_n=96, consumers=1, stages=9))


def timed(fn, args, routed, want, label, items):
    try:
        out, times = profiler.measure(jax.jit(fn), iterations=9)(*args)
    except Exception as e:  # noqa: BLE001 (a tiling that does not fit or lower)
        print(f"  {label}: error {type(e).__name__}: {str(e)[:160]}", flush=True)
        return want
    out = np.asarray(out, np.float32)[routed]
    want = out if want is None else want
    diff = float(np.max(np.abs(out - want)))
    assert diff <= 1e-2 * float(np.max(np.abs(want))), (label, diff)
    print(f"  {label}: {float(np.median(times)) * 1e3:6.1f} us ({items} items) max diff {diff:.3g}", flush=True)
    return want


for name in sys.argv[1:] or ["seed_qwen3", "seed_nomic"]:
    case = MoECase(SHAPES[name], 512, jnp.dtype(jnp.bfloat16))
    x, gate, up, down, w, ids = case.inputs()
    problem, weights = describe(x, gate, up, down, w, ids, moe_type=case.shape.moe_type,
                                activation=case.shape.activation)
    up_cfg, down_cfg = mosaic_gpu.choose_configs(problem)
    layout = align_to_tiles(ids, w, problem.experts, up_cfg.block_m,
                            sorted_rows=mosaic_gpu.sort_rows(ids, problem))
    used = int(np.sum(np.asarray(layout.tile_expert) >= 0))
    routed = np.asarray(layout.slot_row).reshape(-1)
    print(f"{name} T=512: {used} tiles; expert_up {up_cfg}; expert_down {down_cfg}", flush=True)
    want = None
    for change in ({},) + UP_VARIANTS:
        cfg = dataclasses.replace(up_cfg, **change)
        fn = lambda x, weights, cfg=cfg: mosaic_gpu.expert_up(layout, x, weights, problem, cfg, gather=True)
        want = timed(fn, (x, weights), routed, want, f"expert_up {change or 'default'}",
                     used * (problem.intermediate // cfg.block_n))
    xs = jax.jit(mosaic_gpu.gather_rows)(x, layout.row_token)
    fn = lambda xs, weights: mosaic_gpu.expert_up(layout, xs, weights, problem, up_cfg, gather=False)
    timed(fn, (xs, weights), routed, want, "expert_up default on a gathered copy", 0)
    h = jax.jit(lambda x, weights: mosaic_gpu.expert_up(layout, x, weights, problem, up_cfg, gather=True))(x, weights)
    want = None
    for change in ({},) + DOWN_VARIANTS:
        cfg = dataclasses.replace(down_cfg, **change)
        fn = lambda h, weights, cfg=cfg: mosaic_gpu.expert_down(layout, h, weights, problem, cfg)
        want = timed(fn, (h, weights), routed, want, f"expert_down {change or 'default'}",
                     used * (problem.hidden // cfg.block_n))
