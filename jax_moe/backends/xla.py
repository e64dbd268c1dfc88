"""The XLA backend: fused_moe from stock JAX ops, exact in fp32, on every platform.

Two strategies, chosen per shape by :func:`strategy_for`:
- "gather": each routed row gathers its expert's weights (T*k <= E: touches at most every weight once);
- "dense":  every expert on every token, batched over experts, with a routing-weighted combine.
Sorting rows by expert for lax.ragged_dot is not among them: XLA 0.11 computes ragged_dot as a
masked product over every group on CPU and GPU, k times the work of "dense" (benchmarks/NOTES.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jax_moe import reference
from jax_moe.activations import apply_activation
from jax_moe.backends.registry import Backend, ExpertWeights, MoEProblem, register

def matmul_precision(dtype, precision: str = "highest") -> lax.Precision:
    """fp32 operands: full fp32 products ("highest"), or whatever the platform's default is
    ("tf32": TF32 products on NVIDIA GPUs, exact fp32 on the CPU); half types: the default."""
    return lax.Precision.HIGHEST if dtype == jnp.float32 and precision == "highest" else lax.Precision.DEFAULT


def gathered(x, weights: ExpertWeights, topk_weights, topk_ids, problem: MoEProblem) -> jax.Array:
    """Each (token, slot) row gathers its expert's weights: [T, k, H, I] reads, no sort."""
    E = problem.experts
    valid = (topk_ids >= 0) & (topk_ids < E)
    ids = jnp.where(valid, topk_ids, 0)
    precision = matmul_precision(x.dtype, problem.precision)

    def rows_times(matrix, spec):
        return jnp.einsum(spec, x, matrix[ids], precision=precision, preferred_element_type=jnp.float32)

    def bias(b):
        return 0.0 if b is None else b[ids].astype(jnp.float32)

    h = apply_activation(problem.activation, rows_times(weights.gate, "th,tkhi->tki") + bias(weights.gate_bias))
    if problem.moe_type == "qwen3":
        h = h * (rows_times(weights.up, "th,tkhi->tki") + bias(weights.up_bias))
        second, spec = weights.down[ids], "tki,tkih->tkh"
    else:
        second, spec = weights.up[ids], "tki,tkhi->tkh"
    y = jnp.einsum(spec, h.astype(x.dtype), second, precision=precision, preferred_element_type=jnp.float32)
    y = y + bias(weights.down_bias)
    scale = jnp.where(valid, topk_weights, 0.0)
    return jnp.einsum("tk,tkh->th", scale, y, precision=lax.Precision.HIGHEST).astype(x.dtype)


# Largest fp32 [E, T, max(H, I)] intermediate that "dense" materializes; beyond it, it loops over
# experts (jax_moe.reference.fused_moe), which holds one expert's [T, I] at a time.
DENSE_BATCH_BYTES = 1 << 30


def dense(x, weights: ExpertWeights, topk_weights, topk_ids, problem: MoEProblem) -> jax.Array:
    """Every expert on every token, then the routing-weighted combine."""
    E, T = problem.experts, problem.tokens
    if E * T * max(problem.hidden, problem.intermediate) * 4 > DENSE_BATCH_BYTES:
        return reference.fused_moe(x, weights.gate, weights.up, weights.down, topk_weights, topk_ids,
                                   moe_type=problem.moe_type, activation=problem.activation,
                                   gate_bias=weights.gate_bias, up_bias=weights.up_bias, down_bias=weights.down_bias)
    precision = matmul_precision(x.dtype, problem.precision)

    def product(spec, a, b):
        return jnp.einsum(spec, a, b, precision=precision, preferred_element_type=jnp.float32)

    def bias(b):
        return 0.0 if b is None else b[:, None, :].astype(jnp.float32)

    h = apply_activation(problem.activation, product("th,ehi->eti", x, weights.gate) + bias(weights.gate_bias))
    if problem.moe_type == "qwen3":
        h = h * (product("th,ehi->eti", x, weights.up) + bias(weights.up_bias))
        y = product("eti,eih->eth", h.astype(x.dtype), weights.down)
    else:
        y = product("eti,ehi->eth", h.astype(x.dtype), weights.up)
    y = y + bias(weights.down_bias)
    # [T, E] routing weight of each expert (zero where not chosen; out-of-range ids match none).
    combine = jnp.einsum("tk,tke->te", topk_weights, jax.nn.one_hot(topk_ids, E, dtype=jnp.float32),
                         precision=lax.Precision.HIGHEST)  # exact routing weights (no TF32 rounding)
    return jnp.einsum("te,eth->th", combine, y, precision=lax.Precision.HIGHEST).astype(x.dtype)


STRATEGIES = {"gather": gathered, "dense": dense}


def strategy_for(problem: MoEProblem) -> str:
    return "gather" if problem.tokens * problem.top_k <= problem.experts else "dense"


def run(x, weights, topk_weights, topk_ids, problem: MoEProblem, interpret: bool = False) -> jax.Array:
    del interpret  # nothing to interpret: plain XLA
    return STRATEGIES[strategy_for(problem)](x, weights, topk_weights, topk_ids, problem)


register(Backend(name="xla", run=run, unsupported=lambda problem: None, priority=0))
