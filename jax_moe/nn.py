"""Flax MoE layer: router + routed experts (+ shared experts), presets of published models, and
Hugging Face weight import / export.

    config = MoEConfig.qwen3_moe(hidden_size=64, num_experts=8)      # any field overridable
    layer = MoE(config, rngs=nnx.Rngs(0))
    y = layer(x)                                                      # [..., H] -> [..., H]
    y, aux = layer(x, return_aux=True)                                # + load-balancing / z losses
    y, state = nnx.capture(layer, nnx.Intermediate)(x)                # the same, as nnx intermediates

Parameters (param_dtype), with ``out_sharding`` metadata naming the expert axis:
  router [H, E]; gate, up [E, H, I]; down [E, I, H] (qwen3 type) ; shared_gate, shared_up [H, Is],
  shared_down [Is, H]; shared_expert_gate [H, 1]; output_bias [H]. The correction bias [E]
  (DeepSeek-V3) is a ``RouterBias`` variable, not a Param: it steers the choice of experts and is
  updated outside the optimizer (e.g. by a load-balancing rule).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jax_moe
from jax_moe import reference
from jax_moe.activations import ACTIVATIONS
from jax_moe.moe import MOE_TYPES
from jax_moe.routing import RoutingConfig, scores_of

# flax >= 0.12.11 can make sow a no-op outside nnx.capture, so a jitted training step never
# carries the statistics in the module's state; older 0.12 releases store the latest values.
_SOW_OUTSIDE_CAPTURE = {"capture_noop": True} if "capture_noop" in inspect.signature(nnx.Module.sow).parameters else {}

HF_FORMATS = ("qwen3_moe", "qwen2_moe", "mixtral", "deepseek_v3", "nomic", "olmoe")
IMPLEMENTATIONS = ("fused", "reference")


@dataclasses.dataclass(frozen=True)
class MoEConfig:
    """Sizes and numerics of one MoE block. Presets: qwen3_moe, qwen2_moe, mixtral, deepseek_v3,
    nomic_embed_v2_moe, olmoe (published sizes; every field can be overridden by keyword)."""

    hidden_size: int
    intermediate_size: int  # per routed expert
    num_experts: int
    top_k: int
    moe_type: str = "qwen3"  # "qwen3" (gated SwiGLU-style) or "nomic" (ungated)
    activation: str = "silu"
    renormalize: bool = False  # divide the k routing weights by their sum (norm_topk_prob)
    scoring: str = "softmax"  # or "sigmoid" (DeepSeek-V3)
    correction_bias: bool = False  # DeepSeek-V3's e_score_correction_bias
    num_groups: int | None = None
    topk_groups: int | None = None
    routed_scaling_factor: float = 1.0
    num_shared_experts: int = 0
    shared_intermediate_size: int | None = None  # default: num_shared_experts * intermediate_size
    shared_expert_gate: bool = False  # Qwen2-MoE: sigmoid(x w) scales the shared expert
    output_bias: bool = False  # nomic: one [H] bias after the combine
    cast_routing_weights: bool = False  # round the routing weights to `dtype` before the combine
    dtype: Any = jnp.float32  # computation dtype
    param_dtype: Any = jnp.float32
    initializer_range: float = 0.02  # std of the normal initializer
    hf_format: str | None = None  # naming used by from_hf_state_dict / to_hf_state_dict
    backend: str = "auto"  # fused_moe backend
    recompute: bool = False  # fused_moe's backward recomputes the gate/up products instead of saving them
    implementation: str = "fused"  # or "reference": the pure-JAX references (parity checks)
    expert_axis: str = "expert"  # sharding name of the experts' leading axis

    def __post_init__(self):
        for name in ("hidden_size", "intermediate_size", "num_experts", "top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"MoEConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.moe_type not in MOE_TYPES:
            raise ValueError(f"unknown moe_type {self.moe_type!r}; expected one of {MOE_TYPES}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; expected one of {sorted(ACTIVATIONS)}")
        if self.hf_format is not None and self.hf_format not in HF_FORMATS:
            raise ValueError(f"unknown hf_format {self.hf_format!r}; expected one of {HF_FORMATS}")
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"unknown implementation {self.implementation!r}; expected one of {IMPLEMENTATIONS}")
        if self.num_shared_experts < 0:
            raise ValueError("num_shared_experts must be >= 0")
        if self.shared_expert_gate and not self.num_shared_experts:
            raise ValueError("shared_expert_gate needs num_shared_experts >= 1")
        _ = self.routing  # validates k, scoring and grouping against num_experts

    @property
    def routing(self) -> RoutingConfig:
        return RoutingConfig(num_experts=self.num_experts, k=self.top_k, renormalize=self.renormalize,
                             scoring=self.scoring, has_bias=self.correction_bias, num_groups=self.num_groups,
                             topk_groups=self.topk_groups, routed_scaling_factor=self.routed_scaling_factor)

    @property
    def shared_size(self) -> int:
        return self.shared_intermediate_size or self.num_shared_experts * self.intermediate_size

    @classmethod
    def qwen3_moe(cls, **overrides) -> MoEConfig:
        """Qwen3-30B-A3B. softmax in fp32 over 128 experts, top-8, renormalized (norm_topk_prob),
        weights cast to the hidden dtype before the combine; SwiGLU experts."""
        return cls(**{**dict(hidden_size=2048, intermediate_size=768, num_experts=128, top_k=8, renormalize=True,
                             cast_routing_weights=True, hf_format="qwen3_moe"), **overrides})

    @classmethod
    def qwen2_moe(cls, **overrides) -> MoEConfig:
        """Qwen2-57B-A14B. softmax, top-8 without renormalization, weights cast to the hidden dtype;
        one shared SwiGLU expert (20480) scaled by sigmoid(x w_gate)."""
        return cls(**{**dict(hidden_size=3584, intermediate_size=2560, num_experts=64, top_k=8,
                             num_shared_experts=1, shared_intermediate_size=20480, shared_expert_gate=True,
                             cast_routing_weights=True, hf_format="qwen2_moe"), **overrides})

    @classmethod
    def mixtral(cls, **overrides) -> MoEConfig:
        """Mixtral-8x7B. softmax over the 8 experts, top-2, renormalized (= softmax over the top-2
        logits), weights cast to the hidden dtype; SwiGLU experts (w1 gate, w3 up, w2 down)."""
        return cls(**{**dict(hidden_size=4096, intermediate_size=14336, num_experts=8, top_k=2, renormalize=True,
                             cast_routing_weights=True, hf_format="mixtral"), **overrides})

    @classmethod
    def deepseek_v3(cls, **overrides) -> MoEConfig:
        """DeepSeek-V3 routed + shared experts. sigmoid scores; the correction bias steers the
        choice; 8 groups scored by their two best biased scores, the best 4 eligible; top-8;
        weights = unbiased scores / (sum + 1e-20) * 2.5; one shared SwiGLU expert (2048)."""
        return cls(**{**dict(hidden_size=7168, intermediate_size=2048, num_experts=256, top_k=8, scoring="sigmoid",
                             correction_bias=True, num_groups=8, topk_groups=4, renormalize=True,
                             routed_scaling_factor=2.5, num_shared_experts=1, hf_format="deepseek_v3"), **overrides})

    @classmethod
    def nomic_embed_v2_moe(cls, **overrides) -> MoEConfig:
        """nomic-embed-text-v2-moe. softmax over 8 experts, top-2, not renormalized; ungated
        experts act(x W1^T) W2 with GELU (tanh approximation, as the seed crate); one output bias."""
        return cls(**{**dict(hidden_size=768, intermediate_size=3072, num_experts=8, top_k=2, moe_type="nomic",
                             activation="gelu", output_bias=True, hf_format="nomic"), **overrides})

    @classmethod
    def olmoe(cls, **overrides) -> MoEConfig:
        """OLMoE-1B-7B. softmax over 64 experts, top-8 without renormalization; SwiGLU experts."""
        return cls(**{**dict(hidden_size=2048, intermediate_size=1024, num_experts=64, top_k=8,
                             cast_routing_weights=True, hf_format="olmoe"), **overrides})


class RouterBias(nnx.Variable):
    """A bias that steers the choice of experts (DeepSeek-V3); not trained by the optimizer."""


class MoEAux(NamedTuple):
    """Training statistics of one call.

    load_balancing_loss: E * sum_e f_e * P_e (Switch Transformer / Mixtral's HF formula), f_e the
      routed slots per token that went to expert e, P_e the mean routing probability of expert e.
    router_z_loss: mean over tokens of logsumexp(router logits)^2 (ST-MoE).
    tokens_per_expert: int32 [E], routed (token, slot) pairs per expert.
    """

    load_balancing_loss: jax.Array
    router_z_loss: jax.Array
    tokens_per_expert: jax.Array


def auxiliary_losses(logits: jax.Array, topk_ids: jax.Array, config: MoEConfig) -> MoEAux:
    """MoEAux of router logits [T, E] and the chosen ids [T, k]."""
    T, E = logits.shape
    logits = logits.astype(jnp.float32)
    probs = scores_of(logits, config.scoring)
    if config.scoring == "sigmoid":
        probs = probs / jnp.sum(probs, axis=-1, keepdims=True)
    counts = jnp.sum(jax.nn.one_hot(topk_ids, E, dtype=jnp.float32), axis=(0, 1))
    tokens = max(T, 1)
    balance = E * jnp.sum(counts / tokens * jnp.sum(probs, axis=0) / tokens)
    z_loss = jnp.sum(jax.nn.logsumexp(logits, axis=-1) ** 2) / tokens
    return MoEAux(balance, z_loss, counts.astype(jnp.int32))


class MoE(nnx.Module):
    """Mixture-of-experts block: [..., H] -> [..., H] (see the module docstring for parameters)."""

    def __init__(self, config: MoEConfig, *, rngs: nnx.Rngs):
        self.config = c = config
        H, I, E = c.hidden_size, c.intermediate_size, c.num_experts
        init = jax.nn.initializers.normal(c.initializer_range)
        expert = (c.expert_axis, None, None)

        def param(shape, axes, initializer=init):
            value = initializer(rngs.params(), shape, c.param_dtype)
            return nnx.Param(value, out_sharding=axes, eager_sharding=False)

        self.router = param((H, E), (None, None))
        self.gate = param((E, H, I), expert)
        self.up = param((E, H, I), expert)
        self.down = param((E, I, H), expert) if c.moe_type == "qwen3" else None
        self.correction_bias = RouterBias(jnp.zeros((E,), jnp.float32)) if c.correction_bias else None
        if c.num_shared_experts:
            S = c.shared_size
            self.shared_gate = param((H, S), (None, None))
            self.shared_up = param((H, S), (None, None))
            self.shared_down = param((S, H), (None, None))
        else:
            self.shared_gate = self.shared_up = self.shared_down = None
        self.shared_expert_gate = param((H, 1), (None, None)) if c.shared_expert_gate else None
        zeros = jax.nn.initializers.zeros
        self.output_bias = param((H,), (None,), zeros) if c.output_bias else None

    def __call__(self, x: jax.Array, *, return_aux: bool = False):
        c = self.config
        if x.shape[-1] != c.hidden_size:
            raise ValueError(f"MoE expects [..., {c.hidden_size}] inputs, got {x.shape}")
        h = x.reshape(-1, c.hidden_size).astype(c.dtype)
        cast = lambda p: p[...].astype(c.dtype)
        # Router logits in the computation dtype, as a bias-free Linear (H -> E) gives them.
        logits = jnp.matmul(h, cast(self.router), preferred_element_type=jnp.float32).astype(c.dtype)
        route = reference.topk_softmax if c.implementation == "reference" else jax_moe.topk_softmax
        weights, ids, _ = route(
            logits, c.top_k, renormalize=c.renormalize, scoring=c.scoring,
            correction_bias=None if self.correction_bias is None else self.correction_bias[...],
            num_groups=c.num_groups, topk_groups=c.topk_groups, routed_scaling_factor=c.routed_scaling_factor,
        )
        if c.cast_routing_weights:
            weights = weights.astype(c.dtype)
        experts = dict(moe_type=c.moe_type, activation=c.activation)
        down = None if self.down is None else cast(self.down)
        if c.implementation == "reference":
            y = reference.fused_moe(h, cast(self.gate), cast(self.up), down, weights, ids, **experts)
        else:
            y = jax_moe.fused_moe(h, cast(self.gate), cast(self.up), down, weights, ids, backend=c.backend,
                                  recompute=c.recompute, **experts)
        y = y.astype(jnp.float32)
        if self.shared_gate is not None:
            shared = reference.expert_ffn(h, cast(self.shared_gate), cast(self.shared_up), cast(self.shared_down),
                                          moe_type="qwen3", activation=c.activation)
            if self.shared_expert_gate is not None:
                scale = jnp.matmul(h, cast(self.shared_expert_gate), preferred_element_type=jnp.float32)
                shared = shared * jax.nn.sigmoid(scale)
            y = y + shared
        if self.output_bias is not None:
            y = y + self.output_bias[...].astype(jnp.float32)
        y = y.astype(c.dtype).reshape(*x.shape[:-1], c.hidden_size)

        aux = auxiliary_losses(logits, ids, c)
        for name, value in aux._asdict().items():  # the latest call's values, under nnx.capture
            self.sow(nnx.Intermediate, name, value, reduce_fn=lambda _, new: new, **_SOW_OUTSIDE_CAPTURE)
        return (y, aux) if return_aux else y

    # -- Hugging Face checkpoints -------------------------------------------------------------

    @classmethod
    def from_hf_state_dict(cls, config: MoEConfig, state_dict, *, prefix: str = "", rngs: nnx.Rngs | None = None) -> MoE:
        """A module holding the weights of one MoE block of a Hugging Face checkpoint.

        state_dict maps names (``prefix`` + the block's own names, see ``config.hf_format``) to
        numpy or jax arrays in the checkpoint's layouts; entries outside the block are ignored.
        """
        if config.hf_format is None:
            raise ValueError("config.hf_format must name the checkpoint's naming (one of " + ", ".join(HF_FORMATS) + ")")
        module = nnx.eval_shape(lambda: cls(config, rngs=rngs or nnx.Rngs(0)))
        for name, value in _from_hf(config, state_dict, prefix).items():
            variable = getattr(module, name)
            expected = variable.get_value().shape
            if value.shape != expected:
                raise ValueError(f"{name}: expected shape {expected} from the checkpoint, got {value.shape}")
            dtype = jnp.float32 if isinstance(variable, RouterBias) else config.param_dtype
            variable.set_value(jnp.asarray(value, dtype))
        return module

    def to_hf_state_dict(self, prefix: str = "") -> dict[str, np.ndarray]:
        """This block's weights in the Hugging Face naming and layouts of ``config.hf_format``."""
        c = self.config
        if c.hf_format is None:
            raise ValueError("config.hf_format must name the checkpoint's naming")
        values = {name: np.asarray(getattr(self, name)[...]) for name in _hf_owned(c)}
        return _to_hf(c, values, prefix)


# Hugging Face layouts: Linear weights are [out, in]. Per-expert names get {j}.
_QWEN_EXPERT = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
_MIXTRAL_EXPERT = {"gate": "w1", "up": "w3", "down": "w2"}


def _hf_owned(c: MoEConfig) -> list[str]:
    names = ["router", "gate", "up"] + (["down"] if c.moe_type == "qwen3" else [])
    names += ["correction_bias"] if c.correction_bias else []
    names += ["shared_gate", "shared_up", "shared_down"] if c.num_shared_experts else []
    names += ["shared_expert_gate"] if c.shared_expert_gate else []
    names += ["output_bias"] if c.output_bias else []
    return names


def _hf_names(c: MoEConfig, prefix: str) -> dict[str, str]:
    """Our parameter name -> the checkpoint's (per-expert names keep a {j} field)."""
    fmt, p = c.hf_format, prefix
    if fmt == "nomic":
        names = {"router": f"{p}mlp.router.layer.weight", "gate": f"{p}mlp.experts.mlp.w1",
                 "up": f"{p}mlp.experts.mlp.w2", "output_bias": f"{p}mlp.experts.bias"}
    elif fmt == "mixtral":
        names = {"router": f"{p}block_sparse_moe.gate.weight"}
        names |= {ours: f"{p}block_sparse_moe.experts.{{j}}.{theirs}.weight" for ours, theirs in _MIXTRAL_EXPERT.items()}
    else:
        names = {"router": f"{p}mlp.gate.weight", "correction_bias": f"{p}mlp.gate.e_score_correction_bias"}
        names |= {ours: f"{p}mlp.experts.{{j}}.{theirs}.weight" for ours, theirs in _QWEN_EXPERT.items()}
        shared = "shared_expert" if fmt == "qwen2_moe" else "shared_experts"
        names |= {f"shared_{ours}": f"{p}mlp.{shared}.{theirs}.weight" for ours, theirs in _QWEN_EXPERT.items()}
        names["shared_expert_gate"] = f"{p}mlp.shared_expert_gate.weight"
    unsupported = [n for n in _hf_owned(c) if n not in names]
    if unsupported:
        raise ValueError(f"hf_format={fmt!r} has no checkpoint names for {unsupported}")
    return names


def _to_hf(c: MoEConfig, values: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    names = _hf_names(c, prefix)
    E, H, I = c.num_experts, c.hidden_size, c.intermediate_size
    out = {}
    for name, value in values.items():
        key = names[name]
        if c.hf_format == "nomic" and name in ("gate", "up"):
            out[key] = value.transpose(0, 2, 1).reshape(E * I, H)  # [E*I, H]: rows of expert e first
        elif "{j}" in key:
            for j in range(E):
                out[key.format(j=j)] = value[j].T
        elif name == "shared_expert_gate" or value.ndim == 2:
            out[key] = value.T  # [in, out] -> Linear's [out, in]
        else:
            out[key] = value
    return out


def _from_hf(c: MoEConfig, state_dict, prefix: str) -> dict[str, np.ndarray]:
    names = _hf_names(c, prefix)
    E, H, I = c.num_experts, c.hidden_size, c.intermediate_size

    def get(key):
        if key not in state_dict:
            raise KeyError(f"checkpoint has no {key!r} (hf_format={c.hf_format!r}, prefix={prefix!r})")
        return np.asarray(state_dict[key])

    values = {}
    for name in _hf_owned(c):
        key = names[name]
        if c.hf_format == "nomic" and name in ("gate", "up"):
            flat = get(key)
            if flat.shape != (E * I, H):
                raise ValueError(f"{key}: expected shape {(E * I, H)}, got {flat.shape}")
            values[name] = flat.reshape(E, I, H).transpose(0, 2, 1)
        elif "{j}" in key:
            values[name] = np.stack([get(key.format(j=j)).T for j in range(E)])
        elif get(key).ndim == 2:
            values[name] = get(key).T
        else:
            values[name] = get(key)
    return values


def linen_moe(config: MoEConfig, name: str | None = None):
    """The MoE block as a flax.linen Module (through nnx.bridge): ``init`` / ``apply`` as usual."""
    return nnx.bridge.to_linen(MoE, config, name=name)
