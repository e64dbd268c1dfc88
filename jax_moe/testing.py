"""Numeric comparison helpers shared by the tests and the benchmarks."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

# Bound on ||out - ref|| / ||ref|| per input dtype, for an implementation that follows the
# reference's casts (fp32 accumulation, intermediate rounded to the input dtype).
TOLERANCE = {jnp.dtype(jnp.float32): 2e-5, jnp.dtype(jnp.float16): 3e-3, jnp.dtype(jnp.bfloat16): 2e-2}


def relative_error(out, ref) -> float:
    """||out - ref|| / ||ref|| in float64; NaN anywhere in out counts as infinite."""
    out = np.asarray(out, np.float64)
    ref = np.asarray(ref, np.float64)
    if out.shape != ref.shape:
        raise ValueError(f"shape mismatch: {out.shape} vs {ref.shape}")
    if np.isnan(out).any():
        return float("inf")
    denom = np.linalg.norm(ref)
    return float(np.linalg.norm(out - ref) / denom) if denom else float(np.linalg.norm(out))


def max_relative_error(out, ref) -> float:
    """max |out - ref| / max |ref| in float64; NaN anywhere in out counts as infinite."""
    out = np.asarray(out, np.float64)
    ref = np.asarray(ref, np.float64)
    if np.isnan(out).any():
        return float("inf")
    scale = np.abs(ref).max() if ref.size else 0.0
    return float(np.abs(out - ref).max() / scale) if scale else float(np.abs(out).max(initial=0.0))
