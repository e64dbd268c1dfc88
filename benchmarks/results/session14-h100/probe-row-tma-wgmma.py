"""Probe (session 14, CPU only): rows gathered by 1-row TMA into a (1, 64)-tiled, 128-byte-swizzled
SMEM tile, then wgmma on that tile. Interpret mode: exact (the interpreter drops layout transforms).
Lowering for CUDA: fails in Mosaic's layout inference (wgmma wants the (8, 64) tiling), so a fused
gather needs a second, (8, 64)-tiled view of the same bytes (see NOTES, session 14).
PYTHONPATH=. python THIS [lower]
"""
import sys
import numpy as np
import jax, jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu
from jax._src.pallas import core as pallas_core
from jax._src.pallas.mosaic_gpu import core as gpu_core
from jax_moe.backends.mosaic_gpu import tiled_swizzled

R, C, N, T = 64, 64, 64, 128  # gathered rows, K, output columns, tokens


def kernel_fn(interpret):
    def body(x_ref, rows_ref, w_ref, o_ref, raw, w_smem, o_smem, row_bar, w_bar):
        plgpu.copy_gmem_to_smem(w_ref, w_smem, w_bar)

        @pl.loop(0, R)
        def _(r):
            plgpu.copy_gmem_to_smem(x_ref.at[pl.ds(rows_ref[r], 1), :],
                                    raw.at[pl.ds(r, 1), :], row_bar)

        plgpu.barrier_wait(row_bar)
        plgpu.barrier_wait(w_bar)
        lhs = raw

        def acc_fn(acc):
            plgpu.wgmma(acc, lhs, w_smem)
            plgpu.wgmma_wait(0)
            return acc[...]

        o_smem[...] = pl.run_scoped(acc_fn, plgpu.ACC((R, N), jnp.float32))
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(o_smem, o_ref)
        plgpu.wait_smem_to_gmem(0)

    sw = lambda shape: (plgpu.TilingTransform((8, 64)), plgpu.SwizzleTransform(128))
    return plgpu.kernel(
        body, out_type=jax.ShapeDtypeStruct((R, N), jnp.float32),
        scratch_types=[plgpu.SMEM((R, C), jnp.bfloat16, transforms=(plgpu.TilingTransform((1, 64)), plgpu.SwizzleTransform(128))),
                       plgpu.SMEM((C, N), jnp.bfloat16, transforms=sw((C, N))),
                       plgpu.SMEM((R, N), jnp.float32, transforms=tiled_swizzled((R, N), jnp.float32)),
                       plgpu.Barrier(num_arrivals=R), plgpu.Barrier(num_arrivals=1)],
        interpret=plgpu.InterpretGPUParams(detect_races=False) if interpret else False)


rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(T, C)), jnp.bfloat16)
rows = jnp.asarray(rng.integers(0, T, R), jnp.int32)
w = jnp.asarray(rng.normal(size=(C, N)), jnp.bfloat16)
want = np.asarray(x, np.float32)[np.asarray(rows)] @ np.asarray(w, np.float32)
if "lower" in sys.argv:
    text = jax.jit(kernel_fn(False)).trace(x, rows, w).lower(lowering_platforms=("cuda",)).as_text()
    print("lowered for CUDA:", text.count("mosaic_gpu"), "mosaic_gpu mentions")
else:
    got = np.asarray(jax.jit(kernel_fn(True))(x, rows, w))
    print("max abs err", np.abs(got - want).max())
