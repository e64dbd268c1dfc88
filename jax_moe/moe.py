"""fused_moe: the MoE expert layer (routing given), validated and dispatched to a backend."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from jax_moe import backends
from jax_moe.activations import ACTIVATIONS
from jax_moe.backends.registry import ExpertWeights, MoEProblem

MOE_TYPES = ("qwen3", "nomic")
PRECISIONS = ("highest", "tf32")
DTYPES = (jnp.float32, jnp.float16, jnp.bfloat16)


def _check_shape(name, array, shape):
    if array.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {array.shape}")


def describe(hidden_states, gate, up, down, topk_weights, topk_ids, *, moe_type, activation,
             gate_bias=None, up_bias=None, down_bias=None, interpret=False,
             recompute=False, precision="highest") -> tuple[MoEProblem, ExpertWeights]:
    """Validates fused_moe's arguments; returns the static problem and the weights."""
    if moe_type not in MOE_TYPES:
        raise ValueError(f"unknown moe_type {moe_type!r}; expected one of {MOE_TYPES}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
    x = hidden_states
    if x.ndim < 1 or x.dtype not in DTYPES:
        raise TypeError(f"hidden_states must be [..., H] float32/float16/bfloat16, got {x.dtype}{list(x.shape)}")
    H = x.shape[-1]
    if gate.ndim != 3:
        raise ValueError(f"gate must have shape [E, H, I], got {gate.shape}")
    E, _, I = gate.shape
    _check_shape("gate", gate, (E, H, I))
    _check_shape("up", up, (E, H, I))
    if moe_type == "qwen3":
        if down is None:
            raise ValueError("moe_type='qwen3' needs down [E, I, H]")
        _check_shape("down", down, (E, I, H))
    elif down is not None:
        raise ValueError("moe_type='nomic' takes no down matrix: up is W2 [E, H, I], used transposed")
    for name, w in (("gate", gate), ("up", up), ("down", down)):
        if w is not None and w.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {w.dtype} but hidden_states has {x.dtype}; cast them to one dtype")
    for name, b, shape in (("gate_bias", gate_bias, (E, I)), ("up_bias", up_bias, (E, I)),
                           ("down_bias", down_bias, (E, H))):
        if b is not None:
            _check_shape(name, b, shape)
            if not jnp.issubdtype(b.dtype, jnp.floating):
                raise TypeError(f"{name} must be floating point, got {b.dtype}")
    if up_bias is not None and moe_type == "nomic":
        raise ValueError("up_bias is for moe_type='qwen3': nomic has no up projection before the activation (use gate_bias)")
    if topk_ids.shape != topk_weights.shape:
        raise ValueError(f"topk_ids {topk_ids.shape} and topk_weights {topk_weights.shape} must have one shape")
    if topk_ids.ndim < 1 or topk_ids.shape[:-1] != x.shape[:-1]:
        raise ValueError(f"topk_ids must have shape [..., k] with the tokens' leading dims {x.shape[:-1]}, "
                         f"got {topk_ids.shape}")
    if not jnp.issubdtype(topk_ids.dtype, jnp.integer):
        raise TypeError(f"topk_ids must be integer, got {topk_ids.dtype}")
    if not jnp.issubdtype(topk_weights.dtype, jnp.floating):
        raise TypeError(f"topk_weights must be floating point, got {topk_weights.dtype}")
    problem = MoEProblem(
        tokens=math.prod(x.shape[:-1]),
        hidden=H,
        intermediate=I,
        experts=E,
        top_k=topk_ids.shape[-1],
        dtype=jnp.dtype(x.dtype),
        moe_type=moe_type,
        activation=activation,
        has_bias=any(b is not None for b in (gate_bias, up_bias, down_bias)),
        platform=jax.default_backend(),
        interpret=bool(interpret),
        recompute=bool(recompute),
        precision=precision,
    )
    return problem, ExpertWeights(gate, up, down, gate_bias, up_bias, down_bias)


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
    backend: str = "auto",
    interpret: bool = False,
    recompute: bool = False,
    precision: str = "highest",
) -> jax.Array:
    """Mixture-of-experts layer with routing given.

    qwen3 (gated):   out[t] = sum_j w[t,j] * ((act(x Wg[e] + bg[e]) * (x Wu[e] + bu[e])) Wd[e] + bd[e])
    nomic (ungated): out[t] = sum_j w[t,j] * (act(x W1[e] + b1[e]) W2[e]^T + bd[e])
    with e = topk_ids[t, j].

    Args:
      hidden_states: x [..., H] float32 / float16 / bfloat16 (leading dims are the T tokens).
      gate: Wg (qwen3) or W1 (nomic), [E, H, I], x's dtype.
      up: Wu (qwen3) or W2 (nomic), [E, H, I], x's dtype.
      down: Wd [E, I, H] (qwen3) or None (nomic).
      topk_weights: [..., k] float routing weights (used in fp32).
      topk_ids: [..., k] integer expert ids. An id outside [0, E) matches no expert: that slot
        contributes zero and no weight outside the arrays is read.
      moe_type: "qwen3" or "nomic".
      activation: "silu", "gelu" (tanh approximation), "gelu_exact" (erf) or "relu".
      gate_bias, up_bias: optional [E, I] added before the activation (up_bias: qwen3 only).
      down_bias: optional [E, H] added to each expert's output before weighting.
      backend: "auto" or a name from ``jax_moe.backends.names()``.
      interpret: run Pallas kernels in interpret mode (CPU testing); ignored by "xla".
      recompute: under differentiation, save only the inputs and recompute the gate/up products
        in the backward (one more grouped GEMM) instead of saving the pre-activations and the
        weighted activations (3 * k * I elements per token for qwen3, 2 * k * I for nomic, in x's
        dtype). "mosaic_gpu" only.
      precision: fp32 inputs only: "highest" (default; exact fp32 products) or "tf32" (TF32
        products on NVIDIA GPU tensor cores, ~1e-3 relative error; exact fp32 on the CPU).
        Half inputs always multiply exactly with fp32 accumulation.

    Returns:
      [..., H] in x's dtype. Matmuls accumulate in fp32; the intermediate is rounded to x's dtype.
      Differentiable in x, the weights, the biases and topk_weights: "xla" by JAX itself,
      "mosaic_gpu" by its own backward kernels (jax_moe.backends.mosaic_gpu_grad).
    """
    x = jnp.asarray(hidden_states)
    topk_weights = jnp.asarray(topk_weights)
    topk_ids = jnp.asarray(topk_ids)
    problem, weights = describe(
        x, gate, up, down, topk_weights, topk_ids, moe_type=moe_type, activation=activation,
        gate_bias=gate_bias, up_bias=up_bias, down_bias=down_bias, interpret=interpret, recompute=recompute,
        precision=precision,
    )
    impl = backends.select(problem, backend)
    T, k = problem.tokens, problem.top_k
    out = _run(
        impl.name,
        problem,
        x.reshape(T, problem.hidden),
        weights,
        topk_weights.reshape(T, k).astype(jnp.float32),
        topk_ids.reshape(T, k).astype(jnp.int32),
    )
    return out.reshape(x.shape)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _run(backend_name, problem, x, weights, topk_weights, topk_ids):
    """The backend under jit: eager calls compile once per problem, jitted callers inline it."""
    impl = backends.registry.get(backend_name)
    if impl.backward is None:  # plain JAX ops: differentiated by JAX itself
        return impl.run(x, weights, topk_weights, topk_ids, problem, interpret=problem.interpret)
    return _kernel_forward(backend_name, problem, x, weights, topk_weights, topk_ids)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _kernel_forward(backend_name, problem, x, weights, topk_weights, topk_ids):
    """A kernel backend's forward, differentiated by the backend's own backward."""
    impl = backends.registry.get(backend_name)
    return impl.run(x, weights, topk_weights, topk_ids, problem, interpret=problem.interpret)


def _kernel_forward_fwd(backend_name, problem, x, weights, topk_weights, topk_ids):
    impl = backends.registry.get(backend_name)
    out, saved = impl.forward_for_grad(x, weights, topk_weights, topk_ids, problem)
    return out, (x, weights, topk_weights, topk_ids, saved)


def _kernel_forward_bwd(backend_name, problem, residuals, cotangent):
    x, weights, topk_weights, topk_ids, saved = residuals
    impl = backends.registry.get(backend_name)
    grads = impl.backward(saved, x, weights, topk_weights, topk_ids, cotangent, problem)
    return (*grads, None)  # topk_ids: integer, no gradient


_kernel_forward.defvjp(_kernel_forward_fwd, _kernel_forward_bwd)


@dataclasses.dataclass(frozen=True)
class FusedMoE:
    """The seed's ``FusedMoE { num_experts, num_selected_experts, activation }`` for JAX.

    ``FusedMoE(8, 2, "silu")(x, gate, up, down, topk_weights, topk_ids, moe_type="qwen3")``
    checks the weights and routing against its sizes, then calls :func:`fused_moe`.
    """

    num_experts: int
    top_k: int
    activation: str = "silu"

    def __call__(self, hidden_states, gate, up, down, topk_weights, topk_ids, *, moe_type="qwen3", **kwargs):
        if gate.shape[0] != self.num_experts:
            raise ValueError(f"FusedMoE has {self.num_experts} experts but gate holds {gate.shape[0]}")
        if topk_ids.shape[-1] != self.top_k:
            raise ValueError(f"FusedMoE routes to top_k={self.top_k} experts but topk_ids has k={topk_ids.shape[-1]}")
        return fused_moe(hidden_states, gate, up, down, topk_weights, topk_ids,
                         moe_type=moe_type, activation=self.activation, **kwargs)
