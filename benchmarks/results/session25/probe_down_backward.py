"""down_backward (reading dy's rows) on alternate items, and training's kernels on balanced routing
(session 25's "Next" 1 and 2). Training's expert_up (keeping g, u, storing xs) then down_backward, at
Qwen3-30B-A3B T=4096 by default: on the benchmark's routing with session 25 main's down_backward tiling
(consumers split the columns), on alternate items (g, u tiles in SMEM of their own: fewer ring stages) and on
alternate items with the epilogue a 64-column chunk at a time (g, u fetched into the outputs' staging,
chunk by chunk: the split tiling's ring depth); on a balanced routing (every expert T k / E rows) with the
tree's default. Each variant's outputs (hw, xs, dg, du, dys at every (token, slot)) are checked first:
against the same kernels on XLA's gathered copy of dout (bitwise), and against the split tiling's (f32
sums in another order: close). Needs the chunked epilogue (branch down-alternate / chunked-borrow).

    PYTHONPATH=/tmp/site:. python3 benchmarks/results/session25/probe_down_backward.py [shape:T] [--interpret]
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
from jax_moe.moe import describe
from jax_moe.permutation import align_to_tiles
from jax_moe.shapes import SHAPES


def main(argv):
    interpret = "--interpret" in argv
    specs = [a for a in argv if not a.startswith("--")] or (["seed_qwen3:64"] if interpret else ["qwen3_30b_a3b:4096"])
    name, _, tokens = specs[0].partition(":")
    shape = SHAPES[name]
    if interpret:  # a small problem with the shape's structure
        shape = dataclasses.replace(shape, hidden=128, intermediate=128, experts=4, top_k=2)
    case = MoECase(shape, int(tokens), jnp.dtype(jnp.bfloat16))
    x, gate, up, down, topk_weights, random_ids = case.inputs()
    T, k, E = case.tokens, shape.top_k, shape.experts
    balanced_ids = ((jnp.arange(T)[:, None] * k + jnp.arange(k)[None, :]) % E).astype(random_ids.dtype)
    problem, weights = describe(x, gate, up, down, topk_weights, random_ids, moe_type=shape.moe_type,
                                activation=shape.activation, interpret=interpret)
    up_cfg = mosaic_gpu.choose_configs(problem)[0]
    default = mosaic_gpu_grad.choose_backward_configs(problem, up_cfg.block_m).down
    split = dataclasses.replace(default, alternate=False, staging_chunks=0)  # main's default at session 25
    dout = jnp.cos(3 * x)

    def chain(ids, down_cfg, gather=True):
        def fn(xx):
            sort = None if interpret else mosaic_gpu.sort_rows(ids, problem)
            layout = align_to_tiles(ids, topk_weights, E, up_cfg.block_m, sorted_rows=sort, aligned_experts=True)
            hw, pre, xs = mosaic_gpu.training_up(layout, xx, weights, problem, up_cfg, interpret)
            if gather:
                dpre, _, dys = mosaic_gpu_grad.down_backward(layout, dout, pre, weights, problem, down_cfg, interpret,
                                                             gather=True)
            else:
                dys = dout[layout.row_token]
                dpre, _ = mosaic_gpu_grad.down_backward(layout, dys, pre, weights, problem, down_cfg, interpret)
            outs = (hw, xs, *dpre, dys)
            return tuple(jnp.take(o, layout.slot_row, axis=0, mode="fill", fill_value=0) for o in outs)  # [T, k, C]
        return jax.jit(fn)

    as_f32 = lambda a: np.asarray(jnp.asarray(a, jnp.float32))
    variants = [("random", random_ids, "split columns", split),
                ("random", random_ids, "alternate items", dataclasses.replace(split, alternate=True)),
                ("random", random_ids, "alternate, chunked epilogue",
                 dataclasses.replace(split, alternate=True, staging_chunks=1)),
                ("balanced", balanced_ids, "this tree's default", default)]
    if not interpret:
        from jax.experimental.mosaic.gpu import profiler
    split_outs = {}
    for routing, ids, tiling, cfg in variants:
        fn = chain(ids, cfg)
        got = [as_f32(o) for o in fn(x)]
        on_copy = [as_f32(o) for o in chain(ids, cfg, gather=False)(x)]  # dy's rows gathered by XLA
        for i, (g, w) in enumerate(zip(got, on_copy)):
            np.testing.assert_array_equal(g, w, err_msg=f"{routing} {tiling} output {i}")
        want = split_outs.setdefault(routing, got)  # against the split tiling's: another f32 order
        for i, (g, w) in enumerate(zip(got, want)):
            np.testing.assert_allclose(g, w, rtol=2**-6, atol=1e-6, err_msg=f"{routing} {tiling} output {i}")
        if interpret:
            print(f"{routing} {tiling}: outputs checked", flush=True)
            continue
        _, per_call = profiler.measure(fn, aggregate=False, iterations=9)(x)
        times = {kernel: statistics.median(sum(ms for n, ms in kernels if kernel in n) * 1e3 for kernels in per_call)
                 for kernel in ("expert_up", "down_backward")}
        print(f"{name} T={tokens} {routing:8s} down_backward {tiling:24s} "
              + "  ".join(f"{kn} {us:.1f}" for kn, us in times.items()) + " us (outputs checked)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
