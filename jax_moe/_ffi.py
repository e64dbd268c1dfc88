"""Loads the compiled XLA FFI handlers (``jax_moe/_lib``) and registers them with XLA once.

``libjax_moe_cpu.so`` is always built; ``libjax_moe_cuda.so`` only where the build found nvcc.
Searched: ``$JAX_MOE_LIB_DIR``, the package's own folder, then the installed distribution's.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import os
import pathlib

import jax

TOPK_SOFTMAX_TARGET = "jax_moe_topk_softmax"
ALIGNED_LAYOUT_TARGET = "jax_moe_aligned_layout"
SLOT_DOTS_TARGET = "jax_moe_slot_dots"

_LIBRARIES = {
    # platform: (file name, {target: handler symbol})
    "cpu": ("libjax_moe_cpu.so", {TOPK_SOFTMAX_TARGET: "JaxMoeTopkSoftmaxCpu",
                                  ALIGNED_LAYOUT_TARGET: "JaxMoeAlignedLayoutCpu",
                                  SLOT_DOTS_TARGET: "JaxMoeSlotDotsCpu"}),
    "CUDA": ("libjax_moe_cuda.so", {TOPK_SOFTMAX_TARGET: "JaxMoeTopkSoftmaxCuda",
                                    ALIGNED_LAYOUT_TARGET: "JaxMoeAlignedLayoutCuda",
                                    SLOT_DOTS_TARGET: "JaxMoeSlotDotsCuda"}),
}


def library_dirs() -> list[pathlib.Path]:
    """Folders searched for the handler libraries, in order."""
    dirs = []
    if os.environ.get("JAX_MOE_LIB_DIR"):
        dirs.append(pathlib.Path(os.environ["JAX_MOE_LIB_DIR"]))
    import jax_moe

    dirs += [pathlib.Path(p) / "_lib" for p in jax_moe.__path__]
    # The installed distribution, for code imported from a source checkout (python -m from the root).
    try:
        dirs.append(pathlib.Path(importlib.metadata.distribution("jax-moe").locate_file("jax_moe/_lib")))
    except importlib.metadata.PackageNotFoundError:
        pass
    return dirs


def find_library(platform: str) -> pathlib.Path | None:
    name = _LIBRARIES[platform][0]
    for folder in library_dirs():
        if (folder / name).is_file():
            return folder / name
    return None


@functools.cache
def registered_platforms() -> frozenset[str]:
    """Registers every handler library found; returns the platforms that have a handler."""
    platforms = set()
    for platform, (_, symbols) in _LIBRARIES.items():
        path = find_library(platform)
        if path is None:
            continue
        library = ctypes.cdll.LoadLibrary(str(path))
        for target, symbol in symbols.items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform=platform)
        platforms.add(platform)
    if "cpu" not in platforms:
        raise ImportError(
            "jax-moe's FFI library libjax_moe_cpu.so was not found in "
            f"{[str(d) for d in library_dirs()]}. Install the package (pip install . or make test) "
            "rather than importing it from the source tree, or set JAX_MOE_LIB_DIR."
        )
    return frozenset(platforms)


def require_platform(platform: str) -> None:
    """Raises a clear error when ``platform`` (a jax backend name) has no handler."""
    if platform == "cpu":
        registered_platforms()
        return
    if platform == "gpu" or platform == "cuda":
        if "CUDA" not in registered_platforms():
            raise RuntimeError(
                "jax-moe was built without CUDA handlers (nvcc was not found at build time); "
                "reinstall it on a machine with the CUDA toolkit to route on the GPU."
            )
        return
    raise NotImplementedError(f"jax-moe's FFI router supports CPU and NVIDIA GPUs, not {platform!r}")
