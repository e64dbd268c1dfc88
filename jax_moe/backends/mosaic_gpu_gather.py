"""Row gathers into a grouped GEMM's SMEM ring: the lhs block of a tile read straight from x's
rows (x[row_token[r]]), so that no gathered copy of x goes through HBM.

Hopper's TMA moves boxes, not lists of rows, and one 1-row TMA per row is issued by one thread:
64 of them per k-step took 3.5 us against 0.4 us for one 64-row box (H100, session 15:
benchmarks/results/session15-h100/probe_row_gather.py). Here the
producer warpgroup's 128 threads copy the rows as 16-byte cp.async pieces (8 threads per
128-byte row, 16 rows per pass), straight into the (8, 64)-tiled, 128-byte-swizzled layout
that wgmma reads. Each thread then has the slot's "rows" mbarrier arrive once its own copies
have landed (cp.async.mbarrier.arrive.noinc: 128 arrivals complete a phase), so the producer
never waits for its copies; a consumer waits on that barrier besides the slot's TMA barrier and
fences the rows for the async proxy (wgmma) before multiplying.

Pallas' barriers cannot be handed to inline Mosaic GPU code, so the rows barriers are raw
mbarriers in an SMEM scratch (one per ring slot), initialised by the kernel and waited on with
the parity of the slot's use (ring step // stages): a slot's next phase cannot complete before
its consumer has released it, so one barrier per slot serves consumers on alternate items too.

Mosaic GPU lowers all of this through plgpu.inline_mgpu, which the GPU interpreter does not
run: in interpret mode the same calls copy the rows with Pallas loads and stores (one row at a
time; the interpreter ignores the SMEM tiling) and use Pallas barriers of the same roles (one
per consumer and slot, as the kernel's TMA barriers), so CI runs the schedule, the row
indexing and the race detector over them; only the GPU tests see the cp.async code itself.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu
from jax.experimental.mosaic.gpu import utils as mgpu_utils
from jax._src.lib.mlir import ir
from jax._src.lib.mlir.dialects import arith, gpu, llvm, memref, nvvm

PIECE_BYTES = 16  # one cp.async
ROW_BYTES = 128  # a k-block row of the ring: one 128-byte swizzle row
THREADS = 128  # the producer warpgroup
PIECES = ROW_BYTES // PIECE_BYTES  # threads per row
ROWS_PER_PASS = THREADS // PIECES
SCALAR = plgpu.Layout.WG_SPLAT(shape=())  # a scalar argument of inline Mosaic GPU code


def check_block(block_m: int, block_k: int, dtype) -> None:
    """The tiles the gather handles: block_k half values fill one 128-byte row, block_m a multiple
    of the rows the warpgroup covers per pass."""
    if block_k * jnp.dtype(dtype).itemsize != ROW_BYTES or block_m % ROWS_PER_PASS:
        raise ValueError(f"a row gather needs {ROW_BYTES}-byte k-blocks and block_m a multiple of {ROWS_PER_PASS} "
                         f"(got block_m {block_m}, block_k {block_k} of {jnp.dtype(dtype)})")


def barriers(stages: int, owners: int, interpret):
    """Scratch for the rows barriers of a ring of `stages` slots read by `owners` sets of full
    barriers: raw mbarriers (two int32 words each), or Pallas barriers in interpret mode."""
    if interpret:
        return plgpu.Barrier(num_arrivals=1, num_barriers=stages * owners)
    return plgpu.SMEM((2 * stages,), jnp.int32)


def _mbarrier(bars_mem, slot):
    """The raw mbarrier of a ring slot (slot an i32 value)."""
    return mgpu_utils.BarrierRef(mgpu_utils.memref_ptr(bars_mem), slot, None, 1)


def _scalar(value) -> ir.Value:
    return value.registers.item()


def init_barriers(bars, stages: int, interpret) -> None:
    """Initialises the raw rows barriers (every thread of the CTA calls this before the roles
    split: it ends with a CTA barrier)."""
    if interpret:
        return

    @plgpu.inline_mgpu(arg_types=(plgpu.RefType(),))
    def init(ctx, bars_mem):
        del ctx
        i32 = ir.IntegerType.get_signless(32)
        first = mgpu_utils.single_thread_predicate(mgpu_utils.ThreadSubset.BLOCK)
        for slot in range(stages):
            nvvm.mbarrier_init(_mbarrier(bars_mem, arith.constant(i32, slot)).get_ptr(),
                               arith.constant(i32, THREADS), predicate=first)
        gpu.barrier()

    init(bars)


def copy_rows(x_block, row_ids, slot_ref, block_m: int, swizzled_tiling, bars, slot, owner, stages: int, interpret):
    """Starts slot_ref[r] = x_block[row_ids[r]] for r < block_m (x_block [T, block_k] half, a
    column block of x; row_ids int32 [block_m]; slot_ref the ring's (8, 64)-tiled,
    128-byte-swizzled [block_m, block_k] block at ring slot `slot`), to be waited for with
    wait_rows."""
    if interpret:
        @pl.loop(0, block_m)
        def _(r):
            slot_ref[pl.ds(r, 1), :] = x_block[pl.ds(row_ids[r], 1), :]

        plgpu.barrier_arrive(bars.at[owner * stages + slot])
        return

    @plgpu.inline_mgpu(arg_types=(plgpu.RefType(), plgpu.RefType(), plgpu.RefType(swizzled_tiling), plgpu.RefType(),
                                  SCALAR))
    def issue(ctx, x_mem, rows_mem, slot_mem, bars_mem, slot):
        del ctx
        i32, i64, i8 = (ir.IntegerType.get_signless(bits) for bits in (32, 64, 8))
        const = lambda value, ty=i32: arith.constant(ty, value)
        thread = arith.remui(mgpu_utils.thread_idx(), const(THREADS))
        piece = arith.remui(thread, const(PIECES))
        first_row = arith.divui(thread, const(PIECES))  # this thread's rows: first_row + ROWS_PER_PASS * j
        # 128-byte swizzle: the 16-byte piece index is XORed with the row's index within its 8-row
        # tile (the same for all of this thread's rows: ROWS_PER_PASS is a multiple of 8).
        in_tile = arith.remui(first_row, const(8))
        piece_offset = arith.addi(arith.muli(in_tile, const(ROW_BYTES)),
                                  arith.muli(arith.xori(piece, in_tile), const(PIECE_BYTES)))
        (row_stride, _), _ = ir.MemRefType(x_mem.type).get_strides_and_offset()
        element = ir.MemRefType(x_mem.type).element_type
        x_base = llvm.addrspacecast(llvm.PointerType.get(address_space=1), mgpu_utils.memref_ptr(x_mem))
        slot_base = mgpu_utils.memref_ptr(slot_mem)
        piece_elements = arith.extui(i64, arith.muli(piece, const(PIECE_BYTES * 8 // mgpu_utils.bitwidth(element))))
        for j in range(block_m // ROWS_PER_PASS):
            row = arith.addi(first_row, const(ROWS_PER_PASS * j))
            token = memref.load(rows_mem, [arith.index_cast(ir.IndexType.get(), row)])
            src = arith.addi(arith.muli(arith.extui(i64, token), const(row_stride, i64)), piece_elements)
            dst = arith.addi(arith.muli(arith.divui(row, const(8)), const(8 * ROW_BYTES)), piece_offset)
            nvvm.cp_async_shared_global(mgpu_utils.getelementptr(slot_base, [dst], i8),
                                        mgpu_utils.getelementptr(x_base, [src], element),
                                        PIECE_BYTES, nvvm.LoadCacheModifierKind.CG)
        # Arrives once this thread's copies (all of its earlier ones) have landed.
        nvvm.cp_async_mbarrier_arrive(_mbarrier(bars_mem, _scalar(slot)).get_ptr(), noinc=True)

    issue(x_block, row_ids, slot_ref, bars, slot)


def wait_rows(bars, step, owner, stages: int, interpret) -> None:
    """Waits until ring step `step`'s rows have landed in its slot and makes them visible to
    wgmma (the async proxy)."""
    slot = lax.rem(step, stages)
    if interpret:
        plgpu.barrier_wait(bars.at[owner * stages + slot])
        return

    @plgpu.inline_mgpu(arg_types=(plgpu.RefType(), SCALAR, SCALAR))
    def wait(ctx, bars_mem, slot, parity):
        del ctx
        _mbarrier(bars_mem, _scalar(slot)).wait_parity(
            arith.trunci(ir.IntegerType.get_signless(1), _scalar(parity)))
        nvvm.fence_proxy(nvvm.ProxyKind.async_shared, space=nvvm.SharedSpace.shared_cta)

    wait(bars, slot, lax.rem(step // stages, 2))
