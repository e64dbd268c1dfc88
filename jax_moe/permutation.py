"""Routing permutation: the (token, slot) rows of a routed batch sorted by expert.

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
