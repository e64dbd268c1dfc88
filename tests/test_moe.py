"""fused_moe (every backend that runs here, and each XLA strategy) against the dense reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jax_moe
from jax_moe import backends, reference
from jax_moe.backends import xla
from jax_moe.moe import describe
from jax_moe.testing import TOLERANCE, relative_error

ACTIVATIONS = ["silu", "gelu", "gelu_exact", "relu"]
DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]


def make_case(seed, T, H, I, E, k, *, moe_type="qwen3", dtype=jnp.float32, biases=False, empty_experts=()):
    """Random inputs with a router's top-k choice; experts in empty_experts receive no tokens."""
    rng = np.random.default_rng(seed)

    def normal(shape, scale=1.0):
        return jnp.asarray(rng.normal(size=shape) * scale, jnp.float32)

    x = normal((T, H)).astype(dtype)
    gate = normal((E, H, I), H**-0.5).astype(dtype)
    up = normal((E, H, I), (H if moe_type == "qwen3" else I) ** -0.5).astype(dtype)
    down = normal((E, I, H), I**-0.5).astype(dtype) if moe_type == "qwen3" else None
    logits = normal((T, E))
    logits = logits.at[:, list(empty_experts)].set(-jnp.inf) if empty_experts else logits
    topk_weights, topk_ids, _ = jax_moe.topk_softmax(logits, k, renormalize=True)
    kwargs = {}
    if biases:
        kwargs["gate_bias"] = normal((E, I), 0.1)
        kwargs["down_bias"] = normal((E, H), 0.1)
        if moe_type == "qwen3":
            kwargs["up_bias"] = normal((E, I), 0.1)
    return (x, gate, up, down, topk_weights, topk_ids), kwargs


def upcast(args):
    """fused_moe's positional arguments with every floating array in fp32 (None and ids as they are)."""
    return [a.astype(jnp.float32) if a is not None and jnp.issubdtype(a.dtype, jnp.floating) else a for a in args]


def moe_gradients(backend, args, kwargs, moe_type="qwen3", activation="silu", **options):
    """d/d(x, gate, up, down, topk_weights, biases) of sum(out * a fixed pattern): the cotangent
    does not depend on the forward, so the backward's numerics alone are compared."""
    x, gate, up, down, w, ids = args

    def loss(x, gate, up, down, w, biases):
        out = jax_moe.fused_moe(x, gate, up, down, w, ids, moe_type=moe_type, activation=activation,
                                backend=backend, **biases, **options)
        return jnp.sum(out.astype(jnp.float32) * jnp.cos(jnp.arange(out.size).reshape(out.shape)))

    return jax.grad(loss, argnums=tuple(range(6)))(x, gate, up, down, w, kwargs)


def reference_gradients(args, kwargs, moe_type="qwen3", activation="silu"):
    """jax.grad of the fp32 reference on the up-cast inputs."""
    x, gate, up, down, w, ids = upcast(args)

    def loss(x, gate, up, down, w, biases):
        out = reference.fused_moe(x, gate, up, down, w, ids, moe_type=moe_type, activation=activation, **biases)
        return jnp.sum(out * jnp.cos(jnp.arange(out.size).reshape(out.shape)))

    return jax.grad(loss, argnums=tuple(range(6)))(x, gate, up, down, w, kwargs)


def run_strategy(name, args, moe_type, activation, kwargs):
    problem, weights = describe(*args, moe_type=moe_type, activation=activation, **kwargs)
    x, _, _, _, topk_weights, topk_ids = args
    return jax.jit(xla.STRATEGIES[name], static_argnums=4)(x, weights, topk_weights, topk_ids, problem)


def check(out, ref, dtype):
    assert out.dtype == ref.dtype == dtype
    assert relative_error(out, ref) <= TOLERANCE[jnp.dtype(dtype)]


# Every activation in fp32, every dtype with silu (activations run in fp32 whatever the dtype).
@pytest.mark.parametrize("moe_type", ["qwen3", "nomic"])
@pytest.mark.parametrize(
    "activation, dtype", [(a, jnp.float32) for a in ACTIVATIONS] + [("silu", d) for d in DTYPES[1:]]
)
def test_backends_match_reference(moe_type, activation, dtype):
    args, kwargs = make_case(0, T=19, H=40, I=24, E=6, k=2, moe_type=moe_type, dtype=dtype)
    ref = reference.fused_moe(*args, moe_type=moe_type, activation=activation)
    problem, _ = describe(*args, moe_type=moe_type, activation=activation)
    for name in backends.names():
        if backends.registry.get(name).unsupported(problem) is not None:
            continue  # e.g. mosaic_gpu on the CPU: tests/test_mosaic_gpu.py runs it in interpret mode
        check(jax_moe.fused_moe(*args, moe_type=moe_type, activation=activation, backend=name), ref, dtype)
    for name in xla.STRATEGIES:
        check(run_strategy(name, args, moe_type, activation, kwargs), ref, dtype)


@pytest.mark.parametrize(
    "T, H, I, E, k, empty",
    [
        (0, 16, 8, 4, 2, ()),  # no tokens
        (1, 16, 8, 4, 2, ()),  # one token: the gather strategy
        (1, 8, 8, 1, 1, ()),  # one expert
        (13, 20, 12, 7, 1, ()),  # k = 1, E not a power of two, H and I not multiples of 8
        (9, 12, 20, 5, 5, ()),  # k = E
        (21, 24, 10, 9, 3, (0, 4, 8)),  # empty experts
        (40, 33, 17, 3, 2, (1,)),
    ],
)
@pytest.mark.parametrize("moe_type", ["qwen3", "nomic"])
@pytest.mark.parametrize("biases", [False, True])
def test_awkward_shapes(T, H, I, E, k, empty, moe_type, biases):
    args, kwargs = make_case(1, T, H, I, E, k, moe_type=moe_type, biases=biases, empty_experts=empty)
    ref = reference.fused_moe(*args, moe_type=moe_type, activation="silu", **kwargs)
    assert ref.shape == (T, H)
    for name in xla.STRATEGIES:
        check(run_strategy(name, args, moe_type, "silu", kwargs), ref, jnp.float32)
    check(jax.jit(jax_moe.fused_moe, static_argnames="moe_type")(*args, moe_type=moe_type, **kwargs), ref, jnp.float32)


def test_dense_loops_over_experts_beyond_its_memory_budget(monkeypatch):
    args, kwargs = make_case(12, 10, 16, 12, 4, 2, biases=True)
    batched = run_strategy("dense", args, "qwen3", "silu", kwargs)
    monkeypatch.setattr(xla, "DENSE_BATCH_BYTES", 0)
    looped = run_strategy("dense", args, "qwen3", "silu", kwargs)
    check(looped, batched, jnp.float32)
    check(looped, reference.fused_moe(*args, **kwargs), jnp.float32)


def test_biases_are_applied():
    args, kwargs = make_case(2, 6, 8, 8, 3, 2, biases=True)
    with_bias = jax_moe.fused_moe(*args, **kwargs)
    without = jax_moe.fused_moe(*args)
    assert relative_error(with_bias, without) > 1e-2


def test_reference_against_per_token_loop():
    """The dense reference equals an explicit numpy loop over tokens and slots (float64)."""
    args, kwargs = make_case(3, 5, 6, 4, 3, 2, moe_type="qwen3", biases=True)
    x, gate, up, down, w, ids = (np.asarray(a, np.float64) if a is not None else None for a in args)
    ids = ids.astype(int)
    bg, bu, bd = (np.asarray(kwargs[n], np.float64) for n in ("gate_bias", "up_bias", "down_bias"))
    silu = lambda v: v / (1 + np.exp(-v))
    expected = np.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = ids[t, j]
            h = silu(x[t] @ gate[e] + bg[e]) * (x[t] @ up[e] + bu[e])
            expected[t] += w[t, j] * (h @ down[e] + bd[e])
    assert relative_error(reference.fused_moe(*args, **kwargs), expected) < 1e-5


@pytest.mark.parametrize("strategy", list(xla.STRATEGIES))
def test_out_of_range_ids_contribute_zero(strategy):
    args, _ = make_case(4, 8, 16, 8, 4, 2)
    x, gate, up, down, w, ids = args
    bad = ids.at[0, 0].set(4).at[3, 1].set(-1).at[5, 0].set(2**30)
    zeroed = w.at[0, 0].set(0.0).at[3, 1].set(0.0).at[5, 0].set(0.0)
    expected = reference.fused_moe(x, gate, up, down, zeroed, ids)
    out = run_strategy(strategy, (x, gate, up, down, w, bad), "qwen3", "silu", {})
    check(out, expected, jnp.float32)
    check(jax_moe.fused_moe(x, gate, up, down, w, bad), expected, jnp.float32)


def test_leading_dims():
    args, _ = make_case(5, 6, 8, 8, 3, 2)
    x, gate, up, down, w, ids = args
    out = jax_moe.fused_moe(x.reshape(2, 3, 8), gate, up, down, w.reshape(2, 3, 2), ids.reshape(2, 3, 2))
    np.testing.assert_array_equal(out.reshape(6, 8), jax_moe.fused_moe(*args))


def test_deterministic():
    args, _ = make_case(6, 32, 16, 8, 4, 2, dtype=jnp.bfloat16)
    f = jax.jit(jax_moe.fused_moe)
    np.testing.assert_array_equal(f(*args), f(*args))


def test_gradients_match_reference():
    args, kwargs = make_case(7, 9, 8, 12, 4, 2, biases=True)
    x, gate, up, down, w, ids = args

    def loss(fn, x, gate, up, down, w, bg, bu, bd):
        out = fn(x, gate, up, down, w, ids, gate_bias=bg, up_bias=bu, down_bias=bd)
        return jnp.sum(out * jnp.sin(jnp.arange(out.size).reshape(out.shape)))

    params = (x, gate, up, down, w, kwargs["gate_bias"], kwargs["up_bias"], kwargs["down_bias"])
    argnums = tuple(range(8))
    grads = jax.jit(jax.grad(lambda *p: loss(jax_moe.fused_moe, *p), argnums))(*params)
    ref_grads = jax.grad(lambda *p: loss(reference.fused_moe, *p), argnums)(*params)
    for g, r in zip(grads, ref_grads):
        assert relative_error(g, r) < 1e-5


@pytest.mark.parametrize("moe_type", ["qwen3", "nomic"])
def test_check_grads(moe_type):
    """Reverse-mode gradients against finite differences (f32, small), biases and routing weights included."""
    args, kwargs = make_case(3, 5, 8, 12, 4, 2, moe_type=moe_type, biases=True)
    x, gate, up, down, w, ids = args
    dense_args = (x, gate, up, w, kwargs["gate_bias"], kwargs["down_bias"])

    def f(x, gate, up, w, gate_bias, down_bias):
        return jax_moe.fused_moe(x, gate, up, down, w, ids, moe_type=moe_type, activation="gelu",
                                 gate_bias=gate_bias, down_bias=down_bias, up_bias=kwargs.get("up_bias"))

    check_grads(f, dense_args, order=1, modes=["rev"], atol=2e-3, rtol=2e-3)


def test_tf32_precision_is_an_opt_in():
    """precision="tf32" reaches the f32 matmuls as the platform default (exact fp32 on the CPU)."""
    args, _ = make_case(12, 6, 8, 12, 4, 2)
    ref = reference.fused_moe(*args)
    for precision in ("highest", "tf32"):
        out = jax_moe.fused_moe(*args, precision=precision)
        assert relative_error(out, ref) <= TOLERANCE[jnp.dtype(jnp.float32)]
    precisions = {p: jax.jit(lambda *a, p=p: jax_moe.fused_moe(*a, precision=p)).lower(*args).as_text()
                  for p in ("highest", "tf32")}
    # "highest": every product exact; "tf32": the three expert matmuls at the default, the combine exact.
    assert "DEFAULT" not in precisions["highest"]
    assert precisions["tf32"].count("precision = [DEFAULT, DEFAULT]") == 3


def test_fused_moe_class():
    args, _ = make_case(8, 4, 8, 8, 3, 2)
    layer = jax_moe.FusedMoE(num_experts=3, top_k=2, activation="gelu")
    np.testing.assert_array_equal(layer(*args), jax_moe.fused_moe(*args, activation="gelu"))
    with pytest.raises(ValueError, match="gate holds 3"):
        jax_moe.FusedMoE(4, 2)(*args)
    with pytest.raises(ValueError, match="top_k=1"):
        jax_moe.FusedMoE(3, 1)(*args)


def test_auto_backend_runs_here():
    args, _ = make_case(9, 4, 8, 8, 3, 2)
    problem, _ = describe(*args, moe_type="qwen3", activation="silu")
    assert backends.select(problem, "auto").unsupported(problem) is None


def _valid():
    args, _ = make_case(10, 4, 8, 6, 3, 2)
    return list(args)


@pytest.mark.parametrize(
    "change, kwargs, error, match",
    [
        (lambda a: a, dict(moe_type="mixtral"), ValueError, "unknown moe_type"),
        (lambda a: a, dict(activation="tanh"), ValueError, "unknown activation"),
        (lambda a: a, dict(backend="cuda"), ValueError, "unknown backend"),
        (lambda a: a, dict(precision="fp16"), ValueError, "unknown precision"),
        (lambda a: a.__setitem__(0, a[0].astype(jnp.int32)), {}, TypeError, "hidden_states"),
        (lambda a: a.__setitem__(1, a[1][:, :4]), {}, ValueError, "gate must have shape"),
        (lambda a: a.__setitem__(1, a[1][0]), {}, ValueError, r"gate must have shape \[E, H, I\]"),
        (lambda a: a.__setitem__(2, a[2][:, :, :5]), {}, ValueError, "up must have shape"),
        (lambda a: a.__setitem__(3, a[3][:2]), {}, ValueError, "down must have shape"),
        (lambda a: a.__setitem__(3, None), {}, ValueError, "needs down"),
        (lambda a: a, dict(moe_type="nomic"), ValueError, "takes no down"),
        (lambda a: a.__setitem__(1, a[1].astype(jnp.bfloat16)), {}, TypeError, "gate has dtype"),
        (lambda a: a.__setitem__(4, a[4][:, :1]), {}, ValueError, "one shape"),
        (lambda a: (a.__setitem__(4, a[4][:3]), a.__setitem__(5, a[5][:3])), {}, ValueError, "leading dims"),
        (lambda a: a.__setitem__(5, a[5].astype(jnp.float32)), {}, TypeError, "topk_ids must be integer"),
        (lambda a: a.__setitem__(4, a[4].astype(jnp.int32)), {}, TypeError, "topk_weights must be floating"),
        (lambda a: a, dict(gate_bias=jnp.zeros((6, 3))), ValueError, "gate_bias must have shape"),
        (lambda a: a, dict(down_bias=jnp.zeros((6, 6))), ValueError, "down_bias must have shape"),
        (lambda a: a.__setitem__(3, None), dict(moe_type="nomic", up_bias=jnp.zeros((3, 6))), ValueError, "up_bias"),
    ],
)
def test_errors(change, kwargs, error, match):
    args = _valid()
    change(args)
    with pytest.raises(error, match=match):
        jax_moe.fused_moe(*args, **kwargs)
