"""Session 21: the routing kernel (mosaic_gpu_routing.sort_by_expert) with runs of 1 to 16 chunks per
CTA, CUPTI kernel times (median of 21 calls), each result checked bitwise against XLA's argsort first.
Needs branch routing-runs-per-cta (sort_by_expert's per_cta; rejected, not on main).

    PYTHONPATH=/tmp/site:. python3 benchmarks/results/session21-h200/probe_routing.py
"""

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.kernel_times import kernel_breakdown
from jax_moe.backends import mosaic_gpu_routing
from jax_moe.permutation import sort_by_expert

for T, k, E in [(4096, 8, 128), (16384, 8, 128), (512, 8, 64), (32768, 4, 60)]:
    ids = jnp.asarray(np.random.default_rng(T).integers(0, E, size=(T, k)), jnp.int32)
    want = jax.jit(lambda i: sort_by_expert(i, E, method="argsort"))(ids)
    chunks = -(-T * k // mosaic_gpu_routing.CHUNK)
    default = mosaic_gpu_routing.chunks_per_cta(chunks, mosaic_gpu_routing.columns_for(E))
    for per_cta in [1, 2, 4, 8, 16]:
        fn = jax.jit(lambda i: mosaic_gpu_routing.sort_by_expert(i, E, per_cta=per_cta))
        got = fn(ids)
        for name, a, b in zip(want._fields, got, want):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{name} per_cta={per_cta}")
        r = kernel_breakdown(fn, (ids,), 21)
        ranks = r["kernels_us"].get("jax_moe_chunk_ranks_mosaic_gpu_kernel", float("nan"))
        print(f"T={T} k={k} E={E} chunks={chunks} per_cta={per_cta}{' (default)' if per_cta == default else ''} "
              f"ctas={-(-chunks // per_cta)}: chunk_ranks {ranks:.1f} us, sort total {r['total_us'][0]:.1f} us "
              f"in {r['launches']} kernels", flush=True)
