"""Session 19 (run with producer-mask.patch applied to the working tree, which main does not keep:
it was slower): expert_contraction with the boundary blocks masked by the producer (working tree)
against the consumers masking them (out/ab/HEAD, exported by `scripts/gpu-ab prepare HEAD`), and the
producer's register budget. Outputs compared bitwise with the old kernel's; CUPTI kernel time,
Qwen3-30B-A3B T=4096 training layout, old/new interleaved twice."""
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.mosaic.gpu import profiler

import jax_moe.backends.mosaic_gpu_grad as grad_module
from jax_moe.backends import mosaic_gpu
from jax_moe.permutation import align_to_tiles, row_count
from jax_moe.shapes import SHAPES


def from_source(name, path, patches=()):
    src = open(path).read()
    for old, new in patches:
        assert src.count(old) == 1, old
        src = src.replace(old, new)
    module = types.ModuleType(name)
    module.__dict__["__file__"] = path
    sys.modules[name] = module
    exec(compile(src, name, "exec"), module.__dict__)
    return module


# (module, the producer's registers). Call 3 of session 19 hung here with a first version that
# gave the producer 64 registers and the consumers 224 each: 512 per thread slot, more than the
# 3 x 168 that a CTA of three warpgroups holds at launch, so the consumers' setmaxnreg waited
# forever. consumer_registers now counts from the launch allocation.
VARIANTS = {
    "old (consumers mask)": (from_source("old", "out/ab/HEAD/jax_moe/backends/mosaic_gpu_grad.py"), 40),
    "producer masks, 40 regs": (grad_module, 40),
    "producer masks, 56 regs": (grad_module, 56),
}

s = SHAPES["qwen3_30b_a3b"]
T, E, H, I = 4096, s.experts, s.hidden, s.intermediate
key = jax.random.split(jax.random.key(0), 4)
_, ids = jax.lax.top_k(jax.random.normal(key[0], (T, E)), s.top_k)
layout = align_to_tiles(ids, jnp.ones(ids.shape, jnp.float32), E, 64, aligned_experts=True)
rows = row_count(T, s.top_k, 64, aligned_experts=E)
xs = jax.random.normal(key[1], (rows, H), jnp.bfloat16)
dg = jax.random.normal(key[2], (rows, I), jnp.bfloat16)
du = jax.random.normal(key[3], (rows, I), jnp.bfloat16)
cases = {"gate_up": (xs, [dg, du]), "down": (dg, [xs])}
expected = {}
for rnd in range(2):
    for vname, (module, registers) in VARIANTS.items():
        mosaic_gpu.PRODUCER_REGISTERS = registers  # read when the kernel is traced
        cfg = module.ContractionConfig(128, 256, 64, 4, consumers=2, staging_chunks=1, cooperative=True)
        for cname, (lhs, rhs) in cases.items():
            fn = jax.jit(lambda lhs, rhs: module.expert_contraction(layout, lhs, rhs, cfg, jnp.bfloat16))
            try:
                out, t = profiler.measure(fn, iterations=5)(lhs, rhs)
            except Exception as e:  # noqa: BLE001
                print(f"{vname:26s} {cname:8s} error {str(e)[:300]}", flush=True)
                continue
            out = [np.asarray(o, np.float32) for o in out]
            expected.setdefault(cname, out)
            same = all(np.array_equal(a, b, equal_nan=True) for a, b in zip(out, expected[cname]))
            print(f"round {rnd} {vname:26s} {cname:8s} {float(np.median(t)) * 1e3:8.1f} us bitwise_equal_old={same}",
                  flush=True)
