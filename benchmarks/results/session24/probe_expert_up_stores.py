"""Where expert_up's training time goes (session 24's "Next" 2): the same products with one store left out at
a time, timed with CUPTI on one GPU. At Qwen3-30B-A3B T=4096 on an H100 (session 24): the training expert_up
(hw, g, u kept, x's rows stored as xs) 508.5 us against the forward's (hw only) 425.9.

    PYTHONPATH=/tmp/site:. python3 benchmarks/results/session24/probe_expert_up_stores.py [shape:T] [--interpret]

Variants, all on the training layout (aligned_experts) and x's rows read by the kernel:
  forward   hw only                                   (mosaic_gpu.expert_up(gather=True))
  keep      hw, g, u                                  (keep_preactivations=True)
  train     hw, g, u and x's rows stored as xs        (mosaic_gpu.training_up: what the step runs)
  split     train with split items instead of alternate ones (the consumers share each item's columns)
Each variant's outputs are checked against `forward`'s hw (and train's xs against x[row_token]) before timing.
--interpret runs a small shape in interpret mode on the CPU (the checks only).
"""

from __future__ import annotations

import dataclasses
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.run import MoECase
from jax_moe.backends import mosaic_gpu
from jax_moe.moe import describe
from jax_moe.permutation import align_to_tiles
from jax_moe.shapes import SHAPES


def main(argv):
    interpret = "--interpret" in argv
    specs = [a for a in argv if not a.startswith("--")] or (["seed_qwen3:40"] if interpret else ["qwen3_30b_a3b:4096"])
    name, _, tokens = specs[0].partition(":")
    shape = SHAPES[name]
    if interpret:  # a small problem with the shape's structure
        shape = dataclasses.replace(shape, hidden=128, intermediate=128, experts=6, top_k=2)
    case = MoECase(shape, int(tokens), jnp.dtype(jnp.bfloat16))
    x, gate, up, down, topk_weights, topk_ids = case.inputs()
    problem, weights = describe(x, gate, up, down, topk_weights, topk_ids, moe_type=shape.moe_type,
                                activation=shape.activation, interpret=interpret)
    up_cfg = mosaic_gpu.choose_configs(problem)[0]
    sort = None if interpret else mosaic_gpu.sort_rows(topk_ids, problem)
    layout = align_to_tiles(topk_ids, topk_weights, problem.experts, up_cfg.block_m, sorted_rows=sort,
                            aligned_experts=True)
    split_cfg = dataclasses.replace(up_cfg, alternate=False, consumers=2, staging_chunks=0)

    def training(cfg):  # training_up's (hw, xs): the outputs checked (g, u are written all the same)
        def fn(xx):
            hw, _, xs = mosaic_gpu.training_up(layout, xx, weights, problem, cfg, interpret)
            return hw, xs
        return fn

    variants = {
        "forward": lambda xx: (mosaic_gpu.expert_up(layout, xx, weights, problem, up_cfg, interpret, gather=True),),
        "keep": lambda xx: mosaic_gpu.expert_up(layout, xx, weights, problem, up_cfg, interpret,
                                                keep_preactivations=True, gather=True)[:1],
        "train": training(up_cfg),
        "split": training(split_cfg),
    }
    owned = np.zeros(layout.row_token.shape[0], bool)
    owned[np.asarray(layout.slot_row).ravel()] = True  # every routed row (T k < rows: slack rows stay False)
    as_f32 = lambda a: np.asarray(jnp.asarray(a, jnp.float32))
    want_hw = as_f32(jax.jit(variants["forward"])(x)[0])
    for variant, fn in variants.items():
        outs = jax.jit(fn)(x)
        np.testing.assert_array_equal(as_f32(outs[0])[owned], want_hw[owned], err_msg=variant)
        if len(outs) > 1:
            np.testing.assert_array_equal(as_f32(outs[1])[owned], as_f32(x[layout.row_token])[owned], err_msg=variant)
        print(f"{variant}: outputs checked", flush=True)
    if interpret:
        return
    from jax.experimental.mosaic.gpu import profiler
    for variant, fn in variants.items():
        _, per_call = profiler.measure(jax.jit(fn), aggregate=False, iterations=9)(x)
        times = [sum(ms for kernel, ms in kernels if "expert_up" in kernel) * 1e3 for kernels in per_call]
        print(f"{name} T={tokens} {variant}: expert_up {statistics.median(times):.1f} us "
              f"(min {min(times):.1f}, max {max(times):.1f})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
