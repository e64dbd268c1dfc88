"""GPU tests (pytest -m gpu): the CUDA router against the CPU router, fused_moe on the GPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_moe import make_case, moe_gradients, reference_gradients, upcast
from test_router import grid_logits

import jax_moe
from jax_moe import reference
from jax_moe.testing import TOLERANCE, relative_error

pytestmark = pytest.mark.gpu


def on(platform, fn, *args, **kwargs):
    """fn under jit with every argument committed to the first device of `platform`."""
    device = jax.devices(platform)[0]
    put = lambda tree: jax.tree.map(lambda a: jax.device_put(a, device), tree)
    return jax.jit(fn)(*put(args), **put(kwargs))


def on_cpu(fn, *args, **kwargs):
    return on("cpu", fn, *args, **kwargs)


def on_gpu(fn, *args, **kwargs):
    return on("gpu", fn, *args, **kwargs)


def assert_same(gpu_out, cpu_out):
    weights, ids, token_expert_indices = gpu_out
    np.testing.assert_array_equal(ids, cpu_out[1])
    np.testing.assert_array_equal(token_expert_indices, cpu_out[2])
    np.testing.assert_allclose(weights, cpu_out[0], rtol=2e-6, atol=1e-7)


# E covers both CUDA kernels: registers (E <= 512, every threads-per-row width) and shared memory.
@pytest.mark.parametrize("E", [1, 3, 8, 17, 60, 64, 128, 129, 256, 500, 512, 513, 1000, 4096])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("T", [1, 4099])
def test_cuda_router_matches_cpu_router(E, dtype, T):
    logits = jnp.asarray(np.random.default_rng(E + T).normal(size=(T, E)), dtype)
    variants = [(k, renormalize) for k in sorted({1, min(2, E), min(8, E), E if E <= 64 else 1})
                for renormalize in (False, True)]
    # One compilation per device for all variants.
    route = lambda x: [jax_moe.topk_softmax(x, k, renormalize=r, routed_scaling_factor=1.5) for k, r in variants]
    for gpu_out, cpu_out in zip(on_gpu(route, logits), on_cpu(route, logits)):
        assert_same(gpu_out, cpu_out)


# Register kernel (groups spanning whole lanes): 256/8, 128/4, 512/8, 192/3 (padding lanes), 96/6.
# Shared-memory kernel: 64/8, 60/6, 12/12, 1000/8. One group: 8/1.
@pytest.mark.parametrize("E, G, TG, k", [(256, 8, 4, 8), (128, 4, 2, 8), (512, 8, 3, 8), (192, 3, 2, 6), (96, 6, 2, 4),
                                         (64, 8, 3, 6), (60, 6, 2, 4), (12, 12, 3, 3), (1000, 8, 2, 8), (8, 1, 1, 8)])
@pytest.mark.parametrize("scoring", ["sigmoid", "softmax"])
def test_cuda_grouped_routing_matches_cpu(E, G, TG, k, scoring):
    logits = grid_logits(E, (3001, E), jnp.bfloat16)
    bias = grid_logits(E + 1, (E,), jnp.float32, levels=4)
    route = lambda x, b: jax_moe.topk_softmax(x, k, scoring=scoring, correction_bias=b, num_groups=G,
                                              topk_groups=TG, renormalize=True, routed_scaling_factor=2.5)
    assert_same(on_gpu(route, logits, bias), on_cpu(route, logits, bias))


@pytest.mark.parametrize("E", [8, 128, 700])
def test_cuda_biased_and_sigmoid_routing_matches_cpu(E):
    logits = grid_logits(E, (2049, E), jnp.float32)
    bias = grid_logits(E + 1, (E,), jnp.float32, levels=4)
    for scoring in ("softmax", "sigmoid"):
        route = lambda x, b: jax_moe.topk_softmax(x, 4, scoring=scoring, correction_bias=b)
        assert_same(on_gpu(route, logits, bias), on_cpu(route, logits, bias))


# The packed-key warp kernel (16-bit logits, softmax, 64 < E <= 256, k <= 32) and its fallback (k > 32):
# exact ties everywhere (the id lives in the key's low bits), NaN, +-inf, -0.0, a batch of rows.
@pytest.mark.parametrize("E", [65, 100, 128, 129, 200, 256])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_cuda_packed_router_ties_and_specials(E, dtype):
    logits = np.array(grid_logits(E, (3, 701, E), jnp.float32, levels=6))
    logits[0, 3, :5] = np.nan
    logits[0, 4] = np.nan
    logits[1, 5, 7] = np.inf
    logits[1, 6, ::3] = -np.inf
    logits[2, 7] = -0.0
    logits[2, 8, ::2] = 0.0
    logits = jnp.asarray(logits, dtype)
    variants = [(k, r) for k in sorted({1, 2, 8, min(32, E), min(33, E)}) for r in (False, True)]
    route = lambda x: [jax_moe.topk_softmax(x, k, renormalize=r) for k, r in variants]
    for gpu_out, cpu_out in zip(on_gpu(route, logits), on_cpu(route, logits)):
        assert_same(gpu_out, cpu_out)  # NaN weights (NaN rows) compare equal


def test_cuda_router_edge_cases():
    for T in (0, 1, 2, 31, 33):
        logits = grid_logits(T, (T, 8), jnp.float32)
        assert_same(on_gpu(lambda x: jax_moe.topk_softmax(x, 2), logits), reference.topk_softmax(logits, 2))
    logits = np.random.default_rng(0).normal(size=(64, 20)).astype(np.float32)
    logits[3, 5] = np.nan
    logits[7] = np.nan
    logits[9, 2] = np.inf
    w, ids, _ = on_gpu(lambda x: jax_moe.topk_softmax(x, 4), jnp.asarray(logits))
    ids = np.asarray(ids)
    assert ((ids >= 0) & (ids < 20)).all() and all(len(set(r)) == 4 for r in ids)
    assert np.isnan(np.asarray(w)[[3, 7, 9]]).all() and np.isfinite(np.delete(np.asarray(w), [3, 7, 9], 0)).all()


def test_cuda_router_is_deterministic():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(32768, 128)), jnp.bfloat16)
    route = jax.jit(lambda x: jax_moe.topk_softmax(x, 8, renormalize=True))
    first = route(logits)
    for _ in range(3):
        for a, b in zip(first, route(logits)):
            np.testing.assert_array_equal(a, b)


def test_cuda_router_gradient_and_vmap():
    logits = jax.random.normal(jax.random.key(0), (4, 64, 32))
    loss = lambda x: jnp.sum(jax.vmap(lambda l: jax_moe.topk_softmax(l, 4, renormalize=True)[0])(x) ** 2)
    ref_loss = lambda x: jnp.sum(jax.vmap(lambda l: reference.topk_softmax(l, 4, renormalize=True)[0])(x) ** 2)
    np.testing.assert_allclose(on_gpu(jax.grad(loss), logits), on_cpu(jax.grad(ref_loss), logits), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("moe_type", ["qwen3", "nomic"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("T", [1, 3, 64, 1000])
def test_fused_moe_on_gpu(moe_type, dtype, T):
    args, kwargs = make_case(T, T, 256, 192, 16, 4, moe_type=moe_type, dtype=dtype, biases=True)
    run = lambda *a, **kw: jax_moe.fused_moe(*a, moe_type=moe_type, activation="gelu", **kw)
    ref = lambda *a, **kw: reference.fused_moe(*a, moe_type=moe_type, activation="gelu", **kw)
    out = on_gpu(run, *args, **kwargs)
    assert relative_error(out, on_cpu(ref, *args, **kwargs)) <= TOLERANCE[jnp.dtype(dtype)]
    np.testing.assert_array_equal(out, on_gpu(run, *args, **kwargs))  # deterministic


def on_gpu_mosaic(args, moe_type, activation, **kwargs):
    """fused_moe(backend="mosaic_gpu") on the GPU; the static options stay out of jit's arguments."""
    run = lambda *a, **kw: jax_moe.fused_moe(*a, moe_type=moe_type, activation=activation, backend="mosaic_gpu", **kw)
    return on_gpu(run, *args, **kwargs)


@pytest.mark.parametrize("shape", ["qwen3_30b_a3b", "mixtral_8x7b", "olmoe", "seed_nomic", "seed_qwen3"])
@pytest.mark.parametrize("T, dtype", [(1, jnp.bfloat16), (5, jnp.float16), (333, jnp.bfloat16), (4096, jnp.bfloat16)])
def test_mosaic_gpu_on_benchmark_shapes(shape, T, dtype):
    """The compiled kernels at the benchmark's sizes: parity with the fp32 reference, determinism."""
    from jax_moe.shapes import SHAPES
    s = SHAPES[shape]
    if shape == "mixtral_8x7b" and T > 333:
        pytest.skip("the fp32 reference of Mixtral at T=4096 costs minutes; T<=333 covers its tiling")
    args, _ = make_case(T, T, s.hidden, s.intermediate, s.experts, s.top_k, moe_type=s.moe_type, dtype=dtype)
    out = on_gpu_mosaic(args, s.moe_type, s.activation)
    ref = on_gpu(lambda *a: reference.fused_moe(*a, moe_type=s.moe_type, activation=s.activation), *upcast(args))
    assert relative_error(out, ref) <= TOLERANCE[jnp.dtype(dtype)]
    np.testing.assert_array_equal(out, on_gpu_mosaic(args, s.moe_type, s.activation))


def expert_up_case(shape, T):
    """(problem, weights, x, topk_weights, topk_ids, expert_up's config) of a benchmark shape, bf16."""
    from jax_moe.backends import mosaic_gpu
    from jax_moe.moe import describe
    from jax_moe.shapes import SHAPES
    s = SHAPES[shape]
    args, _ = make_case(T, T, s.hidden, s.intermediate, s.experts, s.top_k, moe_type=s.moe_type, dtype=jnp.bfloat16)
    problem, weights = describe(*args, moe_type=s.moe_type, activation=s.activation)
    x, _, _, _, w, ids = args
    return problem, weights, x, w, ids, mosaic_gpu.choose_configs(problem)[0]


@pytest.mark.parametrize("shape, T", [("qwen3_30b_a3b", 1), ("qwen3_30b_a3b", 64), ("qwen3_30b_a3b", 4096),
                                      ("seed_nomic", 512), ("mixtral_8x7b", 64)])
def test_compiled_row_gather_equals_the_gathered_copy(shape, T):
    """expert_up reading x's rows itself (cp.async gathers of the producer warpgroup) is bitwise
    expert_up on x[row_token], in every row the kernels write: decode, split and alternate items."""
    from jax_moe.backends import mosaic_gpu
    from jax_moe.permutation import align_to_tiles, rows_as_tiles
    problem, weights, x, w, ids, cfg = expert_up_case(shape, T)

    def both(x, weights, w, ids):
        layout = (rows_as_tiles if T == 1 else align_to_tiles)(ids, w, problem.experts, cfg.block_m)
        gathered = mosaic_gpu.expert_up(layout, x, weights, problem, cfg, gather=True)
        copied = mosaic_gpu.expert_up(layout, x[layout.row_token], weights, problem, cfg)
        return gathered, copied, layout.slot_row

    gathered, copied, routed = map(np.asarray, on_gpu(both, x, weights, w, ids))
    routed = routed.ravel()
    assert np.isfinite(gathered[routed].astype(np.float32)).all()
    np.testing.assert_array_equal(gathered[routed], copied[routed])


@pytest.mark.parametrize("shape, T", [("qwen3_30b_a3b", 64), ("qwen3_30b_a3b", 4096), ("seed_nomic", 512)])
def test_compiled_expert_up_stores_the_rows_it_gathers(shape, T):
    """Training's expert_up (copy_rows: x's rows read by cp.async, stored from the ring slots) gives
    x[row_token] in every row a tile owns, and bitwise the outputs of expert_up on XLA's copy."""
    from jax_moe.backends import mosaic_gpu
    from jax_moe.permutation import align_to_tiles
    from test_mosaic_gpu import owned_rows
    problem, weights, x, w, ids, cfg = expert_up_case(shape, T)

    def both(x, weights, w, ids):
        layout = align_to_tiles(ids, w, problem.experts, cfg.block_m, aligned_experts=True)
        stored = mosaic_gpu.expert_up(layout, x, weights, problem, cfg, keep_preactivations=True, gather=True,
                                      copy_rows=True)
        xs = x[layout.row_token]
        return stored, (*mosaic_gpu.expert_up(layout, xs, weights, problem, cfg, keep_preactivations=True), xs), layout

    (hw, pre, copy), (want_hw, want_pre, xs), layout = on_gpu(both, x, weights, w, ids)
    owned = owned_rows(layout, xs.shape[0])
    np.testing.assert_array_equal(np.asarray(copy)[owned], np.asarray(xs)[owned])
    routed = np.asarray(layout.slot_row).ravel()
    for got, want in zip((hw, *pre), (want_hw, *want_pre)):
        np.testing.assert_array_equal(np.asarray(got)[routed], np.asarray(want)[routed])


@pytest.mark.parametrize("aligned, E", [(False, 16), (True, 16), (True, 17)])
def test_compiled_contraction_multiplies_each_experts_rows_only(aligned, E):
    """The compiled weight-gradient contraction, whose partial last row blocks are multiplied over
    their leading 16-row groups only (inline wgmma of 1 to 4 k16 instructions), against numpy:
    experts ending at every residue class of 16 in a 64-row block, NaN in every row no expert owns;
    one consumer and two sharing each item. E = 16: the expert tables copied to SMEM straight from
    the layout's arrays; E = 17: from padded copies of them."""
    from jax_moe.backends import mosaic_gpu_grad
    from jax_moe.permutation import align_to_tiles, row_count
    from test_mosaic_gpu import expected_contraction, owned_rows
    sizes = [1, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 0, 130, 200, 9][:E]
    M, N = 128, 256
    ids = jnp.asarray(np.repeat(np.arange(E), sizes)[np.random.default_rng(0).permutation(sum(sizes))], jnp.int32)[:, None]
    layout = align_to_tiles(ids, jnp.ones(ids.shape, jnp.float32), E, 64, aligned_experts=aligned)
    rows = row_count(ids.shape[0], 1, 64, aligned_experts=E if aligned else 0)
    owned = owned_rows(layout, rows)
    assert (np.asarray(layout.expert_size) == sizes).all()
    rng = np.random.default_rng(1)
    lhs = jnp.where(owned[:, None], jnp.asarray(rng.normal(size=(rows, M)), jnp.bfloat16), jnp.nan)
    rhs = jnp.where(owned[:, None], jnp.asarray(rng.normal(size=(rows, N)), jnp.bfloat16), jnp.nan)
    for cfg in (mosaic_gpu_grad.ContractionConfig(128, 256, 64, 4, consumers=2, staging_chunks=1, cooperative=True),
                mosaic_gpu_grad.ContractionConfig(128, 128, 64, 5)):
        (out,) = on_gpu(lambda a, b, cfg=cfg: mosaic_gpu_grad.expert_contraction(layout, a, [b], cfg, jnp.float32),
                        lhs, rhs)
        np.testing.assert_allclose(np.asarray(out), expected_contraction(layout, lhs, rhs), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("T, k, E", [(33, 9, 3), (4096, 8, 128), (16384, 8, 128), (1000, 2, 8), (777, 6, 300),
                                     (5000, 4, 511)])
def test_mosaic_gpu_routing_kernel_sorts_like_xla(T, k, E):
    """The compiled routing kernel (one-hot wgmma ranks) gives XLA's stable sort by expert, with
    out-of-range ids, a partial last chunk and up to 8 blocks of one-hot columns; with the FFI
    call's CUDA kernels after it, align_to_tiles' aligned (training) layout, bitwise."""
    from jax_moe.backends import mosaic_gpu_routing
    from jax_moe.permutation import sort_by_expert
    ids = jnp.asarray(np.random.default_rng(T + k + E).integers(-1, E + 1, size=(T, k)), jnp.int32)
    got = on_gpu(lambda i: mosaic_gpu_routing.sort_by_expert(i, E), ids)
    want = on_gpu(lambda i: sort_by_expert(i, E, method="argsort"), ids)
    for name, a, b in zip(want._fields, got, want):
        np.testing.assert_array_equal(a, b, err_msg=name)
    # The training layout: the routing kernel's ranks, then the FFI call's CUDA kernels.
    from jax_moe.permutation import align_to_tiles
    weights = jnp.asarray(np.random.default_rng(E).random((T, k)), jnp.float32)
    for block_m in (64, 128):
        layout = on_gpu(lambda i, w: mosaic_gpu_routing.aligned_layout(i, w, E, block_m), ids, weights)
        expected = on_gpu(lambda i, w: align_to_tiles(i, w, E, block_m, aligned_experts=True), ids, weights)
        for name, a, b in zip(expected._fields, layout, expected):
            if b is not None:
                np.testing.assert_array_equal(a, b, err_msg=f"{name} block_m={block_m}")


@pytest.mark.parametrize("T, k, E, block_m, n_blocks", [(4096, 8, 128, 64, 4), (777, 6, 300, 64, 3)])
def test_mosaic_gpu_slot_dots(T, k, E, block_m, n_blocks):
    """slot_dots' CUDA kernel gives the XLA scatter + gather's sums, bitwise (n-blocks in order)."""
    from jax_moe.backends import mosaic_gpu_grad
    from test_mosaic_gpu import expected_slot_dots
    want, (layout, tile_dots, ids) = expected_slot_dots(T, k, E, block_m, n_blocks)
    got = on_gpu(lambda lay, t, i: mosaic_gpu_grad.slot_dots(lay, t, i), layout, tile_dots, ids)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("moe_type", ["qwen3", "nomic"])
@pytest.mark.parametrize("activation", ["silu", "gelu", "gelu_exact", "relu"])
def test_mosaic_gpu_epilogues(moe_type, activation):
    """Every activation and bias in the compiled epilogues; empty experts; an out-of-range id."""
    args, kwargs = make_case(7, 300, 128, 192, 10, 3, moe_type=moe_type, dtype=jnp.bfloat16, biases=True,
                             empty_experts=(2, 7))
    x, gate, up, down, w, ids = args
    bad = ids.at[0, 0].set(10)
    out = on_gpu_mosaic((x, gate, up, down, w, bad), moe_type, activation, **kwargs)
    ref = reference.fused_moe(*upcast((x, gate, up, down, w.at[0, 0].set(0.0), ids)), moe_type=moe_type,
                              activation=activation, **kwargs)
    assert relative_error(out, ref) <= TOLERANCE[jnp.dtype(jnp.bfloat16)]


def test_auto_picks_mosaic_gpu_on_hopper_and_gradients_flow():
    args, kwargs = make_case(8, 64, 128, 128, 8, 2, dtype=jnp.bfloat16, biases=True)
    problem, _ = jax_moe.moe.describe(*args, moe_type="qwen3", activation="silu", **kwargs)
    from jax_moe import backends
    if jax.devices()[0].compute_capability == "9.0":
        assert backends.select(problem, "auto").name == "mosaic_gpu"
    x, gate, up, down, w, ids = args
    loss = lambda backend: lambda x, gate, w: jnp.sum(
        jax_moe.fused_moe(x, gate, up, down, w, ids, backend=backend, **kwargs).astype(jnp.float32) ** 2)
    grads = on_gpu(jax.grad(loss("auto"), argnums=(0, 1, 2)), x, gate, w)
    expected = on_gpu(jax.grad(loss("xla"), argnums=(0, 1, 2)), x, gate, w)
    # Same VJP, but the cotangent 2 * out comes from each backend's bf16 forward: bf16's bound.
    for g, e in zip(grads, expected):
        assert relative_error(g, e) <= TOLERANCE[jnp.dtype(jnp.bfloat16)]


def gradients_on_gpu(backend, args, kwargs, moe_type, activation):
    """test_moe.moe_gradients jitted on the GPU; backend "reference": reference_gradients."""
    if backend == "reference":
        fn = lambda args, kwargs: reference_gradients(args, kwargs, moe_type, activation)
    else:
        fn = lambda args, kwargs: moe_gradients(backend, args, kwargs, moe_type, activation)
    return on_gpu(fn, list(args), kwargs)


def assert_gradients_match(args, kwargs, moe_type, activation, dtype=jnp.bfloat16):
    grads = gradients_on_gpu("mosaic_gpu", args, kwargs, moe_type, activation)
    expected = gradients_on_gpu("reference", args, kwargs, moe_type, activation)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
        assert relative_error(got, want) <= TOLERANCE[jnp.dtype(dtype)]
    again = gradients_on_gpu("mosaic_gpu", args, kwargs, moe_type, activation)
    for got, second in zip(jax.tree.leaves(grads), jax.tree.leaves(again)):
        np.testing.assert_array_equal(got, second)  # bitwise reproducible


# One pytest-xdist worker runs these one after another (--dist loadgroup): their fp32 reference
# gradients take 4-18 GB each and ran an H100 out of memory side by side.
@pytest.mark.xdist_group("fp32_reference_gradients")
@pytest.mark.parametrize("shape", ["qwen3_30b_a3b", "olmoe", "seed_nomic", "seed_qwen3"])
@pytest.mark.parametrize("T, dtype", [(1, jnp.bfloat16), (5, jnp.float16), (333, jnp.bfloat16), (4096, jnp.bfloat16)])
def test_mosaic_gpu_gradients_on_benchmark_shapes(shape, T, dtype):
    """The compiled backward kernels at the benchmark's sizes against jax.grad of the fp32 reference."""
    from jax_moe.shapes import SHAPES
    s = SHAPES[shape]
    args, _ = make_case(T, T, s.hidden, s.intermediate, s.experts, s.top_k, moe_type=s.moe_type, dtype=dtype)
    assert_gradients_match(args, {}, s.moe_type, s.activation, dtype)


@pytest.mark.parametrize("moe_type", ["qwen3", "nomic"])
@pytest.mark.parametrize("activation", ["silu", "gelu", "gelu_exact", "relu"])
def test_mosaic_gpu_gradient_epilogues(moe_type, activation):
    """Every activation's derivative and every bias gradient in the compiled kernels; empty experts."""
    args, kwargs = make_case(7, 300, 128, 192, 10, 3, moe_type=moe_type, dtype=jnp.bfloat16, biases=True,
                             empty_experts=(2, 7))
    assert_gradients_match(args, kwargs, moe_type, activation)


def test_mosaic_gpu_gradients_under_remat_and_value_and_grad():
    """jax.checkpoint around fused_moe (the backward recomputes the forward kernels) and the
    recompute option give the same gradients as the saved pre-activations, bitwise."""
    args, _ = make_case(3, 200, 128, 128, 6, 2, dtype=jnp.bfloat16)
    x, gate, up, down, w, ids = args

    def grads(remat, recompute):
        layer = lambda x, gate, w: jax_moe.fused_moe(x, gate, up, down, w, ids, backend="mosaic_gpu",
                                                     recompute=recompute)
        layer = jax.checkpoint(layer) if remat else layer
        loss = lambda x, gate, w: jnp.sum(layer(x, gate, w).astype(jnp.float32) ** 2)
        return on_gpu(jax.value_and_grad(loss, argnums=(0, 1, 2)), x, gate, w)

    plain = grads(False, False)
    for variant in (grads(True, False), grads(False, True)):
        for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(variant)):
            np.testing.assert_array_equal(a, b)


def test_tf32_opt_in_on_gpu():
    """f32 inputs: "highest" is exact to f32's bound; "tf32" takes the tensor cores (its result
    differs from the exact one) within TF32's error."""
    args, _ = make_case(4, 512, 256, 512, 8, 2)
    ref = on_cpu(lambda *a: reference.fused_moe(*a), *args)
    exact = on_gpu(lambda *a: jax_moe.fused_moe(*a, precision="highest"), *args)
    tf32 = on_gpu(lambda *a: jax_moe.fused_moe(*a, precision="tf32"), *args)
    assert relative_error(exact, ref) <= TOLERANCE[jnp.dtype(jnp.float32)]
    assert TOLERANCE[jnp.dtype(jnp.float32)] < relative_error(tf32, ref) <= 5e-3


def test_profile_prints_each_kernels_time(tmp_path, capsys):
    """`python -m jax_moe.profile --kernels` on the GPU: CUPTI per-kernel times (the profiler
    once ran after jax.profiler.trace, whose CUPTI session made it drop records and abort)."""
    from jax_moe import profile

    profile.main(["--shape", "qwen3_30b_a3b", "--tokens", "4096", "--backend", "mosaic_gpu", "--steps", "2",
                  "--kernels", "--trace-dir", str(tmp_path)])
    out = capsys.readouterr().out
    total = [line for line in out.splitlines() if " kernels" in line and line.endswith("kernels")]
    assert total and float(total[0].split()[0]) > 0, out
    assert "expert_up" in out and "expert_down" in out, out
