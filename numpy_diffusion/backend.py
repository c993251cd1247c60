"""The one seam between the compute code and an array library.

Compute code never imports NumPy for array work; it asks this module for the
array module ``xp`` (NumPy by default, CuPy on request) or derives it from the
arrays it was given with :func:`array_module`.  Conversion to host NumPy
arrays happens once, at plotting and saving, through :func:`to_host`.

The backend is chosen by argument, else by the environment variable
``NUMPY_DIFFUSION_BACKEND`` (``numpy`` or ``cupy``), else NumPy.
"""
import os

import numpy

ENV_VAR = "NUMPY_DIFFUSION_BACKEND"
BACKENDS = ("numpy", "cupy")


class BackendError(RuntimeError):
    """The requested array backend is unknown or cannot run here."""


def _load_cupy():
    """Import CuPy and prove a GPU is usable, or raise one clear error."""
    try:
        import cupy
    except ImportError as err:
        raise BackendError(
            "backend 'cupy' was requested but CuPy is not installed; install it "
            "with `pip install -e \".[gpu]\"` (cupy-cuda12x) on a machine with an "
            "NVIDIA GPU, or use backend 'numpy'") from err
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise BackendError("no CUDA device found")
        cupy.zeros(1).sum().item()          # touch the device once
    except Exception as err:                # CUDA raises many error types
        raise BackendError(
            f"backend 'cupy' was requested but no GPU is usable ({err}); "
            "run on a machine with a working NVIDIA GPU and driver, or use "
            "backend 'numpy'") from err
    return cupy


def backend_name(name=None):
    """Resolve a backend name: the argument, else ``$NUMPY_DIFFUSION_BACKEND``, else ``'numpy'``."""
    source = "argument"
    if name is None:
        name, source = os.environ.get(ENV_VAR) or "numpy", f"${ENV_VAR}"
    key = str(name).strip().lower()
    if key not in BACKENDS:
        raise BackendError(f"unknown backend {name!r} (from the {source}); "
                           f"allowed: {', '.join(BACKENDS)}")
    return key


def get_backend(name=None):
    """Return the array module for backend ``name`` (``'numpy'`` or ``'cupy'``).

    Parameters
    ----------
    name : str or None
        ``'numpy'``, ``'cupy'`` or ``None`` to read ``$NUMPY_DIFFUSION_BACKEND``
        (default NumPy).

    Raises
    ------
    BackendError
        For an unknown name, or CuPy where it is not installed or no GPU is usable.
    """
    key = backend_name(name) if name is None or isinstance(name, str) else None
    if key is None:
        raise BackendError(f"backend must be a string, got {type(name).__name__}; "
                           f"allowed: {', '.join(BACKENDS)}")
    return numpy if key == "numpy" else _load_cupy()


def array_module(*arrays):
    """The array module (NumPy or CuPy) that owns ``arrays``; NumPy for host arrays."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy
            return cupy
    return numpy


def to_host(a):
    """A host NumPy copy (or view) of ``a``, whichever backend holds it."""
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return numpy.asarray(a)


def to_device(a, xp):
    """``a`` (host or device) as an array of module ``xp``."""
    if xp is numpy:
        return to_host(a)
    return xp.asarray(a)
