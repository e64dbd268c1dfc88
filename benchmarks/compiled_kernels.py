"""The kernels XLA launches for a forward or a training step, compiled for an H100 without a GPU.

XLA's deviceless compile (jax's compile-only CUDA topology, benchmarks/h100_target_config.txtpb)
runs the same fusion passes as on the device, so the optimized HLO's launching ops are the ones
kernel_times lists on the H100 (27 in main's step at session 33: the same count, the same fusions).
It says which XLA kernels a change adds or removes, not what they cost. Needs jax's CUDA plugin:
scripts/download-cuda-plugin once, then

    scripts/compiled-kernels --grad qwen3_30b_a3b:4096
    scripts/compiled-kernels --hlo out/hlo qwen3_30b_a3b:512

(the script sets JAX_PLATFORMS=cpu and puts .cuda-plugin on the path). The Mosaic GPU kernels take
H100_SMS persistent CTAs, as on the card.
"""

from __future__ import annotations

import argparse
import pathlib
import re

import jax
import jax.numpy as jnp

import jax_moe
from benchmarks.run import with_gradient
from jax_moe.backends import mosaic_gpu
from jax_moe.moe import describe
from jax_moe.shapes import SHAPES

H100_SMS = 132
TARGET_CONFIG = pathlib.Path(__file__).with_name("h100_target_config.txtpb")
# Entry ops that launch nothing.
_NO_LAUNCH = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant", "opt-barrier"}


def compile_only_sharding() -> jax.sharding.Sharding:
    """A one-device sharding on a compile-only H100 (no GPU needed)."""
    from jax.experimental import topologies

    try:
        topology = topologies.get_topology_desc(platform="cuda", topology="1x1x1",
                                                target_config=TARGET_CONFIG.read_text())
    except (RuntimeError, NotImplementedError) as error:
        raise SystemExit(f"no compile-only CUDA topology ({error}); run scripts/download-cuda-plugin and use "
                         "scripts/compiled-kernels") from error
    mesh = topologies.make_mesh(topology, (1,), ("x",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def compiled_step(name: str, tokens: int, dtype, grad: bool, sharding) -> str:
    """Optimized HLO of kernel_times' forward or training step (benchmarks.run.with_gradient) on
    abstract inputs: x [T, H], the weights, topk_weights f32 [T, k], topk_ids int32 [T, k] and,
    with grad, the cotangent f32 [T, H]."""
    s = SHAPES[name]
    H, I, E, k = s.hidden, s.intermediate, s.experts, s.top_k
    arg = lambda shape, dt: jax.ShapeDtypeStruct(shape, dt, sharding=sharding)
    x, gate, up = arg((tokens, H), dtype), arg((E, H, I), dtype), arg((E, H, I), dtype)
    down = arg((E, I, H), dtype) if s.moe_type == "qwen3" else None
    topk_weights, topk_ids = arg((tokens, k), jnp.float32), arg((tokens, k), jnp.int32)
    problem, weights = describe(x, gate, up, down, topk_weights, topk_ids, moe_type=s.moe_type,
                                activation=s.activation)
    layer = lambda xx, w, tw, ids: jax_moe.moe._run("mosaic_gpu", problem, xx, w, tw, ids)
    args = (x, weights, topk_weights, topk_ids)
    if grad:
        layer, args = with_gradient(layer), (*args, arg((tokens, H), jnp.float32))
    lowered = jax.jit(layer).trace(*args).lower(lowering_platforms=("cuda",))
    return lowered.compile().as_text()


def launching_ops(hlo: str) -> list[tuple[str, str, str]]:
    """(opcode, name, result type) of each op of the entry computation that launches work, in
    execution order (a custom call may launch several kernels: the FFI layout launches two)."""
    ops = []
    for line in hlo[hlo.index("\nENTRY"):].splitlines()[2:]:
        match = re.match(r"\s*(?:ROOT )?%(\S+) = (.+?) ([a-z-]+)\(", line)
        if match and match[3] not in _NO_LAUNCH:
            kind = re.search(r'custom_call_target="([^"]+)"|kind=(\w+)', line)
            kernel = re.search(r'op_name="[^"]*/(jax_moe_\w+)/mpmd_map"', line)  # a Pallas kernel's name
            ops.append((match[3] + (f" {kind[1] or kind[2]}" if kind else ""), kernel[1] if kernel else match[1],
                        match[2]))
    return ops


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="+", help="shape:T, e.g. qwen3_30b_a3b:4096")
    parser.add_argument("--grad", action="store_true", help="a training step instead of the forward")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    parser.add_argument("--hlo", metavar="DIR", help="also write each case's optimized HLO here")
    args = parser.parse_args(argv)
    mosaic_gpu.num_sms = lambda interpret: H100_SMS  # the kernels' grid: no device to ask
    sharding = compile_only_sharding()
    for spec in args.cases:
        name, _, tokens = spec.partition(":")
        hlo = compiled_step(name, int(tokens), jnp.dtype(args.dtype), args.grad, sharding)
        if args.hlo:
            path = pathlib.Path(args.hlo) / f"{'grad' if args.grad else 'fwd'}-{name}-{tokens}.hlo.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(hlo)
        ops = launching_ops(hlo)
        print(f"== {'training step' if args.grad else 'forward'} {name} T={tokens} {args.dtype}, compiled for an "
              f"H100: {len(ops)} launching ops", flush=True)
        for op, op_name, result in ops:
            print(f"   {op:38s} {op_name:34s} {result[:70]}")


if __name__ == "__main__":
    main()
