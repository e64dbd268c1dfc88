"""The compiled handler libraries: what was built, and the errors when a platform has none."""

import ctypes
import pathlib
import shutil

import pytest

from jax_moe import _ffi


def nvcc_available() -> bool:
    return shutil.which("nvcc") is not None or pathlib.Path("/usr/local/cuda/bin/nvcc").exists()


def test_cpu_handler_is_registered():
    assert "cpu" in _ffi.registered_platforms()
    assert ctypes.CDLL(str(_ffi.find_library("cpu"))).JaxMoeTopkSoftmaxCpu


@pytest.mark.skipif(not nvcc_available(), reason="nvcc not installed: the CUDA handlers are not built")
def test_cuda_handler_is_built_when_nvcc_is_present():
    path = _ffi.find_library("CUDA")
    assert path is not None, "nvcc is installed but libjax_moe_cuda.so was not built"
    # Loads without a GPU or a libcudart.so: the CUDA runtime is linked statically.
    assert ctypes.CDLL(str(path)).JaxMoeTopkSoftmaxCuda
    assert "CUDA" in _ffi.registered_platforms()


def test_unsupported_platform_is_a_clear_error():
    with pytest.raises(NotImplementedError, match="CPU and NVIDIA GPUs"):
        _ffi.require_platform("tpu")
