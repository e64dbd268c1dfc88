"""jax-moe: fast Mixture-of-Experts layers for JAX on NVIDIA GPUs.

- :func:`topk_softmax`: the fused router (XLA FFI custom call on CPU and CUDA, custom VJP).
- :func:`fused_moe`: the expert layer with routing given, dispatched to a backend
  (``jax_moe.backends``); :class:`FusedMoE` mirrors the seed crate's struct.
- :mod:`jax_moe.reference`: pure-JAX references of both.
"""

from jax_moe.moe import FusedMoE, fused_moe
from jax_moe.routing import topk_softmax

__version__ = "0.1.0"
__all__ = ["FusedMoE", "fused_moe", "topk_softmax"]
