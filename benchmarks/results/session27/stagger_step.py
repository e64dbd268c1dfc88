"""kernel_times with the weight-gradient contraction's stagger set (session 27's probe):

    python benchmarks/results/session27/stagger_step.py STAGGER [kernel_times arguments]
"""
import dataclasses
import sys

from jax_moe.backends import mosaic_gpu_grad

stagger = int(sys.argv.pop(1))
choose = mosaic_gpu_grad.choose_backward_configs


def with_stagger(problem, block_m):
    cfgs = choose(problem, block_m)
    return dataclasses.replace(cfgs, contraction=dataclasses.replace(cfgs.contraction, stagger=stagger))


if hasattr(mosaic_gpu_grad.ContractionConfig, "stagger"):
    mosaic_gpu_grad.choose_backward_configs = with_stagger
else:  # a tree from before the stagger: its own contraction
    print("## (no stagger in this tree)")
from benchmarks import kernel_times  # noqa: E402

print(f"## contraction stagger {stagger}", flush=True)
kernel_times.main(sys.argv[1:])
