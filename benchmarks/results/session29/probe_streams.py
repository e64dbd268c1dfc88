"""Do two independent kernels of the training step gain from running side by side? (session 29's probe,
not a benchmark)

The grouped GEMMs and the contraction are persistent kernels of one CTA per SM (their SMEM fills an
SM), and every kernel of the step runs on one stream, one after the other. On two streams (XLA's stream
annotation: compute_on("gpu_stream:1")) with grids that add up to the SMs, two independent kernels run
on disjoint SMs at once and share the HBM. The backward has two such pairs:
  up_backward  || the dWg, dWu contraction   (both read dg, du; today 432 + ~430 us on an H100)
  down_backward || the dWd contraction       (dWd = hw^T dout[rows]: needs no output of down_backward
                                              if dout's rows come from elsewhere; today 363 + ~240 us)
Per pair: sequential with full grids (the step today), then side by side with the first kernel on n
SMs and the second on the rest, for a few n, and both on full grids on two streams. Each variant's
outputs must equal the sequential ones bitwise in every row an expert owns (grids change no item's
arithmetic; the kernels leave other rows unwritten) before it is timed; the sequential outputs are
first checked against XLA on one expert's rows. XLA assigns no stream to work inside a jit nested
in the annotated function: the annotated functions hold none (session 29: down_backward || dWd
still failed, on a jnp.where traced as a jit). Time: wall time per call of the jitted pair, R calls dispatched back to back (dispatch is asynchronous, each
call ~1 ms of GPU work), median of 5 runs.

    python benchmarks/results/session29/probe_streams.py            (an H100 / H200)
    python benchmarks/results/session29/probe_streams.py --interpret   (CPU: tiny shapes, logic only)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_gpu_experimental_stream_annotation=true"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental.compute_on import compute_on  # noqa: E402
from jax.experimental.xla_metadata import set_xla_metadata  # noqa: E402

from jax_moe.backends import mosaic_gpu  # noqa: E402
from jax_moe.backends import mosaic_gpu_grad as grad  # noqa: E402
from jax_moe.backends.registry import ExpertWeights, MoEProblem  # noqa: E402
from jax_moe.permutation import align_to_tiles, row_count  # noqa: E402
from tests.test_mosaic_gpu import owned_rows  # noqa: E402

GRID = [None]  # the grid of the kernels built now (None: every SM)
all_sms = mosaic_gpu.num_sms
mosaic_gpu.num_sms = lambda interpret: GRID[0] or all_sms(interpret)


def on_sms(n, fn, *args):
    """fn(*args) with its kernels built for a grid of n CTAs (at trace time)."""
    GRID[0] = n
    try:
        return fn(*args)
    finally:
        GRID[0] = None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interpret", action="store_true")
    parser.add_argument("--calls", type=int, default=10, help="calls per timed run (interpret mode: 1)")
    parser.add_argument("--variant", choices=["one", "group", "both"], default="one",
                        help="one: the first kernel of a pair on gpu_stream:1; group: the same in one scheduling "
                             "group; both: the first on gpu_stream:1, the second on gpu_stream:2, in one group")
    parser.add_argument("--pairs", default="0,1", help="which pairs (0: up_backward || dWg, dWu; 1: down_backward || dWd)")
    args = parser.parse_args(argv)
    interpret = args.interpret
    if interpret:
        args.calls = 1
    runs = 1 if interpret else 5
    if interpret:
        T, E, H, I, k = 100, 3, 256, 256, 2
        mosaic_gpu.INTERPRET_SMS = 4
    else:
        T, E, H, I, k = 4096, 128, 2048, 768, 8
    sms = all_sms(interpret)
    problem = MoEProblem(T, H, I, E, k, jnp.dtype(jnp.bfloat16), "qwen3", "silu", False, "gpu", interpret=interpret)
    up_cfg, _ = mosaic_gpu.choose_configs(problem)
    back = grad.choose_backward_configs(problem, up_cfg.block_m)
    if interpret:  # the GPU's tilings of T=4096 (alternate items)
        back = grad.choose_backward_configs(MoEProblem(4096, H, I, E, 8, jnp.dtype(jnp.bfloat16), "qwen3", "silu",
                                                       False, "gpu"), up_cfg.block_m)
    key = jax.random.split(jax.random.key(0), 12)
    _, ids = jax.lax.top_k(jax.random.normal(key[0], (T, E)), k)
    topk_weights = jax.nn.softmax(jax.random.normal(key[1], (T, k)))
    layout = jax.jit(lambda i: align_to_tiles(i, topk_weights, E, up_cfg.block_m, aligned_experts=True))(ids)
    rows = row_count(T, k, up_cfg.block_m, aligned_experts=E)
    normal = lambda i, shape, scale=1.0: (jax.random.normal(key[i], shape) * scale).astype(jnp.bfloat16)
    w = ExpertWeights(normal(2, (E, H, I), 0.02), normal(3, (E, H, I), 0.02), normal(4, (E, I, H), 0.02),
                      None, None, None)
    dout, g, u = normal(5, (T, H)), normal(6, (rows, I)), normal(7, (rows, I))
    xs, hw, dys, dg, du = normal(8, (rows, H)), normal(9, (rows, I)), normal(10, (rows, H)), normal(11, (rows, I)), g

    def contraction(L, lhs, rhs_list):
        cfg = grad.fitted_contraction_config(back.contraction, lhs.shape[1], rhs_list[0].shape[1])
        return grad.expert_contraction(L, lhs, rhs_list, cfg, jnp.bfloat16, interpret)

    kernels = {  # name: (fn(layout, *inputs) -> outputs, (layout, *inputs)): no array closed over
        "up_backward": (lambda L, dg, du, w: grad.up_backward(L, (dg, du), w, problem, back.up, interpret),
                        (layout, dg, du, w)),
        "dWg, dWu": (lambda L, xs, dg, du: contraction(L, xs, [dg, du]), (layout, xs, dg, du)),
        "down_backward": (lambda L, dout, g, u, w: grad.down_backward(L, dout, (g, u), w, problem, back.down, interpret,
                                                                      gather=True), (layout, dout, g, u, w)),
        "dWd": (lambda L, hw, dys: contraction(L, hw, [dys]), (layout, hw, dys)),
    }
    check_against_xla(kernels, layout, interpret)
    owned = owned_rows(layout, rows)
    pairs = [("up_backward", "dWg, dWu", (44, 66, 88)), ("down_backward", "dWd", (66, 88, 99, 110))]
    if interpret:
        pairs = [(a, b, (1, 2)) for a, b, _ in pairs]
    pairs = [pairs[int(i)] for i in args.pairs.split(",")]
    on_stream = lambda fn, stream: compute_on(compute_type=f"gpu_stream:{stream}",
                                              out_memory_spaces=jax.memory.Space.Device)(fn)
    print(f"variant {args.variant}", flush=True)
    for first, second, grids in pairs:
        (fa, ia), (fb, ib) = kernels[first], kernels[second]

        def pair(inputs, n=None, streams=False):
            a_in, b_in = inputs
            run_a = lambda *x: on_sms(n, fa, *x)
            run_b = lambda *x: on_sms(None if n is None else sms - n, fb, *x)
            if not streams:
                return run_a(*a_in), run_b(*b_in)
            run_a = on_stream(run_a, 1)
            if args.variant == "both":
                run_b = on_stream(run_b, 2)
            if args.variant == "one":
                return run_a(*a_in), run_b(*b_in)
            with set_xla_metadata(_scheduling_group_id="1"):
                return run_a(*a_in), run_b(*b_in)

        inputs = (ia, ib)
        sequential = jax.jit(pair)
        want = jax.block_until_ready(sequential(inputs))
        base = wall(sequential, inputs, args.calls, runs)
        print(f"{first} || {second}: sequential, {sms} SMs each: {base:.1f} us", flush=True)
        for n in (None, *grids):
            fn = jax.jit(lambda i, n=n: pair(i, n, streams=True))
            got = fn(inputs)
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):  # the rows an expert owns: others unwritten
                a, b = (np.asarray(v.astype(jnp.float32)) for v in (a, b))
                keep = owned if a.shape[0] == rows else slice(None)
                np.testing.assert_array_equal(a[keep], b[keep])
            if n is None:
                text = fn.lower(inputs).compile().as_text()
                print(f"  (two streams in the compiled HLO: {'_xla_stream_annotation' in text}, "
                      f"async call: {'call-start' in text})")
            us = wall(fn, inputs, args.calls, runs)
            grids_text = f"{sms} SMs each" if n is None else f"{n} + {sms - n} SMs"
            print(f"{first} || {second}: two streams, {grids_text}: {us:.1f} us ({us / base:.3f} x sequential)",
                  flush=True)


def check_against_xla(kernels, layout, interpret):
    """Each kernel's sequential outputs on sampled rows / experts against f32 XLA (relative error < 2 %)."""
    f32 = lambda a: np.asarray(a, np.float32)
    starts, sizes = np.asarray(layout.expert_start), np.asarray(layout.expert_size)
    expert = int(np.argmax(sizes))
    rows = slice(starts[expert], starts[expert] + sizes[expert])

    def close(got, want, name):
        error = float(np.linalg.norm(got - want) / np.linalg.norm(want))
        assert error < 2e-2, f"{name}: relative error {error:.3g} against XLA"

    fn, (_, dg, du, w) = kernels["up_backward"]
    dxs = f32(jax.jit(fn)(layout, dg, du, w))
    want = f32(dg)[rows] @ f32(w.gate[expert]).T + f32(du)[rows] @ f32(w.up[expert]).T
    close(dxs[rows], want, "up_backward")
    fn, (_, xs, dg, du) = kernels["dWg, dWu"]
    d_gate, d_up = jax.jit(fn)(layout, xs, dg, du)
    close(f32(d_gate[expert]), f32(xs)[rows].T @ f32(dg)[rows], "dWg")
    close(f32(d_up[expert]), f32(xs)[rows].T @ f32(du)[rows], "dWu")
    fn, (_, hw, dys) = kernels["dWd"]
    (d_down,) = jax.jit(fn)(layout, hw, dys)
    close(f32(d_down[expert]), f32(hw)[rows].T @ f32(dys)[rows], "dWd")
    fn, (_, dout, g, u, w) = kernels["down_backward"]
    (dg_out, du_out), _, dys_out = jax.jit(fn)(layout, dout, g, u, w)
    token = np.asarray(layout.row_token)[rows]
    d = f32(dout)[token] @ f32(w.down[expert]).T * np.asarray(layout.row_weight)[rows][:, None]
    gg = f32(g)[rows]
    silu, dsilu = jax.jvp(jax.nn.silu, (jnp.asarray(gg),), (jnp.ones_like(gg),))
    close(f32(du_out)[rows], d * f32(silu), "down_backward du")
    close(f32(dg_out)[rows], d * f32(u)[rows] * f32(dsilu), "down_backward dg")
    np.testing.assert_array_equal(f32(dys_out)[rows], f32(dout)[token])
    print(f"outputs checked against XLA on expert {expert} ({sizes[expert]} rows)", flush=True)


def wall(fn, inputs, calls, runs=5):
    """Median over `runs` runs of the wall time per call of `calls` calls dispatched back to back, in us."""
    jax.block_until_ready(fn(inputs))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready([fn(inputs) for _ in range(calls)])
        times.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(times)


if __name__ == "__main__":
    main()
