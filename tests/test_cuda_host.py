"""The CUDA kernels of ffi/aligned_layout_kernels.cuh run on CPU threads (tests/cuda_host): bitwise the
CPU handlers' outputs, every output element written, the same with the blocks in reverse order, and
no data race between a block's threads (the runner is built with ThreadSanitizer, which makes it fail
on one). The GPU tests run the same kernels on the GPU; these check their logic on every commit."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_moe import _ffi
from jax_moe.backends import mosaic_gpu_grad, mosaic_gpu_routing
from jax_moe.permutation import align_to_tiles

ROOT = pathlib.Path(__file__).resolve().parent.parent
# ThreadSanitizer: the first race report fails the run.
TSAN_OPTIONS = "halt_on_error=1 exitcode=66 report_signal_unsafe=0"

pytestmark = pytest.mark.xdist_group("cuda_host")  # one build of the runner per worker


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> pathlib.Path:
    """tests/cuda_host/run_layout_kernels.cc built with the host C++ compiler and ThreadSanitizer."""
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    path = tmp_path_factory.mktemp("cuda_host") / "run_layout_kernels"
    subprocess.run([compiler, "-std=c++20", "-O1", "-g", "-fsanitize=thread", "-pthread", "-Wall", "-Werror",
                    "-Wno-unknown-pragmas", f"-I{ROOT / 'ffi'}", f"-I{ROOT / 'tests' / 'cuda_host'}",
                    "-isystem", jax.ffi.include_dir(), str(ROOT / "tests" / "cuda_host" / "run_layout_kernels.cc"),
                    "-o", str(path)], check=True)
    return path


def run_on_host(runner, folder, target, inputs, sizes, outputs, reverse):
    """outputs {name: dtype} of runner's target on inputs {name: array}, sizes the integers after them."""
    for name, value in inputs.items():
        np.ascontiguousarray(value).tofile(folder / f"{name}.bin")
    result = subprocess.run([str(runner), target, str(folder), str(int(reverse)), *map(str, sizes)],
                            env={**os.environ, "TSAN_OPTIONS": TSAN_OPTIONS}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return {name: np.fromfile(folder / f"{name}.out", dtype=dtype) for name, dtype in outputs.items()}


def chunk_ranks(ids, num_experts, chunk, columns, rng):
    """The routing kernel's outputs for ids [n]: rank_in_chunk [n] (noise for out-of-range ids, which
    no handler reads) and counts [chunks, columns] (noise in the columns past num_experts)."""
    n = ids.shape[0]
    chunks = -(-n // chunk)
    rank = rng.integers(-50, 50, size=n).astype(np.int32)
    counts = rng.integers(0, 50, size=(chunks, columns)).astype(np.int32)
    counts[:, :num_experts] = 0
    for i, e in enumerate(ids):
        if 0 <= e < num_experts:
            c = i // chunk
            rank[i] = counts[c, e]
            counts[c, e] += 1
    return rank, counts


# The runner's output files, in layout_from_ranks' order.
LAYOUT_OUTPUTS = ("row_token", "row_weight", "slot_row", "slot_routed", "tile_expert", "tile_start", "tile_lo",
                  "tile_size", "expert_start", "expert_size", "tile_end", "chunk_start")


@pytest.mark.parametrize("T, k, E, block_m, chunk, columns", [
    (1, 1, 1, 64, 64, 1), (1, 8, 128, 64, 64, 128), (37, 3, 5, 64, 64, 64), (64, 4, 3, 128, 64, 64),
    (300, 8, 128, 64, 16, 128),  # 150 chunks: more than ChunkStarts' 32 groups
    (50, 2, 255, 64, 64, 256), (40, 8, 8, 64, 7, 9), (90, 5, 511, 64, 64, 512), (24, 6, 6, 64, 64, 64),
])
def test_aligned_layout_kernels_on_host(runner, tmp_path, T, k, E, block_m, chunk, columns):
    """ChunkStarts + PlaceRows: out-of-range ids, empty experts, k = E (T=24), partial chunks, columns
    past E, E not a power of two, up to 511 experts; bitwise the CPU handler's twelve outputs."""
    rng = np.random.default_rng(T * E + k)
    ids = rng.integers(-1, E + 1, size=(T, k))
    if k == E:  # every expert once a token, in a shuffled order
        ids = rng.permuted(np.tile(np.arange(E), (T, 1)), axis=1)
    ids = ids.reshape(-1).astype(np.int32)
    weights = rng.random(T * k).astype(np.float32)
    rank, counts = chunk_ranks(ids, E, chunk, columns, rng)

    _ffi.require_platform("cpu")
    want = dict(zip(LAYOUT_OUTPUTS, map(np.asarray, mosaic_gpu_routing.layout_from_ranks(
        ids, rank, counts, weights, k, E, block_m, chunk))))
    inputs = dict(ids=ids, rank_in_chunk=rank, counts=counts, weights=weights)
    sizes = (T * k, k, E, block_m, chunk, counts.shape[0], columns, want["row_token"].size, want["tile_expert"].size)
    for reverse in (False, True):
        got = run_on_host(runner, tmp_path, "aligned_layout", inputs, sizes, {n: w.dtype for n, w in want.items()},
                          reverse)
        for name, w in want.items():
            np.testing.assert_array_equal(got[name].reshape(w.shape), w, err_msg=f"{name}, reverse={reverse}")


@pytest.mark.parametrize("T, k, E, block_m, n_blocks", [(1, 1, 1, 64, 1), (37, 3, 5, 64, 3), (300, 8, 128, 64, 4),
                                                        (64, 4, 3, 128, 2), (50, 2, 255, 64, 1)])
def test_slot_dots_kernel_on_host(runner, tmp_path, T, k, E, block_m, n_blocks):
    """SlotDots: bitwise the CPU handler's per-(token, slot) sums; 0 for out-of-range ids."""
    rng = np.random.default_rng(T * E + n_blocks)
    ids = jnp.asarray(rng.integers(-1, E + 1, size=(T, k)), jnp.int32)
    layout = align_to_tiles(ids, jnp.ones((T, k)), E, block_m, aligned_experts=True)
    tile_rows = layout.tile_expert.shape[0] * n_blocks
    tile_dots = rng.normal(size=(tile_rows, block_m)).astype(np.float32)
    want = mosaic_gpu_grad.slot_dots(layout, jnp.asarray(tile_dots), ids, interpret=True).reshape(-1)
    inputs = dict(tile_dots=tile_dots, ids=np.asarray(ids).reshape(-1),
                  slot_row=np.asarray(layout.slot_row).reshape(-1), expert_start=np.asarray(layout.expert_start),
                  expert_size=np.asarray(layout.expert_size), tile_end=np.asarray(layout.tile_end))
    for reverse in (False, True):
        got = run_on_host(runner, tmp_path, "slot_dots", inputs, (T * k, E, block_m, n_blocks, tile_rows),
                          dict(out=np.float32), reverse)
        np.testing.assert_array_equal(got["out"], np.asarray(want), err_msg=f"reverse={reverse}")
