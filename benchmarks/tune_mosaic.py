"""Tiling sweep of the mosaic_gpu backend on the GPU: per-kernel CUPTI time of each candidate.

    python -m benchmarks.tune_mosaic --shapes qwen3_30b_a3b --tokens 1,64,4096 --out $OUT

Each candidate's output is checked against the default tiling's before it is timed. Writes
tune-<card>-<date>.json (every candidate, per kernel) and prints the best per (shape, T).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import pathlib
import statistics
import sys

import jax
import jax.numpy as jnp
from jax.experimental.mosaic.gpu import profiler

from benchmarks import harness
from benchmarks.run import MoECase
from jax_moe.backends import mosaic_gpu
from jax_moe.backends.mosaic_gpu import GemmConfig
from jax_moe.moe import describe
from jax_moe.shapes import SHAPES
from jax_moe.testing import relative_error


def candidates(problem, grid):
    """(up, down) tilings from the grid whose consumers' accumulators fit a warpgroup's registers
    (block_m x block_n / consumers <= 64 x 256); those that overflow SMEM fail at compile time and are
    reported as errors."""
    gated = problem.moe_type == "qwen3"
    for bm, up_n, down_n, bk, stages, consumers in itertools.product(
            grid["block_m"], grid["up_n"], grid["down_n"], grid["block_k"], grid["stages"], grid["consumers"]):
        if bm * up_n * (2 if gated else 1) > 64 * 256 * consumers or bm * down_n > 64 * 256 * consumers:
            continue
        if problem.intermediate % up_n or problem.hidden % down_n or min(up_n, down_n) // consumers < 64:
            continue
        yield (GemmConfig(bm, up_n, bk, stages, consumers=consumers), GemmConfig(bm, down_n, bk, stages, consumers=consumers))


def per_kernel_us(fn, args, iterations=5) -> dict[str, float]:
    """Median over iterations of each kernel's time (us), kernels of one name summed."""
    _, timings = profiler.measure(jax.jit(fn), aggregate=False, iterations=iterations)(*args)
    sums = []
    for iteration in timings:
        total: dict[str, float] = {}
        for name, ms in iteration:
            total[name] = total.get(name, 0.0) + ms * 1e3
        sums.append(total)
    return {name: statistics.median(t.get(name, 0.0) for t in sums) for name in sums[0]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default="qwen3_30b_a3b")
    parser.add_argument("--tokens", default="1,64,4096")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--limit", type=int, default=40, help="at most this many candidates per row")
    grid = dict(block_m="64", up_n="64,128,256", down_n="128,256", block_k="64", stages="4,5", consumers="1,2")
    for name, default in grid.items():
        parser.add_argument(f"--{name.replace('_', '-')}", default=default, help=f"comma list (default {default})")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    grid = {name: tuple(int(v) for v in getattr(args, name).split(",")) for name in grid}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"tune-{harness.card_slug()}-{datetime.date.today().isoformat()}.json"
    results = []
    for name, T in itertools.product(args.shapes.split(","), map(int, args.tokens.split(","))):
        case = MoECase(SHAPES[name], T, jnp.dtype(args.dtype))
        x, gate, up, down, w, ids = case.inputs()
        problem, weights = describe(x, gate, up, down, w, ids, moe_type=case.shape.moe_type,
                                    activation=case.shape.activation)
        default = mosaic_gpu.choose_configs(problem)
        run = lambda cfgs: (lambda x, weights: mosaic_gpu.run(x, weights, w, ids, problem, configs=cfgs))
        expected = jax.jit(run(default))(x, weights)
        tried = [default] + [c for c in candidates(problem, grid) if c != default][: args.limit - 1]
        for cfgs in tried:
            entry = dict(shape=name, T=T, dtype=args.dtype, up=cfgs[0].__dict__, down=cfgs[1].__dict__,
                         default=cfgs == default)
            try:
                out_ = jax.jit(run(cfgs))(x, weights)
                entry["rel_err_vs_default"] = relative_error(out_, expected)
                if entry["rel_err_vs_default"] > 1e-2:
                    entry["status"] = "FAIL"
                else:
                    kernels = per_kernel_us(run(cfgs), (x, weights))
                    entry.update(status="ok", kernels=kernels, total_us=sum(kernels.values()))
            except Exception as e:  # a tiling that does not fit SMEM or registers
                entry.update(status="error", reason=f"{type(e).__name__}: {str(e)[:160]}")
            results.append(entry)
            path.write_text(json.dumps(results, indent=1))
            print(name, T, entry.get("status"), cfgs, f"{entry.get('total_us', float('nan')):.1f} us",
                  {k: round(v, 1) for k, v in entry.get("kernels", {}).items()}, flush=True)
        ok = [r for r in results if r["shape"] == name and r["T"] == T and r["status"] == "ok"]
        if ok:
            best = min(ok, key=lambda r: r["total_us"])
            dflt = next((r for r in ok if r["default"]), None)
            print(f"BEST {name} T={T}: {best['total_us']:.1f} us up={best['up']} down={best['down']}"
                  f" (default {dflt['total_us'] if dflt else float('nan'):.1f} us)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
