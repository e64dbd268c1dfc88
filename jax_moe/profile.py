"""Profile one MoE layer configuration: ``python -m jax_moe.profile --shape qwen3_30b_a3b --tokens 4096``.

The JAX counterpart of the seed crate's profile binary. It routes random logits with topk_softmax,
runs fused_moe a few times under ``jax.profiler.trace`` and prints where the trace went (open it
with TensorBoard's profile plugin, XProf or Perfetto).
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

    @jax.jit
    def layer(x):
        weights, ids, _ = jax_moe.topk_softmax(x @ router, k, renormalize=True)
        return jax_moe.fused_moe(x, gate, up, down, weights, ids, moe_type=shape.moe_type,
                                 activation=shape.activation, backend=args.backend)

    jax.block_until_ready(layer(x))  # compile outside the trace
    trace_dir = pathlib.Path(args.trace_dir)
    with jax.profiler.trace(str(trace_dir)):
        start = time.perf_counter()
        for _ in range(args.steps):
            x_out = layer(x)
        jax.block_until_ready(x_out)
        elapsed = (time.perf_counter() - start) / args.steps
    print(f"{args.shape} T={T} {dtype.name} backend={args.backend} on {jax.devices()[0].device_kind}: "
          f"{elapsed * 1e6:.0f} us per layer (wall, router included); trace in {trace_dir}")


if __name__ == "__main__":
    main()
