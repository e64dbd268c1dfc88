"""Expert activations by name, applied in fp32."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "silu": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=True),  # tanh approximation (the seed's)
    "gelu_exact": lambda x: jax.nn.gelu(x, approximate=False),  # erf
    "relu": jax.nn.relu,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None


def apply_activation(name: str, x: jax.Array) -> jax.Array:
    """act(x) computed in fp32, returned in fp32."""
    return get_activation(name)(x.astype(jnp.float32))
