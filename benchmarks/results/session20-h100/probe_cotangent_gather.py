"""Session 20 probe: dy's gather when dy is the bf16 cast of an f32 cotangent (the training
harness's loss), Qwen3-30B-A3B T=4096 (33792 routed rows of 2048): the cast written out first
(a barrier on dy, main's backward) against the cast fused into the gather. CUPTI kernel times."""
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental.mosaic.gpu import profiler

from jax_moe.backends.mosaic_gpu import gather_rows

T, H, R = 4096, 2048, 33792
cot = jnp.cos(jnp.arange(T * H, dtype=jnp.float32)).reshape(T, H)
rows = jax.random.randint(jax.random.key(0), (R,), 0, T, dtype=jnp.int32)
token = jnp.zeros((8,), jnp.float32)


def barrier_on_dy(cot, rows, token):
    dy = cot.astype(jnp.bfloat16)
    dy, _ = lax.optimization_barrier((dy, token))
    return gather_rows(dy, rows)


def barrier_on_rows(cot, rows, token):
    rows, _ = lax.optimization_barrier((rows, token))
    return gather_rows(cot.astype(jnp.bfloat16), rows)


def gather_then_cast(cot, rows, token):
    rows, _ = lax.optimization_barrier((rows, token))
    return cot[rows].astype(jnp.bfloat16)


want = np.asarray(cot.astype(jnp.bfloat16)[rows])
for fn in (barrier_on_dy, barrier_on_rows, gather_then_cast):
    f = jax.jit(fn)
    got = np.asarray(f(cot, rows, token))
    assert np.array_equal(got.view(np.uint16), want.view(np.uint16)), fn.__name__
    _, per_call = profiler.measure(f, aggregate=False, iterations=9)(cot, rows, token)
    sums = sorted(sum(ms for _, ms in k) * 1e3 for k in per_call)
    median = per_call[[sum(ms for _, ms in k) * 1e3 for k in per_call].index(sums[4])]
    print(f"{fn.__name__}: {sums[4]:.1f} us median;", ", ".join(f"{n} {ms * 1e3:.1f}" for n, ms in median), flush=True)
