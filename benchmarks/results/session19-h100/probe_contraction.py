"""What-if probe (session 19): how much of expert_contraction's time goes to masking the boundary
blocks and to the epilogue. Variants of the kernel are built from patched copies of
mosaic_gpu_grad's source; only `base` is correct (the others are timings of broken kernels, to
bound what removing each part could give). CUPTI kernel time, Qwen3-30B-A3B T=4096 training layout.
"""
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.mosaic.gpu import profiler

import jax_moe.backends.mosaic_gpu_grad as grad_module
from jax_moe.permutation import align_to_tiles, row_count
from jax_moe.shapes import SHAPES

SOURCE = open(grad_module.__file__).read()
MASK = "pl.when(((k == 0) & masked_first) | ((k == nb - 1) & masked_last))(lambda: mask_block(slot, k))"
STORE = "for_rhs(a, lambda i, c=c, buffer=buffer: plgpu.copy_smem_to_gmem("
SMEM_WRITE = "buffer[...] = acc[:, c:c + staged_cols]"
assert SOURCE.count(MASK) == 1 and SOURCE.count(STORE) == 1 and SOURCE.count(SMEM_WRITE) == 1


def variant(name, patches):
    src = SOURCE
    for old, new in patches:
        src = src.replace(old, new)
    module = types.ModuleType(f"probe_{name}")
    module.__dict__["__file__"] = grad_module.__file__
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(src, f"probe_{name}", "exec"), module.__dict__)
    return module


no_store = (STORE, "(lambda *_: None)(a, lambda i, c=c, buffer=buffer: (")
VARIANTS = {
    "base": [],
    "no_mask": [(MASK, "pass")],
    "no_store": [no_store],
    "no_epilogue": [no_store, (SMEM_WRITE, "pass"), ("plgpu.wait_smem_to_gmem(buffers - 1, wait_read_only=True)", "pass")],
    "no_mask_no_epilogue": [(MASK, "pass"), no_store, (SMEM_WRITE, "pass"),
                            ("plgpu.wait_smem_to_gmem(buffers - 1, wait_read_only=True)", "pass")],
}

s = SHAPES["qwen3_30b_a3b"]
T, E, H, I = 4096, s.experts, s.hidden, s.intermediate
key = jax.random.split(jax.random.key(0), 4)
_, ids = jax.lax.top_k(jax.random.normal(key[0], (T, E)), s.top_k)
layout = align_to_tiles(ids, jnp.ones(ids.shape, jnp.float32), E, 64, aligned_experts=True)
rows = row_count(T, s.top_k, 64, aligned_experts=E)
xs = jax.random.normal(key[1], (rows, H), jnp.bfloat16)
dg = jax.random.normal(key[2], (rows, I), jnp.bfloat16)
du = jax.random.normal(key[3], (rows, I), jnp.bfloat16)
cases = {"gate_up": (xs, [dg, du]), "down": (dg, [xs])}
for vname, patches in VARIANTS.items():
    module = variant(vname, patches)
    cfg = module.ContractionConfig(128, 256, 64, 4, consumers=2, staging_chunks=1, cooperative=True)
    for cname, (lhs, rhs) in cases.items():
        fn = jax.jit(lambda lhs, rhs: module.expert_contraction(layout, lhs, rhs, cfg, jnp.bfloat16))
        times = []
        for _ in range(2):
            _, t = profiler.measure(fn, iterations=5)(lhs, rhs)
            times.append(float(np.median(t)) * 1e3)
        print(f"{vname:22s} {cname:8s} {times[0]:8.1f} {times[1]:8.1f} us", flush=True)
