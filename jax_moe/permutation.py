"""Routing permutation: the (token, slot) rows of a routed batch sorted by expert, and tiled.

XLA implementation (argsort); deterministic, stable within an expert. Rows whose expert id is out
of range sort to the end and belong to no group.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class SortedRows(NamedTuple):
    """The T*k routed rows ordered by expert.

    order:        int32 [T*k]  flat (token * k + slot) index of each sorted row
    expert:       int32 [T*k]  expert of each sorted row (E for out-of-range ids)
    group_sizes:  int32 [E]    rows per expert; sum <= T*k (out-of-range rows are not counted)
    """

    order: jax.Array
    expert: jax.Array
    group_sizes: jax.Array


def sort_by_expert(topk_ids: jax.Array, num_experts: int) -> SortedRows:
    """Sorts the flattened [T, k] routing table by expert id (stable)."""
    flat = topk_ids.reshape(-1).astype(jnp.int32)
    expert = jnp.where((flat >= 0) & (flat < num_experts), flat, num_experts)
    order = jnp.argsort(expert, stable=True).astype(jnp.int32)
    group_sizes = jnp.bincount(expert, length=num_experts + 1)[:num_experts].astype(jnp.int32)
    return SortedRows(order=order, expert=expert[order], group_sizes=group_sizes)


class TileLayout(NamedTuple):
    """The routed rows sorted by expert, each expert's rows padded to whole M-tiles.

    Row r of the padded order lies in tile r // block_m, and every tile belongs to one expert, so a
    grouped GEMM reads one expert's weights per tile. Static sizes: num_tiles = T*k // block_m +
    min(E, T*k) (enough for any routing), rows = num_tiles * block_m.

    row_token:   int32 [rows]      token whose x feeds the row (0 for padding rows)
    row_weight:  f32   [rows]      routing weight of the row (0 for padding rows)
    tile_expert: int32 [num_tiles] expert of each tile, -1 for tiles past the used ones
    slot_row:    int32 [T, k]      padded row of each (token, slot); ``rows`` for out-of-range ids
    """

    row_token: jax.Array
    row_weight: jax.Array
    tile_expert: jax.Array
    slot_row: jax.Array


def tile_count(tokens: int, top_k: int, num_experts: int, block_m: int) -> int:
    """Static number of M-tiles that any routing of tokens * top_k rows over num_experts fits in."""
    n = tokens * top_k
    return n // block_m + min(num_experts, n)


def align_to_tiles(topk_ids: jax.Array, topk_weights: jax.Array, num_experts: int, block_m: int) -> TileLayout:
    """vLLM's moe_align_block_size for JAX: per-expert counts, tile-aligned offsets, the padded order.

    Deterministic; the rows of an expert keep their (token, slot) order.
    """
    T, k = topk_ids.shape
    n = T * k
    num_tiles = tile_count(T, k, num_experts, block_m)
    rows = num_tiles * block_m
    sorted_rows = sort_by_expert(topk_ids, num_experts)
    counts = sorted_rows.group_sizes
    expert_tiles = (counts + block_m - 1) // block_m
    tile_end = jnp.cumsum(expert_tiles)  # [E] first tile past each expert
    padded_start = (tile_end - expert_tiles) * block_m  # [E] first padded row of each expert
    group_start = jnp.cumsum(counts) - counts  # [E] first sorted row of each expert
    expert = sorted_rows.expert
    in_range = expert < num_experts
    safe_expert = jnp.minimum(expert, num_experts - 1)
    position = padded_start[safe_expert] + jnp.arange(n, dtype=jnp.int32) - group_start[safe_expert]
    position = jnp.where(in_range, position, rows).astype(jnp.int32)  # out-of-range rows: dropped
    order = sorted_rows.order
    row_token = jnp.zeros((rows,), jnp.int32).at[position].set(order // k, mode="drop")
    row_weight = jnp.zeros((rows,), jnp.float32).at[position].set(
        topk_weights.reshape(-1).astype(jnp.float32)[order], mode="drop")
    slot_row = jnp.full((n,), rows, jnp.int32).at[order].set(position).reshape(T, k)
    tile = jnp.arange(num_tiles, dtype=jnp.int32)
    # One fused compare-and-count: the default "scan" method runs a loop of small kernels.
    tile_expert = jnp.searchsorted(tile_end, tile, side="right", method="compare_all").astype(jnp.int32)
    tile_expert = jnp.where(tile_expert < num_experts, tile_expert, -1)
    return TileLayout(row_token=row_token, row_weight=row_weight, tile_expert=tile_expert, slot_row=slot_row)
