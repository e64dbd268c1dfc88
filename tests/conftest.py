"""Shared test setup: the gpu marker, hypothesis profiles and numeric helpers."""

import os

# GPU interpret mode runs a kernel's warpgroups as concurrent CPU computations that block on
# simulated barriers until the others arrive. With XLA's one host device, a 2-core machine (CI's)
# ran out of the CPU client's execution threads in the backward's weight-gradient kernel (two
# consumers and a producer): a deadlock (session 21). With eight host devices it does not.
os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"),
                                                 "--xla_force_host_platform_device_count=8"]))

import jax  # noqa: E402  (after XLA_FLAGS)
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow]
)
# CI: a fixed set of examples, so that a red run is reproducible.
settings.register_profile(
    "ci", deadline=None, max_examples=40, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def has_gpu() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


def pytest_collection_modifyitems(config, items):
    if has_gpu():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
