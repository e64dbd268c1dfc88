"""The README's usage example runs (at small sizes) and does what it says."""

import pathlib
import re

import jax.numpy as jnp
import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SIZES = "T, H, I, E, k = 4096, 2048, 768, 128, 8"


def test_usage_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = blocks[0]
    assert SIZES in example, "the README's first example changed: update this test"
    scope = {}
    exec(example.replace(SIZES, "T, H, I, E, k = 64, 32, 16, 8, 2"), scope)
    y, grads = scope["y"], scope["grads"]
    assert y.shape == (64, 32) and y.dtype == jnp.bfloat16
    assert all(np.isfinite(np.asarray(g, np.float32)).all() and np.abs(np.asarray(g, np.float32)).sum() > 0
               for g in grads)
