"""Profile one MoE layer configuration: ``python -m jax_moe.profile --shape qwen3_30b_a3b --tokens 4096``.

The JAX counterpart of the seed crate's profile binary. It routes random logits with topk_softmax,
runs fused_moe a few times under ``jax.profiler.trace`` and prints where the trace went (open it
with TensorBoard's profile plugin, XProf or Perfetto). ``--grad`` profiles a training step instead
(value_and_grad of the layer w.r.t. x, the router and the expert weights); ``--kernels`` also
prints each GPU kernel's CUPTI time in one call.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp

import jax_moe
from jax_moe import backends
from jax_moe.shapes import SHAPES


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="qwen3_30b_a3b", choices=sorted(SHAPES))
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--backend", default="auto", choices=["auto", *backends.names()])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--grad", action="store_true", help="profile forward + backward (a training step)")
    parser.add_argument("--kernels", action="store_true", help="print each kernel's CUPTI time (GPU)")
    parser.add_argument("--trace-dir", default="/tmp/jax-moe-trace")
    args = parser.parse_args(argv)

    shape, T, dtype = SHAPES[args.shape], args.tokens, jnp.dtype(args.dtype)
    H, I, E, k = shape.hidden, shape.intermediate, shape.experts, shape.top_k
    key = jax.random.split(jax.random.key(0), 6)
    x = jax.random.normal(key[0], (T, H), dtype)
    gate = (jax.random.normal(key[1], (E, H, I)) * H**-0.5).astype(dtype)
    up = (jax.random.normal(key[2], (E, H, I)) * H**-0.5).astype(dtype)
    down = (jax.random.normal(key[3], (E, I, H)) * I**-0.5).astype(dtype) if shape.moe_type == "qwen3" else None
    router = jax.random.normal(key[4], (H, E), dtype) * H**-0.5

    def layer(x, router, gate, up, down):
        weights, ids, _ = jax_moe.topk_softmax(x @ router, k, renormalize=True)
        return jax_moe.fused_moe(x, gate, up, down, weights, ids, moe_type=shape.moe_type,
                                 activation=shape.activation, backend=args.backend)

    if args.grad:
        loss = lambda *a: jnp.mean(layer(*a).astype(jnp.float32) ** 2)
        step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4)))
    else:
        step = jax.jit(layer)
    params = (x, router, gate, up, down)
    jax.block_until_ready(step(*params))  # compile outside the trace
    if args.kernels:  # before the trace: the two would share CUPTI, which drops activity records
        print_kernel_times(step, params)
    trace_dir = pathlib.Path(args.trace_dir)
    with jax.profiler.trace(str(trace_dir)):
        start = time.perf_counter()
        for _ in range(args.steps):
            out = step(*params)
        jax.block_until_ready(out)
        elapsed = (time.perf_counter() - start) / args.steps
    what = "forward + backward" if args.grad else "forward"
    print(f"{args.shape} T={T} {dtype.name} backend={args.backend} on {jax.devices()[0].device_kind}: "
          f"{elapsed * 1e6:.0f} us per layer {what} (wall, router included); trace in {trace_dir}")


def print_kernel_times(fn, args) -> None:
    """Each kernel's CUPTI time in one call of fn, largest first (GPU only)."""
    if jax.default_backend() != "gpu":
        print("--kernels: no GPU here")
        return
    from jax.experimental.mosaic.gpu import profiler

    _, kernels = profiler.measure(fn, aggregate=False)(*args)
    totals: dict[str, list[float]] = {}
    for name, ms in kernels:
        totals.setdefault(name, []).append(ms * 1e3)
    print(f"{sum(map(sum, totals.values())):.1f} us in {sum(map(len, totals.values()))} kernels")
    for name, times in sorted(totals.items(), key=lambda item: -sum(item[1])):
        print(f"{sum(times):9.1f} us  x{len(times)}  {name[:100]}")


if __name__ == "__main__":
    main()
