"""Backend selection for fused_moe, in one place.

A backend is a function (x [T, H], weights, topk_weights f32 [T, k], topk_ids s32 [T, k], problem,
interpret) -> [T, H] plus a predicate saying why it cannot run a problem. ``backend="auto"`` takes
the first registered backend, by priority, that can run the problem.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np


class ExpertWeights(NamedTuple):
    """Expert parameters in the seed's layout.

    gate [E, H, I]; up [E, H, I]; down [E, I, H] (qwen3) or None (nomic, where up is W2);
    gate_bias / up_bias [E, I] or None; down_bias [E, H] or None.
    """

    gate: jax.Array
    up: jax.Array
    down: jax.Array | None
    gate_bias: jax.Array | None = None
    up_bias: jax.Array | None = None
    down_bias: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class MoEProblem:
    """Static description of one fused_moe call, what backends decide on."""

    tokens: int
    hidden: int
    intermediate: int
    experts: int
    top_k: int
    dtype: np.dtype
    moe_type: str
    activation: str
    has_bias: bool
    platform: str  # jax backend name: "cpu", "gpu", ...
    interpret: bool = False  # Pallas kernels run in interpret mode (on any platform)
    recompute: bool = False  # the backward recomputes what the forward could save (less memory)
    precision: str = "highest"  # fp32 inputs: "highest" (exact products) or "tf32"


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    run: Callable[..., jax.Array]
    unsupported: Callable[[MoEProblem], str | None]  # None when it can run the problem
    priority: int  # higher is tried first by "auto"
    # A kernel backend's VJP (None: run is plain JAX, which JAX differentiates itself):
    # forward_for_grad(x, weights, topk_weights, topk_ids, problem) -> (out, residuals);
    # backward(residuals, x, weights, topk_weights, topk_ids, dout, problem)
    #   -> (dx, ExpertWeights of gradients (None where the weight is None), d topk_weights).
    forward_for_grad: Callable | None = None
    backward: Callable | None = None


_BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> None:
    _BACKENDS[backend.name] = backend


def get(name: str) -> Backend:
    return _BACKENDS[name]


def names() -> list[str]:
    return sorted(_BACKENDS)


def select(problem: MoEProblem, requested: str) -> Backend:
    """The backend to run ``problem``: the one requested, or the best that supports it."""
    if requested == "auto":
        for backend in sorted(_BACKENDS.values(), key=lambda b: -b.priority):
            if backend.unsupported(problem) is None:
                return backend
        raise NotImplementedError(f"no jax-moe backend supports {problem}")
    if requested not in _BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; expected 'auto' or one of {names()}")
    backend = _BACKENDS[requested]
    reason = backend.unsupported(problem)
    if reason is not None:
        raise NotImplementedError(f"backend {requested!r} cannot run this problem: {reason}")
    return backend
