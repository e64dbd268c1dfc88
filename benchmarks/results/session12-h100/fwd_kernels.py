"""CUPTI kernel times of fused_moe (routing given) or of a jax.grad step, per shape.
usage: python fwd_kernels.py [--grad] shape:T [shape:T ...]   (imports jax_moe from PYTHONPATH)"""
import sys, statistics
import jax, jax.numpy as jnp
import jax_moe
from jax_moe.shapes import SHAPES
from jax.experimental.mosaic.gpu import profiler

grad = "--grad" in sys.argv
for spec in [a for a in sys.argv[1:] if not a.startswith("--")]:
    name, T = spec.split(":"); T = int(T)
    s = SHAPES[name]; H, I, E, k = s.hidden, s.intermediate, s.experts, s.top_k
    key = jax.random.split(jax.random.key(0), 6)
    dt = jnp.bfloat16
    x = jax.random.normal(key[0], (T, H), dt)
    gate = (jax.random.normal(key[1], (E, H, I)) * H**-0.5).astype(dt)
    up = (jax.random.normal(key[2], (E, H, I)) * H**-0.5).astype(dt)
    down = (jax.random.normal(key[3], (E, I, H)) * I**-0.5).astype(dt) if s.moe_type == "qwen3" else None
    w, ids = jax.lax.top_k(jax.random.normal(key[4], (T, E)), k)
    w = jax.nn.softmax(w).astype(jnp.float32)
    def layer(x, gate, up, down, w):
        return jax_moe.fused_moe(x, gate, up, down, w, ids, moe_type=s.moe_type, activation=s.activation,
                                 backend="mosaic_gpu")
    if grad:
        f = jax.jit(jax.grad(lambda *a: jnp.sum(layer(*a).astype(jnp.float32) ** 2), argnums=(0, 1, 2, 3, 4)))
    else:
        f = jax.jit(layer)
    out, iters = profiler.measure(f, aggregate=False, iterations=9)(x, gate, up, down, w)
    totals = [sum(ms for _, ms in it) * 1e3 for it in iters]
    med = statistics.median(totals)
    best = iters[totals.index(sorted(totals)[len(totals) // 2])]
    per = {}
    for n, ms in best:
        per.setdefault(n[:60], []).append(ms * 1e3)
    print(f"== {'grad' if grad else 'fwd'} {name} T={T}: median {med:.1f} us (min {min(totals):.1f}, max {max(totals):.1f}) "
          f"in {len(best)} kernels", flush=True)
    for n, t in sorted(per.items(), key=lambda kv: -sum(kv[1])):
        print(f"   {sum(t):8.1f} us x{len(t)} {n}", flush=True)
