"""Session 16 probe: expert_down's tilings at the seed shapes, T=512 (1024 routed rows over 8
experts: ~24 tiles x 3 n-blocks of 256 = ~72 items for 132 SMs). Each tiling's output (its routed
rows: the others are never written) is compared with the default's, then timed alone (CUPTI,
median of 9). Session 16's call i ran it without that row selection (it failed on the unwritten
rows' NaN); fixed after, not run yet."""
import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.mosaic.gpu import profiler

from benchmarks.run import MoECase
from jax_moe.backends import mosaic_gpu
from jax_moe.backends.mosaic_gpu import GemmConfig
from jax_moe.moe import describe
from jax_moe.permutation import align_to_tiles
from jax_moe.shapes import SHAPES

for name in sys.argv[1:] or ["seed_qwen3", "seed_nomic"]:
    case = MoECase(SHAPES[name], 512, jnp.dtype(jnp.bfloat16))
    x, gate, up, down, w, ids = case.inputs()
    problem, weights = describe(x, gate, up, down, w, ids, moe_type=case.shape.moe_type,
                                activation=case.shape.activation)
    up_cfg, default = mosaic_gpu.choose_configs(problem)
    layout = align_to_tiles(ids, w, problem.experts, up_cfg.block_m,
                            sorted_rows=mosaic_gpu.sort_rows(ids, problem))
    h = jax.jit(lambda x, weights: mosaic_gpu.expert_up(layout, x, weights, problem, up_cfg, gather=True))(x, weights)
    used = int(np.sum(np.asarray(layout.tile_expert) >= 0))
    routed = np.asarray(layout.slot_row).reshape(-1)  # the rows expert_down writes (others: undefined)
    print(f"{name} T=512: {used} tiles; default expert_down {default}", flush=True)
    variants = [default] + [dataclasses.replace(default, **v) for v in (
        dict(block_n=192, consumers=1), dict(block_n=192, consumers=1, stages=7),
        dict(block_n=384), dict(stages=6), dict(stages=7), dict(tile_width=2), dict(tile_width=4),
        dict(block_n=128))]
    want = None
    for cfg in variants:
        fn = jax.jit(lambda h, weights, cfg=cfg: mosaic_gpu.expert_down(layout, h, weights, problem, cfg))
        try:
            y, times = profiler.measure(fn, iterations=9)(h, weights)
        except Exception as e:  # noqa: BLE001 (a tiling that does not fit)
            print(f"  {cfg}: error {type(e).__name__}: {str(e)[:120]}", flush=True)
            continue
        y = np.asarray(y, np.float32)[routed]
        want = y if want is None else want
        diff = float(np.max(np.abs(y - want)))
        assert diff <= 1e-2 * float(np.max(np.abs(want))), diff
        items = used * (problem.hidden // cfg.block_n)
        print(f"  block_n {cfg.block_n} consumers {cfg.consumers} stages {cfg.stages} tile_width {cfg.tile_width}:"
              f" {float(np.median(times)) * 1e3:6.1f} us ({items} items) max diff {diff:.3g}", flush=True)
