"""jax-moe benchmark: router, permutation and MoE tables against anchors measured in the same process.

    python -m benchmarks.run                      # everything this machine's size allows
    python -m benchmarks.run --suites router,seed --dtypes bfloat16 --out DIR
    python -m benchmarks.run --suites train       # forward + backward rows (training)

Every implementation's output is checked against the reference before it is timed; a wrong one is
reported as FAIL and not timed. Results: <out>/<card>-<date>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jax_moe
from benchmarks import harness
from benchmarks.anchors import ANCHORS
from jax_moe import backends, permutation, reference
from jax_moe.backends import mosaic_gpu_routing
from jax_moe.moe import describe
from jax_moe.shapes import SHAPES, MoEShape
from jax_moe.testing import TOLERANCE, max_relative_error, relative_error

GPU = jax.default_backend() == "gpu"
START = time.time()


def log(message: str) -> None:
    print(f"[{time.time() - START:7.1f}s] {message}", flush=True)


# ----------------------------------------------------------------------------------------------
# Router


def xla_router(logits, k):
    """XLA's unfused router: fp32 softmax + lax.top_k."""
    return jax.lax.top_k(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), k)


def router_rows(ceilings: harness.Ceilings, dtypes, sink) -> None:
    big = 32768 if GPU else 8192  # the CPU runs the same experts at T <= 8192
    configs = [(8, 2, T, {}) for T in (32, 512, 8192, 32768) if T <= big]
    configs += [(128, 8, big, {}), (60, 4, big, {}), (512, 8, 8192, {}),
                (256, 8, big, dict(scoring="sigmoid", num_groups=8, topk_groups=4, renormalize=True,
                                   routed_scaling_factor=2.5))]
    for dtype in dtypes:
        for E, k, T, kwargs in configs:
            rng = np.random.default_rng(T + E)
            logits = jnp.asarray(rng.normal(size=(T, E)), dtype)
            if "num_groups" in kwargs:
                kwargs = dict(kwargs, correction_bias=jnp.asarray(rng.normal(size=E) * 0.01, jnp.float32))
            ours = lambda x: jax_moe.topk_softmax(x, k, **kwargs)
            out, ref = jax.jit(ours)(logits), reference.topk_softmax(logits, k, **kwargs)
            ids_equal = bool(np.array_equal(out[1], ref[1]))
            error = max_relative_error(out[0], ref[0])
            row = dict(suite="router", E=E, k=k, T=T, dtype=jnp.dtype(dtype).name,
                       variant="grouped sigmoid" if kwargs else "softmax", ids_equal=ids_equal, max_rel_err=error)
            if not ids_equal or error > 1e-5:
                row["status"] = "FAIL"
                sink(row)
                log(f"router FAIL {row}")
                continue
            timing = harness.time_chained(ours, (logits,))
            timing.kernel_us = harness.kernel_time(ours, (logits,))
            row.update(status="ok", jax_moe_us=timing.us, jax_moe_kernel_us=timing.kernel_us, calls=timing.calls)
            if not kwargs:  # XLA's softmax + top_k has no grouped/sigmoid variant
                xla = harness.time_chained(lambda x: xla_router(x, k), (logits,))
                row.update(xla_us=xla.us, xla_kernel_us=harness.kernel_time(lambda x: xla_router(x, k), (logits,)))
            moved = T * E * jnp.dtype(dtype).itemsize + T * k * 12
            row.update(bytes=moved, floor_us=ceilings.floor_us(0, moved))
            sink(row)
            log(f"router {row['dtype']} E={E} k={k} T={T}: {timing.us:.1f} us chained, kernel {timing.kernel_us}")


# ----------------------------------------------------------------------------------------------
# Permutation: the mosaic_gpu backend's routing kernels against the XLA they replace


def permutation_row(shape: MoEShape, T: int, ceilings: harness.Ceilings, interpret=False) -> dict:
    """Rows ranked by expert (SortedRows) with mosaic_gpu_routing's kernel and with XLA's sort
    (jax_moe.permutation.sort_by_expert), checked equal, then timed (interpret: CPU logic only)."""
    E, k = shape.experts, shape.top_k
    _, ids, _ = jax_moe.topk_softmax(jax.random.normal(jax.random.key(T), (T, E)), k)
    ours = lambda i: mosaic_gpu_routing.sort_by_expert(i, E, interpret)
    xla = lambda i: permutation.sort_by_expert(i, E)
    equal = all(np.array_equal(a, b) for a, b in zip(jax.jit(ours)(ids), jax.jit(xla)(ids)))
    n = T * k
    moved = n * 4 * 4  # ids read; order, rank, expert written (int32)
    row = dict(suite="permutation", op="sort by expert", shape=shape.name, T=T, equal=equal, bytes=moved,
               floor_us=ceilings.floor_us(0, moved))
    if not equal:
        return dict(row, status="FAIL")
    for name, fn in (("jax_moe", ours), ("xla", xla)):
        timing = harness.time_chained(fn, (ids,))
        row.update({f"{name}_us": timing.us, f"{name}_kernel_us": harness.kernel_time(fn, (ids,))})
    return dict(row, status="ok")


def permutation_rows(ceilings: harness.Ceilings, sink) -> None:
    if not GPU:
        log("permutation suite skipped: its kernels are Mosaic GPU (sm90) code")
        return
    for name, T in (("qwen3_30b_a3b", 4096), ("qwen3_30b_a3b", 16384), ("deepseek_v3", 4096)):
        row = permutation_row(SHAPES[name], T, ceilings)
        sink(row)
        log(f"permutation {row['op']} {name} T={T}: {row['status']}, jax-moe {row.get('jax_moe_us', 0):.1f} us, "
            f"XLA {row.get('xla_us', 0):.1f} us")


# ----------------------------------------------------------------------------------------------
# MoE


@dataclasses.dataclass
class MoECase:
    shape: MoEShape
    tokens: int
    dtype: jnp.dtype

    def inputs(self, seed: int = 0):
        s, T = self.shape, self.tokens
        key = jax.random.split(jax.random.key(seed), 5)
        H, I, E = s.hidden, s.intermediate, s.experts
        x = jax.random.normal(key[0], (T, H), jnp.float32).astype(self.dtype)
        gate = (jax.random.normal(key[1], (E, H, I), jnp.float32) * H**-0.5).astype(self.dtype)
        up_scale = H**-0.5 if s.moe_type == "qwen3" else I**-0.5
        up = (jax.random.normal(key[2], (E, H, I), jnp.float32) * up_scale).astype(self.dtype)
        down = (jax.random.normal(key[3], (E, I, H), jnp.float32) * I**-0.5).astype(self.dtype) if s.moe_type == "qwen3" else None
        weights, ids, _ = jax_moe.topk_softmax(jax.random.normal(key[4], (T, E)), s.top_k, renormalize=True)
        return x, gate, up, down, weights, ids


def touched_weight_bytes(case: MoECase, ids) -> int:
    experts = len(np.unique(np.asarray(ids)))
    return experts * case.shape.expert_bytes(jnp.dtype(case.dtype).itemsize)


def moe_rows(ceilings: harness.Ceilings, shapes, tokens, dtypes, max_estimated_ms: float, sink, impls=None,
             grad=False) -> None:
    for name in shapes:
        shape = SHAPES[name]
        for dtype in dtypes:
            for T in tokens[name]:
                sink(moe_row(MoECase(shape, T, jnp.dtype(dtype)), ceilings, max_estimated_ms, impls, grad))


def with_gradient(fn):
    """fn(x, weights, topk_weights, topk_ids) -> out  ==>
    (x, weights, topk_weights, topk_ids, cotangent) -> (loss, (d x, d weights, d topk_weights))
    with loss = sum(out * cotangent): one forward and one backward, as in training (the loss keeps
    the whole forward alive; a bare jax.grad lets XLA drop the forward work only the loss needs)."""
    def loss(x, weights, topk_weights, topk_ids, cotangent):
        return jnp.sum(fn(x, weights, topk_weights, topk_ids).astype(jnp.float32) * cotangent)

    return jax.value_and_grad(loss, argnums=(0, 1, 2))


def reference_layer(shape: MoEShape):
    """(x, weights, topk_weights, topk_ids) -> the reference fused_moe of the shape's MoE type."""
    return lambda x, w, tw, ids: reference.fused_moe(x, *w[:3], tw, ids, moe_type=shape.moe_type,
                                                     activation=shape.activation)


def routing_arguments(x, topk_weights, topk_ids, grad: bool) -> tuple:
    """The timed function's arguments after (x, weights): the routing and, with grad, the cotangent.
    Arguments, never constants closed over: XLA would fold everything that depends only on them
    (the sort by expert, the tile tables, the backward's gather of dy) into constants at compile
    time and leave it out of the timing."""
    if not grad:
        return topk_weights, topk_ids
    return topk_weights, topk_ids, jnp.cos(jnp.arange(x.size, dtype=jnp.float32)).reshape(x.shape)


def checked_values(out, grad: bool):
    """What is checked of a result: the output or, with grad, d x and d topk_weights (the weights'
    gradients have each anchor's layout)."""
    return (out[1][0], out[1][2]) if grad else out


def moe_row(case: MoECase, ceilings: harness.Ceilings, max_estimated_ms: float, impls=None, grad=False) -> dict:
    """One (shape, T, dtype) row: every implementation (or those named in impls) checked, then timed.

    grad: time forward + backward (d x, d weights, d topk_weights); the check compares d x and
    d topk_weights with jax.grad of the reference (the weights' gradients have each anchor's layout).
    """
    s, T = case.shape, case.tokens
    x, gate, up, down, topk_weights, topk_ids = case.inputs()
    problem, weights = describe(x, gate, up, down, topk_weights, topk_ids, moe_type=s.moe_type, activation=s.activation)
    flops = s.flops(T) * (3 if grad else 1)
    weight_bytes = touched_weight_bytes(case, topk_ids)
    io_bytes = 2 * x.size * x.dtype.itemsize + topk_ids.size * 8
    row = dict(suite="moe-grad" if grad else "moe", shape=s.name, T=T, dtype=case.dtype.name, flops=flops, weight_bytes=weight_bytes,
               floor_us=ceilings.floor_us(flops, weight_bytes + io_bytes, f32=case.dtype == jnp.float32), impls={})
    # Anything that computes every expert on every token costs E/k times the routed FLOPs.
    dense_ms = flops * s.experts / s.top_k / (0.5 * ceilings.matmul_tflops * 1e12) * 1e3
    reference_fn = reference_layer(s)
    routing = routing_arguments(x, topk_weights, topk_ids, grad)
    ref = checked_values(jax.jit(with_gradient(reference_fn) if grad else reference_fn)(x, weights, *routing), grad)

    candidates = {}
    for backend in backends.names():
        reason = backends.registry.get(backend).unsupported(problem)
        # moe._run: the backend with fused_moe's VJP (a kernel backend's own backward).
        candidates[f"jax_moe_{backend}"] = (reason, lambda xx, w, tw, ids, b=backend: jax_moe.moe._run(
            b, problem, xx, w, tw, ids))
    for anchor in ANCHORS.values():
        reason = anchor.unsupported(problem)
        candidates[anchor.name] = (reason, lambda xx, w, tw, ids, a=anchor: a.run(xx, w, tw, ids, problem))
    for impl, (reason, forward) in candidates.items():
        # With grad every gradient is returned (and so computed: XLA drops kernels whose results go unused).
        fn = with_gradient(forward) if grad else forward
        if impls is not None and impl not in impls:
            continue
        anchor = ANCHORS.get(impl)
        prepared = anchor.prepare(weights, problem) if anchor else weights
        brute_force = impl in ("dense", "xla_ragged") or (impl == "jax_moe_xla" and T * s.top_k > s.experts)
        if reason is None and brute_force and dense_ms > max_estimated_ms:
            reason = f"estimated {dense_ms:.0f} ms > {max_estimated_ms:.0f} ms"
        if reason is not None:
            row["impls"][impl] = dict(status="skip", reason=reason)
            continue
        try:
            out = jax.jit(fn)(x, prepared, *routing)
            checked = checked_values(out, grad)
            error = max(relative_error(o, r) for o, r in zip(jax.tree.leaves(checked), jax.tree.leaves(ref)))
            if not error <= TOLERANCE[case.dtype]:
                row["impls"][impl] = dict(status="FAIL", rel_err=error)
                log(f"FAIL {s.name} T={T} {impl}: rel err {error:.2e}")
                continue
            # R = 10, as the anchors were measured: one compilation of the chain (Mosaic GPU
            # kernels compile per call site, so a longer chain costs minutes).
            calls = 4 if grad else 10
            timing = harness.time_chained(fn, (x, prepared, *routing), calls=calls, max_calls=calls)
            kernel_us = harness.kernel_time(fn, (x, prepared, *routing))
        except Exception as e:  # an anchor that cannot compile this shape: record why
            row["impls"][impl] = dict(status="error", reason=f"{type(e).__name__}: {str(e)[:200]}")
            log(f"error {s.name} T={T} {impl}: {type(e).__name__}: {str(e)[:200]}")
            continue
        row["impls"][impl] = dict(status="ok", us=timing.us, kernel_us=kernel_us, calls=timing.calls,
                                  spread=timing.spread, rel_err=error, tflops=flops / timing.us / 1e6,
                                  weight_gbs=weight_bytes / timing.us / 1e3,
                                  roofline_pct=100 * row["floor_us"] / timing.us)
    timed = {k: v["us"] for k, v in row["impls"].items() if v["status"] == "ok"}
    ours = {k: v for k, v in timed.items() if k.startswith("jax_moe_")}
    anchors = {k: v for k, v in timed.items() if k in ANCHORS}
    if ours:
        best = min(ours.values())
        if "dense" in timed:
            row["speedup_vs_native"] = timed["dense"] / best
        if anchors:
            row["best_anchor"] = min(anchors, key=anchors.get)
            row["speedup_vs_best_anchor"] = anchors[row["best_anchor"]] / best
    log(f"{row['suite']} {s.name} {case.dtype.name} T={T}: " + ", ".join(f"{k} {v:.0f}us" for k, v in timed.items()))
    return row


# ----------------------------------------------------------------------------------------------
# Output


def fmt(value, digits=1):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def timing_cells(r: dict, speedup) -> str:
    """The router and permutation tables' shared cells: jax-moe and XLA, chained and kernel us, the
    speed-up, the floor."""
    return (f"{fmt(r.get('jax_moe_us'))} | {fmt(r.get('jax_moe_kernel_us'))} | {fmt(r.get('xla_us'))} | "
            f"{fmt(r.get('xla_kernel_us'))} | {fmt(speedup, 2)} | {fmt(r.get('floor_us'), 2)}")


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"# jax-moe benchmark, {meta['device']}, {meta['date']}", "",
             f"jax {meta['jax']}; ceilings measured in this run: {meta['matmul_tflops']:.3g} TFLOP/s "
             f"({meta['matmul_kind']}), {meta['copy_gbs']:.4g} GB/s copy (read + write)"
             + (f", {meta['matmul_f32_tflops']:.1f} TFLOP/s f32 matmul (the float32 rows' floor). "
                if meta.get("matmul_f32_tflops")
                else ". Float32 floors use the bf16 rate (f32 not measured). " if meta["platform"] == "gpu" else ". ") +
             "`us`: median per call of R chained calls in one jit (launch gaps and the chaining op included); "
             "`kernel`: CUPTI sum of one call's kernels.", ""]
    router = [r for r in rows if r["suite"] == "router"]
    if router:
        lines += ["## Router (topk_softmax)", "",
                  "| dtype | variant | E | k | T | jax-moe us | kernel us | XLA us | XLA kernel us | speed-up (kernel) | floor us | ids equal |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in router:
            speedup = (r["xla_kernel_us"] / r["jax_moe_kernel_us"]) if r.get("xla_kernel_us") and r.get("jax_moe_kernel_us") else (
                r["xla_us"] / r["jax_moe_us"] if r.get("xla_us") else None)
            lines.append(f"| {r['dtype']} | {r['variant']} | {r['E']} | {r['k']} | {r['T']} | {timing_cells(r, speedup)} | "
                         f"{r['ids_equal']} |")
        lines.append("")
    permutation_table = [r for r in rows if r["suite"] == "permutation"]
    if permutation_table:
        lines += ["## Permutation kernels (mosaic_gpu backend) against the XLA they replace", "",
                  "| op | shape | T | jax-moe us | kernel us | XLA us | XLA kernel us | speed-up (kernel) | floor us | equal |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in permutation_table:
            ours, theirs = r.get("jax_moe_kernel_us"), r.get("xla_kernel_us")
            speedup = theirs / ours if ours and theirs else None
            lines.append(f"| {r['op']} | {r['shape']} | {r['T']} | {timing_cells(r, speedup)} | {r['equal']} |")
        lines.append("")
    for suite, title in (("moe", "MoE forward (routing given)"),
                         ("moe-grad", "MoE forward + backward (routing given; d x, d weights, d topk_weights)")):
        moe = [r for r in rows if r["suite"] == suite]
        if not moe:
            continue
        impls = list(dict.fromkeys(k for r in moe for k in r["impls"]))
        lines += [f"## {title}", "",
                  "Cells: chained us (kernel us). Skipped: estimated too slow or unsupported; see the JSON.", "",
                  "| shape | dtype | T | " + " | ".join(impls) + " | floor us | best jax-moe % roofline | vs native | vs best anchor |",
                  "|---|---|---|" + "---|" * len(impls) + "---|---|---|---|"]
        for r in moe:
            cells = []
            for impl in impls:
                v = r["impls"].get(impl, {})
                if v.get("status") == "ok":
                    cells.append(f"{v['us']:.0f}" + (f" ({v['kernel_us']:.0f})" if v.get("kernel_us") else ""))
                else:
                    cells.append(v.get("status", ""))
            ours = [v for k, v in r["impls"].items() if k.startswith("jax_moe_") and v.get("status") == "ok"]
            best_pct = max((v["roofline_pct"] for v in ours), default=None)
            lines.append(f"| {r['shape']} | {r['dtype']} | {r['T']} | " + " | ".join(cells) +
                         f" | {r['floor_us']:.1f} | {fmt(best_pct)} | {fmt(r.get('speedup_vs_native'), 2)} | "
                         f"{fmt(r.get('speedup_vs_best_anchor'), 2)} {r.get('best_anchor', '')} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: pathlib.Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no plot")
        return
    moe = [r for r in rows if r["suite"] == "moe"]
    panels = sorted({(r["shape"], r["dtype"]) for r in moe})
    if not panels:
        return
    cols = min(3, len(panels))
    fig, axes = plt.subplots(math.ceil(len(panels) / cols), cols, figsize=(5 * cols, 4 * math.ceil(len(panels) / cols)),
                             squeeze=False)
    for ax, (shape, dtype) in zip(axes.flat, panels):
        sel = sorted((r for r in moe if (r["shape"], r["dtype"]) == (shape, dtype)), key=lambda r: r["T"])
        for impl in dict.fromkeys(k for r in sel for k in r["impls"]):
            pts = [(r["T"], r["impls"][impl]["us"]) for r in sel if r["impls"].get(impl, {}).get("status") == "ok"]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=impl)
        ax.plot([r["T"] for r in sel], [r["floor_us"] for r in sel], "k--", label="roofline floor")
        ax.set(xscale="log", yscale="log", xlabel="tokens T", ylabel="us per forward", title=f"{shape} {dtype}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


SEED_TOKENS = (32, 512, 8192, 32768)
MODEL_TOKENS = (1, 64, 512, 4096, 16384)
# Forward + backward rows of the "train" suite: (shape, T) on a GPU (bf16), seed shapes at T=32 (f32) on a CPU.
TRAIN_ROWS_GPU = {"qwen3_30b_a3b": (4096, 16384), "mixtral_8x7b": (4096,), "seed_nomic": (8192,), "seed_qwen3": (8192,)}
TRAIN_ROWS_CPU = {"seed_nomic": (32,), "seed_qwen3": (32,)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", default="router,permutation,seed,models,train",
                        help="comma list of router, permutation (the routing kernels, GPU), seed, models, "
                             "train (forward + backward)")
    parser.add_argument("--dtypes", default=None, help="comma list (default: all three on GPU, f32,bf16 on CPU)")
    parser.add_argument("--shapes", default=None, help="model shapes for the models suite (default: all); also filters the train suite")
    parser.add_argument("--tokens", default=None, help="comma list of T overriding the defaults")
    parser.add_argument("--max-estimated-ms", type=float, default=100.0 if GPU else 2000.0,
                        help="skip brute-force implementations estimated slower than this per call")
    parser.add_argument("--impls", default=None,
                        help="comma list of implementations to run (default: all), e.g. jax_moe_mosaic_gpu,tokamax_mosaic")
    parser.add_argument("--grad", action="store_true",
                        help="MoE rows time forward + backward (training) instead of the forward")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--tag", default="", help="suffix of the result file names")
    parser.add_argument("--render", default=None, metavar="JSON",
                        help="only rewrite the .md and .png of an earlier run's JSON (e.g. one cut short)")
    args = parser.parse_args(argv)
    if args.render:
        path = pathlib.Path(args.render)
        saved = json.loads(path.read_text())
        path.with_suffix(".md").write_text(markdown(saved["meta"], saved["rows"]))
        plot(saved["rows"], path.with_suffix(".png"))
        print(path.with_suffix(".md").read_text())
        return 0

    suites = args.suites.split(",")
    impls = set(args.impls.split(",")) if args.impls else None
    dtypes = args.dtypes.split(",") if args.dtypes else (["bfloat16", "float16", "float32"] if GPU else ["float32", "bfloat16"])
    log(f"device: {harness.device_name()} ({jax.default_backend()}), jax {jax.__version__}")
    ceilings = harness.measure_ceilings()
    log(f"ceilings: {ceilings.matmul_tflops:.1f} TFLOP/s matmul, {ceilings.copy_gbs:.0f} GB/s copy")

    date = datetime.date.today().isoformat()
    meta = dict(device=harness.device_name(), platform=jax.default_backend(), jax=jax.__version__, date=date,
                matmul_tflops=ceilings.matmul_tflops, copy_gbs=ceilings.copy_gbs,
                matmul_f32_tflops=ceilings.matmul_f32_tflops,
                matmul_kind="bf16 8192^3" if GPU else "f32 1024^3", argv=sys.argv[1:])
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{harness.card_slug()}-{date}{('-' + args.tag) if args.tag else ''}"
    rows: list[dict] = []

    def sink(row: dict) -> None:
        """Keeps every finished row on disk, so that a run cut short still leaves its results."""
        rows.append(row)
        stem.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1, default=float))

    if "router" in suites:
        router_rows(ceilings, dtypes, sink)
    if "permutation" in suites:
        permutation_rows(ceilings, sink)
    override = tuple(int(t) for t in args.tokens.split(",")) if args.tokens else None
    if "seed" in suites:
        seed_tokens = override or (SEED_TOKENS if GPU else (32, 128))
        moe_rows(ceilings, ["seed_nomic", "seed_qwen3"], {n: seed_tokens for n in SHAPES}, dtypes,
                 args.max_estimated_ms, sink, impls, args.grad)
    if "models" in suites:
        names = args.shapes.split(",") if args.shapes else ["qwen3_30b_a3b", "mixtral_8x7b", "olmoe", "deepseek_v3"]
        if not GPU:
            log("models suite skipped: model-size weights are GPU work")
        else:
            moe_rows(ceilings, names, {n: override or MODEL_TOKENS for n in names},
                     [d for d in dtypes if d != "float32"], args.max_estimated_ms, sink, impls, args.grad)

    if "train" in suites:
        train_rows = TRAIN_ROWS_GPU if GPU else TRAIN_ROWS_CPU
        if args.shapes:
            train_rows = {n: t for n, t in train_rows.items() if n in args.shapes.split(",")}
        train_dtypes = ["bfloat16"] if GPU else ["float32"]
        moe_rows(ceilings, list(train_rows), {n: override or train_rows[n] for n in train_rows}, train_dtypes,
                 args.max_estimated_ms, sink, impls, grad=True)

    table = markdown(meta, rows)
    stem.with_suffix(".md").write_text(table)
    plot(rows, stem.with_suffix(".png"))
    print(table)
    log(f"wrote {stem}.{{json,md,png}}")
    failures = [r for r in rows if r.get("status") == "FAIL" or any(v.get("status") == "FAIL" for v in r.get("impls", {}).values())]
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
