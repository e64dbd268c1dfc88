"""Pure-JAX references: the router and the dense MoE (every expert on every token).

These define the semantics that every kernel is tested against; they favour clarity over speed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jax_moe.activations import apply_activation
from jax_moe.routing import parse_routing_args, scores_of, selected_weights


def _canonical_keys(keys: jax.Array) -> jax.Array:
    """NaN ranks as -inf; -0.0 and +0.0 are one key."""
    keys = jnp.where(jnp.isnan(keys), -jnp.inf, keys)
    return jnp.where(keys == 0, 0.0, keys)


def _first_k_by_key(keys: jax.Array, excluded: jax.Array, k: int) -> jax.Array:
    """Indices of the k best non-excluded keys per row, ties toward the lower index."""
    iota = lax.broadcasted_iota(jnp.int32, keys.shape, keys.ndim - 1)
    _, _, order = lax.sort((excluded.astype(jnp.int32), -keys, iota), num_keys=2, is_stable=True)
    return order[..., :k]


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
    """Reference of :func:`jax_moe.topk_softmax` (same arguments, same outputs)."""
    logits, bias, config = parse_routing_args(
        logits, k, renormalize=renormalize, scoring=scoring, correction_bias=correction_bias,
        num_groups=num_groups, topk_groups=topk_groups, routed_scaling_factor=routed_scaling_factor,
    )
    E = logits.shape[-1]
    leading = logits.shape[:-1]
    x = logits.reshape(-1, E).astype(jnp.float32)
    T = x.shape[0]
    keys = x if config.logit_keys else scores_of(x, scoring) + bias
    keys = _canonical_keys(keys)

    excluded = jnp.zeros(keys.shape, bool)
    if num_groups is not None:
        group_size = E // num_groups
        grouped = keys.reshape(T, num_groups, group_size)
        best_two = lax.top_k(grouped, min(2, group_size))[0]
        group_scores = _canonical_keys(jnp.sum(best_two, axis=-1))
        chosen = _first_k_by_key(group_scores, jnp.zeros(group_scores.shape, bool), topk_groups)
        group_chosen = jnp.zeros((T, num_groups), bool).at[jnp.arange(T)[:, None], chosen].set(True)
        excluded = ~jnp.repeat(group_chosen, group_size, axis=1)

    ids = _first_k_by_key(keys, excluded, k)
    weights = selected_weights(x, ids, config)
    token_expert_indices = jnp.arange(k, dtype=jnp.int32)[None, :] * T + jnp.arange(T, dtype=jnp.int32)[:, None]
    return tuple(o.reshape(*leading, k) for o in (weights, ids, token_expert_indices))


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """a @ b with fp32 accumulation (full fp32 precision for fp32 operands)."""
    return jnp.matmul(a, b, precision=lax.Precision.HIGHEST, preferred_element_type=jnp.float32)


def expert_ffn(x, gate, up, down, *, moe_type, activation, gate_bias=None, up_bias=None, down_bias=None):
    """One expert on rows x [R, H]: the unweighted output in fp32 [R, H].

    qwen3: (act(x Wg + bg) * (x Wu + bu)) Wd + bd, with Wg, Wu [H, I] and Wd [I, H].
    nomic: act(x W1 + b1) W2^T + bd, with W1 = gate, W2 = up, both [H, I].
    The intermediate is rounded to x's dtype before the second matmul, as the kernels store it.
    """
    h = _matmul(x, gate)
    if gate_bias is not None:
        h = h + gate_bias.astype(jnp.float32)
    h = apply_activation(activation, h)
    if moe_type == "qwen3":
        u = _matmul(x, up)
        if up_bias is not None:
            u = u + up_bias.astype(jnp.float32)
        h = h * u
        second = down
    else:
        second = up.T
    y = _matmul(h.astype(x.dtype), second)
    if down_bias is not None:
        y = y + down_bias.astype(jnp.float32)
    return y


def fused_moe(
    hidden_states,
    gate,
    up,
    down,
    topk_weights,
    topk_ids,
    *,
    moe_type: str = "qwen3",
    activation: str = "silu",
    gate_bias=None,
    up_bias=None,
    down_bias=None,
):
    """Dense reference MoE: every expert on every token, then a masked combine.

    The JAX form of Candle's native per-expert loop. Shapes as :func:`jax_moe.fused_moe`;
    out-of-range expert ids match no expert and contribute zero. Returns [..., H] in x's dtype.
    """
    x = jnp.asarray(hidden_states)
    H = x.shape[-1]
    E = gate.shape[0]
    k = topk_ids.shape[-1]
    rows = x.reshape(-1, H)
    ids = topk_ids.reshape(-1, k)
    w = topk_weights.reshape(-1, k).astype(jnp.float32)

    def one_expert(out, e):
        y = expert_ffn(
            rows,
            gate[e],
            up[e],
            None if down is None else down[e],
            moe_type=moe_type,
            activation=activation,
            gate_bias=None if gate_bias is None else gate_bias[e],
            up_bias=None if up_bias is None else up_bias[e],
            down_bias=None if down_bias is None else down_bias[e],
        )
        combine = jnp.sum(jnp.where(ids == e, w, 0.0), axis=-1)
        return out + combine[:, None] * y, None

    out, _ = lax.scan(one_expert, jnp.zeros(rows.shape, jnp.float32), jnp.arange(E))
    return out.astype(x.dtype).reshape(x.shape)
