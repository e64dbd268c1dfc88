"""jax_moe.nn: presets against plain numpy forward passes of the published blocks, checkpoint round
trips, gradients, auxiliary losses, transforms and errors."""

import dataclasses
import functools
import inspect

import flax.linen as linen
import hf_blocks
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_moe.nn import MoE, MoEConfig, auxiliary_losses, linen_moe
from jax_moe.testing import relative_error

PREFIX = "model.layers.3."

# name: (small config, numpy forward of the published block)
PRESETS = {
    "qwen3_moe": (
        MoEConfig.qwen3_moe(hidden_size=32, intermediate_size=16, num_experts=8, top_k=2),
        functools.partial(hf_blocks.qwen_like, E=8, k=2, norm_topk_prob=True),
    ),
    "qwen2_moe": (
        MoEConfig.qwen2_moe(hidden_size=32, intermediate_size=16, num_experts=6, top_k=2, shared_intermediate_size=24),
        functools.partial(hf_blocks.qwen_like, E=6, k=2, norm_topk_prob=False, shared="shared_expert", shared_gate=True),
    ),
    "mixtral": (
        MoEConfig.mixtral(hidden_size=32, intermediate_size=24, num_experts=4),
        functools.partial(hf_blocks.mixtral, E=4, k=2),
    ),
    "deepseek_v3": (
        MoEConfig.deepseek_v3(hidden_size=32, intermediate_size=16, num_experts=16, num_groups=4, topk_groups=2, top_k=4),
        functools.partial(hf_blocks.deepseek_v3, E=16, k=4, n_group=4, topk_group=2, scaling=2.5),
    ),
    "nomic": (
        MoEConfig.nomic_embed_v2_moe(hidden_size=32, intermediate_size=24),
        functools.partial(hf_blocks.nomic, E=8, k=2),
    ),
    "olmoe": (
        MoEConfig.olmoe(hidden_size=32, intermediate_size=16, num_experts=8, top_k=3),
        functools.partial(hf_blocks.qwen_like, E=8, k=3, norm_topk_prob=False),
    ),
}


def random_checkpoint(config: MoEConfig, seed=0) -> dict:
    """A checkpoint in the model's own naming, with a router strong enough to route unevenly."""
    template = MoE(config, rngs=nnx.Rngs(seed)).to_hf_state_dict(PREFIX)
    rng = np.random.default_rng(seed)
    checkpoint = {}
    for key, value in template.items():
        scale = 1.0 if ("gate.weight" in key or "router" in key) else value.shape[-1] ** -0.5
        checkpoint[key] = (rng.normal(size=value.shape) * scale).astype(np.float32)
    return checkpoint


def tokens(config, T=13, seed=1):
    return np.random.default_rng(seed).normal(size=(T, config.hidden_size)).astype(np.float32)


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_matches_published_block(name):
    config, numpy_block = PRESETS[name]
    checkpoint = random_checkpoint(config)
    layer = MoE.from_hf_state_dict(config, checkpoint, prefix=PREFIX)
    x = tokens(config)
    expected = numpy_block({k: v.astype(np.float64) for k, v in checkpoint.items()}, x.astype(np.float64), p=PREFIX)
    assert relative_error(layer(jnp.asarray(x)), expected) < 1e-5


@pytest.mark.parametrize("name", ["qwen3_moe", "mixtral", "deepseek_v3"])
def test_preset_in_bfloat16(name):
    config, numpy_block = PRESETS[name]
    config = MoEConfig(**{**config.__dict__, "dtype": jnp.bfloat16})
    checkpoint = random_checkpoint(config)
    layer = MoE.from_hf_state_dict(config, checkpoint, prefix=PREFIX)
    x = tokens(config)
    out = layer(jnp.asarray(x, jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    expected = numpy_block({k: v.astype(np.float64) for k, v in checkpoint.items()}, x.astype(np.float64), p=PREFIX)
    assert relative_error(out, expected) < 3e-2


@pytest.mark.parametrize("name", list(PRESETS))
def test_checkpoint_round_trip(name):
    config, _ = PRESETS[name]
    checkpoint = random_checkpoint(config, seed=3)
    exported = MoE.from_hf_state_dict(config, checkpoint, prefix=PREFIX).to_hf_state_dict(PREFIX)
    assert exported.keys() == checkpoint.keys()
    for key in checkpoint:
        np.testing.assert_array_equal(exported[key], checkpoint[key], err_msg=key)


def test_import_ignores_the_rest_of_the_model_and_reports_missing_or_misshapen_weights():
    config, _ = PRESETS["mixtral"]
    checkpoint = random_checkpoint(config)
    MoE.from_hf_state_dict(config, {**checkpoint, "model.embed_tokens.weight": np.zeros((3, 32))}, prefix=PREFIX)
    missing = dict(checkpoint)
    del missing[PREFIX + "block_sparse_moe.experts.2.w3.weight"]
    with pytest.raises(KeyError, match="experts.2.w3"):
        MoE.from_hf_state_dict(config, missing, prefix=PREFIX)
    with pytest.raises(ValueError, match="expected shape"):
        MoE.from_hf_state_dict(config, {**checkpoint, PREFIX + "block_sparse_moe.gate.weight": np.zeros((4, 31))},
                               prefix=PREFIX)
    with pytest.raises(ValueError, match="hf_format"):
        MoE.from_hf_state_dict(MoEConfig(hidden_size=8, intermediate_size=8, num_experts=2, top_k=1), checkpoint)


@pytest.mark.parametrize("name", ["qwen2_moe", "deepseek_v3", "nomic"])
def test_gradients_match_reference_path(name):
    config, _ = PRESETS[name]
    checkpoint = random_checkpoint(config, seed=5)
    x = jnp.asarray(tokens(config, T=11))
    target = jnp.asarray(np.random.default_rng(6).normal(size=x.shape), jnp.float32)

    def loss(layer):
        y, aux = layer(x, return_aux=True)
        return jnp.mean((y - target) ** 2) + 0.01 * aux.load_balancing_loss + 0.001 * aux.router_z_loss

    grads = {}
    for implementation in ("fused", "reference"):
        cfg = MoEConfig(**{**config.__dict__, "implementation": implementation})
        layer = MoE.from_hf_state_dict(cfg, checkpoint, prefix=PREFIX)
        grads[implementation] = nnx.state(nnx.grad(loss)(layer), nnx.Param)
    fused, ref = jax.tree.leaves(grads["fused"]), jax.tree.leaves(grads["reference"])
    assert len(fused) == len(ref) > 0
    for g, r in zip(fused, ref):
        assert relative_error(g, r) < 1e-4
    router_grad = grads["fused"]["router"][...]
    assert np.abs(np.asarray(router_grad)).sum() > 0, "the router must learn through the fused ops"


def test_auxiliary_losses_by_hand():
    logits = jnp.array([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 3.0, 1.0]])
    ids = jnp.array([[0, 1], [1, 0], [2, 3]])
    config = MoEConfig(hidden_size=4, intermediate_size=4, num_experts=4, top_k=2)
    aux = auxiliary_losses(logits, ids, config)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    counts = np.array([2, 2, 1, 1])
    np.testing.assert_array_equal(aux.tokens_per_expert, counts)
    np.testing.assert_allclose(aux.load_balancing_loss, 4 * np.sum(counts / 3 * probs.mean(0)), rtol=1e-6)
    lse = np.log(np.exp(logits).sum(1))
    np.testing.assert_allclose(aux.router_z_loss, np.mean(lse**2), rtol=1e-6)
    # Perfect balance with uniform probabilities gives k.
    uniform = auxiliary_losses(jnp.zeros((4, 4)), jnp.array([[0, 1], [2, 3], [0, 1], [2, 3]]), config)
    np.testing.assert_allclose(uniform.load_balancing_loss, 2.0, rtol=1e-6)


def test_intermediates_through_nnx_capture():
    config, _ = PRESETS["olmoe"]
    layer = MoE(config, rngs=nnx.Rngs(0))
    x = jnp.asarray(tokens(config))
    y, state = nnx.capture(layer, nnx.Intermediate)(x)
    _, aux = layer(x, return_aux=True)
    assert y.shape == x.shape
    np.testing.assert_array_equal(state["tokens_per_expert"], aux.tokens_per_expert)
    assert int(np.sum(aux.tokens_per_expert)) == x.shape[0] * config.top_k
    # Outside nnx.capture nothing accumulates in the module (flax releases that can say so).
    layer(x)
    if "capture_noop" in inspect.signature(nnx.Module.sow).parameters:
        assert not nnx.state(layer, nnx.Intermediate)


def test_jit_leading_dims_and_init():
    config, _ = PRESETS["qwen3_moe"]
    layer = MoE(config, rngs=nnx.Rngs(0))
    x = jnp.asarray(tokens(config, T=12)).reshape(3, 4, -1)
    y = nnx.jit(lambda m, v: m(v))(layer, x)
    assert y.shape == x.shape
    np.testing.assert_allclose(y.reshape(12, -1), layer(x.reshape(12, -1)), rtol=1e-6, atol=1e-7)
    assert layer.gate.shape == (8, 32, 16) and layer.down.shape == (8, 16, 32)
    assert layer.gate.get_metadata()["out_sharding"] == ("expert", None, None)
    assert float(jnp.std(layer.gate[...])) == pytest.approx(0.02, rel=0.2)


def test_linen_bridge():
    config, _ = PRESETS["mixtral"]
    model = linen_moe(config)
    x = jnp.asarray(tokens(config))
    variables = model.init(jax.random.key(0), x)
    y = model.apply(variables, x)
    assert y.shape == x.shape and isinstance(model, linen.Module)


def test_config_errors():
    with pytest.raises(ValueError, match="1 <= k <= E"):
        MoEConfig.mixtral(top_k=9)
    with pytest.raises(ValueError, match="moe_type"):
        MoEConfig.olmoe(moe_type="switch")
    with pytest.raises(ValueError, match="shared_expert_gate"):
        MoEConfig.qwen3_moe(shared_expert_gate=True)
    with pytest.raises(ValueError, match="num_groups"):
        MoEConfig.deepseek_v3(num_groups=7)
    with pytest.raises(ValueError, match="hidden_size"):
        MoEConfig.qwen3_moe(hidden_size=0)
    layer = MoE(MoEConfig.olmoe(hidden_size=16, intermediate_size=8, num_experts=4, top_k=2), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\[..., 16\]"):
        layer(jnp.zeros((3, 15)))


def test_backend_options_reach_fused_moe(monkeypatch):
    """MoEConfig.backend and .recompute are what the layer passes to fused_moe."""
    import jax_moe

    config, _ = PRESETS["qwen3_moe"]
    config = dataclasses.replace(config, backend="xla", recompute=True)
    seen = {}
    real = jax_moe.fused_moe

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(jax_moe, "fused_moe", spy)
    MoE(config, rngs=nnx.Rngs(0))(jnp.asarray(tokens(config, T=4)))
    assert seen["backend"] == "xla" and seen["recompute"] is True
