"""Probe (session 14, CPU only): 1-row TMA copies into a (1, 64)-tiled, 128-byte-swizzled SMEM tile, then one TMA store.
Lowers for CUDA on the CPU and is exact in interpret mode; never run on a GPU. PYTHONPATH=. python THIS [lower]"""
import sys
import numpy as np
import jax, jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu
R, C, T = 64, 64, 128

def kernel_fn(interpret):
    def body(x_ref, rows_ref, o_ref, raw, row_bar):
        @pl.loop(0, R)
        def _(r):
            plgpu.copy_gmem_to_smem(x_ref.at[pl.ds(rows_ref[r], 1), :], raw.at[pl.ds(r, 1), :], row_bar)
        plgpu.barrier_wait(row_bar)
        plgpu.copy_smem_to_gmem(raw, o_ref)
        plgpu.wait_smem_to_gmem(0)
    return plgpu.kernel(body, out_type=jax.ShapeDtypeStruct((R, C), jnp.bfloat16),
        scratch_types=[plgpu.SMEM((R, C), jnp.bfloat16, transforms=(plgpu.TilingTransform((1, 64)), plgpu.SwizzleTransform(128))),
                       plgpu.Barrier(num_arrivals=R)],
        interpret=plgpu.InterpretGPUParams() if interpret else False)

rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(T, C)), jnp.bfloat16)
rows = jnp.asarray(rng.integers(0, T, R), jnp.int32)
if "lower" in sys.argv:
    text = jax.jit(kernel_fn(False)).trace(x, rows).lower(lowering_platforms=("cuda",)).as_text()
    print("lowered for CUDA")
else:
    print("equal:", np.array_equal(np.asarray(jax.jit(kernel_fn(True))(x, rows)), np.asarray(x)[np.asarray(rows)]))
