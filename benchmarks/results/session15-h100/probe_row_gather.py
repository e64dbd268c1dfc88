"""Probe (session 15): can a grouped GEMM's producer gather its lhs rows itself fast enough?
Producer/consumer kernel shaped like expert_up at Qwen3-30B-A3B T=4096 (64 x 64 lhs blocks,
64 x 256 rhs blocks, one consumer); every CTA walks `steps` k-steps of row tiles.

  block:     the lhs block of pre-gathered rows xs[tile rows, k block] by one TMA (the kernels before)
  rows:      64 1-row TMAs x[row_token[r], k block] into a (1, 64)-tiled view of the ring slot, the
             wgmma reading an (8, 64)-tiled view of the same bytes (plgpu.RefUnion)
  rows_smem: as rows, the tile's row ids read from an SMEM copy of the table
  cpasync:   the producer's 128 threads copy 16-byte pieces with cp.async straight into the
             swizzled slot; a slot goes to the consumer LAG steps later, after cp.async.wait_group,
             a proxy fence and a warpgroup barrier (cpasync_nobar: no warpgroup barrier, every
             thread arrives)

H100, 132 CTAs x 3200 steps (session 15, calls 1-4; all exact against numpy, so 1-row boxes do
land in the 8-row swizzle pattern): block 400-432 ns a step, rows 3452, rows_smem 2614, cpasync
557, cpasync_nobar 529. The kernels took cp.async with mbarrier-tracked completion instead
(jax_moe/backends/mosaic_gpu_gather.py: the producer never waits on its copies).

PYTHONPATH=. python THIS [--lower] [--steps N]
"""
import argparse
import time

import numpy as np
import jax
from jax._src.lib.mlir import ir
from jax._src.lib.mlir.dialects import arith, llvm, memref, nvvm
from jax.experimental.mosaic.gpu import utils as mgpu_utils
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

BM, BK, BN = 64, 64, 256
VARIANTS = ("block", "rows", "rows_smem", "cpasync", "cpasync_nobar")
SWZ = plgpu.SwizzleTransform(128)
TILE8 = (plgpu.TilingTransform((8, 64)), SWZ)
TILE1 = (plgpu.TilingTransform((1, 64)), SWZ)


def cp_async_rows(x_ref, rows_ref, slot_ref, rows: int):
    """Each producer thread copies 16-byte pieces of x rows x_ref[rows_ref[r]] ([T, 64] half view,
    rows_ref [rows] int32) into the (8, 64)-tiled, 128-byte-swizzled slot_ref with cp.async, then
    commits them as one group."""
    @plgpu.inline_mgpu(arg_types=(plgpu.RefType(), plgpu.RefType(), plgpu.RefType(TILE8)))
    def issue(ctx, x_mem, rows_mem, slot_mem):
        i32, i64, i8 = (ir.IntegerType.get_signless(b) for b in (32, 64, 8))
        index = ir.IndexType.get()
        c = lambda v, t=i32: arith.constant(t, v)
        tid = arith.remui(mgpu_utils.thread_idx(), c(128))
        piece = arith.remui(tid, c(8))  # 16-byte piece of the 128-byte row
        row0 = arith.divui(tid, c(8))  # rows row0, row0 + 16, ...
        swizzled = arith.muli(arith.xori(piece, arith.remui(row0, c(8))), c(16))
        [stride, _] = ir.MemRefType(x_mem.type).get_strides_and_offset()[0]
        x_base = llvm.addrspacecast(llvm.PointerType.get(address_space=1), mgpu_utils.memref_ptr(x_mem))
        s_base = mgpu_utils.memref_ptr(slot_mem)
        for j in range(rows // 16):
            r = arith.addi(row0, c(16 * j))
            token = memref.load(rows_mem, [arith.index_cast(index, r)])
            g_off = arith.addi(arith.muli(arith.extui(i64, token), c(stride, i64)),
                               arith.extui(i64, arith.muli(piece, c(8))))
            gptr = mgpu_utils.getelementptr(x_base, [g_off], ir.BF16Type.get())
            s_off = arith.addi(arith.muli(arith.divui(r, c(8)), c(1024)),
                               arith.addi(arith.muli(arith.remui(r, c(8)), c(128)), swizzled))
            sptr = mgpu_utils.getelementptr(s_base, [s_off], i8)
            nvvm.cp_async_shared_global(sptr, gptr, 16, nvvm.LoadCacheModifierKind.CG)
        nvvm.cp_async_commit_group()

    issue(x_ref, rows_ref, slot_ref)


def cp_async_wait(pending: int, fence: bool = False):
    """Waits until at most `pending` of this thread's cp.async groups are in flight (fence: then
    makes this thread's landed rows visible to the async proxy, i.e. wgmma)."""
    @plgpu.inline_mgpu()
    def wait(ctx):
        nvvm.cp_async_wait_group(pending)
        if fence:
            nvvm.fence_proxy(nvvm.ProxyKind.async_shared, space=nvvm.SharedSpace.shared_cta)

    wait()


def make_kernel(variant, sms, steps, m_tiles, stages=5):
    K_STEPS = 32  # H = 2048

    def body(x_ref, rows_ref, w_ref, o_ref, ring, rhs_ring, rows_smem, full, empty, rows_bar):
        wg = lax.axis_index("wg")
        sm = lax.axis_index("sm")
        lhs1, lhs8 = (ring, ring) if variant.startswith(("block", "cpasync")) else ring

        def tile_of(step):
            return lax.rem(sm * (steps // K_STEPS) + step // K_STEPS, m_tiles)

        @pl.when(wg == 1)
        def _producer():
            plgpu.set_max_registers(40, action="decrease")
            if variant == "rows_smem":
                plgpu.copy_gmem_to_smem(rows_ref, rows_smem, rows_bar)
                plgpu.barrier_wait(rows_bar)

            @pl.loop(0, steps)
            def _(step):
                slot = lax.rem(step, stages)
                k = lax.rem(step, K_STEPS)

                @pl.when(step >= stages)
                def _():
                    plgpu.barrier_wait(empty.at[slot])

                start = tile_of(step) * BM
                if variant == "block":
                    plgpu.copy_gmem_to_smem(x_ref.at[pl.ds(start, BM), pl.ds(k * BK, BK)], lhs8.at[slot], full.at[slot])
                elif variant.startswith("cpasync"):
                    cp_async_rows(x_ref.at[:, pl.ds(k * BK, BK)], rows_ref.at[tile_of(step)], lhs8.at[slot], BM)
                else:
                    table = rows_smem if variant == "rows_smem" else rows_ref
                    for r in range(BM):
                        plgpu.copy_gmem_to_smem(x_ref.at[pl.ds(table[tile_of(step), r], 1), pl.ds(k * BK, BK)],
                                                lhs1.at[slot, pl.ds(r, 1)], full.at[slot])
                plgpu.copy_gmem_to_smem(w_ref.at[pl.ds(k * BK, BK), :], rhs_ring.at[slot], full.at[slot])
                if variant.startswith("cpasync"):  # step - LAG's rows have landed: let the consumer in
                    @pl.when(step >= LAG)
                    def _():
                        if variant == "cpasync":
                            cp_async_wait(LAG)
                            plgpu.commit_smem()
                        else:  # every thread arrives: no warpgroup barrier needed
                            cp_async_wait(LAG, fence=True)
                        plgpu.barrier_arrive(full.at[lax.rem(step - LAG, stages)])

            if variant.startswith("cpasync"):
                cp_async_wait(0, fence=True)

                @pl.loop(jnp.maximum(steps - LAG, 0), steps)
                def _(step):
                    plgpu.barrier_arrive(full.at[lax.rem(step, stages)])

            @pl.loop(jnp.maximum(steps - stages, 0), steps)
            def _(step):
                plgpu.barrier_wait(empty.at[lax.rem(step, stages)])

        @pl.when(wg == 0)
        def _consumer():
            plgpu.set_max_registers(232, action="increase")

            def acc_fn(acc):
                @pl.loop(0, steps)
                def _(step):
                    slot = lax.rem(step, stages)
                    plgpu.barrier_wait(full.at[slot])
                    plgpu.wgmma(acc, lhs8.at[slot], rhs_ring.at[slot])
                    plgpu.wgmma_wait(1)

                    @pl.when(step > 0)
                    def _():
                        plgpu.barrier_arrive(empty.at[lax.rem(step - 1, stages)])

                plgpu.wgmma_wait(0)
                plgpu.barrier_arrive(empty.at[lax.rem(steps - 1, stages)])
                return acc[...]

            o_ref[sm] = pl.run_scoped(acc_fn, plgpu.ACC((BM, BN), jnp.float32))

    LAG = stages - 2  # the consumer releases a slot one step late: stages - 1 would deadlock
    lhs = plgpu.SMEM((stages, BM, BK), jnp.bfloat16, transforms=TILE8)
    if not variant.startswith(("block", "cpasync")):
        lhs = plgpu.RefUnion(plgpu.SMEM((stages, BM, BK), jnp.bfloat16, transforms=TILE1), lhs)
    arrivals = (1 if variant.startswith(("block", "cpasync")) else BM) + 1
    return plgpu.kernel(
        body,
        out_type=jax.ShapeDtypeStruct((sms, BM, BN), jnp.float32),
        scratch_types=[lhs, plgpu.SMEM((stages, BK, BN), jnp.bfloat16, transforms=TILE8),
                       plgpu.SMEM((m_tiles, BM), jnp.int32),
                       plgpu.Barrier(num_arrivals=arrivals, num_barriers=stages),
                       plgpu.Barrier(num_arrivals=1, num_barriers=stages),
                       plgpu.Barrier(num_arrivals=1)],
        grid=(sms,), grid_names=("sm",), num_threads=2, thread_name="wg", kernel_name=f"probe_{variant}")


def reference(x, rows, w, sms, steps, m_tiles):
    x, w = np.asarray(x, np.float32), np.asarray(w, np.float32)
    xs = x[np.asarray(rows)]
    out = np.zeros((sms, BM, BN), np.float32)
    for sm in range(sms):
        for item in range(steps // 32):
            t = (sm * (steps // 32) + item) % m_tiles
            out[sm] += xs[t * BM:(t + 1) * BM] @ w
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lower", action="store_true", help="lower for CUDA only (CPU)")
    p.add_argument("--steps", type=int, default=32 * 25)
    p.add_argument("--reps", type=int, default=20)
    a = p.parse_args()
    T, H, m_tiles = 4096, 2048, 64
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(T, H)), jnp.bfloat16)
    rows = jnp.asarray(rng.integers(0, T, m_tiles * BM), jnp.int32)
    w = jnp.asarray(rng.normal(size=(H, BN)) / 16, jnp.bfloat16)
    xs = x[rows]
    if a.lower:
        from jax_moe.backends import mosaic_gpu
        for variant in VARIANTS:
            f = make_kernel(variant, 132, a.steps, m_tiles)
            jax.jit(f).trace(xs if variant == "block" else x, rows.reshape(m_tiles, BM), w).lower(lowering_platforms=("cuda",))
            print(variant, "lowered for CUDA")
        return
    sms = jax.devices()[0].core_count
    want = reference(x, rows, w, sms, a.steps, m_tiles)
    scale = np.abs(want).max()
    for variant in VARIANTS:
        f = jax.jit(make_kernel(variant, sms, a.steps, m_tiles))
        arg = xs if variant == "block" else x
        rows2 = rows.reshape(m_tiles, BM)
        got = np.asarray(f(arg, rows2, w))
        err = np.abs(got - want).max() / scale
        times = []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            f(arg, rows2, w).block_until_ready()
            times.append(time.perf_counter() - t0)
        us = np.median(times) * 1e6
        print(f"{variant:10s} rel err {err:.2e} ({'OK' if err < 1e-2 else 'WRONG'})  median {us:8.1f} us  "
              f"per step {us / a.steps * 1e3:6.1f} ns  ({sms} CTAs x {a.steps} steps)", flush=True)


if __name__ == "__main__":
    main()
