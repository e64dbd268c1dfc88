"""The "mosaic_gpu" backend: fused_moe as two grouped GEMM kernels in Pallas Mosaic GPU (sm90).

Pipeline, for bf16 / f16 (x [T, H], k slots per token):
  1. align (jax_moe.permutation.align_to_tiles): rows sorted by expert (compact; ranked by the
     routing kernel of mosaic_gpu_routing, decode batches by XLA), covered by 64-row tiles that
     start at multiples of 8 rows and each belong to one expert (one token's forward:
     rows_as_tiles, one tile per row, no sort);
  2. gather: xs[r] = x[row_token[r]]                                     [rows, H]
     (read row by row by expert_up's producer warpgroup (mosaic_gpu_gather), except for decode
     batches and the backward, which gather a copy);
  3. expert_up kernel:   hw = w * act(xs Wg[e] + bg[e]) * (xs Wu[e] + bu[e])   [rows, I]
                         (nomic: w * act(xs W1[e] + b1[e])), w the row's routing weight; gate
                         and up share one pipeline, fp32 accumulators, activation and weight in
                         the epilogue, hw stored in x's dtype (the backward keeps it: the down
                         weights' gradient is hw^T dys);
  4. expert_down kernel: y = hw Wd[e] + w bd[e]                            [rows, H]
                         (nomic: hw W2[e]^T + w bd[e], W2 read transposed from its [E, H, I] layout);
  5. combine: out[t] = sum_j y[slot_row[t, j]], slots summed in order j = 0..k-1 in fp32.
Each tile stores only its expert's rows (neighbouring tiles may overlap, their rows do not).
No atomics anywhere: results are bitwise reproducible. Both kernels are persistent (one CTA per
SM; the CTAs take turns over the (tile, n-block) items of the tiles with work) and warp-specialised: a
producer warpgroup streams TMA loads through an SMEM ring while two consumer warpgroups, each
with half of every n-block or every other item whole, run the wgmma and the epilogue (see
grouped_gemm).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from jax_moe.backends import mosaic_gpu_gather
from jax_moe.backends.registry import Backend, ExpertWeights, MoEProblem, register
from jax_moe.permutation import ALIGN_ROWS, COMPARE_RANK_ROWS, TileLayout, align_to_tiles, rows_as_tiles

HALF_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def approx_erf(v):
    """erf to 1.5e-7 absolute (Abramowitz & Stegun 7.1.26): Mosaic GPU has no layout rule for math.erf."""
    a = jnp.abs(v)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    magnitude = 1.0 - poly * jnp.exp(-a * a)
    return jnp.where(v < 0, -magnitude, magnitude)


# Epilogue activations in fp32, written with ops that Mosaic GPU lowers (no logistic primitive).
KERNEL_ACTIVATIONS = {
    "silu": lambda v: v / (1.0 + jnp.exp(-v)),
    "gelu": lambda v: 0.5 * v * (1.0 + jnp.tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))),
    "gelu_exact": lambda v: 0.5 * v * (1.0 + approx_erf(v * 0.7071067811865476)),
    "relu": lambda v: jnp.maximum(v, 0.0),
}
INTERPRET_SMS = 2  # CTAs of the persistent grid in interpret mode (any count is correct)


@dataclasses.dataclass(frozen=True)
class GemmConfig:
    """Tiling of one grouped GEMM: block_m rows x block_n columns per item, block_k per step;
    consumers warpgroups split the block_n columns (block_m x block_n / consumers each), or with
    alternate take alternate items whole."""

    block_m: int
    block_n: int
    block_k: int
    stages: int  # SMEM ring slots of the producer's TMA loads: at most this many, as many as fit
    tile_width: int = 8  # M-tiles walked side by side (same n-block) for L2 reuse of the weights
    consumers: int = 2  # compute warpgroups (1 or 2); one more warpgroup produces the loads
    # OUT_CHUNK-column chunks of each output staged in SMEM at once (0: all of a consumer's
    # columns); fewer leave room for more ring stages, at the cost of waiting on earlier stores.
    staging_chunks: int = 0
    # Consumers take alternate items whole ("ping-pong": one's epilogue overlaps the other's MMAs)
    # instead of splitting each item's columns.
    alternate: bool = False
    # "tile" epilogue operands are fetched into the outputs' staging buffers (where a consumer's
    # columns are staged one chunk at a time; with several chunks the epilogue runs a chunk at a
    # time) instead of SMEM of their own, which goes to the ring
    # (down_backward at Qwen3-30B-A3B T=4096, H100: 5 -> 7 stages, 384 -> 355 us; at 5 stages
    # the fetch's wait for the previous item's stores costs 6 us).
    borrow_staging: bool = True


# Accumulator columns of an item (block_n x accumulators): 5 ring stages of its 64 x 64 lhs and
# 64 x 256 rhs blocks (200 KiB) plus one output's staging fit in the SM's 227 KiB of SMEM; 512
# leave room for 3 stages (expert_up at Qwen3-30B-A3B T=4096 on an H100: 721 us against 447).
ITEM_ACC_COLUMNS = 256
# From this many routed rows (one 64-row tile per SM and more) the consumers of a gated (qwen3)
# problem take alternate items whole; below, a CTA has one or two items and a lone item would leave
# a consumer idle (seed nomic T=512, 1024 rows: 80 -> 101 us with alternate items; Qwen3-30B-A3B
# T=4096: faster). Ungated problems keep the split: seed nomic T=32768 went 1355 -> 1951 us with
# alternate items (each consumer then holds a whole 64 x 256 f32 accumulator).
ALTERNATE_MIN_ROWS = 8192
PRODUCER_REGISTERS = 40  # the producer warpgroup only issues TMA loads (and cp.async row gathers)
# Up to this many routed rows a batch is decoding: narrow n-blocks (choose_configs), and x's rows
# gathered by XLA rather than by expert_up's producer (Qwen3-30B-A3B T=1 on an H100: expert_up
# 20 -> 36 us with the row gather, whose cp.async latency is not hidden behind one short item).
DECODE_ROWS = 64


def decoding(problem: MoEProblem) -> bool:
    """Whether the problem routes at most DECODE_ROWS rows (T k): a decoding batch."""
    return problem.tokens * problem.top_k <= DECODE_ROWS


def consumer_registers(consumers: int) -> int:
    """Registers per thread of a consumer warpgroup: what the CTA's warpgroups hold at launch (an
    equal share of the 64K registers, a multiple of 8 per thread and at most 255) less the
    producer's, shared (setmaxnreg takes multiples of 8, at most 256). Asking for more than the
    launch allocation frees blocks setmaxnreg forever."""
    launch = min(255, 512 // (consumers + 1)) // 8 * 8
    return min(256, (launch * (consumers + 1) - PRODUCER_REGISTERS) // consumers // 8 * 8)


def alternate_items(problem: MoEProblem) -> bool:
    """Whether the grouped GEMMs' consumers take alternate items whole (see ALTERNATE_MIN_ROWS)."""
    return problem.moe_type == "qwen3" and problem.tokens * problem.top_k >= ALTERNATE_MIN_ROWS


def gemm_config(block_m: int, n: int, block_n: int, stages: int = 5, staging_chunks: int = 0,
                alternate: bool = False) -> GemmConfig:
    """The largest n-block up to block_n that divides N, for two consumers when each gets at least
    OUT_CHUNK columns (of an item, or alternate items whole)."""
    block_n = largest_dividing(n, block_n)
    return GemmConfig(block_m, block_n, 64, stages, consumers=2 if block_n >= 2 * OUT_CHUNK else 1,
                      staging_chunks=staging_chunks, alternate=alternate)


def choose_configs(problem: MoEProblem) -> tuple[GemmConfig, GemmConfig]:
    """(expert_up, expert_down) tilings for a problem; both use the same block_m.

    Measured at Qwen3-30B-A3B on an H100 (benchmarks/NOTES.md, session 5): block_m 64 beats 128
    (tiles are per expert: less padding; expert_up 447 against 508 us at T=4096). Every ring
    stage the SMEM holds pays (expert_up 582 / 479 / 437 us with 3 / 4 / 5 stages), so the rings
    take all that fits, up to 5. Decode batches (T*k <= DECODE_ROWS) take narrow n-blocks, which
    spread the weights over the SMs (deeper rings or one consumer for expert_down: within 2 %).
    expert_down's outputs are staged one 64-column chunk at a time, which leaves SMEM for a 5th
    ring stage (248 -> 238 us at T=4096, session 6). From ALTERNATE_MIN_ROWS rows the two
    consumers take alternate items whole, so one's epilogue overlaps the other's MMAs (T=4096,
    benchmarks/tune_backward.py: expert_up 436 -> 426 us, keeping g, u 536 -> 492; expert_down
    242 -> 216; gated problems only: alternate_items).
    """
    block_m = 64
    if decoding(problem):
        return gemm_config(block_m, problem.intermediate, 64), gemm_config(block_m, problem.hidden, 128)
    up_n = ITEM_ACC_COLUMNS // (2 if problem.moe_type == "qwen3" else 1)  # per accumulator
    alternate = alternate_items(problem)
    # expert_up stages a chunk at a time only on alternate items (where it was measured faster);
    # split, it keeps session 5's all-at-once staging.
    return (gemm_config(block_m, problem.intermediate, up_n, staging_chunks=int(alternate), alternate=alternate),
            gemm_config(block_m, problem.hidden, ITEM_ACC_COLUMNS, staging_chunks=1, alternate=alternate))


def largest_dividing(size: int, block: int) -> int:
    while size % block:
        block //= 2
    return block


def tiled_swizzled(shape, dtype) -> tuple:
    """TMA/wgmma-friendly SMEM transforms for a [rows, cols] tile."""
    bits = jnp.dtype(dtype).itemsize * 8
    swizzle = plgpu.find_swizzle(shape[-1] * bits)
    return plgpu.TilingTransform((8, swizzle * 8 // bits)), plgpu.SwizzleTransform(swizzle)


def num_sms(interpret) -> int:
    return INTERPRET_SMS if interpret else jax.devices()[0].core_count


def interpret_params(interpret):
    """interpret: False (compile), True (default interpret mode) or plgpu.InterpretGPUParams."""
    if isinstance(interpret, plgpu.InterpretGPUParams):
        return interpret
    return plgpu.InterpretGPUParams() if interpret else False


OUT_CHUNK = 64  # output columns per SMEM staging chunk: one 128-byte swizzle row of half floats
SMEM_BYTES = 227 * 1024  # an sm90 CTA's shared memory
SMEM_RESERVE = 4096  # barriers, Mosaic GPU's own scratch and alignment (measured: up to 3.7 KiB)


def ring_slots(stage_bytes: int, other_smem, reserve: int = SMEM_RESERVE) -> int:
    """Ring stages of stage_bytes that fit in the SMEM next to other_smem (plgpu.SMEM scratch)."""
    other = sum(math.prod(ref.shape) * jnp.dtype(ref.dtype).itemsize for ref in other_smem)
    return (SMEM_BYTES - reserve - other) // stage_bytes


def ring_stages(cfg, stage_bytes: int, other_smem, reserve: int = SMEM_RESERVE) -> int:
    """Stages of a producer's SMEM ring: as many as fit next to other_smem and `reserve` bytes, at
    most cfg.stages."""
    stages = min(cfg.stages, ring_slots(stage_bytes, other_smem, reserve))
    if stages < 2:
        raise ValueError(f"{cfg}: the epilogue's SMEM ({[ref.shape for ref in other_smem]}) leaves no room for a "
                         f"2-stage ring of {stage_bytes} B stages")
    return stages


def warpgroup_roles(wg, consumers: int, stages: int, empty, walk, produce, consume, walk_consumers=None):
    """The roles of a producer/consumer kernel's warpgroups: warpgroup `consumers` runs
    walk(produce) with few registers, then awaits the consumers' releases of the last `stages`
    ring steps (every barrier phase is observed); the others run walk_consumers(consume) (default
    walk), then let their last stores finish reading the SMEM. walk(fn) returns the ring steps it
    walked."""
    @pl.when(wg == consumers)
    def _producer():
        plgpu.set_max_registers(PRODUCER_REGISTERS, action="decrease")
        total_steps = walk(produce)

        @pl.loop(jnp.maximum(total_steps - stages, 0), total_steps)
        def _(step):
            plgpu.barrier_wait(empty.at[lax.rem(step, stages)])

    @pl.when(wg < consumers)
    def _consumers():
        plgpu.set_max_registers(consumer_registers(consumers), action="increase")
        (walk_consumers or walk)(consume)
        plgpu.wait_smem_to_gmem(0, wait_read_only=True)


def _store_rows(out_smem, out_ref, start, lo, size, col0, block_m: int):
    """Copies rows [lo, lo + size) of the staged chunks (out_smem [c, block_m, OUT_CHUNK]) to out_ref
    rows start + lo ..., columns col0 ..., in power-of-two row pieces (TMA boxes are static)."""
    offset, piece = lo, block_m
    while piece:
        @pl.when((size & piece) != 0)
        def _():
            for c in range(out_smem.shape[0]):
                plgpu.copy_smem_to_gmem(out_smem.at[c, pl.ds(offset, piece)],
                                        out_ref.at[pl.ds(start + offset, piece), pl.ds(col0 + c * OUT_CHUNK, OUT_CHUNK)],
                                        commit_group=False)

        offset = offset + (size & piece)
        piece //= 2
    plgpu.commit_smem_to_gmem_group()


def grouped_gemm(tiles: TileLayout, phases, out_cols, cfg: GemmConfig, *, transpose_rhs: bool, epilogue,
                  vectors, out_dtypes, interpret, name: str, row_sums: bool = False, lhs_rows=None,
                  copy_rows: bool = False):
    """outs[valid rows of a tile, n-block] = epilogue(accs, vector tiles), accs[a] = sum over phases
    (lhs, rhs_tuple) of lhs[tile block] @ rhs_tuple[a][e].

    phases: (lhs [rows, K_p], rhs_tuple) pairs, every rhs [E, K_p, N] (or [E, N, K_p] with
    transpose_rhs), each tuple one rhs per accumulator; the phases run one after the other into the
    same accumulators. With lhs_rows (int32 [rows], every entry in [0, T)) each lhs is x [T, K_p]
    itself and row r of the GEMM is x[lhs_rows[r]], gathered by the producer into the ring
    (mosaic_gpu_gather) instead of read from a gathered copy. outs: one [rows, N] array per
    out_dtypes entry, written only in the tiles' valid rows. vectors: (kind, array) pairs for the
    epilogue, fetched into SMEM: "row" f32 [rows] (one value per row, broadcast over the columns),
    "col" f32 [E, N] (one per column of the tile's expert), "tile" [rows, N] (the tile's block
    itself); or read as one scalar: "scalar" f32 [num_tiles] (one value per tile, broadcast over its
    block); "tile" operands go to the outputs' staging where cfg.borrow_staging allows, fetched once
    the item's first MMAs are issued. Tiles whose expert is outside [0, E) have no work (the tile
    tables of rows_as_tiles hold the routing ids as they are). The epilogue sees one consumer's
    block_m x (block_n / consumers) part of the tile (alternate: the whole block_m x block_n) and
    returns one fp32 tile of that shape per output, and with row_sums also a [block_m] vector: those
    are written to an extra f32 [num_tiles * n_blocks * parts, block_m] output at row (tile *
    n_blocks + n-block) * parts + part (every row of the tile, valid or not; parts: consumers, or 1
    with alternate). With lhs_rows and copy_rows the gathered lhs is an output too, last: [rows,
    K] in x's dtype, each tile's rows stored from the ring slots of its n-block 0 item (by its
    first consumer part) in whole 8-row groups from the block's first row, so the tiles' rows must
    start there (lo 0: the layouts of aligned_experts; rows no tile owns are left unwritten).
    Outputs go through SMEM staging, cfg.staging_chunks 64-column chunks at a time,
    a buffer each or, on alternate items where that saves a ring stage, one buffer taken in turns.

    Warp-specialised: per CTA, a producer warpgroup streams the lhs and rhs k-blocks of the CTA's
    items through a ring of cfg.stages SMEM slots (TMA, one "full" and one "empty" barrier per
    slot), without stopping between items, while cfg.consumers warpgroups multiply (each its own
    columns of the n-block) and run the epilogue: a consumer's epilogue overlaps the loads of the
    next item and the other consumer's MMAs. With cfg.alternate each consumer takes every other
    item whole and waits on its own set of full barriers (mbarrier phase parity is tracked per
    thread: a waiter has to see every phase of a barrier).
    """
    bm, bn, bk, consumers, alternate = cfg.block_m, cfg.block_n, cfg.block_k, cfg.consumers, cfg.alternate
    wn = bn if alternate else bn // consumers  # columns per consumer
    parts = 1 if alternate else consumers  # consumers sharing an item
    chunks = wn // OUT_CHUNK
    staged = min(cfg.staging_chunks or chunks, chunks)
    dtype = phases[0][0].dtype
    if (bn % parts or wn % OUT_CHUNK or chunks % staged or out_cols % bn
            or any(lhs.shape[1] % bk for lhs, _ in phases)):
        raise ValueError(f"{cfg} does not tile N={out_cols}, K={[lhs.shape[1] for lhs, _ in phases]} "
                         f"(block_n / consumers a multiple of {OUT_CHUNK})")
    rows = phases[0][0].shape[0] if lhs_rows is None else lhs_rows.shape[0]
    if lhs_rows is not None:
        mosaic_gpu_gather.check_block(bm, bk, dtype)
    if copy_rows and (lhs_rows is None or len(phases) != 1 or tiles.one_row_per_tile):
        raise ValueError("copy_rows stores a gathered lhs (lhs_rows) of one phase, tiles of whole 8-row groups")
    m_tiles, n_tiles = tiles.tile_expert.shape[0], out_cols // bn
    n_acc, n_vec, n_out = len(phases[0][1]), len(vectors), len(out_dtypes)
    kinds = [kind for kind, _ in vectors]
    # "tile" operands borrow the staging buffers of the outputs (one each, same dtype) where a
    # consumer's columns go through the staging one chunk at a time, so that their SMEM goes to the
    # ring instead; with several chunks the epilogue then runs a chunk at a time, each chunk's
    # operands fetched once the previous chunk's stores have read the staging.
    tile_vectors = [i for i, kind in enumerate(kinds) if kind == "tile"]
    borrowed = ({i: o for o, i in enumerate(tile_vectors)}
                if cfg.borrow_staging and staged == 1 and len(tile_vectors) <= len(out_dtypes)
                and all(vectors[i][1].dtype == jnp.dtype(out_dtypes[o]) for o, i in enumerate(tile_vectors))
                else {})  # tile operand -> the output whose staging it borrows
    staged_vectors = [i for i, kind in enumerate(kinds) if kind != "scalar" and i not in borrowed]  # own SMEM
    num_experts = phases[0][1][0].shape[0]
    rhs_block = (bn, bk) if transpose_rhs else (bk, bn)
    steps_per_item = sum(lhs.shape[1] // bk for lhs, _ in phases)
    operands = [operand for lhs, rhs_tuple in phases for operand in (lhs, *rhs_tuple)]

    row_tiles = tiles.one_row_per_tile
    tables = ((tiles.tile_expert,) if row_tiles else
              (tiles.tile_expert, tiles.tile_start, tiles.tile_lo, tiles.tile_size, tiles.tile_end))
    gathered = () if lhs_rows is None else (lhs_rows,)

    def body(*refs):
        (expert_ref, *row_refs), refs = refs[:len(tables)], refs[len(tables):]
        lhs_rows_ref, refs = (refs[0], refs[1:]) if gathered else (None, refs)
        operand_refs, refs = refs[:len(operands)], refs[len(operands):]
        vector_refs, refs = refs[:n_vec], refs[n_vec:]
        out_refs, refs = refs[:n_out + row_sums], refs[n_out + row_sums:]
        copy_ref, refs = (refs[0], refs[1:]) if copy_rows else (None, refs)
        (lhs_ring, rhs_rings, full, empty, *row_barriers), (out_smems, vector_smems, vector_barriers) = refs
        wg = lax.axis_index("wg")
        if gathered:
            mosaic_gpu_gather.init_barriers(row_barriers[0], stages, interpret)

        def block_start(mi):
            """First row of tile mi's block."""
            return pl.multiple_of(mi // ALIGN_ROWS * ALIGN_ROWS if row_tiles else row_refs[0][mi], ALIGN_ROWS)

        def valid_rows(mi):
            """(first valid row in tile mi's block, valid rows). Read where the stores need them:
            read before the MMAs, they stay live across them (expert_up at Qwen3-30B-A3B T=4096:
            415 -> 474-480 us on an H100, session 10)."""
            return (lax.rem(mi, ALIGN_ROWS), jnp.int32(1)) if row_tiles else (row_refs[1][mi], row_refs[2][mi])

        def walk(item):
            """Runs item(mi, ni, e, first_step, owner) over this CTA's non-empty (tile, n-block)
            items, the same walk in every warpgroup; first_step counts the ring's k-steps before the
            item, owner is the consumer that takes it whole (alternate) or 0. Returns the k-steps.

            The walk covers the tiles with work only (align_to_tiles puts them first), so the CTAs
            take turns over the items themselves: over all m_tiles, the groups of tile_width tiles
            that planar_snake walks side by side leave holes where a group is partly used, and CTAs
            whose turns land on them do fewer items than others (seed qwen3 T=512 on an H100, 504
            items: expert_up 42.5 us, 37.7 with groups of 2 tiles, whose holes fell past the end)."""
            used_tiles = m_tiles if row_tiles else row_refs[3][num_experts - 1]  # tile_end[E - 1]

            @plgpu.nd_loop((used_tiles * n_tiles,), collective_axes="sm", init_carry=(jnp.int32(0), jnp.int32(0)))
            def walked(loop_info, carry):
                steps, items = carry
                mi, ni = plgpu.planar_snake(loop_info.index[0], (used_tiles, n_tiles), 0, cfg.tile_width)
                e = expert_ref[mi]
                owner = lax.rem(items, consumers) if alternate else 0
                has_work = (e >= 0) & (e < num_experts)
                pl.when(has_work)(lambda: item(mi, ni, e, steps, owner))
                busy = has_work.astype(jnp.int32)
                return steps + busy * steps_per_item, items + busy

            return walked[0]

        def phase_steps():  # (first step of the phase within the item, its k-steps, lhs ref, rhs refs)
            first, position = 0, 0
            for lhs, _ in phases:
                yield first, lhs.shape[1] // bk, operand_refs[position], operand_refs[position + 1:position + 1 + n_acc]
                first, position = first + lhs.shape[1] // bk, position + 1 + n_acc

        def produce(mi, ni, e, first_step, owner):
            start = block_start(mi)
            for phase_first, k_steps, lhs_ref, rhs_refs in phase_steps():
                @pl.loop(0, k_steps)
                def _(k):
                    step = first_step + phase_first + k
                    slot = lax.rem(step, stages)

                    @pl.when(step >= stages)
                    def _():  # the consumers that read the slot's previous blocks are done with them
                        plgpu.barrier_wait(empty.at[slot])

                    loaded = full.at[owner * stages + slot]
                    if gathered:
                        mosaic_gpu_gather.copy_rows(lhs_ref.at[:, pl.ds(k * bk, bk)], lhs_rows_ref.at[pl.ds(start, bm)],
                                                    lhs_ring.at[slot], lhs_tiling, interpret)
                        mosaic_gpu_gather.rows_issued(row_barriers[0], slot, owner, stages, interpret)
                    else:
                        plgpu.copy_gmem_to_smem(lhs_ref.at[pl.ds(start, bm), pl.ds(k * bk, bk)], lhs_ring.at[slot], loaded)
                    for rhs_ref, ring in zip(rhs_refs, rhs_rings):
                        block = ((pl.ds(ni * bn, bn), pl.ds(k * bk, bk)) if transpose_rhs
                                 else (pl.ds(k * bk, bk), pl.ds(ni * bn, bn)))
                        plgpu.copy_gmem_to_smem(rhs_ref.at[e].at[block], ring.at[slot], loaded)

        def consume(mi, ni, e, first_step, owner):
            if alternate:
                pl.when(owner == wg)(lambda: consume_part(mi, ni, e, first_step, wg, 0))
            else:
                consume_part(mi, ni, e, first_step, 0, wg)

        def consume_part(mi, ni, e, first_step, owner, part):
            """Columns [part * wn, + wn) of the item's n-block; its loads signal owner's full barriers."""
            start = block_start(mi)
            col0 = ni * bn + part * wn
            my_vectors = dict(zip(staged_vectors, (smem.at[wg] for smem in vector_smems)))
            my_vectors.update({i: out_smems[o].at[wg, 0] for i, o in borrowed.items()})
            my_barrier = lambda i: vector_barriers.at[wg * n_vec + i]  # this consumer's, for operand i

            def fetch_vectors(indices, chunk=0):  # borrowed "tile" operands: one chunk's columns
                for i in indices:
                    kind, ref = kinds[i], vector_refs[i]
                    if kind == "row":
                        src = ref.at[pl.ds(start, bm)]
                    elif kind == "col":
                        src = ref.at[e, pl.ds(col0, wn)]
                    else:  # "tile"
                        src = ref.at[pl.ds(start, bm), pl.ds(col0 + chunk * OUT_CHUNK, OUT_CHUNK if i in borrowed else wn)]
                    plgpu.copy_gmem_to_smem(src, my_vectors[i], my_barrier(i))

            fetch_vectors(staged_vectors)  # epilogue operands, in flight early

            def fetch_borrowed():
                # Once the previous item's stores have read the staging: waited for after this item's
                # first MMAs are issued, which keep the tensor cores busy meanwhile.
                plgpu.wait_smem_to_gmem(0, wait_read_only=True)
                fetch_vectors(sorted(borrowed))

            stores_copy = (ni == 0) & (part == 0) if copy_rows else None  # this consumer stores the tile's rows

            def copy_block(slot, k):
                # Tile mi's rows of the slot (its first size rows, in whole 8-row groups: static pieces).
                groups = (valid_rows(mi)[1] + ALIGN_ROWS - 1) // ALIGN_ROWS
                for count in range(1, bm // ALIGN_ROWS + 1):
                    @pl.when(groups == count)
                    def _(count=count):
                        offset, piece = 0, bm
                        while piece >= ALIGN_ROWS:
                            if count * ALIGN_ROWS & piece:
                                plgpu.copy_smem_to_gmem(lhs_ring.at[slot, pl.ds(offset, piece)],
                                                        copy_ref.at[pl.ds(start + offset, piece), pl.ds(k * bk, bk)],
                                                        commit_group=False)
                                offset += piece
                            piece //= 2
                plgpu.commit_smem_to_gmem_group()

            def accumulate(*acc_refs):
                for phase_first, k_steps, _, _ in phase_steps():
                    @pl.loop(0, k_steps)
                    def _(k):
                        step = first_step + phase_first + k
                        slot = lax.rem(step, stages)
                        plgpu.barrier_wait(full.at[owner * stages + slot])
                        if gathered:
                            mosaic_gpu_gather.wait_rows(row_barriers[0], step, owner, stages, interpret)
                        for acc_ref, ring in zip(acc_refs, rhs_rings):
                            rhs = (ring.at[slot, pl.ds(part * wn, wn), :].transpose((1, 0)) if transpose_rhs
                                   else ring.at[slot, :, pl.ds(part * wn, wn)])
                            plgpu.wgmma(acc_ref, lhs_ring.at[slot], rhs)
                        if borrowed and phase_first == 0:
                            pl.when(k == 0)(fetch_borrowed)
                        if copy_rows:
                            pl.when(stores_copy)(lambda: copy_block(slot, k))
                        plgpu.wgmma_wait(n_acc)  # this step's MMAs stay in flight; the previous step's are done

                        @pl.when(phase_first + k > 0)
                        def _():
                            if copy_rows:  # the previous step's rows stored from the slot
                                pl.when(stores_copy)(lambda: plgpu.wait_smem_to_gmem(1, wait_read_only=True))
                            plgpu.barrier_arrive(empty.at[lax.rem(step - 1, stages)])

                plgpu.wgmma_wait(0)
                if copy_rows:
                    pl.when(stores_copy)(lambda: plgpu.wait_smem_to_gmem(0, wait_read_only=True))
                plgpu.barrier_arrive(empty.at[lax.rem(first_step + steps_per_item - 1, stages)])
                return tuple(a[...] for a in acc_refs)

            accs = pl.run_scoped(accumulate, *[plgpu.ACC((bm, wn), jnp.float32)] * n_acc)

            def vector_tiles(c0, width):
                """The epilogue operands over the consumer's columns [c0, c0 + width) (a borrowed
                "tile" operand holds just those, fetched for each chunk; the others once an item)."""
                tiles = []
                for i, kind in enumerate(kinds):
                    if kind == "scalar":
                        tiles.append(lax.broadcast_in_dim(vector_refs[i][mi], (bm, width), ()))
                        continue
                    if c0 == 0 or i in borrowed:
                        plgpu.barrier_wait(my_barrier(i))
                    if kind == "tile":
                        tiles.append(plgpu.load(my_vectors[i], layout=plgpu.Layout.WGMMA).astype(jnp.float32))
                    elif kind == "row":
                        v = plgpu.load(my_vectors[i], layout=plgpu.Layout.WGMMA.reduce(1))
                        tiles.append(lax.broadcast_in_dim(v, (bm, width), [0]))
                    else:  # "col"
                        v = plgpu.load(my_vectors[i].at[pl.ds(c0, width)], layout=plgpu.Layout.WGMMA.reduce(0))
                        tiles.append(lax.broadcast_in_dim(v, (bm, width), [1]))
                return tiles

            if borrowed and chunks > 1:  # the epilogue a chunk at a time, through the staging
                my_staging = [out_smems[o].at[wg] for o in range(n_out)]
                row_sum = None
                for c in range(chunks):
                    if c:  # chunk c - 1's stores have read the staging that chunk c's operands fill
                        plgpu.wait_smem_to_gmem(0, wait_read_only=True)
                        fetch_vectors(sorted(borrowed), c)
                    columns = slice(c * OUT_CHUNK, (c + 1) * OUT_CHUNK)
                    results = epilogue([acc[:, columns] for acc in accs], vector_tiles(columns.start, OUT_CHUNK))
                    out_tiles = results[:-1] if row_sums else results
                    if row_sums:
                        row_sum = results[-1] if row_sum is None else row_sum + results[-1]
                    for o, d in enumerate(out_dtypes):
                        my_staging[o][0] = out_tiles[o].astype(d)
                    if row_sums and c == chunks - 1:
                        out_smems[-1].at[wg][...] = row_sum
                    plgpu.commit_smem()
                    for o in range(n_out):
                        _store_rows(my_staging[o], out_refs[o], start, *valid_rows(mi), col0 + columns.start, bm)
            else:
                results = epilogue(accs, vector_tiles(0, wn))
                out_tiles, row_sum = (results[:-1], results[-1]) if row_sums else (results, None)
                plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # the previous item's stores have read the SMEM
                my_staging = [out_smems[0 if shared_staging else o].at[wg] for o in range(n_out)]
                out_tiles = [tile.astype(d) for tile, d in zip(out_tiles, out_dtypes)]
                if row_sums:
                    out_smems[-1].at[wg][...] = row_sum
                turns = [[o] for o in range(n_out)] if shared_staging else [list(range(n_out))]  # outputs staged at once
                for first in range(0, chunks, staged):  # rounds of `staged` chunks through the staging
                    for turn, outs in enumerate(turns):
                        if first or turn:  # the previous stores have read the SMEM
                            plgpu.wait_smem_to_gmem(0, wait_read_only=True)
                        for o in outs:
                            for c in range(staged):
                                my_staging[o][c] = out_tiles[o][:, (first + c) * OUT_CHUNK:(first + c + 1) * OUT_CHUNK]
                        plgpu.commit_smem()
                        for o in outs:
                            _store_rows(my_staging[o], out_refs[o], start, *valid_rows(mi), col0 + first * OUT_CHUNK, bm)
            if row_sums:
                plgpu.copy_smem_to_gmem(out_smems[-1].at[wg], out_refs[n_out].at[(mi * n_tiles + ni) * parts + part])
                plgpu.commit_smem_to_gmem_group()

        warpgroup_roles(wg, consumers, stages, empty, walk, produce, consume)

    def out_staging(out_dtype):
        bits = jnp.dtype(out_dtype).itemsize * 8
        swizzle = plgpu.find_swizzle(OUT_CHUNK * bits)
        # Row-granular tiling, so that the ragged store can start at any row.
        return plgpu.SMEM((consumers, staged, bm, OUT_CHUNK), out_dtype,
                          transforms=(plgpu.TilingTransform((1, swizzle * 8 // bits)), plgpu.SwizzleTransform(swizzle)))

    def vector_staging(kind, array):
        if kind == "tile":
            return plgpu.SMEM((consumers, bm, wn), array.dtype, transforms=tiled_swizzled((bm, wn), array.dtype))
        return plgpu.SMEM((consumers, bm if kind == "row" else wn), jnp.float32)

    out_types = [jax.ShapeDtypeStruct((rows, out_cols), d) for d in out_dtypes]
    vector_smems = [vector_staging(*vectors[i]) for i in staged_vectors]
    row_sum_staging = [plgpu.SMEM((consumers, bm), jnp.float32)] if row_sums else []
    if row_sums:
        out_types.append(jax.ShapeDtypeStruct((m_tiles * n_tiles * parts, bm), jnp.float32))
    if copy_rows:
        out_types.append(jax.ShapeDtypeStruct((rows, phases[0][0].shape[1]), dtype))
    others = vector_smems + row_sum_staging  # SMEM beside the ring and the outputs' staging
    stage_bytes = (bm * bk + n_acc * bn * bk) * jnp.dtype(dtype).itemsize
    separate = [out_staging(d) for d in out_dtypes]
    # On alternate items, outputs of one dtype take turns in one staging buffer where a buffer each
    # would cost a ring stage: the turns' waits overlap the other consumer's MMAs (H100, expert_up
    # keeping g, u at Qwen3-30B-A3B T=4096: 4 -> 5 stages, 496 -> 452 us). On split items both
    # consumers wait at once (T=1024: 326 -> 329-345 us), so they keep a buffer each.
    shared_staging = (alternate and not borrowed and len(set(out_dtypes)) == 1 and n_out > 1
                      and ring_slots(stage_bytes, separate + others) < min(cfg.stages, ring_slots(stage_bytes, separate[:1] + others)))
    staging = (separate[:1] if shared_staging else separate) + row_sum_staging
    row_barriers = [mosaic_gpu_gather.BARRIERS_SMEM] if gathered else []
    stages = ring_stages(cfg, stage_bytes, staging + vector_smems + row_barriers)
    lhs_tiling = tiled_swizzled((bm, bk), dtype)
    owners = consumers if alternate else 1  # sets of full barriers: one per consumer on alternate items
    ring = (plgpu.SMEM((stages, bm, bk), dtype, transforms=lhs_tiling),
            [plgpu.SMEM((stages, *rhs_block), dtype, transforms=tiled_swizzled(rhs_block, dtype))] * n_acc,
            # full: the slot's TMA loads (the rows barriers track gathered lhs rows)
            plgpu.Barrier(num_arrivals=n_acc + (not gathered), num_barriers=stages * owners),
            plgpu.Barrier(num_arrivals=parts, num_barriers=stages),  # empty: the consumers reading the slot
            *([mosaic_gpu_gather.barriers(stages, owners, interpret)] if gathered else []))
    kernel = plgpu.kernel(
        body,
        out_type=out_types,
        scratch_types=[ring, (staging, vector_smems, plgpu.Barrier(num_barriers=consumers * max(n_vec, 1)))],
        grid=(num_sms(interpret),),
        grid_names=("sm",),
        num_threads=consumers + 1,
        thread_name="wg",
        kernel_name=name,
        interpret=interpret_params(interpret),
    )
    return kernel(*tables, *gathered, *operands,
                  *(array for _, array in vectors))


def row_weights(tiles: TileLayout):
    """The routing weight of each row as a grouped_gemm epilogue vector: per row, or per tile
    (rows_as_tiles: a tile holds one row)."""
    return ("scalar", tiles.tile_weight) if tiles.one_row_per_tile else ("row", tiles.row_weight)


def expert_up(tiles: TileLayout, xs, weights: ExpertWeights, problem: MoEProblem, cfg: GemmConfig, interpret=False,
              keep_preactivations: bool = False, gather: bool = False, copy_rows: bool = False):
    """hw [rows, I] = w * act(xs Wg[e] + bg[e]) * (xs Wu[e] + bu[e])   (nomic: w * act(xs W1[e] +
    b1[e])), w the row's routing weight: the routing weight is applied here rather than to
    expert_down's output, so that the backward can keep hw for the down weights' gradient
    (down_backward then writes no copy of it).

    gather: xs is x [T, H] itself, and the kernel reads row r's x[tiles.row_token[r]] (no
    gathered copy). copy_rows (with gather and keep_preactivations, on tiles whose rows start on
    the 8-row grid: aligned_experts) also returns that copy, x[row_token] [rows, H] in the tiles'
    rows, stored from the rows the kernel reads anyway (the weight gradients' operand), third.

    keep_preactivations: also return the pre-activations the backward needs, (g, u) for qwen3
    (g = xs Wg[e] + bg[e], u = xs Wu[e] + bu[e]) or (g,) for nomic, each [rows, I] in xs's dtype.
    """
    gated = problem.moe_type == "qwen3"
    act = KERNEL_ACTIVATIONS[problem.activation]
    gate_bias = weights.gate_bias
    up_bias = weights.up_bias if gated else None
    vectors = [row_weights(tiles)] + [("col", b.astype(jnp.float32)) for b in (gate_bias, up_bias) if b is not None]

    def epilogue(accs, tiles):
        w, *tiles = tiles
        g = accs[0] if gate_bias is None else accs[0] + tiles.pop(0)
        preactivations = (g,)
        h = act(g)
        if gated:
            u = accs[1] if up_bias is None else accs[1] + tiles.pop(0)
            preactivations, h = (g, u), h * u
        return (w * h, *preactivations) if keep_preactivations else (w * h,)

    rhs = (weights.gate, weights.up) if gated else (weights.gate,)
    n_out = 1 + (len(rhs) if keep_preactivations else 0)
    outs = grouped_gemm(tiles, [(xs, rhs)], problem.intermediate, cfg, transpose_rhs=False, epilogue=epilogue,
                         vectors=vectors, out_dtypes=[xs.dtype] * n_out, interpret=interpret, name="jax_moe_expert_up",
                         lhs_rows=tiles.row_token if gather else None, copy_rows=copy_rows)
    hw, *preactivations = outs[:n_out]
    if not keep_preactivations:
        return hw
    return (hw, tuple(preactivations)) + ((outs[n_out],) if copy_rows else ())


def expert_down(tiles: TileLayout, hw, weights: ExpertWeights, problem: MoEProblem, cfg: GemmConfig, interpret=False):
    """y [rows, H] = hw Wd[e] + w bd[e]   (nomic: hw W2[e]^T + w bd[e]), hw expert_up's weighted
    output and w the row's routing weight (needed for the bias only)."""
    gated = problem.moe_type == "qwen3"
    vectors = []
    if weights.down_bias is not None:
        vectors = [row_weights(tiles), ("col", weights.down_bias.astype(jnp.float32))]

    def epilogue(accs, tiles):
        return (accs[0] + tiles[0] * tiles[1],) if tiles else accs

    second = weights.down if gated else weights.up
    (y,) = grouped_gemm(tiles, [(hw, (second,))], problem.hidden, cfg, transpose_rhs=not gated, epilogue=epilogue,
                         vectors=vectors, out_dtypes=[hw.dtype], interpret=interpret, name="jax_moe_expert_down")
    return y


def gather_rows(x, rows):
    """x[rows] for half x [T, H], moved as uint32 pairs: XLA's gather runs 1.26x faster that way
    (139264 rows of 2048 bf16 on an H100: 453 -> 358 us; benchmarks/NOTES.md)."""
    T, H = x.shape
    if H % 2:
        return x[rows]
    pairs = lax.bitcast_convert_type(x.reshape(T, H // 2, 2), jnp.uint32)
    return lax.bitcast_convert_type(pairs[rows], x.dtype).reshape(rows.shape[0], H)


def forward(x, weights: ExpertWeights, topk_weights, topk_ids, problem: MoEProblem, interpret=False,
            configs: tuple[GemmConfig, GemmConfig] | None = None, keep_residuals: bool = False,
            for_gradients: bool = False):
    """(out [T, H], the TileLayout, residuals) for half x [T, H]; residuals: with keep_residuals,
    training_up's (hw, pre-activations, xs) (the backward's), else None.

    configs overrides choose_configs (expert_up, expert_down; same block_m). One token takes
    rows_as_tiles (no sort) unless for_gradients (the weight gradients need rows grouped by
    expert: align_to_tiles). for_gradients starts every expert on the 8-row grid, so that the
    weight-gradient contraction's row blocks start at the expert's first row (no masked first
    block). With no tokens the layout is None (no kernel runs).

    expert_up reads x's rows itself (no gathered copy: Qwen3-30B-A3B T=4096 on an H100, 780 -> 722
    us) except for decode batches (DECODE_ROWS); where the weight gradients need the gathered rows
    (keep_residuals: reading x's rows in the weight-gradient contraction itself was slower than
    the copy, benchmarks/NOTES.md session 16) it stores them as it reads them (training_up)."""
    T, H = x.shape
    if T == 0:
        return jnp.zeros_like(x), None, None
    up_cfg, down_cfg = configs or choose_configs(problem)
    if up_cfg.block_m != down_cfg.block_m:
        raise ValueError(f"both kernels tile the same rows: block_m {up_cfg.block_m} != {down_cfg.block_m}")
    if T == 1 and not for_gradients:
        layout = rows_as_tiles(topk_ids, topk_weights, problem.experts, up_cfg.block_m)
    elif for_gradients and routing_kernel_ranks(problem):
        layout = mosaic_gpu_routing.aligned_layout(topk_ids, topk_weights, problem.experts, up_cfg.block_m, interpret)
    else:
        layout = align_to_tiles(topk_ids, topk_weights, problem.experts, up_cfg.block_m,
                                sorted_rows=sort_rows(topk_ids, problem, interpret), aligned_experts=for_gradients)
    if keep_residuals:
        residuals = training_up(layout, x, weights, problem, up_cfg, interpret)
        hw = residuals[0]
    else:
        gather = not decoding(problem)
        xs = x if gather else gather_rows(x, layout.row_token)
        hw, residuals = expert_up(layout, xs, weights, problem, up_cfg, interpret, gather=gather), None
    y = expert_down(layout, hw, weights, problem, down_cfg, interpret)
    return combine_slots(layout, y, problem.top_k, x.dtype), layout, residuals


def training_up(layout: TileLayout, x, weights: ExpertWeights, problem: MoEProblem, cfg: GemmConfig, interpret=False):
    """expert_up for the backward on the training layout: (hw, pre-activations, xs), xs = x's rows in
    the layout's order [rows, H] (the weight gradients' operand) stored by expert_up from the rows
    it reads itself, or gathered by XLA for decode batches (DECODE_ROWS), where expert_up reads a
    gathered copy anyway."""
    if not decoding(problem):
        return expert_up(layout, x, weights, problem, cfg, interpret, keep_preactivations=True, gather=True,
                         copy_rows=True)
    xs = gather_rows(x, layout.row_token)
    return expert_up(layout, xs, weights, problem, cfg, interpret, keep_preactivations=True) + (xs,)


def routing_kernel_ranks(problem: MoEProblem) -> bool:
    """Whether the routing kernel (mosaic_gpu_routing) ranks the rows: past the decode sizes, which
    rank by all-pair compares, where its one-hot columns fit the experts."""
    return problem.tokens * problem.top_k > COMPARE_RANK_ROWS and mosaic_gpu_routing.fits(problem.experts)


def sort_rows(topk_ids, problem: MoEProblem, interpret=False):
    """The rows sorted by expert with the routing kernel (mosaic_gpu_routing), or None (XLA's
    sort_by_expert) where it does not rank them."""
    if not routing_kernel_ranks(problem):
        return None
    return mosaic_gpu_routing.sort_by_expert(topk_ids, problem.experts, interpret)


def run(x, weights: ExpertWeights, topk_weights, topk_ids, problem: MoEProblem, interpret=False,
        configs: tuple[GemmConfig, GemmConfig] | None = None) -> jax.Array:
    """x [T, H] half -> [T, H]: the backend's forward (see :func:`forward`)."""
    return forward(x, weights, topk_weights, topk_ids, problem, interpret, configs)[0]


def combine_slots(tiles: TileLayout, row_values, top_k: int, dtype):
    """out [T, C] = sum_j row_values[slot_row[t, j]] (row_values [rows, C]) in the order j = 0..k-1,
    in fp32, cast to dtype: bitwise reproducible. Out-of-range slots add zero."""
    if tiles.one_row_per_tile:  # slot (t, j) is row t * k + j, or out of range
        T, k = tiles.slot_row.shape
        slots = row_values[:T * k].reshape(T, k, -1).astype(jnp.float32)
        # A select on the values (fused with the sum), not a gather through computed indices.
        slots = jnp.where((tiles.slot_row < row_values.shape[0])[..., None], slots, 0.0)
    elif tiles.slot_routed is not None:  # a select by the layout's mask, fused with the sum
        slots = jnp.take(row_values, tiles.slot_row, axis=0, mode="clip").astype(jnp.float32)
        slots = jnp.where(tiles.slot_routed[..., None], slots, 0.0)
    else:
        slots = jnp.take(row_values, tiles.slot_row, axis=0, mode="fill", fill_value=0).astype(jnp.float32)
    out = slots[:, 0]
    for j in range(1, top_k):
        out = out + slots[:, j]
    return out.astype(dtype)


def unsupported(problem: MoEProblem) -> str | None:
    """Why this backend cannot run ``problem``, or None."""
    if not problem.interpret:
        if problem.platform != "gpu":
            return f"needs an NVIDIA sm90 GPU (platform is {problem.platform!r}; interpret=True runs it on the CPU)"
        capability = getattr(jax.devices()[0], "compute_capability", None)
        if capability != "9.0":
            return f"needs compute capability 9.0 (Hopper), found {capability}"
    if problem.dtype not in HALF_DTYPES:
        return f"runs bf16/f16 through wgmma; {problem.dtype} stays on the exact 'xla' backend"
    for name, size in (("hidden", problem.hidden), ("intermediate", problem.intermediate)):
        if size % 64:
            return f"{name} size {size} is not a multiple of 64"
    return None


from jax_moe.backends import mosaic_gpu_grad, mosaic_gpu_routing  # noqa: E402  (they import this module)

register(Backend(name="mosaic_gpu", run=run, unsupported=unsupported, priority=10,
                 forward_for_grad=mosaic_gpu_grad.forward, backward=mosaic_gpu_grad.backward))
