"""Where jax-moe's time goes: each GPU kernel's CUPTI time in fused_moe's forward (routing given as
arguments) or in a training step (`benchmarks.run --grad`'s value_and_grad), per shape: the median
over N calls of the kernels' sum, and each kernel's time in the median call. The output (forward) or
d x and d topk_weights (training step) are checked against the reference before anything is timed.

    python -m benchmarks.kernel_times qwen3_30b_a3b:4096 seed_qwen3:512
    python -m benchmarks.kernel_times --grad --calls 9 qwen3_30b_a3b:4096
    python -m benchmarks.kernel_times --grad --backward-config down.block_n=192 qwen3_30b_a3b:4096

A/B of checkouts (and of such config overrides) on one GPU: scripts/gpu-ab.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import statistics

import jax
import jax.numpy as jnp

import jax_moe
from benchmarks.run import MoECase, checked_values, reference_layer, routing_arguments, with_gradient
from jax_moe.moe import describe
from jax_moe.shapes import SHAPES
from jax_moe.testing import TOLERANCE, relative_error


def checked_step(case: MoECase, backend: str, grad: bool):
    """(jitted fn, its arguments) for the case, after checking fn's result against the reference."""
    s = case.shape
    x, gate, up, down, topk_weights, topk_ids = case.inputs()
    problem, weights = describe(x, gate, up, down, topk_weights, topk_ids, moe_type=s.moe_type,
                                activation=s.activation)
    layer = lambda xx, w, tw, ids: jax_moe.moe._run(backend, problem, xx, w, tw, ids)
    reference_fn = reference_layer(s)
    if grad:
        layer, reference_fn = with_gradient(layer), with_gradient(reference_fn)
    args = (x, weights, *routing_arguments(x, topk_weights, topk_ids, grad))
    fn = jax.jit(layer)
    got, want = (jax.tree.leaves(checked_values(f(*args), grad)) for f in (fn, jax.jit(reference_fn)))
    error = max(relative_error(g, w) for g, w in zip(got, want))
    if not error <= TOLERANCE[case.dtype]:
        raise AssertionError(f"{s.name} T={case.tokens} {backend}: relative error {error:.2e} against the reference")
    return fn, args


def kernel_breakdown(fn, args, calls: int) -> dict:
    """CUPTI times of `calls` calls of fn(*args): total_us (median, min, max of the calls' kernel sums)
    and kernels_us {kernel name: summed us} of the median call."""
    from jax.experimental.mosaic.gpu import profiler

    _, per_call = profiler.measure(fn, aggregate=False, iterations=calls)(*args)
    per_call = per_call if calls > 1 else [per_call]
    sums = [sum(ms for _, ms in kernels) * 1e3 for kernels in per_call]
    median_call = per_call[sums.index(sorted(sums)[len(sums) // 2])]
    kernels: dict[str, float] = {}
    for name, ms in median_call:
        kernels[name] = kernels.get(name, 0.0) + ms * 1e3
    return dict(total_us=(statistics.median(sums), min(sums), max(sums)), launches=len(median_call),
                kernels_us=dict(sorted(kernels.items(), key=lambda item: -item[1])))


def override_backward_configs(settings: list[str]) -> None:
    """Makes mosaic_gpu_grad.choose_backward_configs return its tilings with settings applied, each
    KERNEL.FIELD=INT (KERNEL: a BackwardConfigs field, e.g. down.block_n=192): an A/B of one config
    without editing the code."""
    from jax_moe.backends import mosaic_gpu_grad

    choose = mosaic_gpu_grad.choose_backward_configs
    parsed = []
    for setting in settings:
        target, _, value = setting.partition("=")
        kernel, _, field = target.partition(".")
        parsed.append((kernel, field, int(value)))

    def overridden(problem, block_m):
        cfgs = choose(problem, block_m)
        for kernel, field, value in parsed:
            cfgs = dataclasses.replace(cfgs, **{kernel: dataclasses.replace(getattr(cfgs, kernel), **{field: value})})
        return cfgs

    mosaic_gpu_grad.choose_backward_configs = overridden


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="+", help="shape:T, e.g. qwen3_30b_a3b:4096")
    parser.add_argument("--grad", action="store_true", help="a training step instead of the forward")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--backend", default="mosaic_gpu")
    parser.add_argument("--calls", type=int, default=9)
    parser.add_argument("--hlo", metavar="DIR", help="also write each case's optimized HLO (the fusions timed) here")
    parser.add_argument("--backward-config", action="append", default=[], metavar="KERNEL.FIELD=INT",
                        help="override one backward tiling field, e.g. down.block_n=192 (repeatable)")
    args = parser.parse_args(argv)
    if jax.default_backend() != "gpu":
        parser.error("CUPTI kernel times need a GPU")
    if args.backward_config:
        override_backward_configs(args.backward_config)
        print(f"## backward configs overridden: {' '.join(args.backward_config)}", flush=True)
    for spec in args.cases:
        name, _, tokens = spec.partition(":")
        case = MoECase(SHAPES[name], int(tokens), jnp.dtype(args.dtype))
        fn, fn_args = checked_step(case, args.backend, args.grad)
        if args.hlo:
            path = pathlib.Path(args.hlo) / f"{'grad' if args.grad else 'fwd'}-{name}-{case.tokens}.hlo.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(fn.lower(*fn_args).compile().as_text())
        result = kernel_breakdown(fn, fn_args, args.calls)
        median, low, high = result["total_us"]
        print(f"== {'training step' if args.grad else 'forward'} {name} T={case.tokens} {args.dtype} {args.backend}: "
              f"{median:.1f} us median (min {low:.1f}, max {high:.1f}) in {result['launches']} kernels", flush=True)
        for kernel, us in result["kernels_us"].items():
            print(f"   {us:9.1f} us  {kernel[:100]}", flush=True)


if __name__ == "__main__":
    main()
