"""The mosaic_gpu backend's kernels, run on the CPU in Pallas GPU interpret mode.

Interpret mode fills every buffer with NaN before a kernel runs and raises on out-of-bounds
reads, so a parity test also proves that every element the combine reads was written. Shapes are
small (interpret mode is slow); tests/test_gpu.py runs the same kernels compiled on an H100.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call  # race detector state (jax 0.11)

import jax_moe
from jax_moe import reference
from jax_moe.backends import mosaic_gpu
from jax_moe.backends.registry import ExpertWeights, MoEProblem
from jax_moe.moe import describe
from jax_moe.permutation import ALIGN_ROWS, align_to_tiles, row_count, tile_count
from jax_moe.shapes import SHAPES
from jax_moe.testing import TOLERANCE, relative_error
from tests.test_moe import make_case, upcast


def run_interpreted(args, moe_type="qwen3", activation="silu", **kwargs):
    return jax_moe.fused_moe(*args, moe_type=moe_type, activation=activation, backend="mosaic_gpu",
                             interpret=True, **kwargs)


def reference_of(args, moe_type="qwen3", activation="silu", **kwargs):
    """The fp32 reference on the half-precision inputs (the error the half output has against it)."""
    return reference.fused_moe(*upcast(args), moe_type=moe_type, activation=activation, **kwargs)


@pytest.mark.parametrize(
    "T, H, I, E, k, empty, moe_type, activation, dtype, biases",
    [
        (0, 64, 64, 4, 2, (), "qwen3", "silu", jnp.bfloat16, False),  # no tokens
        (1, 64, 128, 4, 2, (), "qwen3", "silu", jnp.bfloat16, True),  # one token
        (1, 64, 64, 1, 1, (), "nomic", "relu", jnp.float16, False),  # one expert
        (13, 128, 64, 7, 1, (), "qwen3", "gelu", jnp.float16, True),  # k = 1, E not a power of two
        (9, 64, 192, 5, 5, (), "nomic", "gelu_exact", jnp.bfloat16, True),  # k = E, I = 3 * 64
        (40, 64, 64, 9, 3, (0, 4, 8), "qwen3", "relu", jnp.bfloat16, False),  # empty experts
        (70, 192, 64, 3, 2, (), "nomic", "silu", jnp.bfloat16, False),  # an expert spans 2 M-tiles
    ],
)
def test_matches_reference(T, H, I, E, k, empty, moe_type, activation, dtype, biases):
    args, kwargs = make_case(T, T, H, I, E, k, moe_type=moe_type, dtype=dtype, biases=biases, empty_experts=empty)
    out = run_interpreted(args, moe_type, activation, **kwargs)
    ref = reference_of(args, moe_type, activation, **kwargs)
    assert out.shape == (T, H) and out.dtype == dtype
    assert relative_error(out, ref) <= TOLERANCE[jnp.dtype(dtype)]


def test_deterministic_and_out_of_range_ids():
    args, _ = make_case(1, 24, 64, 64, 6, 2, dtype=jnp.bfloat16)
    x, gate, up, down, w, ids = args
    bad = ids.at[0, 0].set(6).at[3, 1].set(-1).at[5, 0].set(2**30)
    zeroed = w.at[0, 0].set(0.0).at[3, 1].set(0.0).at[5, 0].set(0.0)
    out = run_interpreted((x, gate, up, down, w, bad))
    np.testing.assert_array_equal(out, run_interpreted((x, gate, up, down, w, bad)))
    assert relative_error(out, reference_of((x, gate, up, down, zeroed, ids))) <= TOLERANCE[jnp.dtype(jnp.bfloat16)]


def test_gradient_is_the_xla_backends():
    args, kwargs = make_case(2, 6, 64, 64, 3, 2, dtype=jnp.bfloat16, biases=True)
    x, gate, up, down, w, ids = args

    def loss(backend, x, gate, w, bg):
        out = jax_moe.fused_moe(x, gate, up, down, w, ids, gate_bias=bg, backend=backend, interpret=True)
        return jnp.sum(out.astype(jnp.float32) * jnp.cos(jnp.arange(out.size).reshape(out.shape)))

    params = (x, gate, w, kwargs["gate_bias"])
    grads = jax.grad(lambda *p: loss("mosaic_gpu", *p), argnums=(0, 1, 2, 3))(*params)
    expected = jax.grad(lambda *p: loss("xla", *p), argnums=(0, 1, 2, 3))(*params)
    for g, e in zip(grads, expected):
        assert g.dtype == e.dtype
        np.testing.assert_array_equal(g, e)


def test_no_races_between_tiles():
    """Two CTAs share the tile grid: the race detector checks the SMEM/TMA synchronisation."""
    args, kwargs = make_case(3, 20, 64, 64, 3, 2, dtype=jnp.bfloat16, biases=True)
    problem, weights = describe(*args, moe_type="qwen3", activation="silu", interpret=True, **kwargs)
    up_cfg, down_cfg = mosaic_gpu.choose_configs(problem)
    x, _, _, _, w, ids = args
    layout = align_to_tiles(ids, w, problem.experts, up_cfg.block_m)
    params = mosaic_gpu.plgpu.InterpretGPUParams(detect_races=True)
    h = mosaic_gpu.expert_up(layout, x[layout.row_token], weights, problem, up_cfg, params)
    mosaic_gpu.expert_down(layout, h, weights, problem, down_cfg, params)
    assert not interpret_pallas_call.get_races().races_found


@pytest.mark.parametrize("T, k, E, block_m", [(0, 2, 4, 64), (1, 1, 1, 64), (37, 3, 5, 8), (50, 4, 4, 16), (9, 2, 130, 8),
                                         (300, 8, 128, 64)])
def test_align_to_tiles(T, k, E, block_m):
    rng = np.random.default_rng(T + E)
    ids = rng.integers(-1, E + 1, size=(T, k)).astype(np.int32)  # includes out-of-range ids
    weights = rng.random((T, k)).astype(np.float32)
    layout = jax.tree.map(np.asarray, align_to_tiles(jnp.asarray(ids), jnp.asarray(weights), E, block_m))
    num_tiles, rows = tile_count(T, k, E, block_m), row_count(T, k, block_m)
    assert layout.tile_expert.shape == (num_tiles,) and layout.row_token.shape == (rows,)
    out_of_range = (ids < 0) | (ids >= E)
    assert (layout.slot_row[out_of_range] == rows).all()
    # The in-range rows come first, sorted by expert, (token, slot) order within an expert.
    placed = layout.slot_row[~out_of_range]
    assert sorted(placed) == list(range(len(placed)))
    order = [(ids[t, j], t, j) for t in range(T) for j in range(k) if not out_of_range[t, j]]
    for r, (e, t, j) in enumerate(sorted(order)):
        assert layout.slot_row[t, j] == r and layout.row_token[r] == t and layout.row_weight[r] == weights[t, j]
    assert (layout.row_weight[len(placed):] == 0).all()
    # Tiles: aligned blocks inside the arrays whose valid rows partition the sorted rows by expert.
    used = layout.tile_expert >= 0
    assert (layout.tile_expert[used.sum():] == -1).all() and used[:used.sum()].all()
    owner = np.full(len(placed), -1)
    for e, start, lo, size in zip(layout.tile_expert[used], layout.tile_start[used], layout.tile_lo[used],
                                  layout.tile_size[used]):
        assert start % ALIGN_ROWS == 0 and start + block_m <= rows and 0 < size and lo + size <= block_m
        assert (owner[start + lo:start + lo + size] == -1).all()
        owner[start + lo:start + lo + size] = e
    assert (owner == [e for e, _, _ in sorted(order)]).all()


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("T", [1, 64, 4096])
def test_kernels_lower_for_hopper(shape, T, monkeypatch):
    """Every benchmark shape's default tiling lowers to Mosaic GPU for CUDA, on this CPU: layout
    inference, TMA and SMEM budgets (227 KiB) are checked here, only ptxas is left to the GPU."""
    monkeypatch.setattr(mosaic_gpu, "_num_sms", lambda interpret: 132)
    s = SHAPES[shape]
    problem = MoEProblem(T, s.hidden, s.intermediate, s.experts, s.top_k, jnp.dtype(jnp.bfloat16), s.moe_type,
                         s.activation, has_bias=True, platform="gpu")
    half = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.bfloat16)
    f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
    E, H, I = s.experts, s.hidden, s.intermediate
    gated = s.moe_type == "qwen3"
    weights = ExpertWeights(half(E, H, I), half(E, H, I), half(E, I, H) if gated else None, f32(E, I),
                            f32(E, I) if gated else None, f32(E, H))
    run = jax.jit(lambda x, w, tw, ti: mosaic_gpu.run(x, w, tw, ti, problem))
    lowered = run.trace(half(T, H), weights, f32(T, s.top_k), jax.ShapeDtypeStruct((T, s.top_k), jnp.int32)).lower(
        lowering_platforms=("cuda",))
    assert lowered.as_text().count("stablehlo.custom_call @mosaic_gpu") == 2  # expert_up and expert_down


def test_backend_reports_why_it_cannot_run():
    args, _ = make_case(4, 4, 64, 64, 3, 2, dtype=jnp.bfloat16)
    problem, _ = describe(*args, moe_type="qwen3", activation="silu")
    if problem.platform == "cpu":
        assert "sm90" in mosaic_gpu.unsupported(problem)
        with pytest.raises(NotImplementedError, match="mosaic_gpu"):
            jax_moe.fused_moe(*args, backend="mosaic_gpu")
    f32, _ = describe(*make_case(4, 4, 64, 64, 3, 2)[0], moe_type="qwen3", activation="silu", interpret=True)
    assert "xla" in mosaic_gpu.unsupported(f32)
    odd, _ = describe(*make_case(4, 4, 64, 40, 3, 2, dtype=jnp.bfloat16)[0], moe_type="qwen3", activation="silu",
                      interpret=True)
    assert "multiple of 64" in mosaic_gpu.unsupported(odd)
    # "auto" on such problems falls back to the exact XLA backend.
    assert jax_moe.fused_moe(*make_case(4, 4, 64, 40, 3, 2, dtype=jnp.bfloat16)[0], interpret=True).shape == (4, 64)
