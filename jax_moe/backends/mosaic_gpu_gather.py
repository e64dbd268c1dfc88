"""Row gathers into a producer/consumer kernel's SMEM ring: a block of an operand read straight
from x's rows (x[row_token[r]]), so that no gathered copy of x goes through HBM (grouped_gemm's
lhs: the forward's expert_up). The backward's weight-gradient contraction read this way was
slower than on a gathered copy (H100, session 16: +73 us for dWg + dWu, whose steps take 16 KiB
of rows, +142 for dWd at 32 KiB; benchmarks/NOTES.md), so training gathers copies.

Hopper's TMA moves boxes, not lists of rows, and one 1-row TMA per row is issued by one thread:
64 of them per k-step took 3.5 us against 0.4 us for one 64-row box (H100, session 15:
benchmarks/results/session15-h100/probe_row_gather.py). Here the producer warpgroup's 128
threads copy the rows as 16-byte cp.async pieces (a thread per piece of a row: 16 rows per pass
of a 64-column block, 4 of a 256-column one), straight into the (8, 64)-tiled, 128-byte-swizzled
layout that wgmma reads. Each thread then has the slot's "rows" mbarrier arrive once its own
copies have landed (cp.async.mbarrier.arrive.noinc: 128 arrivals complete a phase), so the
producer never waits for its copies; a consumer waits on that barrier besides the slot's TMA
barrier and fences the rows for the async proxy (wgmma) before multiplying.

Pallas' barriers cannot be handed to inline Mosaic GPU code, so the rows barriers are raw
mbarriers in an SMEM scratch (one per ring slot), initialised by the kernel and waited on with
the parity of the slot's use (ring step // stages), after the slot's full barrier: that one's
TMA arrivals come after the producer has reclaimed the slot, so the slot's previous phase is
complete by then (no older phase of the same parity to mistake), and the next cannot complete
before this consumer releases the slot. So one barrier per slot serves consumers on alternate
items too, and every ring step needs a TMA besides its rows.

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
TILE_BYTES = 128  # a row of one (8, 64)-tiled, 128-byte-swizzled tile of half values
THREADS = 128  # the producer warpgroup
SCALAR = plgpu.Layout.WG_SPLAT(shape=())  # a scalar argument of inline Mosaic GPU code


def _pieces(cols: int, dtype) -> int:
    """16-byte pieces of a block row of `cols` values."""
    return cols * jnp.dtype(dtype).itemsize // PIECE_BYTES


def check_block(rows: int, cols: int, dtype) -> None:
    """The blocks the gather handles: rows of whole 128-byte tile rows (up to 16 tiles: every
    thread takes one piece of a row per pass), and rows a multiple of the rows per pass."""
    row_bytes = cols * jnp.dtype(dtype).itemsize
    if row_bytes % TILE_BYTES or row_bytes > THREADS * PIECE_BYTES or rows % (THREADS // _pieces(cols, dtype)):
        raise ValueError(f"a row gather takes blocks of whole {TILE_BYTES}-byte tile rows, at most "
                         f"{THREADS * PIECE_BYTES} bytes, rows a multiple of the rows per pass "
                         f"(got {rows} x {cols} {jnp.dtype(dtype)})")


# What the raw rows barriers take of a kernel's SMEM budget: Pallas aligns every scratch
# allocation to 1024 bytes (for mosaic_gpu.ring_slots' accounting).
BARRIERS_SMEM = plgpu.SMEM((1024,), jnp.int8)


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


def copy_rows(x_block, row_ids, block_ref, swizzled_tiling, interpret) -> None:
    """Starts block_ref[r] = x_block[row_ids[r]] for every row r of block_ref (x_block [T, C]
    half, a column block of x; row_ids int32 [rows]; block_ref an (8, 64)-tiled,
    128-byte-swizzled [rows, C] SMEM block: C / 64 tiles side by side). Call rows_issued once a
    ring step's copies are all started."""
    rows, cols = block_ref.shape
    if interpret:
        @pl.loop(0, rows)
        def _(r):
            block_ref[pl.ds(r, 1), :] = x_block[pl.ds(row_ids[r], 1), :]
        return

    tiles = cols * jnp.dtype(block_ref.dtype).itemsize // TILE_BYTES
    pieces = _pieces(cols, block_ref.dtype)  # threads per row
    rows_per_pass = THREADS // pieces

    @plgpu.inline_mgpu(arg_types=(plgpu.RefType(), plgpu.RefType(), plgpu.RefType(swizzled_tiling)))
    def issue(ctx, x_mem, rows_mem, block_mem):
        del ctx
        i32, i64, i8 = (ir.IntegerType.get_signless(bits) for bits in (32, 64, 8))
        const = lambda value, ty=i32: arith.constant(ty, value)
        thread = arith.remui(mgpu_utils.thread_idx(), const(THREADS))
        piece = arith.remui(thread, const(pieces))
        per_tile = const(TILE_BYTES // PIECE_BYTES)
        tile, tile_piece = arith.divui(piece, per_tile), arith.remui(piece, per_tile)
        first_row = arith.divui(thread, const(pieces))  # this thread's rows: first_row + rows_per_pass * j
        (row_stride, _), _ = ir.MemRefType(x_mem.type).get_strides_and_offset()
        element = ir.MemRefType(x_mem.type).element_type
        x_base = llvm.addrspacecast(llvm.PointerType.get(address_space=1), mgpu_utils.memref_ptr(x_mem))
        block_base = mgpu_utils.memref_ptr(block_mem)
        piece_elements = arith.extui(i64, arith.muli(piece, const(PIECE_BYTES * 8 // mgpu_utils.bitwidth(element))))
        for j in range(rows // rows_per_pass):
            row = arith.addi(first_row, const(rows_per_pass * j))
            token = memref.load(rows_mem, [arith.index_cast(ir.IndexType.get(), row)])
            src = arith.addi(arith.muli(arith.extui(i64, token), const(row_stride, i64)), piece_elements)
            # Tile (row // 8, tile) of the (8, 64) tiling, row row % 8 within it; the 128-byte
            # swizzle XORs the 16-byte piece index with that row.
            in_tile = arith.remui(row, const(8))
            tile_index = arith.addi(arith.muli(arith.divui(row, const(8)), const(tiles)), tile)
            dst = arith.addi(arith.muli(tile_index, const(8 * TILE_BYTES)),
                             arith.addi(arith.muli(in_tile, const(TILE_BYTES)),
                                        arith.muli(arith.xori(tile_piece, in_tile), const(PIECE_BYTES))))
            nvvm.cp_async_shared_global(mgpu_utils.getelementptr(block_base, [dst], i8),
                                        mgpu_utils.getelementptr(x_base, [src], element),
                                        PIECE_BYTES, nvvm.LoadCacheModifierKind.CG)

    issue(x_block, row_ids, block_ref)


def rows_issued(bars, slot, owner, stages: int, interpret) -> None:
    """After a ring step's copy_rows calls: its slot's rows barrier gets this thread's arrival
    once all of the thread's copies so far have landed."""
    if interpret:
        plgpu.barrier_arrive(bars.at[owner * stages + slot])
        return

    @plgpu.inline_mgpu(arg_types=(plgpu.RefType(), SCALAR))
    def arrive(ctx, bars_mem, slot):
        del ctx
        nvvm.cp_async_mbarrier_arrive(_mbarrier(bars_mem, _scalar(slot)).get_ptr(), noinc=True)

    arrive(bars, slot)


def wait_rows(bars, step, owner, stages: int, interpret) -> None:
    """Waits until ring step `step`'s rows have landed in its slot and makes them visible to
    wgmma (the async proxy). Only after the step's full (TMA) barrier: see the module's doc."""
    slot = lax.rem(step, stages)
    if interpret:
        plgpu.barrier_wait(bars.at[owner * stages + slot])
        plgpu.commit_smem()  # the compiled fence below: the rows' generic writes before async-proxy reads
        return

    @plgpu.inline_mgpu(arg_types=(plgpu.RefType(), SCALAR, SCALAR))
    def wait(ctx, bars_mem, slot, parity):
        del ctx
        _mbarrier(bars_mem, _scalar(slot)).wait_parity(
            arith.trunci(ir.IntegerType.get_signless(1), _scalar(parity)))
        nvvm.fence_proxy(nvvm.ProxyKind.async_shared, space=nvvm.SharedSpace.shared_cta)

    wait(bars, slot, lax.rem(step // stages, 2))
