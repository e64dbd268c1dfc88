"""The mosaic_gpu backend's backward pass: fused_moe's VJP as three kernels in Pallas Mosaic GPU.

With the forward's sorted rows (jax_moe.permutation.TileLayout), for dy the output cotangent
[T, H] gathered per sorted row (dys[r] = dy[row_token[r]]) and w the row's routing weight:
  1. down_backward (grouped GEMM, dy against the down weights transposed), per row:
       d = dys Wd[e]^T (nomic: dys W2[e]); with a = act(g), h = a * u (nomic: h = a),
       dg = w d * u * act'(g), du = w d * a   (nomic: dg = w d * act'(g)),
       and sum(h * d) per tile and n-block (d topk_weights, the k-slot row dot of the unweighted
       expert output with dy, less the down bias' share; slot_dots, an FFI call, sums them per
       (token, slot));
  2. up_backward (grouped GEMM): dxs = dg Wg[e]^T + du Wu[e]^T (nomic: dg W1[e]^T), whose k
       slots are summed per token in a fixed order (no atomics) into dx;
  3. expert_contraction (per expert, over its rows): dWg = xs^T dg, dWu = xs^T du, dWd = hw^T dys
       (nomic: dW1 = xs^T dg, dW2 = dys^T hw), fp32 accumulation.
Bias gradients are per-expert row sums (a masked product in XLA). g, u are the forward's
pre-activations (gate and up products plus biases) and hw = w h its weighted expert_up output:
saved by the forward, or recomputed from the inputs (MoEProblem.recompute). Every step has a fixed order: gradients are bitwise reproducible.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from jax_moe import _ffi
from jax_moe.backends import mosaic_gpu, mosaic_gpu_wgmma
from jax_moe.backends.mosaic_gpu import GemmConfig, grouped_gemm, interpret_params, tiled_swizzled
from jax_moe.backends.registry import ExpertWeights, MoEProblem
from jax_moe.permutation import ALIGN_ROWS, TileLayout


def _sigmoid(v):
    return 1.0 / (1.0 + jnp.exp(-v))


def _silu_grad(v):
    s = _sigmoid(v)
    return v * s, s * (1.0 + v * (1.0 - s))


def _gelu_tanh_grad(v):
    c = 0.7978845608028654
    t = jnp.tanh(c * (v + 0.044715 * v * v * v))
    return 0.5 * v * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * v * v)


def _gelu_exact_grad(v):
    cdf = 0.5 * (1.0 + mosaic_gpu.approx_erf(v * 0.7071067811865476))
    return v * cdf, cdf + v * jnp.exp(-0.5 * v * v) * 0.3989422804014327


# (act(v), act'(v)) in fp32 from ops Mosaic GPU lowers; the same formulas as KERNEL_ACTIVATIONS.
KERNEL_ACTIVATION_GRADS = {
    "silu": _silu_grad,
    "gelu": _gelu_tanh_grad,
    "gelu_exact": _gelu_exact_grad,
    "relu": lambda v: (jnp.maximum(v, 0.0), jnp.where(v > 0, 1.0, 0.0)),
}


# SMEM that expert_contraction's ring leaves to its barriers and Mosaic GPU's scratch: lowering
# reports 112 B beyond the ring and the staging (a 7-stage 128 x 128 ring, 262256 B); the
# grouped GEMMs keep mosaic_gpu.SMEM_RESERVE.
CONTRACTION_RESERVE = 1024


@dataclasses.dataclass(frozen=True)
class ContractionConfig:
    """Tiling of expert_contraction: out[e] blocks of block_m x block_n, block_k rows per step."""

    block_m: int
    block_n: int
    block_k: int
    stages: int  # SMEM ring slots: at most this many, as many as fit
    # Compute warpgroups taking alternate items whole ("ping-pong": one's masking and epilogue
    # overlap the other's MMAs); one more warpgroup produces the loads.
    consumers: int = 1
    # OUT_CHUNK-column chunks of an output tile staged in SMEM at once (0: the whole tile): fewer
    # leave room for more ring stages; the chunks go through two buffers where an item has an even
    # number of them (one chunk's store reads one while the next fills the other), else through one
    # (each chunk waits for the previous one's store).
    staging_chunks: int = 0
    # The consumers share each item instead, each taking block_m / consumers of its rows: their
    # wgmmas (64 x block_n x 16 each) read the rhs block from SMEM once per 64 rows, so a 256-column
    # block reads half the SMEM bytes per MMA of a 128-column one (SMEM's bandwidth is shared with
    # the TMA's writes into the ring).
    cooperative: bool = False


@dataclasses.dataclass(frozen=True)
class BackwardConfigs:
    down: GemmConfig  # down_backward: N = I
    up: GemmConfig  # up_backward: N = H
    contraction: ContractionConfig  # weight gradients (dWg and dWu in one call; dWd)


def choose_backward_configs(problem: MoEProblem, block_m: int) -> BackwardConfigs:
    """Tilings for the backward kernels; block_m is the forward's (the TileLayout's).

    Contractions (benchmarks/tune_contraction.py, an H100 at Qwen3-30B-A3B T=4096, the training
    layout: an expert has ~256 rows, 4-5 row blocks per output tile): 128x128 items, one
    accumulator, one consumer, 5 ring stages: dWg + dWu 460-469 us, dWd 239-243 (two consumers on
    alternate items: 483-485, 252-253; the same in clusters of two sharing lhs blocks by TMA
    multicast: 502, 258; dWg and dWu as two 128x64 accumulators of one item, two consumers,
    session 10: 525). Session 13 (ncu: tensor pipe 52 % busy, L2 71 %, DRAM 63 %): two consumers
    sharing 128x256 items, 3 stages: 520, 254; 4 stages with 64-column chunks staged through one
    buffer: 461, 250 (one consumer with such chunks: 541, 279); accumulators stored to HBM straight
    from the registers (no staging, 6 stages): 1009, 487; boundary blocks masked 16 rows at a time:
    no change. Session 14: 6 stages 471 (5: 468); the expert tables read from SMEM instead of
    global memory, 477 -> 469; shared 128x256 items with 4 stages and double-buffered 64-column
    chunks 453-455, 241-251 (T=16384: 1213, 622 against 1251, 652): the default. Both together
    took the jax.grad step from 2506-2512 to 2477-2482 us.
    down_backward: 128-column items (two consumers of 64: its epilogue reads g, u and writes three
    tiles), 388 us (256 columns do not fit the SMEM; one consumer of 64: 584). It waits on its loads
    (ncu, session 12): g, u fetched into the outputs' staging (GemmConfig.borrow_staging) leave room
    for 7 ring stages instead of 5, and M-tile bands of 4 instead of 8: 384 -> 332 us (7 stages,
    bands of 8: 355; bands of 2, 3, 16: 335, 342, 363; 128-column k-blocks: 389). up_backward 256
    columns (two consumers of 128), 469 us (128: 630; 512 with 32-row k-blocks: 548), 452 us with
    its outputs staged one 64-column chunk at a time (room for a 5th ring stage), 424 us with the
    consumers on alternate items (down_backward on alternate items: 455-780 us in session 12, with
    g, u in SMEM of their own). Session 26: on alternate items with its epilogue a 64-column chunk
    at a time, g, u fetched into the staging per chunk (7 stages kept), from 8192 routed rows as
    the GEMMs: down_backward 381-383 -> 350-352 us, the jax.grad step 2396.5-2396.7 -> 2364.5-2368.2.
    Session 27 (an H200): 256-column alternate items (four staging chunks a consumer; the ring fits
    4 stages, as many bytes in flight as 7 of 128 columns; each dout row block read from L2 half as
    often): down_backward 326.8 -> 309.7-310.7 us in the step, the step 2065.0-2068.1 ->
    2050.2-2050.4 us (alone: 312.8 -> 289.9; M-tile bands of 2, 8: 302.4, 288.0).
    Session 32 (an H100): 192-column alternate items where they divide I (Qwen3-30B-A3B: 4 n-blocks
    of 768 against 3), finer rounds of items (session 29: its time steps ~19 us a round of 256-column
    items): down_backward 358.0-360.3 -> 340.5-341.8 us in the step, the step -18 to -21 us.
    """
    alternate = mosaic_gpu.alternate_items(problem)
    down_n = (192 if problem.intermediate % 192 == 0 else 256) if alternate else 128
    return BackwardConfigs(
        down=dataclasses.replace(mosaic_gpu.gemm_config(block_m, problem.intermediate, down_n,
                                                        stages=7, staging_chunks=int(alternate), alternate=alternate),
                                 tile_width=4),
        up=mosaic_gpu.gemm_config(block_m, problem.hidden, 256, staging_chunks=1, alternate=alternate),
        contraction=ContractionConfig(128, 256, 64, 4, consumers=2, staging_chunks=1, cooperative=True),
    )


def fitted_contraction_config(cfg: ContractionConfig, M: int, N: int) -> ContractionConfig:
    """cfg for out [E, M, N]: its blocks halved until they divide M and N; consumers sharing an
    item need 64 rows and columns each, else one consumer takes the item (at most 128 columns:
    its accumulator's registers) with as many ring stages as fit."""
    cfg = dataclasses.replace(cfg, block_m=mosaic_gpu.largest_dividing(M, cfg.block_m),
                              block_n=mosaic_gpu.largest_dividing(N, cfg.block_n))
    if cfg.cooperative and min(cfg.block_m, cfg.block_n) < 64 * cfg.consumers:
        cfg = ContractionConfig(cfg.block_m, min(cfg.block_n, 128), cfg.block_k, stages=8)
    return cfg


def down_backward(tiles: TileLayout, dys, preactivations, weights: ExpertWeights, problem: MoEProblem,
                  cfg: GemmConfig, interpret=False, gather: bool = False):
    """Returns (dpre, tile_dots): dpre = (dg, du) (nomic: (dg,)) in dys's dtype; tile_dots f32
    [num_tiles * n_blocks, block_m], row (tile * n_blocks + b) the tile's rows' sums over n-block b
    of h[r, i] (dys Wd[e]^T)[r, i] (valid rows only; others undefined): slot_dots sums them per
    (token, slot).

    gather: dys is dout [T, H] itself, row r's dout[tiles.row_token[r]] read by the kernel, which
    also stores those rows (the down weights' gradient operand, on tiles whose rows start on the
    8-row grid) and returns them third, [rows, H]."""
    gated = problem.moe_type == "qwen3"
    act_grad = KERNEL_ACTIVATION_GRADS[problem.activation]
    vectors = [mosaic_gpu.row_weights(tiles)] + [("tile", p) for p in preactivations]

    def epilogue(accs, vector_tiles):
        (d,), w, g = accs, vector_tiles[0], vector_tiles[1]
        a, da = act_grad(g)
        dh = w * d
        if gated:
            u = vector_tiles[2]
            return dh * u * da, dh * a, jnp.sum(a * u * d, axis=1)
        return dh * da, jnp.sum(a * d, axis=1)

    second = weights.down if gated else weights.up
    n_out = len(preactivations)
    outs = grouped_gemm(
        tiles, [(dys, (second,))], problem.intermediate, cfg, transpose_rhs=gated, epilogue=epilogue,
        vectors=vectors, out_dtypes=[dys.dtype] * n_out, interpret=interpret,
        name="jax_moe_down_backward", row_sums=True, lhs_rows=tiles.row_token if gather else None, copy_rows=gather)
    dpre, tile_dots = tuple(outs[:n_out]), outs[n_out]
    return (dpre, tile_dots, outs[n_out + 1]) if gather else (dpre, tile_dots)


def slot_dots(tiles: TileLayout, tile_dots, topk_ids, interpret=False):
    """f32 [T, k]: each (token, slot)'s sum over the n-blocks (in order) of its row in down_backward's
    tile_dots [num_tiles * n_blocks, block_m]; 0 for out-of-range ids. tiles: an aligned layout (every
    expert's tiles are block_m-row blocks from its start), as the gradients' always is. One XLA FFI
    call (ffi/aligned_layout_*), where XLA took a zero fill, a scatter to rows and a gather."""
    _ffi.require_platform("cpu" if interpret else jax.default_backend())
    T, k = topk_ids.shape
    n_blocks = tile_dots.shape[0] // tiles.tile_expert.shape[0]
    call = jax.ffi.ffi_call(_ffi.SLOT_DOTS_TARGET, jax.ShapeDtypeStruct((T * k,), jnp.float32))
    out = call(tile_dots, topk_ids.reshape(-1).astype(jnp.int32), tiles.slot_row.reshape(-1), tiles.expert_start,
               tiles.expert_size, tiles.tile_end, n_blocks=np.int64(n_blocks))
    return out.reshape(T, k)


def up_backward(tiles: TileLayout, dpre, weights: ExpertWeights, problem: MoEProblem, cfg: GemmConfig,
                interpret=False):
    """dxs [rows, H] = dg Wg[e]^T + du Wu[e]^T   (nomic: dg W1[e]^T), in dg's dtype."""
    firsts = (weights.gate, weights.up) if problem.moe_type == "qwen3" else (weights.gate,)
    (dxs,) = grouped_gemm(tiles, [(d, (w,)) for d, w in zip(dpre, firsts)], problem.hidden, cfg,
                           transpose_rhs=True, epilogue=lambda accs, _: accs, vectors=[],
                           out_dtypes=[dpre[0].dtype], interpret=interpret, name="jax_moe_up_backward")
    return dxs


def expert_contraction(tiles: TileLayout, lhs, rhs_list, cfg: ContractionConfig, out_dtype, interpret=False):
    """out[a][e] = lhs[rows of e]^T @ rhs_list[a][rows of e]: [E, M, N] per rhs, fp32 accumulation.

    lhs [rows, M], each rhs [rows, N]; expert e owns rows [expert_start[e], + expert_size[e]).
    The rows are read in blocks of block_k from the expert's first row rounded down to ALIGN_ROWS
    (Mosaic's TMA takes 8-row-aligned starts), so only the first block (up to 7 rows of the
    previous expert) and a partial last block (the next expert's rows, or slack that may hold
    anything, NaN included) hold rows of others: those are masked to zero in SMEM, the other
    blocks are not touched. With 16-bit operands in 64-row blocks a partial last block is
    multiplied over its leading 16-row groups that hold the expert's rows only (mosaic_gpu_wgmma:
    at Qwen3-30B-A3B T=4096, 9.6 % of the rows multiplied are past the experts' ends otherwise).
    The arrays need block_k - 1 rows of slack past the routed rows (the TileLayout's row_count
    gives block_m). Experts without rows get zeros.

    An item is one block_m x block_n output tile of one rhs (one accumulator: the wgmmas read
    3 KiB of SMEM per 64 x 128 x 16 product, where two 128 x 64 accumulators sharing the lhs
    block read 4), its n-blocks of all rhs in one planar snake over the expert's (m, n) tiles.
    Warp-specialised: a producer warpgroup streams the row blocks of all of a CTA's items through
    one SMEM ring; cfg.consumers warpgroups take alternate items whole (with two, one's masking
    and epilogue overlap the other's MMAs), each with its own set of per-slot full barriers, so
    that it waits on every phase of the barriers it waits on (the phase parity is tracked per
    thread); or, cfg.cooperative, share every item, each computing its block_m / consumers rows
    (one set of full barriers; a slot is free once all have released it; a boundary block is
    masked by all, each its lhs part and a share of the rhs columns, then they sync). A consumer
    stores an item's tile once its next item's first MMAs are issued (H200, Qwen3-30B-A3B T=4096:
    the jax.grad step's contraction 657-660 -> 638-639 us).
    """
    M, N = lhs.shape[1], rhs_list[0].shape[1]
    E = tiles.expert_start.shape[0]
    bm, bn, bk, consumers, coop = cfg.block_m, cfg.block_n, cfg.block_k, cfg.consumers, cfg.cooperative
    parts = consumers if coop else 1  # an item's row parts, one per consumer when they cooperate
    part_m = bm // parts
    full_sets = 1 if coop else consumers  # sets of full barriers: alternate items wait on their own
    staged_cols = cfg.staging_chunks * mosaic_gpu.OUT_CHUNK or bn  # output columns staged at once
    # Chunked staging alternates two buffers (a chunk's store reads one while the next chunk is
    # written to the other) when an item has an even number of chunks (so every item's first
    # chunk goes to buffer 0: the buffer of the chunk before last).
    buffers = 2 if staged_cols < bn and (bn // staged_cols) % 2 == 0 else 1
    if M % bm or N % bn or bn % staged_cols or (coop and (bm % (64 * parts) or bn % (64 * parts))):
        raise ValueError(f"{cfg} does not tile M={M}, N={N} (block_n a multiple of the {staged_cols} staged columns, "
                         f"cooperating consumers 64 rows and columns each)")
    n_rhs = len(rhs_list)
    m_tiles, n_tiles = M // bm, N // bn
    partial_products = mosaic_gpu_wgmma.supports(lhs.dtype, bk)
    n_columns = n_rhs * n_tiles  # output column blocks of all rhs: rhs nj // n_tiles, block nj % n_tiles
    dtype = lhs.dtype
    # Every item reads its expert's start and size: from SMEM, fetched once per CTA by two bulk
    # copies (E padded to whole 16 bytes, which the layout's arrays are where E % 4 == 0: then no
    # XLA op stands between the layout and this kernel; each into a table row of whole 128 bytes,
    # TMA's SMEM alignment), where they fit beside the ring's stages (E <= 256 with the default
    # tiling); else by scalar loads from global memory.
    padded_experts = -(-E // 4) * 4
    table_row = -(-E // 32) * 32
    starts, sizes = (jnp.pad(v, (0, padded_experts - E)) if padded_experts > E else v
                     for v in (tiles.expert_start.astype(jnp.int32), tiles.expert_size.astype(jnp.int32)))

    def for_rhs(a, fn):  # fn(i) for the rhs index i == a (a traced)
        for i in range(n_rhs):
            pl.when(a == i)(functools.partial(fn, i))

    def body(start_ref, size_ref, lhs_ref, *refs):
        rhs_refs, out_refs = refs[:n_rhs], refs[n_rhs:2 * n_rhs]
        (lhs_ring, rhs_ring, full, empty, *masked_barrier), out_smem, *smem_tables = refs[2 * n_rhs:]
        wg = lax.axis_index("wg")
        if smem_tables:
            (tables_smem, tables_loaded), = smem_tables

            @pl.when(wg == consumers)
            def _():
                for row, ref in enumerate((start_ref, size_ref)):
                    plgpu.copy_gmem_to_smem(ref, tables_smem.at[row, pl.ds(0, padded_experts)], tables_loaded)

            plgpu.barrier_wait(tables_loaded)
            start_ref, size_ref = tables_smem.at[0], tables_smem.at[1]

        def row_blocks(e):  # the expert's blocks of bk rows, from its start rounded down to ALIGN_ROWS
            size = size_ref[e]
            return jnp.where(size > 0, (lax.rem(start_ref[e], ALIGN_ROWS) + size + bk - 1) // bk, 0)

        def walk(item, state=()):
            """state = item(e, mi, a, ni, row blocks, first ring step, CTA-local item number, state)
            over this CTA's items, in every warpgroup; returns (the ring steps of all of them, state)."""
            per_expert = m_tiles * n_columns  # items of one expert
            @plgpu.nd_loop((E * per_expert,), collective_axes="sm", init_carry=(jnp.int32(0), jnp.int32(0), state))
            def walked(loop_info, carry):
                steps, local, state = carry
                index = loop_info.index[0]
                e = index // per_expert
                mi, nj = plgpu.planar_snake(index % per_expert, (m_tiles, n_columns), 1, 8)
                nb = row_blocks(e)
                state = item(e, mi, nj // n_tiles, lax.rem(nj, n_tiles), nb, steps, local, state)
                return steps + nb, local + 1, state

            return walked[0], walked[2]

        def produce(e, mi, a, ni, nb, first_step, local, state):
            first_row = pl.multiple_of(start_ref[e] // ALIGN_ROWS * ALIGN_ROWS, ALIGN_ROWS)
            owner = 0 if coop else lax.rem(local, consumers)  # the consumer whose full barriers signal the loads

            @pl.loop(0, nb)
            def _(k):
                step = first_step + k
                slot = lax.rem(step, stages)
                loaded = full.at[owner * stages + slot]

                @pl.when(step >= stages)
                def _():
                    plgpu.barrier_wait(empty.at[slot])

                row = pl.ds(first_row + k * bk, bk)
                for p in range(parts):
                    plgpu.copy_gmem_to_smem(lhs_ref.at[row, pl.ds(mi * bm + p * part_m, part_m)], lhs_ring.at[slot, p],
                                            loaded)
                for_rhs(a, lambda i: plgpu.copy_gmem_to_smem(rhs_refs[i].at[row, pl.ds(ni * bn, bn)],
                                                             rhs_ring.at[slot], loaded))
            return state

        def store_pending(pending):
            """Stores a consumer's finished item, (stored?, e, mi, a, ni, its tile in out_dtype),
            kept in registers until the consumer's next item's first MMAs are issued (or its walk
            ends): the stores and their waits for the staging overlap the tensor cores' work."""
            stored, e, mi, a, ni, tile = pending

            @pl.when(stored)
            def _():
                for j, c in enumerate(range(0, bn, staged_cols)):  # rounds of staged columns through the buffers
                    buffer = out_smem.at[wg, j % buffers]
                    plgpu.wait_smem_to_gmem(buffers - 1, wait_read_only=True)  # the buffer's last store has read it
                    buffer[...] = tile[:, c:c + staged_cols]
                    plgpu.commit_smem()
                    for_rhs(a, lambda i, c=c, buffer=buffer: plgpu.copy_smem_to_gmem(
                        buffer, out_refs[i].at[e, pl.ds(mi * bm + part * part_m, part_m), pl.ds(ni * bn + c, staged_cols)]))

        part = wg if coop else 0  # this consumer's rows of an item

        def consume(e, mi, a, ni, nb, first_step, local, pending):
            if coop:
                return consume_item(e, mi, a, ni, nb, first_step, pending)
            return lax.cond(lax.rem(local, consumers) == wg,
                            lambda p: consume_item(e, mi, a, ni, nb, first_step, p), lambda p: p, pending)

        def walk_consuming(consume):  # every item, then the last one's stores
            no_pending = (jnp.bool_(False), *[jnp.int32(0)] * 4,
                          plgpu.layout_cast(jnp.zeros((part_m, bn), out_dtype), plgpu.Layout.WGMMA))
            steps, pending = walk(consume, no_pending)
            store_pending(pending)
            return steps

        def consume_item(e, mi, a, ni, nb, first_step, pending):
            lead = lax.rem(start_ref[e], ALIGN_ROWS)
            end = lead + size_ref[e]  # the expert's rows are [lead, end) of its row blocks
            masked_first, masked_last = lead != 0, lax.rem(end, bk) != 0

            def mask(smem, k):  # zero the rows of other experts (or of nobody)
                row = plgpu.layout_cast(lax.broadcasted_iota(jnp.int32, smem.shape, 0),
                                        plgpu.Layout.WGMMA) + k * bk
                smem[...] = jnp.where((row >= lead) & (row < end), smem[...], 0).astype(smem.dtype)

            def mask_block(slot, k):
                mask(lhs_ring.at[slot, part], k)
                if not coop:
                    mask(rhs_ring.at[slot], k)
                share = bn // parts  # cooperating consumers mask a share of the rhs columns each
                for p in range(parts if coop else 0):  # static slices: a tiled dimension takes no traced offset
                    pl.when(wg == p)(lambda p=p: mask(rhs_ring.at[slot, :, pl.ds(p * share, share)], k))
                plgpu.commit_smem()
                if coop:  # every consumer's wgmma reads the others' masked rhs columns
                    plgpu.barrier_arrive(masked_barrier[0])
                    plgpu.barrier_wait(masked_barrier[0])

            # A partial last block is multiplied apart, over its leading 16-row groups that hold
            # the expert's rows (the wgmmas below take K in whole 64-row blocks).
            apart = (masked_last & (nb > 0)) if partial_products else jnp.bool_(False)

            def accumulate(acc_ref):
                def step_k(k):
                    step = first_step + k
                    slot = lax.rem(step, stages)
                    plgpu.barrier_wait(full.at[(0 if coop else wg) * stages + slot])
                    pl.when(((k == 0) & masked_first) | ((k == nb - 1) & masked_last))(lambda: mask_block(slot, k))

                    @pl.when(~(apart & (k == nb - 1)))
                    def _():
                        plgpu.wgmma(acc_ref, lhs_ring.at[slot, part].transpose((1, 0)), rhs_ring.at[slot])
                        plgpu.wgmma_wait(1)

                        @pl.when(k > 0)
                        def _():
                            plgpu.barrier_arrive(empty.at[lax.rem(step - 1, stages)])

                # The first block's MMAs issued, the previous item's tile is stored while they run;
                # the loop takes the other blocks, without that tile live in registers.
                pl.when(nb > 0)(lambda: step_k(jnp.int32(0)))
                store_pending(pending)
                pl.loop(1, nb)(step_k)

                multiplied = nb - apart.astype(jnp.int32)  # blocks multiplied whole

                @pl.when(multiplied > 0)
                def _():
                    plgpu.wgmma_wait(0)
                    plgpu.barrier_arrive(empty.at[lax.rem(first_step + multiplied - 1, stages)])

                if partial_products:
                    return lax.cond(apart, last_block_apart, lambda acc: acc, acc_ref[...])
                return acc_ref[...]

            def last_block_apart(acc):
                slot = lax.rem(first_step + nb - 1, stages)
                acc = mosaic_gpu_wgmma.add_leading_rows_product(
                    acc, lhs_ring.at[slot, part], rhs_ring.at[slot], end - (nb - 1) * bk, interpret)
                plgpu.barrier_arrive(empty.at[slot])
                return acc

            acc = pl.run_scoped(accumulate, plgpu.ACC((part_m, bn), jnp.float32)).astype(out_dtype)
            return jnp.bool_(True), e, mi, a, ni, acc

        mosaic_gpu.warpgroup_roles(wg, consumers, stages, empty, lambda item: walk(item)[0], produce, consume,
                                   walk_consumers=walk_consuming)

    staging = plgpu.SMEM((consumers, buffers, part_m, staged_cols), out_dtype,
                         transforms=tiled_swizzled((part_m, staged_cols), out_dtype))
    stage_bytes = (bk * bm + bk * bn) * jnp.dtype(dtype).itemsize
    stages = mosaic_gpu.ring_stages(cfg, stage_bytes, [staging], CONTRACTION_RESERVE)
    expert_tables = (plgpu.SMEM((2, table_row), jnp.int32), plgpu.Barrier(num_arrivals=2))
    tables_in_smem = mosaic_gpu.ring_slots(stage_bytes, [staging, expert_tables[0]], CONTRACTION_RESERVE) >= stages
    ring = (plgpu.SMEM((stages, parts, bk, part_m), dtype, transforms=tiled_swizzled((bk, part_m), dtype)),
            plgpu.SMEM((stages, bk, bn), dtype, transforms=tiled_swizzled((bk, bn), dtype)),
            # full: the lhs parts and the rhs loaded; per consumer unless they cooperate
            plgpu.Barrier(num_arrivals=parts + 1, num_barriers=full_sets * stages),
            # empty: the item's consumer (or every cooperating one) releases the slot
            plgpu.Barrier(num_arrivals=parts, num_barriers=stages))
    if coop:  # the consumers' masking of a boundary block done
        ring += (plgpu.Barrier(num_arrivals=consumers, num_barriers=1),)
    kernel = plgpu.kernel(
        body,
        out_type=[jax.ShapeDtypeStruct((E, M, N), out_dtype)] * n_rhs,
        scratch_types=[ring, staging] + ([expert_tables] if tables_in_smem else []),
        grid=(mosaic_gpu.num_sms(interpret),),
        grid_names=("sm",),
        num_threads=consumers + 1,
        thread_name="wg",
        kernel_name="jax_moe_expert_contraction",
        interpret=interpret_params(interpret),
    )
    return kernel(starts, sizes, lhs, *rhs_list)


def _expert_row_sums(tiles: TileLayout, values):
    """f32 [E, C]: the sum of each expert's rows of values [rows, C] (a masked product: fixed order)."""
    rows = values.shape[0]
    r = jnp.arange(rows, dtype=jnp.int32)
    start = tiles.expert_start[:, None]
    member = ((r >= start) & (r < start + tiles.expert_size[:, None])).astype(jnp.float32)  # [E, rows]
    owned = member.sum(axis=0) > 0
    values = jnp.where(owned[:, None], values.astype(jnp.float32), 0.0)  # unowned rows may hold NaN
    return jnp.dot(member, values, precision=lax.Precision.HIGHEST)


def forward(x, weights: ExpertWeights, topk_weights, topk_ids, problem: MoEProblem):
    """fused_moe's forward for differentiation: (out, residuals). Residuals: the TileLayout and,
    unless problem.recompute, mosaic_gpu.training_up's (hw, pre-activations, xs): hw = w * h [T*k
    (+slack), I], (g, u) (nomic: (g,)) and x's rows in the layout's order [T*k (+slack), H], each
    in x's dtype."""
    out, layout, kept = mosaic_gpu.forward(x, weights, topk_weights, topk_ids, problem, problem.interpret,
                                           keep_residuals=not problem.recompute, for_gradients=True)
    return out, (layout, kept)


def backward(residuals, x, weights: ExpertWeights, topk_weights, topk_ids, dout, problem: MoEProblem):
    """(dx, d weights as ExpertWeights, d topk_weights f32 [T, k]) from forward's residuals."""
    if problem.tokens == 0:
        zeros = lambda a: None if a is None else jnp.zeros_like(a)
        return zeros(x), ExpertWeights(*map(zeros, weights)), zeros(topk_weights)
    layout, kept = residuals
    interpret = problem.interpret
    up_cfg, _ = mosaic_gpu.choose_configs(problem)
    cfgs = choose_backward_configs(problem, up_cfg.block_m)
    gated = problem.moe_type == "qwen3"
    if kept is None:
        kept = mosaic_gpu.training_up(layout, x, weights, problem, up_cfg, interpret)
    hw, preactivations, xs = kept
    dout_half = dout.astype(x.dtype)
    if mosaic_gpu.decoding(problem):  # XLA gathers dout's rows
        dys = mosaic_gpu.gather_rows(dout_half, layout.row_token)
        dpre, tile_dots = down_backward(layout, dys, preactivations, weights, problem, cfgs.down, interpret)
    else:  # down_backward reads dout's rows itself and stores them
        dpre, tile_dots, dys = down_backward(layout, dout_half, preactivations, weights, problem, cfgs.down, interpret,
                                           gather=True)
    dxs = up_backward(layout, dpre, weights, problem, cfgs.up, interpret)
    # dx's k-slot sum reads the slots through a barrier. Sharing no operand with the forward's
    # combine, it is not fused with it, and the combine fuses with what consumes the forward's
    # output instead: in kernel_times' step, the loss and the cast of its cotangent, which was a
    # kernel of its own (48 MB read and written).
    slot_row, slot_routed = lax.optimization_barrier((layout.slot_row, layout.slot_routed))
    dx = mosaic_gpu.combine_slots(layout._replace(slot_row=slot_row, slot_routed=slot_routed), dxs, problem.top_k,
                                  x.dtype)

    def contraction(lhs, rhs_list, dtype):
        cfg = fitted_contraction_config(cfgs.contraction, lhs.shape[1], rhs_list[0].shape[1])
        return expert_contraction(layout, lhs, rhs_list, cfg, dtype, interpret)

    first_grads = contraction(xs, list(dpre), weights.gate.dtype)  # dWg (, dWu) or dW1
    if gated:
        d_gate, d_up = first_grads
        (d_down,) = contraction(hw, [dys], weights.down.dtype)
    else:
        (d_gate,), d_down = first_grads, None
        (d_up,) = contraction(dys, [hw], weights.up.dtype)

    def bias_grad(bias, rows_values):  # rows_values: () -> [rows, C], built only when there is a bias
        return None if bias is None else _expert_row_sums(layout, rows_values()).astype(bias.dtype)

    d_weights = ExpertWeights(
        gate=d_gate, up=d_up, down=d_down,
        gate_bias=bias_grad(weights.gate_bias, lambda: dpre[0]),
        up_bias=bias_grad(weights.up_bias, lambda: dpre[1]) if gated else None,
        down_bias=bias_grad(weights.down_bias, lambda: dys.astype(jnp.float32) * layout.row_weight[:, None]),
    )
    d_topk = slot_dots(layout, tile_dots, topk_ids, interpret)  # [T, k]
    if weights.down_bias is not None:  # the down bias' share of each slot's output
        E = problem.experts
        valid = (topk_ids >= 0) & (topk_ids < E)
        bias = weights.down_bias.astype(jnp.float32)[jnp.where(valid, topk_ids, 0)]
        d_topk = d_topk + jnp.where(valid, jnp.einsum("tkh,th->tk", bias, dout.astype(jnp.float32),
                                                      precision=lax.Precision.HIGHEST), 0.0)
    return dx, d_weights, d_topk.astype(topk_weights.dtype)
