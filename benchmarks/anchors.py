"""The alternatives jax-moe is measured against, run in the same process on the same device.

Every anchor is fn(x, weights, topk_weights, topk_ids, problem) -> [T, H], like a backend.
- dense:          jax_moe.reference.fused_moe (every expert on every token; the seed's "native").
- xla_ragged:     argsort + gather + lax.ragged_dot x2 + scatter + combine.
- tokamax_mosaic: the same pipeline with tokamax.ragged_dot(implementation="mosaic") (bf16/f16, GPU).
- jax_mgpu:       the same pipeline with jax's Pallas Mosaic GPU ragged_dot_mgpu (bf16/f16, sm90).
The nomic W2^T product gets W2 pre-transposed once, outside the timed region, where the grouped
matmul cannot contract rhs's last axis itself (tokamax).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jax_moe.activations import apply_activation
from jax_moe.backends import xla
from jax_moe.backends.registry import ExpertWeights, MoEProblem
from jax_moe.permutation import sort_by_expert

HALF = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


# grouped_matmul(lhs [R, K], rhs [E, K, N] (or [E, N, K] with transpose_rhs), group_sizes [E],
#                transpose_rhs) -> f32 [R, N]
GroupedMatmul = Callable[..., jax.Array]


def lax_grouped_matmul(lhs, rhs, group_sizes, transpose_rhs=False):
    """lax.ragged_dot with fp32 accumulation; transpose_rhs contracts rhs's last axis."""
    contracting = 2 if transpose_rhs else 1
    dims = lax.RaggedDotDimensionNumbers(
        dot_dimension_numbers=(([1], [contracting]), ([], [])),
        lhs_ragged_dimensions=[0],
        rhs_group_dimensions=[0],
    )
    return lax.ragged_dot_general(
        lhs,
        rhs,
        group_sizes,
        dims,
        precision=xla.matmul_precision(lhs.dtype),
        preferred_element_type=jnp.float32,
    )


def _take_bias(bias, experts):
    return 0.0 if bias is None else jnp.take(bias, experts, axis=0, mode="clip").astype(jnp.float32)


def sorted_pipeline(
    x: jax.Array,
    weights: ExpertWeights,
    topk_weights: jax.Array,
    topk_ids: jax.Array,
    problem: MoEProblem,
    grouped_matmul: GroupedMatmul = lax_grouped_matmul,
) -> jax.Array:
    """argsort + gather + grouped matmul + activation + grouped matmul + scatter + combine.

    x [T, H]; topk_weights f32 [T, k]; topk_ids s32 [T, k]. Returns [T, H] in x's dtype.
    """
    T, H = x.shape
    k = topk_ids.shape[1]
    rows = sort_by_expert(topk_ids, problem.experts, method="argsort")  # the plain pipeline: XLA's sort
    xs = jnp.take(x, rows.order // k, axis=0)
    h = grouped_matmul(xs, weights.gate, rows.group_sizes) + _take_bias(weights.gate_bias, rows.expert)
    h = apply_activation(problem.activation, h)
    if problem.moe_type == "qwen3":
        u = grouped_matmul(xs, weights.up, rows.group_sizes) + _take_bias(weights.up_bias, rows.expert)
        y = grouped_matmul((h * u).astype(x.dtype), weights.down, rows.group_sizes)
    else:
        y = grouped_matmul(h.astype(x.dtype), weights.up, rows.group_sizes, transpose_rhs=True)
    y = y + _take_bias(weights.down_bias, rows.expert)
    scale = jnp.take(topk_weights.reshape(-1), rows.order)
    valid = rows.expert < problem.experts
    contribution = jnp.where(valid[:, None], y * scale[:, None], 0.0)
    per_slot = jnp.zeros((T * k, H), jnp.float32).at[rows.order].set(contribution, unique_indices=True)
    return jnp.sum(per_slot.reshape(T, k, H), axis=1).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class Anchor:
    name: str
    run: Callable[..., jax.Array]
    # Why it cannot run (problem) here, or None.
    unsupported: Callable[[MoEProblem], str | None] = lambda problem: None
    # One-time weight preparation, outside the timed region.
    prepare: Callable[[ExpertWeights, MoEProblem], ExpertWeights] = lambda weights, problem: weights


def _pretranspose_w2(weights: ExpertWeights, problem: MoEProblem) -> ExpertWeights:
    if problem.moe_type == "nomic":
        return weights._replace(up=jnp.swapaxes(weights.up, 1, 2))
    return weights


def _tokamax_matmul(lhs, rhs, group_sizes, transpose_rhs=False):
    import tokamax

    # tokamax logs an "autotuning cache miss" warning at every trace and uses its default config.
    logging.getLogger("absl").setLevel(logging.ERROR)

    # transpose_rhs: rhs was pre-transposed by _pretranspose_w2, so it is already [E, K, N].
    del transpose_rhs
    return tokamax.ragged_dot(lhs, rhs, group_sizes, implementation="mosaic").astype(jnp.float32)


def _mgpu_matmul(lhs, rhs, group_sizes, transpose_rhs=False):
    from jax.experimental.pallas.ops.gpu import ragged_dot_mgpu

    return ragged_dot_mgpu.ragged_dot(
        lhs, rhs, group_sizes=group_sizes, block_m=128, block_n=128, block_k=64,
        max_concurrent_steps=4, grid_block_n=1, transpose_rhs=transpose_rhs,
    ).astype(jnp.float32)


def _gpu_half_only(module: str | None = None):
    """Predicate of the Mosaic GPU anchors: sm90 GPU, bf16/f16, H and I multiples of 64."""

    def unsupported(problem: MoEProblem) -> str | None:
        if problem.platform != "gpu":
            return "GPU only"
        if problem.dtype not in HALF:
            return f"{problem.dtype} not supported"
        if module and importlib.util.find_spec(module) is None:
            return f"{module} not installed"
        if problem.hidden % 64 or problem.intermediate % 64:
            return "H and I must be multiples of 64"
        return None

    return unsupported


ANCHORS = {
    a.name: a
    for a in [
        Anchor("dense", xla.dense),
        Anchor("xla_ragged", functools.partial(sorted_pipeline, grouped_matmul=lax_grouped_matmul)),
        Anchor("tokamax_mosaic", functools.partial(sorted_pipeline, grouped_matmul=_tokamax_matmul),
               _gpu_half_only("tokamax"), _pretranspose_w2),
        Anchor("jax_mgpu", functools.partial(sorted_pipeline, grouped_matmul=_mgpu_matmul),
               _gpu_half_only()),
    ]
}
