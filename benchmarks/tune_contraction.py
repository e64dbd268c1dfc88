"""Tiling sweep of the backward's weight-gradient kernel (mosaic_gpu_grad.expert_contraction) on a GPU.

    python -m benchmarks.tune_contraction --shape qwen3_30b_a3b --tokens 4096 --out DIR

Each config's outputs are checked against the first config's before it is timed (CUPTI kernel time).
"""

from __future__ import annotations

import argparse
import itertools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jax_moe.backends.mosaic_gpu_grad import ContractionConfig, expert_contraction
from jax_moe.permutation import align_to_tiles, row_count
from jax_moe.shapes import SHAPES


def parse_config(spec: str) -> ContractionConfig:
    """'bm x bn x bk x stages x consumers [x staging_chunks] [x c]' -> ContractionConfig (c: the
    consumers share each item)."""
    fields = spec.split("x")
    return ContractionConfig(*(int(f) for f in fields if f != "c"), cooperative=fields[-1] == "c")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", default="qwen3_30b_a3b")
    parser.add_argument("--tokens", type=int, default=4096)
    # Session 14's sweep (H100, Qwen3 T=4096: benchmarks/NOTES.md): 128 x 128 items with 5 and 6
    # ring stages, two consumers sharing 128 x 256 items with 4 stages and their 64-column output
    # chunks through two buffers (the default since), alternate items with 6 stages.
    parser.add_argument("--configs", default="128x128x64x5x1,128x128x64x6x1,128x256x64x4x2x1xc,128x128x64x6x2",
                        help="comma list of block_m x block_n x block_k x stages (at most) x consumers "
                             "(consumers take alternate items) [x staging_chunks] [x c: consumers share each item]")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    from jax.experimental.mosaic.gpu import profiler
    s = SHAPES[args.shape]
    T, E, H, I = args.tokens, s.experts, s.hidden, s.intermediate
    key = jax.random.split(jax.random.key(0), 4)
    _, ids = jax.lax.top_k(jax.random.normal(key[0], (T, E)), s.top_k)
    # The training layout, as the backward builds it: every expert on the 8-row grid.
    layout = align_to_tiles(ids, jnp.ones(ids.shape, jnp.float32), E, 64, aligned_experts=True)
    rows = row_count(T, s.top_k, 64, aligned_experts=E)
    xs = jax.random.normal(key[1], (rows, H), jnp.bfloat16)
    dg = jax.random.normal(key[2], (rows, I), jnp.bfloat16)
    du = jax.random.normal(key[3], (rows, I), jnp.bfloat16)
    cases = {"gate_up (xs^T [dg, du])": (xs, [dg, du]), "down (h^T dy)": (dg, [xs])}
    results, expected = [], {}
    for (name, (lhs, rhs)), spec in itertools.product(cases.items(), args.configs.split(",")):
        cfg = parse_config(spec)
        fn = jax.jit(lambda lhs, rhs, cfg=cfg: expert_contraction(layout, lhs, rhs, cfg, jnp.bfloat16))
        try:
            out, times = profiler.measure(fn, iterations=5)(lhs, rhs)
        except Exception as e:  # noqa: BLE001 (a tiling that does not fit: record why)
            results.append(dict(case=name, config=spec, error=f"{type(e).__name__}: {str(e)[:160]}"))
            print(name, spec, "error", str(e)[:160], flush=True)
            continue
        if name not in expected:
            expected[name] = out
        error = max(float(np.max(np.abs(np.asarray(o, np.float32) - np.asarray(r, np.float32))))
                    for o, r in zip(out, expected[name]))
        us = float(np.median(times)) * 1e3
        flops = 2 * T * s.top_k * lhs.shape[1] * rhs[0].shape[1] * len(rhs)
        results.append(dict(case=name, config=spec, us=us, tflops=flops / us / 1e6, max_abs_diff_vs_first=error))
        print(f"{name:28s} {spec:18s} {us:8.1f} us {flops / us / 1e6:6.1f} TFLOP/s diff {error:.3g}", flush=True)
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"tune-contraction-{args.shape}-T{T}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
