"""Hypothesis profiles and the GPU marker.

Profiles: ``default`` (no deadline: the machine is noisy), ``ci`` (the same,
derandomized: chosen when ``$CI`` is set), ``thorough`` (300 examples a test;
``HYPOTHESIS_PROFILE=thorough python -m pytest``).
"""
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True,
                          print_blob=True)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))


def gpu_usable():
    """True where CuPy imports and a GPU answers."""
    try:
        from numpy_diffusion.backend import get_backend
        get_backend("cupy")
        return True
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if any("gpu" in item.keywords for item in items) and not gpu_usable():
        skip = pytest.mark.skip(reason="no usable GPU / CuPy here")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
