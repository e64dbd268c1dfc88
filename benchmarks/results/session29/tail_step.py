"""kernel_times with the backward GEMMs' tail_parts set (session 29's A/B):

    python benchmarks/results/session29/tail_step.py DOWN_PARTS UP_PARTS [kernel_times arguments]

DOWN_PARTS, UP_PARTS: GemmConfig.tail_parts of down_backward and up_backward (1: no split); a tree
from before tail_parts times its own configs.
"""
import dataclasses
import sys

from jax_moe.backends import mosaic_gpu, mosaic_gpu_grad

down_parts, up_parts = int(sys.argv.pop(1)), int(sys.argv.pop(1))
choose = mosaic_gpu_grad.choose_backward_configs


def with_tail_parts(problem, block_m):
    cfgs = choose(problem, block_m)
    if not cfgs.down.alternate:
        return cfgs
    return dataclasses.replace(cfgs, down=dataclasses.replace(cfgs.down, tail_parts=down_parts),
                               up=dataclasses.replace(cfgs.up, tail_parts=up_parts))


if hasattr(mosaic_gpu.GemmConfig, "tail_parts"):
    mosaic_gpu_grad.choose_backward_configs = with_tail_parts
    print(f"## tail parts: down_backward {down_parts}, up_backward {up_parts}", flush=True)
else:
    print("## (no tail_parts in this tree)", flush=True)
from benchmarks import kernel_times  # noqa: E402

kernel_times.main(sys.argv[1:])
