"""The backend seam: choice by argument or environment, and its errors (CPU only)."""
import numpy as np
import pytest

from numpy_diffusion import backend
from numpy_diffusion.backend import BackendError, get_backend


def test_numpy_is_the_default(monkeypatch):
    monkeypatch.delenv(backend.ENV_VAR, raising=False)
    assert get_backend() is np
    assert get_backend("NumPy") is np


def test_environment_variable_chooses(monkeypatch):
    monkeypatch.setenv(backend.ENV_VAR, "numpy")
    assert get_backend() is np
    monkeypatch.setenv(backend.ENV_VAR, "tensorflow")
    with pytest.raises(BackendError, match=r"unknown backend 'tensorflow' \(from the \$NUMPY_DIFFUSION_BACKEND\); allowed: numpy, cupy"):
        get_backend()


def test_unknown_backend_argument():
    with pytest.raises(BackendError, match="unknown backend 'torch' .*allowed: numpy, cupy"):
        get_backend("torch")
    with pytest.raises(BackendError, match="backend must be a string"):
        get_backend(3)


def test_cupy_unavailable_names_the_fix(monkeypatch):
    """Where CuPy is missing (or any import fails), the error says how to get it."""
    import builtins
    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name == "cupy":
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    with pytest.raises(BackendError, match=r"CuPy is not installed; install it with `pip install -e \"\.\[gpu\]\"`"):
        get_backend("cupy")


def test_cupy_without_gpu_names_the_fix(monkeypatch):
    """A CuPy that imports but finds no device gives one clear error, not a CUDA traceback."""
    import sys
    import types
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 0))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(BackendError, match="no GPU is usable .*use backend 'numpy'"):
        get_backend("cupy")


def test_host_helpers():
    a = np.arange(3.0)
    assert backend.to_host(a) is a
    assert backend.array_module(a) is np
    assert backend.to_device([1, 2], np).tolist() == [1, 2]
