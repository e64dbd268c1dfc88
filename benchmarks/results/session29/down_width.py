"""kernel_times with down_backward's block_n set (session 29's last A/B):

    python benchmarks/results/session29/down_width.py BLOCK_N [kernel_times arguments]

At Qwen3-30B-A3B T=4096 down_backward's time steps by rounds of items (probe-tail.log: ~19 us a round
of 256-column items); 192-column items (4 n-blocks of I = 768 instead of 3) make finer rounds: at the
benchmark's 583 used tiles 2332 items, 17.7 a SM (18 rounds of ~3/4 the time) against 1749, 13.25 (14).
"""
import dataclasses
import sys

from jax_moe.backends import mosaic_gpu_grad

block_n = int(sys.argv.pop(1))
choose = mosaic_gpu_grad.choose_backward_configs


def with_block_n(problem, block_m):
    cfgs = choose(problem, block_m)
    return dataclasses.replace(cfgs, down=dataclasses.replace(cfgs.down, block_n=block_n))


mosaic_gpu_grad.choose_backward_configs = with_block_n
print(f"## down_backward block_n {block_n}", flush=True)
from benchmarks import kernel_times  # noqa: E402

kernel_times.main(sys.argv[1:])
