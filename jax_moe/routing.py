"""The top-k softmax router: an XLA FFI custom call (CPU and CUDA) with a custom VJP.

``topk_softmax(logits [..., E], k)`` returns ``(topk_weights f32 [..., k], topk_ids s32 [..., k],
token_expert_indices s32 [..., k])``; see :func:`topk_softmax` for the exact semantics, which
``jax_moe.reference.topk_softmax`` implements in plain JAX.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jax_moe import _ffi

SCORINGS = ("softmax", "sigmoid")
LOGIT_DTYPES = (jnp.float32, jnp.float16, jnp.bfloat16)


@dataclasses.dataclass(frozen=True)
class RoutingConfig:
    """Static routing parameters, validated against the number of experts."""

    num_experts: int
    k: int
    renormalize: bool = False
    scoring: str = "softmax"
    has_bias: bool = False
    num_groups: int | None = None
    topk_groups: int | None = None
    routed_scaling_factor: float = 1.0

    def __post_init__(self):
        E, k = self.num_experts, self.k
        if E < 1:
            raise ValueError(f"topk_softmax needs at least one expert, got E={E}")
        if not isinstance(k, (int, np.integer)) or not 1 <= k <= E:
            raise ValueError(f"topk_softmax needs 1 <= k <= E, got k={k}, E={E}")
        if self.scoring not in SCORINGS:
            raise ValueError(f"unknown scoring {self.scoring!r}; expected one of {SCORINGS}")
        if (self.num_groups is None) != (self.topk_groups is None):
            raise ValueError("num_groups and topk_groups must be given together")
        if self.num_groups is not None:
            G = self.num_groups
            if G < 1 or E % G:
                raise ValueError(f"num_groups={G} must divide the number of experts E={E}")
            if not 1 <= self.topk_groups <= G:
                raise ValueError(f"topk_groups={self.topk_groups} must be in [1, num_groups={G}]")
            if k > self.topk_groups * (E // G):
                raise ValueError(
                    f"k={k} exceeds the {self.topk_groups * (E // G)} experts of the "
                    f"topk_groups={self.topk_groups} groups that may be chosen"
                )
        if not math.isfinite(self.routed_scaling_factor):
            raise ValueError("routed_scaling_factor must be finite")

    @property
    def logit_keys(self) -> bool:
        """Softmax without bias ranks by logits (same order as the probabilities)."""
        return self.scoring == "softmax" and not self.has_bias


def check_logits(logits) -> jax.Array:
    """Returns logits as a jax array after checking rank and dtype (no silent float64 downcast)."""
    dtype = getattr(logits, "dtype", None)
    logits = jnp.asarray(logits)
    if logits.ndim < 1:
        raise ValueError("logits must have shape [..., E]")
    if (dtype if dtype is not None else logits.dtype) not in LOGIT_DTYPES:
        raise TypeError(f"logits must be float32, float16 or bfloat16, got {dtype or logits.dtype}")
    return logits


def check_bias(correction_bias, num_experts: int) -> jax.Array:
    """Returns the correction bias as f32 [E] (zeros when absent)."""
    if correction_bias is None:
        return jnp.zeros((num_experts,), jnp.float32)
    bias = jnp.asarray(correction_bias)
    if bias.shape != (num_experts,):
        raise ValueError(f"correction_bias must have shape ({num_experts},), got {bias.shape}")
    if not jnp.issubdtype(bias.dtype, jnp.floating):
        raise TypeError(f"correction_bias must be floating point, got {bias.dtype}")
    return bias.astype(jnp.float32)


def parse_routing_args(logits, k, *, renormalize, scoring, correction_bias, num_groups, topk_groups,
                       routed_scaling_factor) -> tuple[jax.Array, jax.Array, RoutingConfig]:
    """Validates topk_softmax's arguments: (logits [..., E], f32 bias [E], static config)."""
    logits = check_logits(logits)
    E = logits.shape[-1]
    config = RoutingConfig(
        num_experts=E,
        k=k,
        renormalize=bool(renormalize),
        scoring=scoring,
        has_bias=correction_bias is not None,
        num_groups=num_groups,
        topk_groups=topk_groups,
        routed_scaling_factor=float(routed_scaling_factor),
    )
    return logits, check_bias(correction_bias, E), config


def scores_of(logits: jax.Array, scoring: str) -> jax.Array:
    """Routing scores in fp32: softmax over the last axis, or sigmoid."""
    x = logits.astype(jnp.float32)
    return jax.nn.softmax(x, axis=-1) if scoring == "softmax" else jax.nn.sigmoid(x)


def selected_weights(logits: jax.Array, ids: jax.Array, config: RoutingConfig) -> jax.Array:
    """topk_weights as a differentiable function of the logits, given the chosen ids [T, k]."""
    w = jnp.take_along_axis(scores_of(logits, config.scoring), ids, axis=-1)
    if config.renormalize:
        w = w / (jnp.sum(w, axis=-1, keepdims=True) + 1e-20)
    return w * jnp.float32(config.routed_scaling_factor)


def _ffi_route(logits: jax.Array, bias: jax.Array, config: RoutingConfig):
    T = logits.shape[0]
    _ffi.require_platform(jax.default_backend())
    out_types = (
        jax.ShapeDtypeStruct((T, config.k), jnp.float32),
        jax.ShapeDtypeStruct((T, config.k), jnp.int32),
        jax.ShapeDtypeStruct((T, config.k), jnp.int32),
    )
    call = jax.ffi.ffi_call(_ffi.TOPK_SOFTMAX_TARGET, out_types, vmap_method="broadcast_all")
    return call(
        logits,
        bias,
        k=np.int64(config.k),
        scoring=np.int64(SCORINGS.index(config.scoring)),
        has_bias=np.bool_(config.has_bias),
        renormalize=np.bool_(config.renormalize),
        num_groups=np.int64(config.num_groups or 0),
        topk_groups=np.int64(config.topk_groups or 0),
        routed_scaling_factor=np.float32(config.routed_scaling_factor),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _route(logits, bias, config):
    return _ffi_route(logits, bias, config)


def _route_fwd(logits, bias, config):
    outputs = _ffi_route(logits, bias, config)
    return outputs, (logits, bias, outputs[1])


def _route_bwd(config, residuals, cotangents):
    logits, bias, ids = residuals
    _, pullback = jax.vjp(lambda x: selected_weights(x, ids, config), logits)
    (d_logits,) = pullback(cotangents[0])
    # The correction bias only steers the choice of experts: it has no gradient.
    return d_logits.astype(logits.dtype), jnp.zeros_like(bias)


_route.defvjp(_route_fwd, _route_bwd)


def topk_softmax(
    logits,
    k: int,
    *,
    renormalize: bool = False,
    scoring: str = "softmax",
    correction_bias=None,
    num_groups: int | None = None,
    topk_groups: int | None = None,
    routed_scaling_factor: float = 1.0,
):
    """Fused router: scores, top-k choice and weights in one custom call.

    Args:
      logits: [..., E] float32 / float16 / bfloat16 router logits; leading dims are flattened to T
        tokens and restored on the outputs.
      k: experts per token, 1 <= k <= E.
      renormalize: divide the k weights by their sum (Qwen3-MoE's norm_topk_prob, Mixtral).
      scoring: "softmax" (fp32 softmax over all E) or "sigmoid" (DeepSeek-V3).
      correction_bias: optional [E] bias added to the scores for the choice only (not the weights).
      num_groups, topk_groups: grouped selection; a group's score is the sum of its two best biased
        scores and only experts of the topk_groups best groups may be chosen.
      routed_scaling_factor: multiplies the final weights.

    Returns:
      topk_weights f32 [..., k] (ordered by the ranking key, descending), topk_ids int32 [..., k]
      and token_expert_indices int32 [..., k] with value ``j * T + t`` for slot j of token t.

    Ranking: softmax without bias ranks by the fp32 logits (the probabilities' order, immune to exp
    rounding); otherwise by score + bias. Ties go to the lower expert id (and the lower group id).
    A token with NaN or infinite logits gets NaN weights; its ids stay distinct and in [0, E).
    Differentiable w.r.t. the logits through the chosen weights (renormalization included).
    """
    logits, bias, config = parse_routing_args(
        logits, k, renormalize=renormalize, scoring=scoring, correction_bias=correction_bias,
        num_groups=num_groups, topk_groups=topk_groups, routed_scaling_factor=routed_scaling_factor,
    )
    E = logits.shape[-1]
    leading = logits.shape[:-1]
    if math.prod(leading) * k >= 2**31:
        raise ValueError("topk_softmax: T * k must fit in int32")
    outputs = _route(logits.reshape(-1, E), bias, config)
    return tuple(o.reshape(*leading, k) for o in outputs)


_ffi.registered_platforms()
