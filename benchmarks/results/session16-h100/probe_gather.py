"""Session 16 probe: XLA's row gather of x and dy (the jax.grad step's loop_gather_fusion, 155 us at
Qwen3-30B-A3B T=4096 against a ~108 us copy floor) with the rows moved as uint32 pairs (main's
gather_rows), as uint64 quads, as bf16, and by a gather_copy kernel (below: mosaic_gpu_gather's
cp.async row copies into an SMEM ring, one TMA store per block); both arrays and one at a time; also the seed's H=768 at T=512 (1024 rows)."""
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental.mosaic.gpu import profiler

from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from jax_moe.backends.mosaic_gpu_gather import (TILE_BYTES, barriers, check_block, copy_rows, init_barriers,
                                                rows_issued, wait_rows)

BLOCK_ROWS = 64  # rows per gathered block: each thread copies BLOCK_ROWS / rows-per-pass pieces
GATHER_STAGES = 6  # SMEM blocks of gather_copy's ring (32 KiB each at 256 columns)


def gather_copy(x, rows, num_sms: int, interpret=False):
    """xs [R, C] = x[rows] for half x [T, C] (C a multiple of 64) and int32 rows [R] (R a multiple
    of BLOCK_ROWS, every entry in [0, T)); interpret: False or plgpu.InterpretGPUParams. One warpgroup per SM copies each block of 64 rows and
    up to 256 columns into an SMEM ring slot with copy_rows and stores it with one TMA;
    GATHER_STAGES - 1 blocks' copies are in flight while a block is stored."""
    R, C = rows.shape[0], x.shape[1]
    cols = next(c for c in (256, 128, 64) if C % c == 0) if C % 64 == 0 else 0
    if R % BLOCK_ROWS or not cols:
        raise ValueError(f"gather_copy takes rows in blocks of {BLOCK_ROWS} and 64-column multiples (got {R} x {C})")
    check_block(BLOCK_ROWS, cols, x.dtype)
    col_blocks = C // cols
    blocks = R // BLOCK_ROWS * col_blocks
    stages = GATHER_STAGES
    half_tile = TILE_BYTES // jnp.dtype(x.dtype).itemsize
    tiling = (plgpu.TilingTransform((8, half_tile)), plgpu.SwizzleTransform(TILE_BYTES))

    def body(x_ref, rows_ref, out_ref, ring, bars):
        init_barriers(bars, stages, interpret)
        sm = lax.axis_index("sm")
        mine = (blocks - sm + num_sms - 1) // num_sms  # this SM's blocks: sm, sm + num_sms, ...

        def block(i):  # (rows, columns) of this SM's i-th block
            b = sm + i * num_sms
            return pl.ds(b // col_blocks * BLOCK_ROWS, BLOCK_ROWS), pl.ds(lax.rem(b, col_blocks) * cols, cols)

        def issue(i):
            block_rows, block_cols = block(i)
            slot = lax.rem(i, stages)
            copy_rows(x_ref.at[:, block_cols], rows_ref.at[block_rows], ring.at[slot], tiling, interpret)
            rows_issued(bars, slot, 0, stages, interpret)

        for i in range(stages - 1):
            pl.when(i < mine)(functools.partial(issue, i))

        @pl.loop(0, mine)
        def _(i):
            wait_rows(bars, i, 0, stages, interpret)
            plgpu.commit_smem()  # every thread's rows landed and fenced before the store reads them
            plgpu.copy_smem_to_gmem(ring.at[lax.rem(i, stages)], out_ref.at[block(i)])

            @pl.when(i + stages - 1 < mine)
            def _():
                plgpu.wait_smem_to_gmem(1, wait_read_only=True)  # block i - 1's store has read its slot
                issue(i + stages - 1)

        plgpu.wait_smem_to_gmem(0)

    kernel = plgpu.kernel(
        body,
        out_type=jax.ShapeDtypeStruct((R, C), x.dtype),
        scratch_types=[plgpu.SMEM((stages, BLOCK_ROWS, cols), x.dtype, transforms=tiling),
                       barriers(stages, 1, interpret)],
        grid=(num_sms,),
        grid_names=("sm",),
        kernel_name="jax_moe_gather_rows",
        interpret=interpret,
    )
    return kernel(x, rows)


T, H, k, E = map(int, sys.argv[1:5]) if len(sys.argv) > 1 else (4096, 2048, 8, 128)
rows = -(-(T * k + E * 8) // 64) * 64  # ~ the training layout's rows (experts on the 8-row grid, slack)
key = jax.random.split(jax.random.key(0), 3)
x = jax.random.normal(key[0], (T, H), jnp.bfloat16)
dy = jax.random.normal(key[1], (T, H), jnp.bfloat16)
ids = jax.random.randint(key[2], (rows,), 0, T, jnp.int32)


def as_words(a, word, n):
    words = lax.bitcast_convert_type(a.reshape(T, H // n, n), word)
    return lambda r: lax.bitcast_convert_type(words[r], a.dtype).reshape(r.shape[0], H)


variants = {
    "bf16": lambda a, r: a[r],
    "u32 pairs (main)": lambda a, r: as_words(a, jnp.uint32, 2)(r),
    "gather_copy": lambda a, r: gather_copy(a, r, jax.devices()[0].core_count),
    "u64 quads": lambda a, r: as_words(a, jnp.uint64, 4)(r),  # last: it turns on x64
}
print(f"T={T} H={H} rows={rows}", flush=True)
want = np.asarray(x)[np.asarray(ids)]
copy_floor = 2 * rows * H * 2 + 2 * T * H * 2  # bytes written + read once
for name, fn in variants.items():
    if name.startswith("u64"):
        jax.config.update("jax_enable_x64", True)
    both = jax.jit(lambda x, dy, r, fn=fn: (fn(x, r), fn(dy, r)))
    (gx, gdy), times = profiler.measure(both, iterations=9)(x, dy, ids)
    np.testing.assert_array_equal(np.asarray(gx), want)
    np.testing.assert_array_equal(np.asarray(gdy), np.asarray(dy)[np.asarray(ids)])
    us = float(np.median(times)) * 1e3
    one = jax.jit(lambda x, r, fn=fn: fn(x, r))
    _, t1 = profiler.measure(one, iterations=9)(x, ids)
    print(f"{name:18s} x and dy: {us:7.1f} us ({copy_floor / us / 1e6:5.2f} TB/s of a copy's bytes); "
          f"x alone {float(np.median(t1)) * 1e3:7.1f} us", flush=True)
