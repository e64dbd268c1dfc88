"""topk_softmax (FFI custom call) against the pure-JAX reference, on the CPU handler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

import jax_moe
from jax_moe import reference

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]


def grid_logits(seed, shape, dtype, levels=16):
    """Logits on a coarse grid: many exact ties, no near-ties that rounding could flip."""
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.integers(-levels, levels, size=shape) / 4.0, dtype)


def assert_same_routing(out, ref, *, rtol=2e-6):
    weights, ids, token_expert_indices = out
    ref_weights, ref_ids, ref_token_expert_indices = ref
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(token_expert_indices, ref_token_expert_indices)
    np.testing.assert_allclose(weights, ref_weights, rtol=rtol, atol=1e-7)
    assert weights.dtype == jnp.float32 and ids.dtype == jnp.int32 and token_expert_indices.dtype == jnp.int32


@given(
    seed=st.integers(0, 2**31),
    tokens=st.sampled_from([0, 1, 2, 7, 33]),
    experts=st.sampled_from([1, 2, 3, 8, 12, 60, 64, 129, 257, 512, 700]),
    k_fraction=st.floats(0, 1),
    dtype=st.sampled_from(DTYPES),
    renormalize=st.booleans(),
    scale=st.sampled_from([1.0, 2.5]),
)
def test_softmax_matches_reference(seed, tokens, experts, k_fraction, dtype, renormalize, scale):
    k = 1 + int(k_fraction * (experts - 1))
    logits = grid_logits(seed, (tokens, experts), dtype)
    kwargs = dict(renormalize=renormalize, routed_scaling_factor=scale)
    assert_same_routing(jax_moe.topk_softmax(logits, k, **kwargs), reference.topk_softmax(logits, k, **kwargs))


@given(
    seed=st.integers(0, 2**31),
    tokens=st.sampled_from([1, 5, 17]),
    num_groups=st.integers(1, 8),
    group_size=st.integers(1, 6),
    data=st.data(),
    scoring=st.sampled_from(["sigmoid", "softmax"]),
    renormalize=st.booleans(),
    with_bias=st.booleans(),
)
def test_grouped_and_biased_match_reference(seed, tokens, num_groups, group_size, data, scoring, renormalize, with_bias):
    E = num_groups * group_size
    topk_groups = data.draw(st.integers(1, num_groups))
    k = data.draw(st.integers(1, topk_groups * group_size))
    logits = grid_logits(seed, (tokens, E), jnp.float32)
    bias = grid_logits(seed + 1, (E,), jnp.float32, levels=4) if with_bias else None
    kwargs = dict(scoring=scoring, correction_bias=bias, num_groups=num_groups, topk_groups=topk_groups,
                  renormalize=renormalize, routed_scaling_factor=2.5)
    assert_same_routing(jax_moe.topk_softmax(logits, k, **kwargs), reference.topk_softmax(logits, k, **kwargs))


def test_deepseek_v3_routing_by_hand():
    """Grouped sigmoid routing checked against an explicit numpy computation."""
    rng = np.random.default_rng(0)
    T, E, G, TG, k = 6, 16, 4, 2, 3
    logits = rng.normal(size=(T, E)).astype(np.float32)
    bias = rng.normal(size=(E,)).astype(np.float32) * 0.1
    w, ids, _ = jax_moe.topk_softmax(logits, k, scoring="sigmoid", correction_bias=bias, num_groups=G,
                                     topk_groups=TG, renormalize=True, routed_scaling_factor=2.5)
    scores = 1 / (1 + np.exp(-logits.astype(np.float64)))
    biased = scores + bias
    for t in range(T):
        group_scores = np.sort(biased[t].reshape(G, E // G), axis=1)[:, -2:].sum(1)
        groups = np.argsort(-group_scores, kind="stable")[:TG]
        allowed = np.isin(np.arange(E) // (E // G), groups)
        masked = np.where(allowed, biased[t], -np.inf)
        expected = np.argsort(-masked, kind="stable")[:k]
        np.testing.assert_array_equal(ids[t], expected)
        expected_w = scores[t, expected] / scores[t, expected].sum() * 2.5
        np.testing.assert_allclose(w[t], expected_w, rtol=1e-5)


def test_exact_ties_go_to_lower_expert_id():
    logits = jnp.zeros((3, 10), jnp.float32).at[1, 7].set(1.0).at[2].set(-0.0)
    w, ids, _ = jax_moe.topk_softmax(logits, 4)
    np.testing.assert_array_equal(ids, [[0, 1, 2, 3], [7, 0, 1, 2], [0, 1, 2, 3]])
    np.testing.assert_allclose(w[0], np.full(4, 0.1), rtol=1e-6)


def test_weights_are_softmax_of_all_experts():
    logits = jnp.log(jnp.array([[1.0, 2.0, 3.0, 4.0]]))
    w, ids, _ = jax_moe.topk_softmax(logits, 2)
    np.testing.assert_array_equal(ids, [[3, 2]])
    np.testing.assert_allclose(w, [[0.4, 0.3]], rtol=1e-6)
    w, _, _ = jax_moe.topk_softmax(logits, 2, renormalize=True)
    np.testing.assert_allclose(w, [[4 / 7, 3 / 7]], rtol=1e-6)


def test_nonfinite_logits_give_nan_weights_and_valid_ids():
    logits = np.random.default_rng(0).normal(size=(4, 9)).astype(np.float32)
    logits[1, 3] = np.nan
    logits[2, :] = np.nan
    logits[3, 5] = np.inf
    w, ids, _ = jax_moe.topk_softmax(jnp.asarray(logits), 3)
    ids = np.asarray(ids)
    assert ((ids >= 0) & (ids < 9)).all()
    assert all(len(set(row)) == 3 for row in ids)
    assert np.isnan(np.asarray(w)[1:]).all()
    assert np.isfinite(np.asarray(w)[0]).all()
    np.testing.assert_array_equal(ids[2], [0, 1, 2])  # all keys rank as -inf: lowest ids
    assert 3 not in ids[1]  # NaN ranks below every number
    assert ids[3, 0] == 5  # +inf ranks first


def test_leading_dims_are_flattened_and_restored():
    logits = grid_logits(3, (2, 3, 8), jnp.float32)
    w, ids, tei = jax_moe.topk_softmax(logits, 2)
    assert w.shape == ids.shape == tei.shape == (2, 3, 2)
    flat = reference.topk_softmax(logits.reshape(6, 8), 2)
    assert_same_routing((w.reshape(6, 2), ids.reshape(6, 2), tei.reshape(6, 2)), flat)
    np.testing.assert_array_equal(tei.reshape(6, 2)[:, 1], np.arange(6) + 6)  # j * T + t with T = 6


def test_jit_and_vmap():
    logits = grid_logits(4, (5, 3, 12), jnp.bfloat16)
    bias = grid_logits(5, (5, 12), jnp.float32, levels=2)
    route = lambda x, b: jax_moe.topk_softmax(x, 3, scoring="sigmoid", correction_bias=b, renormalize=True)
    ref = lambda x, b: reference.topk_softmax(x, 3, scoring="sigmoid", correction_bias=b, renormalize=True)
    assert_same_routing(jax.jit(jax.vmap(route))(logits, bias), jax.vmap(ref)(logits, bias))
    # Only one operand batched: the other is broadcast.
    assert_same_routing(jax.vmap(route, (0, None))(logits, bias[0]), jax.vmap(ref, (0, None))(logits, bias[0]))
    assert_same_routing(jax.vmap(route, (None, 0))(logits[0], bias), jax.vmap(ref, (None, 0))(logits[0], bias))


ROUTING_VARIANTS = [
    dict(),
    dict(renormalize=True),
    dict(renormalize=True, routed_scaling_factor=2.0),
    dict(scoring="sigmoid"),
    dict(scoring="sigmoid", renormalize=True, correction_bias=np.linspace(-0.2, 0.2, 8).astype(np.float32),
         num_groups=4, topk_groups=2),
]


@pytest.mark.parametrize("kwargs", ROUTING_VARIANTS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gradient_matches_reference(kwargs, dtype):
    logits = jax.random.normal(jax.random.key(0), (6, 8), dtype) * 2
    cotangent = jax.random.normal(jax.random.key(1), (6, 3))

    def loss(route, x):
        w, _, _ = route(x, 3, **kwargs)
        return jnp.sum(w * cotangent) + jnp.sum(w**2)

    grad = jax.jit(jax.grad(lambda x: loss(jax_moe.topk_softmax, x)))(logits)
    ref_grad = jax.grad(lambda x: loss(reference.topk_softmax, x))(logits)
    assert grad.dtype == dtype
    np.testing.assert_allclose(np.asarray(grad, np.float32), np.asarray(ref_grad, np.float32), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", ROUTING_VARIANTS)
def test_check_grads(kwargs):
    # Well separated logits, so that finite differences never change the chosen experts.
    logits = jnp.asarray(np.random.default_rng(0).permutation(32).reshape(4, 8) * 0.3, jnp.float32)
    check_grads(lambda x: jax_moe.topk_softmax(x, 3, **kwargs)[0], (logits,), order=1, modes=["rev"],
                atol=1e-2, rtol=1e-2, eps=1e-3)


def test_correction_bias_has_zero_gradient():
    logits = jax.random.normal(jax.random.key(0), (4, 8))
    bias = jnp.linspace(-0.1, 0.1, 8)
    grad = jax.grad(lambda b: jax_moe.topk_softmax(logits, 2, scoring="sigmoid", correction_bias=b)[0].sum())(bias)
    np.testing.assert_array_equal(grad, np.zeros(8))


@pytest.mark.parametrize(
    "logits, k, kwargs, error, match",
    [
        (np.zeros((2, 4), np.float32), 0, {}, ValueError, "1 <= k <= E"),
        (np.zeros((2, 4), np.float32), 5, {}, ValueError, "1 <= k <= E"),
        (np.zeros((2, 4), np.int32), 1, {}, TypeError, "float32, float16 or bfloat16"),
        (np.zeros((2, 4), np.float64), 1, {}, TypeError, "float32, float16 or bfloat16"),
        (np.zeros((2, 4), np.float32), 1, dict(correction_bias=np.zeros(3, np.float32)), ValueError, r"shape \(4,\)"),
        (np.zeros((2, 4), np.float32), 1, dict(correction_bias=np.zeros(4, np.int32)), TypeError, "floating"),
        (np.zeros((2, 6), np.float32), 1, dict(num_groups=4, topk_groups=1), ValueError, "must divide"),
        (np.zeros((2, 6), np.float32), 1, dict(num_groups=3, topk_groups=4), ValueError, "topk_groups"),
        (np.zeros((2, 6), np.float32), 1, dict(num_groups=3, topk_groups=0), ValueError, "topk_groups"),
        (np.zeros((2, 6), np.float32), 1, dict(num_groups=3), ValueError, "together"),
        (np.zeros((2, 6), np.float32), 5, dict(num_groups=3, topk_groups=2), ValueError, "exceeds"),
        (np.zeros((2, 6), np.float32), 1, dict(scoring="tanh"), ValueError, "unknown scoring"),
        (np.zeros((), np.float32), 1, {}, ValueError, r"\[..., E\]"),
    ],
)
@pytest.mark.parametrize("impl", [jax_moe.topk_softmax, reference.topk_softmax])
def test_errors(impl, logits, k, kwargs, error, match):
    with pytest.raises(error, match=match):
        impl(logits, k, **kwargs)
