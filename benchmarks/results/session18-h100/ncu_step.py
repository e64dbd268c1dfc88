"""Runs the training step of benchmarks.kernel_times (checked against the reference first) twice,
without CUPTI (session 18: ncu and the CUPTI profiler of kernel_times in one process segfaulted).
Under ncu: python3 ncu_step.py qwen3_30b_a3b 4096"""
import sys

import jax
import jax.numpy as jnp

from benchmarks.kernel_times import checked_step
from benchmarks.run import MoECase
from jax_moe.shapes import SHAPES

fn, args = checked_step(MoECase(SHAPES[sys.argv[1]], int(sys.argv[2]), jnp.dtype(jnp.bfloat16)), "mosaic_gpu", grad=True)
for _ in range(2):
    jax.block_until_ready(fn(*args))
print("ran the step")
