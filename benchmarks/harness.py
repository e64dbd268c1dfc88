"""Device timing that XLA cannot fool, plus the machine's measured ceilings.

``time_chained`` runs R calls inside one jit, each call's first argument depending on every output
of the call before (``x.at[0].add(0 * sum(outputs))``), checks in the compiled HLO that all R calls
survived (no CSE, no dead-code elimination), and reports the median wall time per call over several
runs after a warm-up. ``kernel_time`` sums the GPU kernels of one call through CUPTI (jax's Mosaic
GPU profiler), which leaves out launch gaps and the chaining ops.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp


@dataclasses.dataclass
class Timing:
    us: float  # median wall time per call, chained
    calls: int  # R
    runs: int
    spread: float  # (max - min) / median over the runs
    kernel_us: float | None = None  # CUPTI kernel time of one call (GPU only)


def _link(x: jax.Array, outputs) -> jax.Array:
    """x with a true dependency on every element of every output, at the cost of one element."""
    total = sum(jnp.sum(leaf.astype(jnp.float32)) for leaf in jax.tree.leaves(outputs))
    index = (0,) * x.ndim
    return x.at[index].add((0 * total).astype(x.dtype))


def chain(fn: Callable, calls: int, feed: str = "link") -> Callable:
    """fn(x, *rest) called `calls` times, each x depending on all outputs of the previous call.

    feed="link": x.at[0].add(0 * sum(outputs)); feed="direct": the output is the next x (fn must
    return one array shaped like x; no extra op at all).
    """

    def chained(x, *rest):
        outputs = None
        for i in range(calls):
            with jax.named_scope(f"bench_call_{i}"):
                outputs = fn(x, *rest)
            x = outputs if feed == "direct" else _link(x, outputs)
            # Keeps XLA from fusing consecutive calls (e.g. elementwise ones) into one pass.
            x = jax.lax.optimization_barrier(x)
        return x, outputs

    return chained


def surviving_calls(compiled_text: str, calls: int) -> int:
    return sum(f"bench_call_{i}/" in compiled_text for i in range(calls))


def _median_seconds(compiled, args, runs: int) -> tuple[float, float]:
    jax.block_until_ready(compiled(*args))  # warm-up
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        samples.append(time.perf_counter() - start)
    median = statistics.median(samples)
    return median, (max(samples) - min(samples)) / median


def time_chained(fn: Callable, args: tuple, *, min_total_s: float = 2e-3, max_calls: int = 100,
                 runs: int = 5, feed: str = "link", calls: int = 10) -> Timing:
    """Median device+launch time of one fn(*args) call, from R chained calls in one jit.

    R starts at `calls` and grows (up to max_calls) until one run lasts min_total_s, so host
    dispatch is amortized; max_calls=calls fixes R (one compilation). Raises if XLA removed any of
    the R calls.
    """
    while True:
        compiled = jax.jit(chain(fn, calls, feed)).lower(*args).compile()
        found = surviving_calls(compiled.as_text(), calls)
        if found != calls:
            raise RuntimeError(f"only {found} of {calls} chained calls survived compilation")
        seconds, spread = _median_seconds(compiled, args, runs)
        if seconds >= min_total_s or calls >= max_calls:
            return Timing(us=seconds / calls * 1e6, calls=calls, runs=runs, spread=spread)
        calls = min(max_calls, max(calls * 2, int(calls * min_total_s / max(seconds, 1e-6)) + 1))


def kernel_time(fn: Callable, args: tuple, iterations: int = 5) -> float | None:
    """Median over iterations of the summed GPU kernel time (us) of one fn(*args), via CUPTI."""
    if jax.default_backend() != "gpu":
        return None
    try:
        from jax.experimental.mosaic.gpu import profiler
    except ImportError:
        return None
    try:
        _, per_iteration = profiler.measure(jax.jit(fn), iterations=iterations)(*args)
    except Exception as e:  # CUPTI missing or busy: the chained wall time still stands
        print(f"kernel_time: CUPTI unavailable ({type(e).__name__}: {e})", flush=True)
        return None
    if per_iteration is None:
        return None
    per_iteration = per_iteration if isinstance(per_iteration, list) else [per_iteration]
    return statistics.median(per_iteration) * 1e3


def device_name() -> str:
    device = jax.devices()[0]
    return getattr(device, "device_kind", device.platform)


def card_slug() -> str:
    return device_name().lower().replace("nvidia ", "").replace(" ", "-")


@dataclasses.dataclass
class Ceilings:
    """Rates measured on this device, the denominators of every roofline figure."""

    matmul_tflops: float  # bf16 (f32 on CPU) square matmul
    copy_gbs: float  # device-to-device copy, bytes read + written
    matmul_f32_tflops: float | None = None  # f32 at HIGHEST precision (GPU); None: not measured

    def floor_us(self, flops: float, bytes_moved: float, f32: bool = False) -> float:
        """The roofline floor; f32 work uses the f32 matmul rate where it was measured."""
        rate = self.matmul_f32_tflops if f32 and self.matmul_f32_tflops else self.matmul_tflops
        return max(flops / (rate * 1e12), bytes_moved / (self.copy_gbs * 1e9)) * 1e6


def measure_ceilings() -> Ceilings:
    gpu = jax.default_backend() == "gpu"
    n = 8192 if gpu else 1024
    dtype = jnp.bfloat16 if gpu else jnp.float32
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = (jax.random.normal(jax.random.key(1), (n, n)) * n**-0.5).astype(dtype)  # keeps x @ b at x's scale
    matmul = time_chained(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32).astype(dtype), (a, b),
                          min_total_s=0.05 if gpu else 0.5, max_calls=20, feed="direct")
    matmul_f32 = None
    if gpu:
        m = 4096
        a32 = jax.random.normal(jax.random.key(3), (m, m), jnp.float32)
        b32 = jax.random.normal(jax.random.key(4), (m, m), jnp.float32) * m**-0.5
        timing = time_chained(lambda x, y: jnp.dot(x, y, precision=jax.lax.Precision.HIGHEST), (a32, b32),
                              min_total_s=0.05, max_calls=20, feed="direct")
        matmul_f32 = 2 * m**3 / (timing.us * 1e-6) / 1e12
    elements = (2**30 if gpu else 2**25) // 4
    src = jax.random.normal(jax.random.key(2), (elements,), jnp.float32)
    copy = time_chained(lambda x: x * 1.0001, (src,), min_total_s=0.05 if gpu else 0.2, max_calls=20, feed="direct")
    return Ceilings(matmul_tflops=2 * n**3 / (matmul.us * 1e-6) / 1e12,
                    copy_gbs=2 * elements * 4 / (copy.us * 1e-6) / 1e9, matmul_f32_tflops=matmul_f32)
