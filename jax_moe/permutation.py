"""Routing permutation: the (token, slot) rows of a routed batch sorted by expert, and tiled.

XLA implementation; deterministic, stable within an expert. Rows whose expert id is out of range
sort to the end and belong to no group. Small batches (decode) rank rows by comparing all pairs
(a few fused XLA ops), larger ones sort (expert, row) pairs packed into one int32 key (a
keys-only sort) or, when they do not fit, argsort the expert ids: the same result every way.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


class SortedRows(NamedTuple):
    """The T*k routed rows ordered by expert.

    order:        int32 [T*k]  flat (token * k + slot) index of each sorted row
    rank:         int32 [T*k]  sorted position of each flat row (the inverse of order)
    expert:       int32 [T*k]  expert of each sorted row (E for out-of-range ids)
    group_sizes:  int32 [E]    rows per expert; sum <= T*k (out-of-range rows are not counted)
    """

    order: jax.Array
    rank: jax.Array
    expert: jax.Array
    group_sizes: jax.Array


# Up to this many routed rows, "auto" ranks rows by comparing all pairs (N^2 compares in fused
# elementwise + reduce ops) instead of launching XLA's sort and two scatters (or the mosaic_gpu
# routing kernel and its companions). 1024 rather than 256 (H100, session 12): forward seed qwen3
# T=512 80.3 -> 79.1 us, seed nomic T=512 69.4 -> 68.9, Qwen3-30B-A3B T=64 422-424 -> 422.
COMPARE_RANK_ROWS = 1024


def flat_experts(topk_ids: jax.Array, num_experts: int) -> jax.Array:
    """int32 [T*k]: the flattened routing table's expert ids, num_experts for ids outside [0, E)."""
    flat = topk_ids.reshape(-1).astype(jnp.int32)
    return jnp.where((flat >= 0) & (flat < num_experts), flat, num_experts)


def sort_by_expert(topk_ids: jax.Array, num_experts: int, method: str = "auto") -> SortedRows:
    """Sorts the flattened [T, k] routing table by expert id (stable).

    method: "argsort" (a stable key-value sort), "packed" (a keys-only sort of expert << row_bits
    | row: half the bytes of a key-value sort, and the sorted experts come out of the keys; needs
    both in 31 bits), "compare" (all-pairs ranks: no sort or scatter ops; [N, N] and [E, N]
    intermediates), or "auto" ("compare" up to COMPARE_RANK_ROWS rows and experts, else "packed"
    where it fits, else "argsort"). Every method gives the same result.
    """
    expert = flat_experts(topk_ids, num_experts)
    n = expert.shape[0]
    row_bits = max(1, (n - 1).bit_length())
    packable = row_bits + num_experts.bit_length() <= 31  # experts 0..E (E: out of range), rows 0..n-1
    if method == "auto":
        compare = n <= COMPARE_RANK_ROWS and num_experts <= COMPARE_RANK_ROWS  # counts compare [E, N]
        method = "compare" if compare else "packed" if packable else "argsort"
    index = jnp.arange(n, dtype=jnp.int32)
    if method == "compare":
        mine, other = expert[:, None], expert[None, :]
        before = (other < mine) | ((other == mine) & (index[None, :] < index[:, None]))
        rank = jnp.sum(before, axis=1, dtype=jnp.int32)
        order = jnp.sum(jnp.where(rank[None, :] == index[:, None], index[None, :], 0), axis=1, dtype=jnp.int32)
        group_sizes = jnp.sum(expert[None, :] == jnp.arange(num_experts, dtype=jnp.int32)[:, None], axis=1,
                              dtype=jnp.int32)
        return SortedRows(order=order, rank=rank, expert=expert[order], group_sizes=group_sizes)
    if method == "packed":
        if not packable:
            raise ValueError(f"{n} rows and {num_experts} experts do not pack into an int32 key")
        keys = jnp.sort((expert << row_bits) | index)
        order, sorted_expert = keys & ((1 << row_bits) - 1), keys >> row_bits
    elif method == "argsort":
        order = jnp.argsort(expert, stable=True).astype(jnp.int32)
        sorted_expert = expert[order]
    else:
        raise ValueError(f"unknown method {method!r}: 'auto', 'argsort', 'packed' or 'compare'")
    rank = jnp.zeros((n,), jnp.int32).at[order].set(index, unique_indices=True)
    group_sizes = jnp.bincount(expert, length=num_experts + 1)[:num_experts].astype(jnp.int32)
    return SortedRows(order=order, rank=rank, expert=sorted_expert, group_sizes=group_sizes)


class TileLayout(NamedTuple):
    """The routed rows sorted by expert, covered by M-tiles that each belong to one expert.

    Compact (each expert's rows follow the previous expert's), or with every expert starting at a
    multiple of ALIGN_ROWS (align_to_tiles(aligned_experts=True): up to ALIGN_ROWS - 1 unowned rows
    after each expert, holding anything, so that a kernel's 8-row-aligned blocks start at the
    expert's first row).

    A tile spans rows [tile_start, tile_start + block_m) of the sorted order, tile_start a multiple
    of ALIGN_ROWS, and owns the valid rows [tile_start + tile_lo, tile_start + tile_lo + tile_size):
    its expert's rows. Tiles of neighbouring experts may overlap, but their valid rows do not, so a
    grouped GEMM reads one expert's weights per tile and writes only its own rows (tokamax's
    aligned groups; vLLM's moe_align_block_size pads every expert to whole tiles instead, which
    costs up to block_m - 1 rows of work and HBM traffic per expert).

    Static sizes: N = T*k routed rows; ``rows`` = row_count (N rounded up to ALIGN_ROWS plus
    block_m, so that every tile's block lies inside the arrays, plus ALIGN_ROWS per expert that can
    have rows when aligned); num_tiles = N // block_m + 2 * min(E, N).

    row_token:   int32 [rows]      token whose x feeds the row (0 past the routed rows)
    row_weight:  f32   [rows]      routing weight of the row (0 past the routed rows);
                 None in rows_as_tiles' layout, which has tile_weight instead
    slot_row:    int32 [T, k]      sorted row of each (token, slot); ``rows`` for out-of-range ids
    tile_expert: int32 [num_tiles] expert of each tile; a tile whose expert is outside [0, E)
                 (-1 for tiles past the used ones) has no work
    tile_start, tile_lo, tile_size: int32 [num_tiles] the tile's block and its valid rows; None in
                 rows_as_tiles' layout, where tile r holds row r alone (its block starts at r
                 rounded down to ALIGN_ROWS)
    expert_start, expert_size: int32 [E] each expert's rows [start, start + size);
                 None in rows_as_tiles' layout, whose rows are not grouped by expert
    tile_end:    int32 [E]         first tile past each expert's (running total of its tiles): the
                 tiles [0, tile_end[E - 1]) have work, the others none; None in rows_as_tiles'
                 layout
    tile_weight: f32   [num_tiles] routing weight of the tile's one row (rows_as_tiles), else None
    slot_routed: bool  [T, k]      whether the slot's id is in [0, E) (slot_row < rows): the aligned
                 layouts', where the combines select by it (a mask computed from slot_row was a
                 kernel of its own); None in the others
    """

    row_token: jax.Array
    row_weight: jax.Array
    slot_row: jax.Array
    tile_expert: jax.Array
    tile_start: jax.Array
    tile_lo: jax.Array
    tile_size: jax.Array
    expert_start: jax.Array
    expert_size: jax.Array
    tile_end: jax.Array | None = None
    tile_weight: jax.Array | None = None
    slot_routed: jax.Array | None = None

    @property
    def one_row_per_tile(self) -> bool:
        """rows_as_tiles' layout: tile r holds row r alone, the (token, slot) row r = t * k + j."""
        return self.tile_start is None


ALIGN_ROWS = 8  # tile starts: TMA-friendly row offsets


def tile_count(tokens: int, top_k: int, num_experts: int, block_m: int) -> int:
    """Static number of M-tiles that any routing of tokens * top_k rows over num_experts fits in.

    Expert e with n_e rows needs ceil((n_e + 7) / block_m) <= n_e / block_m + 2 tiles.
    """
    n = tokens * top_k
    return n // block_m + 2 * min(num_experts, n)


def row_count(tokens: int, top_k: int, block_m: int, aligned_experts: int = 0) -> int:
    """Static length of the sorted-row arrays: the routed rows, aligned, plus one tile of slack.
    aligned_experts: E when every expert starts on the ALIGN_ROWS grid (0: compact), which adds up
    to ALIGN_ROWS - 1 rows after each expert that can have rows (ALIGN_ROWS counted: the length
    stays a multiple of ALIGN_ROWS, as TMA wants)."""
    n = tokens * top_k
    return -(-n // ALIGN_ROWS) * ALIGN_ROWS + block_m + ALIGN_ROWS * min(aligned_experts, n)


def align_to_tiles(topk_ids: jax.Array, topk_weights: jax.Array, num_experts: int, block_m: int,
                   sorted_rows: SortedRows | None = None, aligned_experts: bool = False) -> TileLayout:
    """Per-expert counts, the stable sort of the routed rows by expert and the tiles that cover them.

    Deterministic; the rows of an expert keep their (token, slot) order. sorted_rows: the sort,
    when the caller sorted the rows itself (a backend's kernel); else sort_by_expert.
    aligned_experts: every expert starts on the ALIGN_ROWS grid (see TileLayout).
    """
    T, k = topk_ids.shape
    n = T * k
    num_tiles = tile_count(T, k, num_experts, block_m)
    rows = row_count(T, k, block_m, num_experts if aligned_experts else 0)
    if sorted_rows is None:
        sorted_rows = sort_by_expert(topk_ids, num_experts)
    counts = sorted_rows.group_sizes
    expert = flat_experts(topk_ids, num_experts)  # [T*k] per (token, slot) row
    routed = expert < num_experts
    packed_start = jnp.cumsum(counts) - counts  # [E] first row of each expert when compact
    if aligned_experts:
        span = (counts + ALIGN_ROWS - 1) // ALIGN_ROWS * ALIGN_ROWS
        start = jnp.cumsum(span) - span  # [E] first row of each expert
        clipped = jnp.minimum(expert, num_experts - 1)
        rank = sorted_rows.rank - packed_start[clipped]
        # Built per (token, slot) row from its rank: no gathers through order, and the tables are
        # scattered to distinct rows (an unrouted row to its own row past the end, dropped).
        index = jnp.arange(n, dtype=jnp.int32)
        position = start[clipped] + rank
        target = jnp.where(routed, position, rows + index)
        scatter = lambda values, dtype: jnp.zeros((rows,), dtype).at[target].set(
            values, mode="drop", unique_indices=True)
        row_token = scatter(index // k, jnp.int32)
        row_weight = scatter(topk_weights.reshape(-1).astype(jnp.float32), jnp.float32)
        # Behind a barrier: XLA would fuse this gather (and the cumsum behind start) into every
        # consumer of slot_row, e.g. the k-slot sums (52 -> 117 us, H100).
        slot_row, slot_routed = lax.optimization_barrier((jnp.where(routed, position, rows), routed))
        slot_routed = slot_routed.reshape(T, k)
    else:
        order, rank = sorted_rows.order, sorted_rows.rank
        # Whether a sorted row (out-of-range ones sort last, expert E) is routed, from the experts
        # rather than from their count (one reduction kernel less).
        in_range = sorted_rows.expert < num_experts
        token = jnp.where(in_range, order // k, 0)
        weight = jnp.where(in_range, topk_weights.reshape(-1).astype(jnp.float32)[order], 0.0)
        start = packed_start
        row_token = jnp.zeros((rows,), jnp.int32).at[:n].set(token)
        row_weight = jnp.zeros((rows,), jnp.float32).at[:n].set(weight)
        slot_row, slot_routed = jnp.where(routed, rank, rows), None
    slot_row = slot_row.reshape(T, k)

    # Aligned, every start is on the grid: the tiles follow from the counts alone (not from the
    # starts' cumsum, so that XLA can take both running sums at once).
    aligned = start if aligned_experts else start // ALIGN_ROWS * ALIGN_ROWS
    expert_tiles = (counts + block_m - 1) // block_m if aligned_experts else jnp.where(
        counts > 0, (start + counts - aligned + block_m - 1) // block_m, 0)
    tile_end = jnp.cumsum(expert_tiles)  # [E] first tile past each expert
    tile_first = tile_end - expert_tiles
    # Tile t belongs to the expert whose tiles [tile_first, tile_end) hold it (one at most): each
    # table is a masked sum over the experts (0 for a tile without work), all of them reductions of
    # one [num_tiles, E] shape that XLA runs as one kernel (a search for the expert, then gathers
    # by it, took three).
    tile = jnp.arange(num_tiles, dtype=jnp.int32)[:, None]
    member = (tile >= tile_first) & (tile < tile_end)  # [num_tiles, E]
    pick = lambda per_expert: jnp.sum(jnp.where(member, per_expert, 0), axis=1, dtype=jnp.int32)
    block_start = aligned + (tile - tile_first) * block_m  # [num_tiles, E] the tile's block if e's
    lo = jnp.maximum(block_start, start) - block_start  # aligned: 0 (every block starts inside e)
    hi = jnp.minimum(block_start + block_m, start + counts) - block_start
    return TileLayout(
        row_token=row_token,
        row_weight=row_weight,
        slot_row=slot_row,
        tile_expert=pick(jnp.arange(1, num_experts + 1, dtype=jnp.int32)) - 1,
        tile_start=pick(block_start),
        tile_lo=jnp.zeros((num_tiles,), jnp.int32) if aligned_experts else pick(lo),
        tile_size=pick(hi - lo),
        expert_start=start.astype(jnp.int32),
        expert_size=counts,
        tile_end=tile_end.astype(jnp.int32),
        slot_routed=slot_routed,
    )


def rows_as_tiles(topk_ids: jax.Array, topk_weights: jax.Array, num_experts: int, block_m: int) -> TileLayout:
    """Each routed row as its own M-tile, in (token, slot) order: no sort, no scatter.

    Same static sizes as align_to_tiles except num_tiles = T*k. For one token, whose k experts
    are distinct, the grouped GEMMs read each expert's weights once, as with align_to_tiles, which
    costs about a dozen small kernels there (the decode case). The tables hold the routing as it
    is (tile_expert: the ids, out-of-range ones included, which the kernels skip; tile_weight: the
    weights) and leave the tiles' rows to the kernels (tile_start, tile_lo, tile_size: None), so
    that the only XLA op on them is slot_row's select, which fuses into the combine: at one token
    every op is a ~1 us kernel, and a constant table is materialised by one too.
    Rows are not grouped by expert, so expert_start and expert_size are None: the forward GEMMs may
    use this layout, the weight gradients may not.
    """
    T, k = topk_ids.shape
    n = T * k
    rows = row_count(T, k, block_m)
    valid = flat_experts(topk_ids, num_experts) < num_experts
    index = np.arange(n, dtype=np.int32)
    return TileLayout(
        row_token=jnp.asarray(np.pad(index // k, (0, rows - n))),
        row_weight=None,
        slot_row=jnp.where(valid, index, rows).reshape(T, k),
        tile_expert=topk_ids.reshape(-1).astype(jnp.int32),
        tile_start=None,
        tile_lo=None,
        tile_size=None,
        expert_start=None,
        expert_size=None,
        tile_weight=topk_weights.reshape(-1).astype(jnp.float32),
    )
