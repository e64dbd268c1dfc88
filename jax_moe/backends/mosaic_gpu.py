"""The "mosaic_gpu" backend: fused_moe as two grouped GEMM kernels in Pallas Mosaic GPU (sm90).

Pipeline, for bf16 / f16 (x [T, H], k slots per token):
  1. align (jax_moe.permutation.align_to_tiles): rows sorted by expert (compact), covered by
     64-row tiles that start at multiples of 8 rows and each belong to one expert;
  2. gather: xs[r] = x[row_token[r]]                                     [rows, H]
  3. expert_up kernel:   h = act(xs Wg[e] + bg[e]) * (xs Wu[e] + bu[e])   [rows, I]
                         (nomic: act(xs W1[e] + b1[e])); gate and up share one pipeline, fp32
                         accumulators, activation in the epilogue, h stored in x's dtype;
  4. expert_down kernel: y = row_weight * (h Wd[e] + bd[e])               [rows, H]
                         (nomic: h W2[e]^T, W2 read transposed from its [E, H, I] layout);
  5. combine: out[t] = sum_j y[slot_row[t, j]], slots summed in order j = 0..k-1 in fp32.
Each tile stores only its expert's rows (neighbouring tiles may overlap, their rows do not).
No atomics anywhere: results are bitwise reproducible. Both kernels are persistent (one CTA per
SM walks the (tile, n-block) grid); tiles past the used ones exit at once.
"""

from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from jax_moe.backends.registry import Backend, ExpertWeights, MoEProblem, register
from jax_moe.permutation import ALIGN_ROWS, TileLayout, align_to_tiles

HALF_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def _erf(v):
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
    "gelu_exact": lambda v: 0.5 * v * (1.0 + _erf(v * 0.7071067811865476)),
    "relu": lambda v: jnp.maximum(v, 0.0),
}
INTERPRET_SMS = 2  # CTAs of the persistent grid in interpret mode (any count is correct)


@dataclasses.dataclass(frozen=True)
class GemmConfig:
    """Tiling of one grouped GEMM: block_m rows x block_n columns per tile, block_k per step."""

    block_m: int
    block_n: int
    block_k: int
    stages: int  # TMA pipeline depth
    tile_width: int = 8  # M-tiles walked side by side (same n-block) for L2 reuse of the weights
    ctas_per_sm: int = 1  # >1: one CTA's epilogue and pipeline refill overlap another's main loop


def choose_configs(problem: MoEProblem) -> tuple[GemmConfig, GemmConfig]:
    """(expert_up, expert_down) tilings for a problem; both use the same block_m.

    From the tiling sweeps on an H100 and an H200 (benchmarks/tune_mosaic.py, benchmarks/NOTES.md):
    block_m 64 beats 128 at Qwen3-30B-A3B T=4096, 4 TMA stages beat 2 by 1.6-2x, 3-5 stages and
    2 CTAs per SM are within 2 %.
    A warpgroup holds block_m x block_n fp32 accumulators in registers, 64 x 256 at most, shared
    by the gate and up accumulators when gated.
    """
    block_m = 64
    gated = problem.moe_type == "qwen3"
    up_n = 64 * 256 // block_m // (2 if gated else 1)
    down_n = 64 * 256 // block_m
    if problem.tokens * problem.top_k <= 64:  # decode: narrow n-blocks spread the weights over the SMs
        up_n, down_n = 64, 128
    up_n = _largest_dividing(problem.intermediate, up_n)
    down_n = _largest_dividing(problem.hidden, down_n)
    return GemmConfig(block_m, up_n, 64, 4), GemmConfig(block_m, down_n, 64, 4)


def _largest_dividing(size: int, block: int) -> int:
    while size % block:
        block //= 2
    return block


def _tiled_swizzled(shape, dtype) -> tuple:
    """TMA/wgmma-friendly SMEM transforms for a [rows, cols] tile."""
    bits = jnp.dtype(dtype).itemsize * 8
    swizzle = plgpu.find_swizzle(shape[-1] * bits)
    return plgpu.TilingTransform((8, swizzle * 8 // bits)), plgpu.SwizzleTransform(swizzle)


def _num_sms(interpret) -> int:
    return INTERPRET_SMS if interpret else jax.devices()[0].core_count


def _interpret_params(interpret):
    """interpret: False (compile), True (default interpret mode) or plgpu.InterpretGPUParams."""
    if isinstance(interpret, plgpu.InterpretGPUParams):
        return interpret
    return plgpu.InterpretGPUParams() if interpret else False


OUT_CHUNK = 64  # output columns per SMEM staging chunk: one 128-byte swizzle row of half floats


def _store_rows(out_smem, out_ref, start, lo, size, col0, block_m: int):
    """Copies rows [lo, lo + size) of the staged tile (chunks [c, block_m, OUT_CHUNK]) to out_ref
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


def _grouped_gemm(tiles: TileLayout, lhs, rhs_list, out_cols, cfg: GemmConfig, *, transpose_rhs: bool,
                  epilogue, vectors, out_dtype, interpret, name: str):
    """out[valid rows of a tile, n-block] = epilogue(accs, vector tiles), accs = lhs[tile block] @ rhs[e].

    lhs [rows, K]; each rhs [E, K, N] (or [E, N, K] with transpose_rhs); out [rows, N] in out_dtype,
    written only in the tiles' valid rows. vectors: (kind, f32 array) pairs fetched into SMEM for
    the epilogue and broadcast to the tile: "row" arrays are [rows] (one value per row), "col"
    arrays are [E, N] (one per column of the tile's expert).
    """
    rows, K = lhs.shape
    bm, bn, bk = cfg.block_m, cfg.block_n, cfg.block_k
    if bn % OUT_CHUNK or out_cols % bn or K % bk:
        raise ValueError(f"{cfg} does not tile N={out_cols}, K={K} (block_n a multiple of {OUT_CHUNK})")
    m_tiles, n_tiles, k_steps = tiles.tile_expert.shape[0], out_cols // bn, K // bk
    n_rhs, n_vec = len(rhs_list), len(vectors)
    kinds = [kind for kind, _ in vectors]
    rhs_block = (bn, bk) if transpose_rhs else (bk, bn)

    def body(expert_ref, start_ref, lo_ref, size_ref, lhs_ref, *refs):
        rhs_refs, vector_refs = refs[:n_rhs], refs[n_rhs:n_rhs + n_vec]
        out_ref, out_smem, vector_smems, vector_barriers = refs[n_rhs + n_vec:]

        @plgpu.nd_loop((m_tiles * n_tiles,), collective_axes="sm")
        def _tile(loop_info):
            mi, ni = plgpu.planar_snake(loop_info.index[0], (m_tiles, n_tiles), 0, cfg.tile_width)
            e = expert_ref[mi]

            @pl.when(e >= 0)
            def _():
                start = pl.multiple_of(start_ref[mi], ALIGN_ROWS)
                for i, (kind, ref) in enumerate(zip(kinds, vector_refs)):  # epilogue operands, in flight early
                    src = ref.at[pl.ds(start, bm)] if kind == "row" else ref.at[e, pl.ds(ni * bn, bn)]
                    plgpu.copy_gmem_to_smem(src, vector_smems[i], vector_barriers.at[i])

                def accumulate(*acc_refs):
                    def step(_, lhs_smem, *rhs_smems):
                        for acc_ref, rhs_smem in zip(acc_refs, rhs_smems):
                            plgpu.wgmma(acc_ref, lhs_smem, rhs_smem.transpose((1, 0)) if transpose_rhs else rhs_smem)
                        plgpu.wgmma_wait(n_rhs)

                    lhs_spec = plgpu.BlockSpec((pl.Element(bm), bk), lambda k: (start, k),
                                               transforms=_tiled_swizzled((bm, bk), lhs.dtype), delay_release=1)
                    rhs_index = (lambda k: (ni, k)) if transpose_rhs else (lambda k: (k, ni))
                    rhs_spec = plgpu.BlockSpec(rhs_block, rhs_index, transforms=_tiled_swizzled(rhs_block, lhs.dtype),
                                               delay_release=1)
                    plgpu.emit_pipeline(step, grid=(k_steps,), in_specs=[lhs_spec] + [rhs_spec] * n_rhs,
                                        max_concurrent_steps=cfg.stages)(lhs_ref, *(r.at[e] for r in rhs_refs))
                    return tuple(a[...] for a in acc_refs)

                accs = pl.run_scoped(accumulate, *[plgpu.ACC((bm, bn), jnp.float32)] * n_rhs)
                vector_tiles = []
                for i, kind in enumerate(kinds):
                    plgpu.barrier_wait(vector_barriers.at[i])
                    axis = 1 if kind == "row" else 0
                    v = plgpu.load(vector_smems[i], layout=plgpu.Layout.WGMMA.reduce(axis))
                    vector_tiles.append(lax.broadcast_in_dim(v, (bm, bn), [1 - axis]))
                tile = epilogue(accs, vector_tiles)
                plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # the previous tile's store has read out_smem
                tile = tile.astype(out_dtype)
                for c in range(bn // OUT_CHUNK):
                    out_smem[c] = tile[:, c * OUT_CHUNK:(c + 1) * OUT_CHUNK]
                plgpu.commit_smem()
                _store_rows(out_smem, out_ref, start, lo_ref[mi], size_ref[mi], ni * bn, bm)

        plgpu.wait_smem_to_gmem(0, wait_read_only=True)

    out_bits = jnp.dtype(out_dtype).itemsize * 8
    out_swizzle = plgpu.find_swizzle(OUT_CHUNK * out_bits)
    scratch = [
        # Row-granular tiling, so that the ragged store can start at any row.
        plgpu.SMEM((bn // OUT_CHUNK, bm, OUT_CHUNK), out_dtype,
                   transforms=(plgpu.TilingTransform((1, out_swizzle * 8 // out_bits)),
                               plgpu.SwizzleTransform(out_swizzle))),
        [plgpu.SMEM((bm if kind == "row" else bn,), jnp.float32) for kind in kinds],
        plgpu.Barrier(num_barriers=max(n_vec, 1)),
    ]
    kernel = plgpu.kernel(
        body,
        out_type=jax.ShapeDtypeStruct((rows, out_cols), out_dtype),
        scratch_types=scratch,
        grid=(_num_sms(interpret) * cfg.ctas_per_sm,),
        grid_names=("sm",),
        kernel_name=name,
        interpret=_interpret_params(interpret),
    )
    return kernel(tiles.tile_expert, tiles.tile_start, tiles.tile_lo, tiles.tile_size, lhs, *rhs_list,
                  *(array for _, array in vectors))


def expert_up(tiles: TileLayout, xs, weights: ExpertWeights, problem: MoEProblem, cfg: GemmConfig, interpret=False):
    """h [rows, I] = act(xs Wg[e] + bg[e]) * (xs Wu[e] + bu[e])   (nomic: act(xs W1[e] + b1[e]))."""
    gated = problem.moe_type == "qwen3"
    act = KERNEL_ACTIVATIONS[problem.activation]
    gate_bias = weights.gate_bias
    up_bias = weights.up_bias if gated else None
    vectors = [("col", b.astype(jnp.float32)) for b in (gate_bias, up_bias) if b is not None]

    def epilogue(accs, tiles):
        tiles = list(tiles)
        g = accs[0] if gate_bias is None else accs[0] + tiles.pop(0)
        if not gated:
            return act(g)
        u = accs[1] if up_bias is None else accs[1] + tiles.pop(0)
        return act(g) * u

    rhs = [weights.gate, weights.up] if gated else [weights.gate]
    return _grouped_gemm(tiles, xs, rhs, problem.intermediate, cfg, transpose_rhs=False, epilogue=epilogue,
                         vectors=vectors, out_dtype=xs.dtype, interpret=interpret, name="jax_moe_expert_up")


def expert_down(tiles: TileLayout, h, weights: ExpertWeights, problem: MoEProblem, cfg: GemmConfig, interpret=False):
    """y [rows, H] = row_weight * (h Wd[e] + bd[e])   (nomic: h W2[e]^T + bd[e])."""
    gated = problem.moe_type == "qwen3"
    vectors = [("row", tiles.row_weight)]
    if weights.down_bias is not None:
        vectors.append(("col", weights.down_bias.astype(jnp.float32)))

    def epilogue(accs, tiles):
        y = accs[0] if len(tiles) == 1 else accs[0] + tiles[1]
        return y * tiles[0]

    second = weights.down if gated else weights.up
    return _grouped_gemm(tiles, h, [second], problem.hidden, cfg, transpose_rhs=not gated, epilogue=epilogue,
                         vectors=vectors, out_dtype=h.dtype, interpret=interpret, name="jax_moe_expert_down")


def gather_rows(x, rows):
    """x[rows] for half x [T, H], moved as uint32 pairs: XLA's gather runs 1.26x faster that way
    (139264 rows of 2048 bf16 on an H100: 453 -> 358 us; benchmarks/NOTES.md)."""
    T, H = x.shape
    if H % 2:
        return x[rows]
    pairs = lax.bitcast_convert_type(x.reshape(T, H // 2, 2), jnp.uint32)
    return lax.bitcast_convert_type(pairs[rows], x.dtype).reshape(rows.shape[0], H)


def run(x, weights: ExpertWeights, topk_weights, topk_ids, problem: MoEProblem, interpret=False,
        configs: tuple[GemmConfig, GemmConfig] | None = None) -> jax.Array:
    """x [T, H] half -> [T, H]; configs overrides choose_configs (expert_up, expert_down; same block_m)."""
    T, H = x.shape
    if T == 0:
        return jnp.zeros_like(x)
    up_cfg, down_cfg = configs or choose_configs(problem)
    if up_cfg.block_m != down_cfg.block_m:
        raise ValueError(f"both kernels tile the same rows: block_m {up_cfg.block_m} != {down_cfg.block_m}")
    layout = align_to_tiles(topk_ids, topk_weights, problem.experts, up_cfg.block_m)
    xs = gather_rows(x, layout.row_token)
    h = expert_up(layout, xs, weights, problem, up_cfg, interpret)
    y = expert_down(layout, h, weights, problem, down_cfg, interpret)
    slots = jnp.take(y, layout.slot_row, axis=0, mode="fill", fill_value=0).astype(jnp.float32)  # [T, k, H]
    out = slots[:, 0]
    for j in range(1, problem.top_k):  # fixed order: bitwise reproducible
        out = out + slots[:, j]
    return out.astype(x.dtype)


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


register(Backend(name="mosaic_gpu", run=run, unsupported=unsupported, priority=10))
