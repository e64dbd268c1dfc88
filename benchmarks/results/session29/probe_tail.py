"""Do the grouped GEMMs pay for a partial last round of items? (written in session 28, run in 29; not a benchmark)

Each grouped GEMM walks used_tiles x n_blocks items, the CTAs (one per SM) taking turns, so a CTA
does ceil(items / SMs) items or one fewer. If an item's time is fixed, a kernel's time steps with
ceil(items / SMs) rather than growing with items; at Qwen3-30B-A3B T=4096 (583 used tiles on the
training layout) down_backward walks 1749 items, 13.25 per SM on an H100: 33 SMs do a 14th item
while 99 wait, ~0.75 of an item (~19 us of 357) if so. This sweeps the routed tokens (arrays of a
fixed T, the last tokens' ids out of range, so one compile per kernel) and times the training
step's four grouped GEMMs with their default tilings at each count, after checking sampled rows of
their outputs against XLA (relative error of the sample under 2 %). It prints per kernel the fit of
time to items (linear) and to rounds (ceil(items / SMs)). Each kernel is also timed with items of
half its block_n ("half"), which says what an item of half the columns costs against a whole one:
what splitting the last round's items into column parts could save.

    python benchmarks/results/session29/probe_tail.py [--tokens 4608 --low 3712 --step 32]
    python benchmarks/results/session29/probe_tail.py --interpret   (CPU: tiny shapes, wall times)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jax_moe.backends import mosaic_gpu
from jax_moe.backends import mosaic_gpu_grad as grad
from jax_moe.backends.registry import ExpertWeights, MoEProblem
from jax_moe.permutation import align_to_tiles, row_count

SAMPLE = 64  # rows checked per kernel and point


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4608, help="T of the arrays")
    parser.add_argument("--low", type=int, default=3712, help="fewest routed tokens")
    parser.add_argument("--step", type=int, default=32)
    parser.add_argument("--interpret", action="store_true", help="CPU, interpret mode, tiny shapes")
    args = parser.parse_args(argv)
    if args.interpret:
        T, E, H, I, k, low, step = 80, 6, 128, 256, 2, 40, 20
        mosaic_gpu.num_sms = lambda interpret: 4
    else:
        T, E, H, I, k, low, step = args.tokens, 128, 2048, 768, 8, args.low, args.step
    sms = mosaic_gpu.num_sms(args.interpret)
    problem = MoEProblem(T, H, I, E, k, jnp.dtype(jnp.bfloat16), "qwen3", "silu", False, "gpu",
                         interpret=args.interpret)
    up_cfg, down_cfg = mosaic_gpu.choose_configs(problem)
    back = grad.choose_backward_configs(problem, up_cfg.block_m)
    key = jax.random.split(jax.random.key(0), 10)
    logits = jax.random.normal(key[0], (T, E))
    _, all_ids = jax.lax.top_k(logits, k)
    topk_weights = jax.nn.softmax(jax.random.normal(key[8], (T, k)))
    rows = row_count(T, k, up_cfg.block_m, aligned_experts=E)
    normal = lambda i, shape, scale=1.0: (jax.random.normal(key[i], shape) * scale).astype(jnp.bfloat16)
    x, dout = normal(1, (T, H)), normal(2, (T, H))
    hw_in, g_in, u_in = normal(3, (rows, I)), normal(4, (rows, I)), normal(9, (rows, I))
    w = ExpertWeights(normal(5, (E, H, I), 0.02), normal(6, (E, H, I), 0.02), normal(7, (E, I, H), 0.02),
                      None, None, None)
    interpret = args.interpret

    configs = {"expert_up (training)": up_cfg, "expert_down": down_cfg, "down_backward": back.down,
               "up_backward": back.up}
    functions = {  # name: (fn(layout, config) -> outputs, N)
        "expert_up (training)": (lambda L, c: mosaic_gpu.training_up(L, x, w, problem, c, interpret), I),
        "expert_down": (lambda L, c: (mosaic_gpu.expert_down(L, hw_in, w, problem, c, interpret),), H),
        "down_backward": (lambda L, c: grad.down_backward(L, dout, (g_in, u_in), w, problem, c, interpret,
                                                          gather=True), I),
        "up_backward": (lambda L, c: (grad.up_backward(L, (g_in, u_in), w, problem, c, interpret),), H),
    }
    kernels = {}  # name: (fn(layout) -> outputs, config, N)
    for name, (fn, n) in functions.items():
        cfg = configs[name]
        half = dataclasses.replace(cfg, block_n=cfg.block_n // 2)
        if not half.alternate and half.block_n // half.consumers < mosaic_gpu.OUT_CHUNK:  # tiny interpret shapes
            half = dataclasses.replace(half, consumers=1)
        kernels[name] = (functools.partial(fn, c=cfg), cfg, n)
        kernels[name + " half"] = (functools.partial(fn, c=half), half, n)
    f32 = lambda a: a.astype(jnp.float32)
    hi = jax.lax.Precision.HIGHEST

    @jax.jit
    def references(r, t, e, wt):
        """f32 expected outputs at sampled rows r (token t, expert e, routing weight wt), per kernel."""
        xr, dr = f32(x[t]), f32(dout[t])
        gg, uu = jnp.einsum("sh,shi->si", xr, f32(w.gate[e]), precision=hi), jnp.einsum(
            "sh,shi->si", xr, f32(w.up[e]), precision=hi)
        hw = wt[:, None] * jax.nn.silu(gg) * uu
        y = jnp.einsum("si,sih->sh", f32(hw_in[r]), f32(w.down[e]), precision=hi)
        d = jnp.einsum("sh,sih->si", dr, f32(w.down[e]), precision=hi)
        gr = f32(g_in[r])
        a, da = jax.jvp(jax.nn.silu, (gr,), (jnp.ones_like(gr),))  # silu and its derivative
        dh = wt[:, None] * d
        dxs = (jnp.einsum("si,shi->sh", f32(g_in[r]), f32(w.gate[e]), precision=hi)
               + jnp.einsum("si,shi->sh", f32(u_in[r]), f32(w.up[e]), precision=hi))
        want = {"expert_up (training)": [hw, gg, uu, xr], "expert_down": [y],
                "down_backward": [dh * f32(u_in[r]) * da, dh * a, None, dr], "up_backward": [dxs]}
        return want | {name + " half": value for name, value in want.items()}

    def timed(fn, L):
        if interpret:
            start = time.perf_counter()
            outs = jax.block_until_ready(fn(L))
            return outs, (time.perf_counter() - start) * 1e6
        from jax.experimental.mosaic.gpu import profiler
        outs, times = profiler.measure(fn, iterations=7)(L)
        return outs, float(np.median(times)) * 1e3

    layout_of = jax.jit(lambda ids: align_to_tiles(ids, topk_weights, E, up_cfg.block_m, aligned_experts=True))
    jitted = {name: jax.jit(fn) for name, (fn, _, _) in kernels.items()}
    table = {name: [] for name in kernels}
    for routed in range(low, T + 1, step):
        ids = jnp.where(jnp.arange(T)[:, None] < routed, all_ids, E)  # the last T - routed tokens unrouted
        L = layout_of(ids)
        used = int(L.tile_end[-1])
        tokens = np.linspace(0, routed - 1, SAMPLE).astype(np.int32)
        slots = np.arange(SAMPLE) % k
        r = np.asarray(L.slot_row)[tokens, slots]
        e = np.asarray(ids)[tokens, slots]
        want = references(r, tokens, e, topk_weights[tokens, slots])
        line = [f"routed {routed:5d} tiles {used:4d}"]
        for name, (_, cfg, n) in kernels.items():
            outs, us = timed(jitted[name], L)
            for got, ref in zip(jax.tree.leaves(outs), want[name]):
                if ref is None:  # down_backward's d topk_weights: covered by the gradient tests
                    continue
                got = f32(got[r])
                error = float(jnp.linalg.norm(got - ref) / jnp.linalg.norm(ref))
                assert error < 2e-2, f"{name} at {routed} routed tokens: relative error {error:.3g}"
            items = used * (n // cfg.block_n)
            table[name].append((items, us))
            line.append(f"{name} {items} items ({items / sms:.2f}/SM) {us:.1f} us")
        print(" | ".join(line), flush=True)
    for name, points in table.items():
        items = np.array([p[0] for p in points], float)
        us = np.array([p[1] for p in points])
        for label, feature in (("linear in items", items), ("rounds ceil(items/SMs)", np.ceil(items / sms))):
            design = np.stack([np.ones_like(feature), feature], axis=1)
            coef, *_ = np.linalg.lstsq(design, us, rcond=None)
            rms = float(np.sqrt(np.mean((design @ coef - us) ** 2)))
            print(f"{name}: {label}: {coef[0]:.1f} + {coef[1]:.3f} x, residual rms {rms:.2f} us")
        print(f"{name}: median us {statistics.median(us):.1f}, SMs {sms}")


if __name__ == "__main__":
    main()
