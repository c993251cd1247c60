"""Clear errors for bad input, raised before the arithmetic sees it.

Each check names the argument, says what was wrong and what is allowed, so a
user never meets a traceback from deep inside NumPy.
"""
import numbers

from .backend import array_module


def check_array(name, a, ndim=None, shape=None, finite=True):
    """Check that ``a`` is an array of ``ndim`` dims matching ``shape``, all finite.

    ``shape`` entries that are ``None`` match any size.  Returns ``a``.
    """
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(a).__name__}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(a.shape)}")
    if shape is not None:
        ok = len(shape) == a.ndim and all(s is None or s == n for s, n in zip(shape, a.shape))
        if not ok:
            want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {tuple(a.shape)}")
    if finite and a.dtype.kind in "fc" and not bool(array_module(a).isfinite(a).all()):
        raise ValueError(f"{name} contains NaN or infinite values; all entries must be finite")
    return a


def check_positive_int(name, value, minimum=1):
    """Check that ``value`` is an integer ``>= minimum``.  Returns it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_choice(name, value, allowed):
    """Check that ``value`` is one of ``allowed``.  Returns it."""
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(map(str, allowed))}")
    return value


def check_steps(name, t, first, last, shape=None):
    """Check time steps: integers (not booleans or floats) in ``first..last``, of ``shape``.

    ``t`` is a Python or NumPy integer, or an integer array (any backend).  Returns it.
    """
    if hasattr(t, "dtype") and getattr(t, "ndim", 0) > 0:
        check_array(name, t, shape=shape)
        if t.dtype.kind not in "iu":
            raise ValueError(f"{name} must hold integers in {first}..{last} (time steps), got dtype {t.dtype}")
        if t.size and bool(((t < first) | (t > last)).any()):
            raise ValueError(f"{name} must hold integers in {first}..{last} (time steps), got values in "
                             f"[{int(t.min())}, {int(t.max())}]")
        return t
    if shape is not None:
        raise ValueError(f"{name} must be an integer array of shape {tuple(shape)}, got {t!r}")
    if isinstance(t, bool) or not isinstance(t, numbers.Integral):
        raise ValueError(f"{name} must be an integer time step in {first}..{last}, got {t!r}")
    if not first <= t <= last:
        raise ValueError(f"{name} must be a time step in {first}..{last}, got {t}")
    return int(t)


class ScheduleError(ValueError):
    """A schedule ``beta`` that is not a valid diffusion: some ``beta_t`` outside (0, 1),
    NaN, or the wrong shape.  During training a learned schedule that leaves (0, 1)
    means the run diverged."""
