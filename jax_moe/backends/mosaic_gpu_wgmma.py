"""The product of a K block's first rows: `acc + a[:k_rows]^T @ b[:k_rows]` for a traced k_rows.

Mosaic GPU issues a 16-bit wgmma in whole swizzle widths of K (64 for a 128-byte swizzle: four
m64nNk16 instructions). Where only the first rows of a block's K hold data (an expert's last row
block in the weight-gradient contraction, whose K runs over the expert's rows), issuing only the
instructions that cover them skips the multiplications of the rest.

The product runs as inline Mosaic GPU code (`plgpu.inline_mgpu`): Mosaic GPU's wgmma on the whole
block, its instruction loop (`wgmma_m64`, one k16 instruction per 32 bytes of the swizzle width)
told a narrower width while it is emitted; one branch per count of instructions. The GPU
interpreter runs no inline code: there the same call is a dot of the rows' first k_rows.
That hook is a private detail of jax 0.11 (tests/test_mosaic_gpu.py checks it is where this
module expects it); where it went missing the blocks would be multiplied whole, which is still
exact since the rows past an expert's end are zeroed before the product.
"""

from __future__ import annotations

import contextlib
import sys

import jax.numpy as jnp
from jax import lax
from jax._src.lib.mlir.dialects import llvm
from jax._src.lib.mlir import ir
from jax.experimental.mosaic import gpu as mgpu
from jax.experimental.pallas import mosaic_gpu as plgpu

K_INSTRUCTION_BYTES = 32  # K of one wgmma instruction times its operands' bytes (k16 for 16-bit types)
SWIZZLE = 128  # bytes: the operands' swizzle, one K group of Mosaic GPU's wgmma
GROUP_ROWS = 16  # K rows of one instruction (16-bit operands)
# The SMEM blocks' layout: (8, 64) tiles of 16-bit elements, 128-byte swizzle (mosaic_gpu.tiled_swizzled).
BLOCK_TRANSFORMS = (plgpu.TilingTransform((8, SWIZZLE // 2)), plgpu.SwizzleTransform(SWIZZLE))


def supports(dtype, block_k: int) -> bool:
    """Whether blocks of block_k rows of dtype are one K group of 16-bit instructions."""
    return jnp.dtype(dtype).itemsize == 2 and block_k * 2 == SWIZZLE


@contextlib.contextmanager
def _instructions_per_group(count: int):
    """Mosaic GPU's wgmma issues `count` k-instructions per swizzle group while this is active."""
    module = sys.modules[mgpu.wgmma.__module__]
    issue = module.wgmma_m64

    def narrowed(*args, swizzle, **kwargs):
        del swizzle  # there it sets only the instruction count: the descriptors are built already
        return issue(*args, swizzle=count * K_INSTRUCTION_BYTES, **kwargs)

    module.wgmma_m64 = narrowed
    try:
        yield
    finally:
        module.wgmma_m64 = issue


def _asm(text: str) -> None:
    llvm.inline_asm(ir.Type.parse("!llvm.void"), [], text, "", has_side_effects=True)


def _leading_rows_product(acc, lhs_ref, rhs_ref, groups: int):
    """acc + lhs_ref[:rows]^T @ rhs_ref[:rows], rows = groups * GROUP_ROWS (static): compiled only."""
    @plgpu.inline_mgpu(arg_types=(plgpu.Layout.WGMMA, plgpu.RefType(BLOCK_TRANSFORMS), plgpu.RefType(BLOCK_TRANSFORMS)),
                       return_type=plgpu.ShapeDtypeStruct(acc.shape, jnp.float32, layout=plgpu.Layout.WGMMA))
    def product(ctx, acc_registers, lhs_mem, rhs_mem):
        del ctx
        accumulator = mgpu.WGMMAAccumulator.from_registers(acc_registers)
        with _instructions_per_group(groups):
            # The lhs transposed as plgpu.wgmma takes a transposed ref: tiles and their elements.
            result = mgpu.wgmma(accumulator, mgpu.memref_transpose(lhs_mem, (1, 0, 3, 2)), rhs_mem, swizzle=SWIZZLE)
        _asm("wgmma.commit_group.sync.aligned;")
        _asm("wgmma.wait_group.sync.aligned 0;")
        return result.value

    return product(acc, lhs_ref, rhs_ref)


def add_leading_rows_product(acc, lhs_ref, rhs_ref, rows, interpret: bool):
    """acc + lhs_ref[:k]^T @ rhs_ref[:k] (synchronous), k = rows rounded up to a multiple of 16.

    acc f32 [M, N] (WGMMA layout); lhs_ref [64, M] and rhs_ref [64, N]: 16-bit SMEM blocks in
    BLOCK_TRANSFORMS' layout (M, N multiples of 64); rows traced, in [1, 64]. Rows rows..k of the
    blocks are multiplied too: they must hold zeros (in both, or zeros in one and finite values in
    the other)."""
    if not supports(lhs_ref.dtype, lhs_ref.shape[0]) or rhs_ref.shape[0] != lhs_ref.shape[0]:
        raise ValueError(f"blocks of {SWIZZLE // 2} rows of a 16-bit dtype expected, got {lhs_ref.shape} "
                         f"{lhs_ref.dtype} and {rhs_ref.shape} {rhs_ref.dtype}")
    if interpret:  # the same product, the rows from k on left out
        k = (rows + GROUP_ROWS - 1) // GROUP_ROWS * GROUP_ROWS
        lhs, rhs = (ref[...].astype(jnp.float32) for ref in (lhs_ref, rhs_ref))
        plgpu.commit_smem()  # these generic-proxy reads come before the TMA's next writes to the blocks
        lhs = jnp.where(lax.broadcasted_iota(jnp.int32, lhs.shape, 0) < k, lhs, 0.0)
        return acc + jnp.dot(lhs.T, rhs, precision=lax.Precision.HIGHEST)
    branches = [lambda acc, groups=groups: _leading_rows_product(acc, lhs_ref, rhs_ref, groups)
                for groups in range(1, lhs_ref.shape[0] // GROUP_ROWS + 1)]
    return lax.switch((rows - 1) // GROUP_ROWS, branches, acc)
