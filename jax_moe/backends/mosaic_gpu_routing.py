"""The mosaic_gpu backend's routing kernel: rows ranked by expert on the tensor cores, no sort.

For the flattened routing table (n = T*k rows, each with its expert, or E when out of range),
one CTA per CHUNK consecutive rows builds the rows' one-hot matrix O [CHUNK, columns] in SMEM,
BLOCK columns at a time, and multiplies the strictly lower-triangular ones matrix by it (wgmma,
bf16 0/1 inputs, exact fp32 sums): (L O)[i, e] counts the rows before i in the chunk whose expert
is e, so row i's rank within its chunk and expert is (L O)[i, e_i], and O's column sums are the
chunk's expert counts. XLA then adds the counts of the earlier chunks and of the experts before
e (two small prefix sums): jax_moe.permutation.sort_by_expert's stable sort, the same result, with
one kernel instead of XLA's radix sort.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from jax_moe.backends.mosaic_gpu import interpret_params, tiled_swizzled
from jax_moe import _ffi
from jax_moe.permutation import SortedRows, TileLayout, flat_experts, row_count, tile_count

CHUNK = 64  # rows per CTA: one wgmma M-tile, and the K of the triangular product
BLOCK = 64  # one-hot columns per wgmma: few registers per block, whatever E is
MAX_COLUMNS = 512  # one-hot columns (experts + 1 for out-of-range rows)


def columns_for(num_experts: int, out_of_range: bool = True) -> int:
    """One-hot columns for E experts and, with out_of_range, the column of out-of-range rows: E + 1
    (or E) rounded up to BLOCK."""
    return -(-(num_experts + int(out_of_range)) // BLOCK) * BLOCK


def fits(num_experts: int) -> bool:
    """Whether the kernel ranks rows among num_experts experts (E <= 511)."""
    return columns_for(num_experts) <= MAX_COLUMNS


def chunk_ranks(ids: jax.Array, num_experts: int, columns: int, interpret=False) -> tuple[jax.Array, jax.Array]:
    """ids int32 [n] (n a multiple of CHUNK; ids outside [0, num_experts) count as num_experts) ->
    (rank_in_chunk int32 [n]: the rows before it in its chunk with its expert,
     counts int32 [n // CHUNK, columns]: each chunk's rows per expert). Column num_experts (the
    out-of-range rows) is exact where columns > num_experts, else those rows are in no column."""
    n = ids.shape[0]
    chunks = n // CHUNK
    blocks = columns // BLOCK
    half = jnp.bfloat16  # 0 / 1 entries and sums below 2^24: exact

    def body(expert_ref, rank_ref, counts_ref, ids_smem, lower_smem, onehot_smem, rank_smem, counts_smem, loaded):
        c = lax.axis_index("chunk")
        plgpu.copy_gmem_to_smem(expert_ref.at[pl.ds(c * CHUNK, CHUNK)], ids_smem, loaded)
        row = lax.broadcasted_iota(jnp.int32, (CHUNK, CHUNK), 0)
        col = lax.broadcasted_iota(jnp.int32, (CHUNK, CHUNK), 1)
        lower_smem[...] = plgpu.layout_cast((col < row).astype(jnp.float32), plgpu.Layout.WGMMA).astype(half)
        plgpu.barrier_wait(loaded)
        ids = plgpu.load(ids_smem, layout=plgpu.Layout.WGMMA.reduce(1))
        ids = jnp.where((ids >= 0) & (ids < num_experts), ids, num_experts)
        rank = jnp.zeros((CHUNK,), jnp.float32)
        for b in range(blocks):  # one-hot columns [b * BLOCK, (b + 1) * BLOCK)
            column = plgpu.layout_cast(lax.broadcasted_iota(jnp.int32, (CHUNK, BLOCK), 1), plgpu.Layout.WGMMA)
            onehot = (lax.broadcast_in_dim(ids - b * BLOCK, (CHUNK, BLOCK), [0]) == column).astype(jnp.float32)
            onehot_smem[b] = onehot.astype(half)
            plgpu.commit_smem()

            def count_before(acc, b=b):
                plgpu.wgmma(acc, lower_smem, onehot_smem.at[b])
                plgpu.wgmma_wait(0)
                return acc[...]

            before = pl.run_scoped(count_before, plgpu.ACC((CHUNK, BLOCK), jnp.float32))
            rank = rank + jnp.sum(before * onehot, axis=1)
            counts_smem[pl.ds(b * BLOCK, BLOCK)] = jnp.sum(onehot, axis=0).astype(jnp.int32)
        rank_smem[...] = rank.astype(jnp.int32)
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(rank_smem, rank_ref.at[pl.ds(c * CHUNK, CHUNK)])
        plgpu.copy_smem_to_gmem(counts_smem, counts_ref.at[c])
        plgpu.wait_smem_to_gmem(0)

    kernel = plgpu.kernel(
        body,
        out_type=(jax.ShapeDtypeStruct((n,), jnp.int32), jax.ShapeDtypeStruct((chunks, columns), jnp.int32)),
        scratch_types=[plgpu.SMEM((CHUNK,), jnp.int32),
                       plgpu.SMEM((CHUNK, CHUNK), half, transforms=tiled_swizzled((CHUNK, CHUNK), half)),
                       plgpu.SMEM((blocks, CHUNK, BLOCK), half, transforms=tiled_swizzled((CHUNK, BLOCK), half)),
                       plgpu.SMEM((CHUNK,), jnp.int32), plgpu.SMEM((columns,), jnp.int32), plgpu.Barrier()],
        grid=(chunks,),
        grid_names=("chunk",),
        kernel_name="jax_moe_chunk_ranks",
        interpret=interpret_params(interpret),
    )
    return kernel(ids)


def _rank_in_chunks(topk_ids: jax.Array, num_experts: int, out_of_range: bool, interpret: bool):
    """chunk_ranks over the flattened routing table [n], padded to whole chunks with out-of-range
    rows after the real ones; with out_of_range, out-of-range ids have a column of their own."""
    if not fits(num_experts):
        raise ValueError(f"{num_experts} experts need {columns_for(num_experts)} one-hot columns; "
                         f"the kernel takes {MAX_COLUMNS}")
    n = topk_ids.size
    if n == 0:
        raise ValueError("no routed rows: the routing kernel needs T * k >= 1")
    padded = -(-n // CHUNK) * CHUNK
    # The kernel reads the ids as they are (it maps out-of-range ones to column E itself: no XLA
    # kernel before it where n is a multiple of CHUNK).
    ids = jnp.pad(topk_ids.reshape(-1).astype(jnp.int32), (0, padded - n), constant_values=num_experts)
    return chunk_ranks(ids, num_experts, columns_for(num_experts, out_of_range), interpret)


def sort_by_expert(topk_ids: jax.Array, num_experts: int, interpret=False) -> SortedRows:
    """jax_moe.permutation.sort_by_expert (stable; out-of-range ids last and uncounted), ranked by
    chunk_ranks. Needs fits(num_experts)."""
    rank_in_chunk, counts = _rank_in_chunks(topk_ids, num_experts, True, interpret)
    n = topk_ids.size
    expert = flat_experts(topk_ids, num_experts)  # [n] each row's one-hot column (E: out of range)
    through = jnp.cumsum(counts, axis=0)  # [chunks, columns] rows up to each chunk's end
    index = jnp.arange(n, dtype=jnp.int32)
    within = (through - counts)[index // CHUNK, expert] + rank_in_chunk[:n]  # rows before it with its column
    totals = through[-1]  # the column sums (no reduction kernel of their own)
    rank = jnp.cumsum(totals)[expert] - totals[expert] + within
    # rank is a permutation of 0..n-1: every element is written, so any int32 [n] buffer serves as
    # the scatter's operand; within's is dead by now (no zero fill, no copy).
    order = within.at[rank].set(jnp.arange(rank.shape[0], dtype=jnp.int32), unique_indices=True)
    return SortedRows(order=order, rank=rank, expert=expert[order], group_sizes=totals[:num_experts])


def layout_from_ranks(ids, rank_in_chunk, counts, weights, top_k: int, num_experts: int, block_m: int,
                      chunk: int) -> tuple:
    """The XLA FFI call "jax_moe_aligned_layout" (ffi/aligned_layout.h's contract): ids int32 [n],
    rank_in_chunk int32 [>= n] and counts int32 [chunks, columns] (chunk_ranks' outputs over chunks
    of `chunk` rows), weights f32 [n] -> (row_token, row_weight, slot_row [n], slot_routed [n],
    tile_expert, tile_start, tile_lo, tile_size, expert_start, expert_size, tile_end, chunk_start)."""
    n = ids.shape[0]
    rows = row_count(n // top_k, top_k, block_m, num_experts)
    num_tiles = tile_count(n // top_k, top_k, num_experts, block_m)
    i32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)
    out_types = (i32(rows), jax.ShapeDtypeStruct((rows,), jnp.float32), i32(n), jax.ShapeDtypeStruct((n,), jnp.bool_),
                 *[i32(num_tiles)] * 4, *[i32(num_experts)] * 3, i32(*counts.shape))
    return jax.ffi.ffi_call(_ffi.ALIGNED_LAYOUT_TARGET, out_types)(
        ids, rank_in_chunk, counts, weights, top_k=np.int64(top_k), num_experts=np.int64(num_experts),
        block_m=np.int64(block_m), chunk=np.int64(chunk))


def aligned_layout(topk_ids: jax.Array, topk_weights: jax.Array, num_experts: int, block_m: int,
                   interpret=False) -> TileLayout:
    """jax_moe.permutation.align_to_tiles(aligned_experts=True)'s layout (the training layout: every
    expert on the ALIGN_ROWS grid), bitwise: chunk_ranks without the out-of-range rows' column
    (E = 128: two blocks of one-hot columns instead of three), then one XLA FFI call
    (layout_from_ranks: two CUDA kernels, where XLA's ops on the ranks took ~15 small ones). In
    interpret mode the FFI call runs its CPU handler. Needs fits(num_experts) and T * k >= 1."""
    T, k = topk_ids.shape
    # The handler of the backend that runs it (lowering for CUDA on a CPU needs none).
    _ffi.require_platform("cpu" if interpret else jax.default_backend())
    rank_in_chunk, counts = _rank_in_chunks(topk_ids, num_experts, False, interpret)
    ids, weights = topk_ids.reshape(-1).astype(jnp.int32), topk_weights.reshape(-1).astype(jnp.float32)
    (row_token, row_weight, slot_row, slot_routed, tile_expert, tile_start, tile_lo, tile_size, expert_start,
     expert_size, tile_end, _) = layout_from_ranks(ids, rank_in_chunk, counts, weights, k, num_experts, block_m, CHUNK)
    return TileLayout(row_token=row_token, row_weight=row_weight, slot_row=slot_row.reshape(T, k),
                      tile_expert=tile_expert, tile_start=tile_start, tile_lo=tile_lo, tile_size=tile_size,
                      expert_start=expert_start, expert_size=expert_size, tile_end=tile_end,
                      slot_routed=slot_routed.reshape(T, k))
