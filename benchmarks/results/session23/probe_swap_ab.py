"""Session 23 (CPU only): can a grouped GEMM multiply a partial tile's r valid rows with N = r instead
of M = 64 ("swap AB": out^T [C, r] = W^T [C, K] @ x^T [K, r], the rows as the wgmma's N)?

One wgmma of acc (64, R) f32, A = a [K, 64] weight block transposed, B = the first R rows of a
[64, K] row block (a ring slot) transposed, for R = 8, 16, 32, 48; the [64, R] result, cast to
bf16, stored through a transposed view of an [R, 64] staging buffer with grouped_gemm's row-granular
output tiling, then to global memory: lowered for CUDA (layout inference, descriptors) and run in
the GPU interpreter against numpy. (A transpose of the registers, `v.T`, does not lower: Pallas
has no transpose rule in Warpgroup semantics.) Then what down_backward would need: its g, u tile
operands read transposed, a [R, 64] tile loaded through a transposed view (the ring's and the
staging's SMEM tilings) and summed along axis 0 (the row sums). Run from the repository root:
PYTHONPATH=. python benchmarks/results/session23/probe_swap_ab.py
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from jax_moe.backends.mosaic_gpu import interpret_params, tiled_swizzled

K, C = 64, 64  # the k-block, and the weight columns of one wgmma (its M)


def swapped_product(rows: int, interpret: bool):
    def body(w_ref, x_ref, out_ref, w_smem, x_smem, staging, loaded):
        plgpu.copy_gmem_to_smem(w_ref, w_smem, loaded.at[0])
        plgpu.copy_gmem_to_smem(x_ref, x_smem.at[pl.ds(0, rows)], loaded.at[0])
        plgpu.barrier_wait(loaded.at[0])

        def multiply(acc):
            plgpu.wgmma(acc, w_smem.transpose((1, 0)), x_smem.at[pl.ds(0, rows)].transpose((1, 0)))
            return acc[...]

        transposed = pl.run_scoped(multiply, plgpu.ACC((C, rows), jnp.float32)).astype(jnp.bfloat16)
        staging.transpose((1, 0))[...] = transposed
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(staging, out_ref)
        plgpu.wait_smem_to_gmem(0)

    return plgpu.kernel(
        body, out_type=jax.ShapeDtypeStruct((rows, C), jnp.bfloat16),
        scratch_types=[plgpu.SMEM((K, C), jnp.bfloat16, transforms=tiled_swizzled((K, C), jnp.bfloat16)),
                       plgpu.SMEM((64, K), jnp.bfloat16, transforms=tiled_swizzled((64, K), jnp.bfloat16)),
                       # grouped_gemm's output staging: row-granular tiling, so stores can start at any row
                       plgpu.SMEM((rows, C), jnp.bfloat16,
                                  transforms=(plgpu.TilingTransform((1, 64)), plgpu.SwizzleTransform(128))),
                       plgpu.Barrier(num_arrivals=2, num_barriers=1)],
        grid=(1,), grid_names=("sm",), num_threads=1, thread_name="wg", interpret=interpret_params(interpret))


def transposed_tile_row_sums(rows: int, interpret: bool, tiling):
    def body(tile_ref, out_ref, tile_smem, loaded):
        plgpu.copy_gmem_to_smem(tile_ref, tile_smem.at[pl.ds(0, rows)], loaded.at[0])
        plgpu.barrier_wait(loaded.at[0])
        transposed = plgpu.load(tile_smem.at[pl.ds(0, rows)].transpose((1, 0)), layout=plgpu.Layout.WGMMA)
        out_ref[...] = jnp.sum(transposed.astype(jnp.float32), axis=0)  # [rows]

    return plgpu.kernel(
        body, out_type=jax.ShapeDtypeStruct((rows,), jnp.float32),
        scratch_types=[plgpu.SMEM((64, C), jnp.bfloat16, transforms=tiling), plgpu.Barrier(num_arrivals=1, num_barriers=1)],
        grid=(1,), grid_names=("sm",), num_threads=1, thread_name="wg", interpret=interpret_params(interpret))


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    for rows in (8, 16, 32, 48):
        w = jnp.asarray(rng.normal(size=(K, C)), jnp.bfloat16)
        x = jnp.asarray(rng.normal(size=(rows, K)), jnp.bfloat16)
        lowered = jax.jit(swapped_product(rows, False)).trace(w, x).lower(lowering_platforms=("cuda",))
        assert "mosaic_gpu" in lowered.as_text()
        got = np.asarray(swapped_product(rows, True)(w, x), np.float32)
        want = np.asarray(x, np.float32) @ np.asarray(w, np.float32)
        error = np.abs(got - want).max() / np.abs(want).max()
        print(f"rows {rows}: lowered for CUDA; interpret max error {error:.1e} of the largest value (bf16 output)")
        assert error < 2 ** -7
    for name, tiling in (("ring", tiled_swizzled((64, C), jnp.bfloat16)),
                         ("staging", (plgpu.TilingTransform((1, 64)), plgpu.SwizzleTransform(128)))):
        for rows in (16, 48):
            tile = jnp.asarray(rng.normal(size=(rows, C)), jnp.bfloat16)
            jax.jit(transposed_tile_row_sums(rows, False, tiling)).trace(tile).lower(lowering_platforms=("cuda",))
            got = np.asarray(transposed_tile_row_sums(rows, True, tiling)(tile))
            want = np.asarray(tile, np.float32).sum(axis=1)
            print(f"{name} tiling, rows {rows}: transposed load lowered for CUDA; interpret max |error| "
                  f"{np.abs(got - want).max():.1e}")
            assert np.allclose(got, want, atol=1e-3)
