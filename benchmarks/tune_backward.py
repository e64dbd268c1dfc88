"""Tiling sweep of the grouped GEMMs on a GPU (down_backward, up_backward, and the forward's expert_up,
with and without g, u, and expert_down), Qwen3-30B-A3B T=4096 bf16: CUPTI kernel time per candidate,
each candidate's outputs (valid rows) checked against the first candidate's (f32 sums in another
order: within bf16 rounding) before its time is recorded (a mismatch is recorded as an error).

    python -m benchmarks.tune_backward --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jax_moe.backends import mosaic_gpu
from jax_moe.backends import mosaic_gpu_grad as grad
from jax_moe.backends.mosaic_gpu import GemmConfig
from jax_moe.backends.registry import ExpertWeights, MoEProblem
from jax_moe.permutation import align_to_tiles, row_count

G = GemmConfig
# Candidates per kernel; the first is the reference. stages is a maximum: the ring takes as many as
# fit the SMEM.
CANDIDATES = {
    # down_backward (training's: it gathers dout's rows and stores them) waits on its loads (ncu,
    # session 12): borrow_staging puts g, u in the outputs' staging, so that the ring keeps 7 stages
    # of 24 KiB (session 26: on alternate items with the epilogue a 64-column chunk at a time, 350 us,
    # against 381 with the consumers splitting the columns). 256-column items on alternate items
    # (4 stages of 40 KiB: about the same bytes in flight) read each tile's dout rows from L2 half as
    # often (~0.45 of ~2.7 GB); unmeasured. (32-row k-blocks do not take the row gather's 128-byte rows.)
    "down_backward": [G(64, 128, 64, 7, tile_width=4, staging_chunks=1, alternate=True),
                      G(64, 256, 64, 4, tile_width=4, staging_chunks=1, alternate=True),
                      G(64, 256, 64, 4, tile_width=2, staging_chunks=1, alternate=True),
                      G(64, 256, 64, 4, tile_width=8, staging_chunks=1, alternate=True),
                      G(64, 128, 64, 7, tile_width=4)],
    "up_backward": [G(64, 256, 64, 5, staging_chunks=1, alternate=True), G(64, 256, 64, 5, staging_chunks=1, alternate=True, tile_width=4),
                    G(64, 256, 64, 5, staging_chunks=1), G(64, 128, 64, 5, staging_chunks=1, alternate=True)],
    "expert_up": [G(64, 128, 64, 5, staging_chunks=1, alternate=True), G(64, 128, 64, 5, staging_chunks=1, alternate=True, tile_width=4),
                  G(64, 128, 64, 5), G(64, 128, 64, 5, alternate=True)],
    "expert_up_keep": [G(64, 128, 64, 5, staging_chunks=1, alternate=True),
                       G(64, 128, 64, 5, staging_chunks=1, alternate=True, tile_width=4), G(64, 128, 64, 5)],
    "expert_down": [G(64, 256, 64, 5, staging_chunks=1, alternate=True), G(64, 256, 64, 5, staging_chunks=1, alternate=True, tile_width=4),
                    G(64, 256, 64, 5, staging_chunks=1), G(64, 128, 64, 5, staging_chunks=1, alternate=True)],
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kernels", default=",".join(CANDIDATES), help="comma list of kernels to sweep")
    parser.add_argument("--first", type=int, default=None, help="only the first N candidates per kernel")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    from jax.experimental.mosaic.gpu import profiler

    T, E, H, I, k = 4096, 128, 2048, 768, 8
    problem = MoEProblem(T, H, I, E, k, jnp.dtype(jnp.bfloat16), "qwen3", "silu", False, "gpu")
    key = jax.random.split(jax.random.key(0), 9)
    _, ids = jax.lax.top_k(jax.random.normal(key[0], (T, E)), k)
    # The training layout, as the backward builds it: every expert on the 8-row grid.
    layout = align_to_tiles(ids, jax.nn.softmax(jax.random.normal(key[8], (T, k))), E, 64, aligned_experts=True)
    rows = row_count(T, k, 64, aligned_experts=E)
    normal = lambda i, shape, scale=1.0: (jax.random.normal(key[i], shape) * scale).astype(jnp.bfloat16)
    xs, g, u = normal(1, (rows, H)), normal(3, (rows, I)), normal(4, (rows, I))
    dout = normal(2, (T, H))
    w = ExpertWeights(normal(5, (E, H, I), 0.02), normal(6, (E, H, I), 0.02), normal(7, (E, I, H), 0.02),
                      None, None, None)
    valid = np.asarray(layout.slot_row).reshape(-1)  # the routed rows: the ones the kernels write

    def down_backward(cfg):  # training's: dout's rows gathered by the kernel -> dg, du, dys
        dpre, _, dys = grad.down_backward(layout, dout, (g, u), w, problem, cfg, gather=True)
        return (*dpre, dys)

    kernels = {
        "down_backward": down_backward,
        "up_backward": lambda cfg: (grad.up_backward(layout, (g, u), w, problem, cfg),),
        "expert_up": lambda cfg: (mosaic_gpu.expert_up(layout, xs, w, problem, cfg),),
        "expert_up_keep": lambda cfg: mosaic_gpu.expert_up(layout, xs, w, problem, cfg, keep_preactivations=True)[1],
        "expert_down": lambda cfg: (mosaic_gpu.expert_down(layout, g, w, problem, cfg),),
    }
    results = []
    for name, fn in [(name, kernels[name]) for name in args.kernels.split(",")]:
        reference = None
        for cfg in CANDIDATES[name][:args.first]:
            c = dataclasses.asdict(cfg)
            try:
                outs, times = profiler.measure(jax.jit(lambda cfg=cfg: fn(cfg)), iterations=5)()
            except Exception as e:  # noqa: BLE001 (a tiling that does not fit: record why)
                results.append(dict(kernel=name, config=c, error=f"{type(e).__name__}: {str(e)[:160]}"))
                print(name, cfg, "error", str(e)[:160], flush=True)
                continue
            outs = [np.asarray(o, np.float32)[valid] for o in outs]
            reference = reference or outs
            diff = max(float(np.max(np.abs(a - b))) for a, b in zip(outs, reference))
            try:
                for a, b in zip(outs, reference):
                    np.testing.assert_allclose(a, b, rtol=2**-6, atol=1e-6)
            except AssertionError as e:
                results.append(dict(kernel=name, config=c, error=f"wrong outputs: {str(e)[:300]}"))
                print(name, cfg, "WRONG OUTPUTS (max diff vs first", diff, ")", flush=True)
                continue
            us = float(np.median(times)) * 1e3
            print(f"{name} {cfg}: {us:.1f} us (max diff vs first {diff:.3g})", flush=True)
            results.append(dict(kernel=name, config=c, us=us, max_abs_diff_vs_first=diff))
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tune-backward-qwen3_30b_a3b-T4096.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
