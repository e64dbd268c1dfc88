"""fused_moe backends: the registry and the built-in backends, which register on import."""

from jax_moe.backends import mosaic_gpu, xla  # noqa: F401  (register "mosaic_gpu", "xla")
from jax_moe.backends.registry import Backend, ExpertWeights, MoEProblem, names, register, select

__all__ = ["Backend", "ExpertWeights", "MoEProblem", "names", "register", "select"]
