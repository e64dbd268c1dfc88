"""Is a grouped GEMM bound by its L2 reads of the weights? (session 25). With 64-row tiles every tile of an
expert reads the expert's whole weight block through L2 (Qwen3-30B-A3B T=4096: ~4 tiles an expert, ~4 GB of
L2 -> SMEM traffic in expert_up, ~9.4 TB/s at its 426 us). Tilings of 128-row tiles read each weight block
half as often: "128 split-N" (session 5's: two consumers of 128 rows, half the columns each; multiplies the
padded rows of a tile's second half) and "128 split-rows" (GemmConfig.split_rows: a consumer per 64-row
half, all columns; a half that is all padding skips its MMAs). "64 split-N" is the default's 64-row tiles
without alternate items (separates the rows' effect from the alternate items'). Each tiling times the
forward's expert_up, expert_down and up_backward, and training's expert_up (keeping g, u, storing xs) and
down_backward (reading and storing dy's rows), on the benchmark's routing and on a balanced one (every
expert exactly T k / E rows, a multiple of 128: no padding for any), outputs checked against the default
tiling's at every (token, slot) first.

    PYTHONPATH=/tmp/site:. python3 benchmarks/results/session25/probe_tile_rows.py [shape:T] [--interpret | --lower]

It needs GemmConfig.split_rows, which main does not have: apply split-rows.patch (beside this file) first.
Session 25 ran it on an H100 (probe-tiles.log): split rows were not faster; see benchmarks/NOTES.md.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.run import MoECase
from jax_moe.backends import mosaic_gpu, mosaic_gpu_grad
from jax_moe.backends.mosaic_gpu import GemmConfig
from jax_moe.moe import describe
from jax_moe.permutation import align_to_tiles
from jax_moe.shapes import SHAPES

FORWARD_KERNELS = ("expert_up", "expert_down", "up_backward")
TRAINING_KERNELS = ("expert_up", "down_backward")


def tilings(problem):
    """name -> (expert_up, expert_down, down_backward, up_backward) configs."""
    up, down = mosaic_gpu.choose_configs(problem)
    back = mosaic_gpu_grad.choose_backward_configs(problem, 64)
    default = (up, down, back.down, back.up)
    rows = lambda block_m, **changes: tuple(dataclasses.replace(c, block_m=block_m, alternate=False, **changes)
                                            for c in default)
    return {
        "64 (default)": default,
        "64 split-N": rows(64),
        "128 split-N": rows(128),
        "128 split-rows": rows(128, split_rows=True, staging_chunks=1),
    }


def main(argv):
    interpret = "--interpret" in argv
    specs = [a for a in argv if not a.startswith("--")] or (["seed_qwen3:64"] if interpret else ["qwen3_30b_a3b:4096"])
    name, _, tokens = specs[0].partition(":")
    shape = SHAPES[name]
    if interpret:  # a small problem with the shape's structure
        shape = dataclasses.replace(shape, hidden=256, intermediate=256, experts=4, top_k=2)
    case = MoECase(shape, int(tokens), jnp.dtype(jnp.bfloat16))
    x, gate, up, down, topk_weights, random_ids = case.inputs()
    T, k, E = case.tokens, shape.top_k, shape.experts
    balanced_ids = ((jnp.arange(T)[:, None] * k + jnp.arange(k)[None, :]) % E).astype(random_ids.dtype)
    problem, weights = describe(x, gate, up, down, topk_weights, random_ids, moe_type=shape.moe_type,
                                activation=shape.activation, interpret=interpret)
    dout = jnp.cos(3 * x)

    def chain(ids, cfgs, train):
        up_cfg, down_cfg, down_back_cfg, up_back_cfg = cfgs

        def fn(xx):
            sort = None if interpret else mosaic_gpu.sort_rows(ids, problem)
            layout = align_to_tiles(ids, topk_weights, E, up_cfg.block_m, sorted_rows=sort, aligned_experts=train)
            if train:
                hw, pre, xs = mosaic_gpu.training_up(layout, xx, weights, problem, up_cfg, interpret)
                dpre, _, dys = mosaic_gpu_grad.down_backward(layout, dout, pre, weights, problem, down_back_cfg,
                                                             interpret, gather=True)
                outs = (hw, xs, *dpre, dys)
            else:
                hw = mosaic_gpu.expert_up(layout, xx, weights, problem, up_cfg, interpret, gather=True)
                y = mosaic_gpu.expert_down(layout, hw, weights, problem, down_cfg, interpret)
                dxs = mosaic_gpu_grad.up_backward(layout, (hw, hw), weights, problem, up_back_cfg, interpret)
                outs = (hw, y, dxs)
            return tuple(jnp.take(o, layout.slot_row, axis=0, mode="fill", fill_value=0) for o in outs)  # [T, k, C]
        return jax.jit(fn)

    variants = [(routing, ids, train, tiling, cfgs) for routing, ids in (("random", random_ids), ("balanced", balanced_ids))
                for train in (False, True) for tiling, cfgs in tilings(problem).items()]
    if "--lower" in argv:  # lowers every variant for CUDA on this CPU (SMEM budgets, layouts) and stops
        mosaic_gpu.num_sms = lambda interpret: 132
        for routing, ids, train, tiling, cfgs in variants:
            chain(ids, cfgs, train).trace(x).lower(lowering_platforms=("cuda",))
            print(f"{routing} {tiling} train={train}: lowers for CUDA", flush=True)
        return
    as_f32 = lambda a: np.asarray(jnp.asarray(a, jnp.float32))
    wanted = {}
    if not interpret:
        from jax.experimental.mosaic.gpu import profiler
    for routing, ids, train, tiling, cfgs in variants:  # each checked, then timed (a cut run keeps its rows)
        fn = chain(ids, cfgs, train)
        got = [as_f32(o) for o in fn(x)]
        want = wanted.setdefault((routing, train), got)
        for i, (g, w) in enumerate(zip(got, want)):
            np.testing.assert_allclose(g, w, rtol=2e-2, atol=2e-2, err_msg=f"{routing} {tiling} train={train} output {i}")
        if interpret:
            print(f"{routing} {tiling} train={train}: outputs checked", flush=True)
            continue
        _, per_call = profiler.measure(fn, aggregate=False, iterations=9)(x)
        times = {kernel: statistics.median(sum(ms for n, ms in kernels if kernel in n) * 1e3 for kernels in per_call)
                 for kernel in (TRAINING_KERNELS if train else FORWARD_KERNELS)}
        print(f"{name} T={tokens} {routing:8s} {tiling:14s} {'training' if train else 'forward':8s} "
              + "  ".join(f"{kn} {us:.1f}" for kn, us in times.items()) + " us (outputs checked)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
