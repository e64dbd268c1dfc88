"""The benchmark harness and the anchor pipelines (CPU): timings are real, anchors are right."""

import dataclasses
import jax
import jax.numpy as jnp
import pytest
from test_moe import make_case

import jax_moe
from benchmarks import harness
from benchmarks.anchors import ANCHORS
from benchmarks.run import MoECase, moe_row
from jax_moe import reference
from jax_moe.moe import describe
from jax_moe.shapes import MoEShape
from jax_moe.testing import TOLERANCE, relative_error


def test_chain_keeps_every_call():
    x = jnp.arange(64.0).reshape(8, 8)
    compiled = jax.jit(harness.chain(lambda v: jnp.tanh(v) @ v, 7)).lower(x).compile()
    assert harness.surviving_calls(compiled.as_text(), 7) == 7


def test_time_chained_rejects_removed_calls():
    # Ignoring x makes every call identical: XLA merges them, and the harness must refuse.
    y = jnp.ones((8, 8))
    with pytest.raises(RuntimeError, match="survived"):
        harness.time_chained(lambda x, y: jnp.tanh(y) @ y, (jnp.ones((8, 8)), y))


def test_time_chained_reports_a_positive_time():
    timing = harness.time_chained(lambda v: jnp.sin(v) * 2, (jnp.ones((256, 256)),), min_total_s=1e-3, runs=3)
    assert timing.us > 0 and timing.calls >= 10 and timing.kernel_us is None


@pytest.mark.parametrize("moe_type", ["qwen3", "nomic"])
@pytest.mark.parametrize("biases", [False, True])
def test_runnable_anchors_match_reference(moe_type, biases):
    args, kwargs = make_case(11, 23, 16, 24, 5, 2, moe_type=moe_type, biases=biases, empty_experts=(3,))
    problem, weights = describe(*args, moe_type=moe_type, activation="gelu", **kwargs)
    x, _, _, _, topk_weights, topk_ids = args
    ref = reference.fused_moe(*args, moe_type=moe_type, activation="gelu", **kwargs)
    ran = []
    for anchor in ANCHORS.values():
        if anchor.unsupported(problem) is None:
            out = jax.jit(anchor.run, static_argnums=4)(x, anchor.prepare(weights, problem), topk_weights, topk_ids, problem)
            assert relative_error(out, ref) <= TOLERANCE[jnp.dtype(jnp.float32)], anchor.name
            ran.append(anchor.name)
    assert {"dense", "xla_ragged"} <= set(ran)


TINY = MoEShape("tiny", 16, 24, 5, 2)


def tiny_grad_row(impls) -> dict:
    """A --grad benchmark row of a tiny f32 shape (T=12) for the named implementations."""
    ceilings = harness.Ceilings(matmul_tflops=1.0, copy_gbs=10.0, matmul_f32_tflops=1.0)
    return moe_row(MoECase(TINY, 12, jnp.dtype(jnp.float32)), ceilings, max_estimated_ms=1e3, impls=impls, grad=True)


def test_moe_row_times_forward_and_backward():
    """A --grad row checks d x and d topk_weights against the reference's, then times every
    implementation that runs here (the chain keeps all gradients alive)."""
    row = tiny_grad_row({"jax_moe_xla", "dense"})
    assert row["suite"] == "moe-grad" and row["flops"] == 3 * TINY.flops(12)
    for impl in ("jax_moe_xla", "dense"):
        result = row["impls"][impl]
        assert result["status"] == "ok" and result["rel_err"] <= TOLERANCE[jnp.dtype(jnp.float32)] and result["us"] > 0


def test_moe_row_times_the_routing_too(monkeypatch):
    """The timed function takes topk_ids, topk_weights (and the cotangent) as arguments: closed over
    as constants, XLA would fold the sort by expert and the backward's gather of dy into constants
    at compile time and time only the rest."""
    timed = []
    real_time_chained = harness.time_chained

    def spy(fn, args, **kwargs):
        timed.append((fn, args))
        return real_time_chained(fn, args, **kwargs)

    monkeypatch.setattr(harness, "time_chained", spy)
    row = tiny_grad_row({"xla_ragged"})
    assert row["impls"]["xla_ragged"]["status"] == "ok"
    (fn, args), = timed
    assert len(args) == 5  # x, weights, topk_weights, topk_ids, cotangent
    assert " sort(" in jax.jit(fn).lower(*args).compile().as_text()  # the argsort by expert is timed


def test_permutation_row_checks_then_times_the_routing_kernel():
    """The permutation suite's row (here the kernel in interpret mode, a tiny shape): the routing
    kernel's SortedRows equal XLA's sort before either is timed, and the table shows the row."""
    from benchmarks.run import markdown, permutation_row

    ceilings = harness.Ceilings(matmul_tflops=1.0, copy_gbs=10.0, matmul_f32_tflops=1.0)
    row = permutation_row(MoEShape("tiny", 16, 24, 70, 3), 40, ceilings, interpret=True)
    assert row["status"] == "ok" and row["equal"] and row["jax_moe_us"] > 0 and row["xla_us"] > 0
    meta = dict(device="cpu", date="today", jax=jax.__version__, matmul_tflops=1.0, copy_gbs=10.0,
                matmul_kind="f32", platform="cpu")
    assert "| sort by expert | tiny | 40 |" in markdown(meta, [row])


@pytest.mark.parametrize("grad", [False, True])
def test_kernel_times_checks_the_output_first(grad, monkeypatch):
    """benchmarks.kernel_times hands out a step only after its result matched the reference (here
    the xla backend on the CPU), and refuses one whose result does not."""
    from benchmarks import kernel_times

    case = MoECase(TINY, 12, jnp.dtype(jnp.float32))
    fn, args = kernel_times.checked_step(case, "xla", grad)
    out = fn(*args)
    assert len(args) == (5 if grad else 4) and jax.tree.leaves(out)[0].shape == (() if grad else (12, 16))
    real_run = jax_moe.moe._run
    monkeypatch.setattr(jax_moe.moe, "_run", lambda *a: real_run(*a) * 1.01)
    with pytest.raises(AssertionError, match="relative error"):
        kernel_times.checked_step(case, "xla", grad)


def test_kernel_times_needs_a_gpu():
    from benchmarks import kernel_times

    with pytest.raises(SystemExit):
        kernel_times.main(["qwen3_30b_a3b:1"])


def test_kernel_times_overrides_backward_configs(monkeypatch):
    """--backward-config KERNEL.FIELD=INT: the backward's tilings with those fields replaced, the
    others as chosen."""
    from benchmarks import kernel_times
    from jax_moe.backends import mosaic_gpu, mosaic_gpu_grad

    monkeypatch.setattr(mosaic_gpu_grad, "choose_backward_configs", mosaic_gpu_grad.choose_backward_configs)
    case = MoECase(TINY, 12, jnp.dtype(jnp.bfloat16))
    problem, _ = describe(*case.inputs(), moe_type=TINY.moe_type, activation=TINY.activation)
    block_m = mosaic_gpu.choose_configs(problem)[0].block_m
    chosen = mosaic_gpu_grad.choose_backward_configs(problem, block_m)
    kernel_times.override_backward_configs(["down.block_n=192", "contraction.stages=3"])
    got = mosaic_gpu_grad.choose_backward_configs(problem, block_m)
    assert got.down == dataclasses.replace(chosen.down, block_n=192) and got.up == chosen.up
    assert got.contraction == dataclasses.replace(chosen.contraction, stages=3)


def test_kernel_breakdown_takes_the_median_call(monkeypatch):
    """kernel_times' arithmetic on what CUPTI returns (faked here: no GPU): per call a list of
    (kernel, ms); the totals' median, min and max, and each kernel of the median call summed."""
    from jax.experimental.mosaic.gpu import profiler

    from benchmarks import kernel_times

    calls = [[("up", 0.4), ("down", 0.2), ("up", 0.1)], [("up", 0.5), ("down", 0.3), ("up", 0.1)],
             [("up", 0.3), ("down", 0.2), ("up", 0.1)]]
    monkeypatch.setattr(profiler, "measure", lambda fn, aggregate, iterations: lambda *args: (fn(*args), calls[:iterations]))
    result = kernel_times.kernel_breakdown(lambda: None, (), 3)
    assert result["total_us"] == pytest.approx((700.0, 600.0, 900.0))
    assert result["launches"] == 3
    assert list(result["kernels_us"]) == ["up", "down"]
    assert result["kernels_us"]["up"] == pytest.approx(500.0) and result["kernels_us"]["down"] == pytest.approx(200.0)
    monkeypatch.setattr(profiler, "measure", lambda fn, aggregate, iterations: lambda *args: (None, calls[1]))
    assert kernel_times.kernel_breakdown(lambda: None, (), 1)["total_us"] == pytest.approx((900.0,) * 3)


def test_tune_contraction_parses_its_configs():
    """tune_contraction's specs: block_m x block_n x block_k x stages x consumers [x staging_chunks]
    [x c], c for consumers sharing each item."""
    from benchmarks.tune_contraction import parse_config
    from jax_moe.backends.mosaic_gpu_grad import ContractionConfig
    assert parse_config("128x128x64x5x1") == ContractionConfig(128, 128, 64, 5, 1)
    assert parse_config("128x256x64x4x2x1xc") == ContractionConfig(128, 256, 64, 4, 2, 1, cooperative=True)
    assert parse_config("128x128x64x6x2x0") == ContractionConfig(128, 128, 64, 6, 2, 0)


def test_compiled_kernels_lists_the_launching_ops():
    """compiled_kernels.launching_ops on compiled HLO text: fusions and custom calls in order, a
    Pallas kernel by its name, no parameters, tuples or constants."""
    from benchmarks import compiled_kernels

    hlo = jax.jit(lambda x: (jnp.sin(x) * 2).sum(axis=0)).lower(jnp.ones((8, 128))).compile().as_text()
    ops = compiled_kernels.launching_ops(hlo)
    assert ops and all(op.split()[0] not in {"parameter", "tuple", "constant"} for op, _, _ in ops)
    assert any(op.startswith("fusion") for op, _, _ in ops)
    kernel = ('\nENTRY %main.1 (p: f32[8]) -> f32[8] {\n  %p = f32[8]{0} parameter(0)\n'
              '  ROOT %mpmd_map.3 = f32[8]{0} custom-call(%p), custom_call_target="mosaic_gpu_v2", '
              'metadata={op_name="jit(f)/jax_moe_expert_up/mpmd_map"}\n}\n')
    assert compiled_kernels.launching_ops(kernel) == [("custom-call mosaic_gpu_v2", "jax_moe_expert_up", "f32[8]{0}")]
