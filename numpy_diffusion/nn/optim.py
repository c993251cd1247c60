"""Parameters as one flat vector, and Adam over it (Kingma & Ba 2015, Algorithm 1).

A :class:`ParamVector` keeps every parameter of a model in one contiguous
array; the model reads and writes named views into it.  The gradient has the
same layout, so an optimizer step is a handful of whole-vector operations no
matter how many parameters the model has.
"""
import math

import numpy

from ..backend import array_module, to_host


class ParamVector:
    """Named views into one flat array.

    Parameters
    ----------
    layout : dict of name -> shape
        Order of the dict is the order in the flat vector.
    flat : ndarray of shape (P,)
        The storage, ``P = sum of the sizes``.
    """

    def __init__(self, layout, flat):
        self.layout = {name: tuple(int(s) for s in shape) for name, shape in layout.items()}
        size = sum(math.prod(s) for s in self.layout.values())
        if flat.ndim != 1 or flat.shape[0] != size:
            raise ValueError(f"flat vector has shape {tuple(flat.shape)}, layout needs ({size},)")
        self.flat = flat
        self.views, offset = {}, 0
        for name, shape in self.layout.items():
            n = math.prod(shape)
            self.views[name] = flat[offset:offset + n].reshape(shape)
            offset += n

    @classmethod
    def from_arrays(cls, arrays, xp=numpy, dtype=None):
        """Pack a dict of arrays into a new flat vector (copying them) on backend ``xp``."""
        layout = {k: v.shape for k, v in arrays.items()}
        dtype = dtype or numpy.result_type(*[v.dtype for v in arrays.values()])
        flat = xp.concatenate([xp.asarray(v, dtype=dtype).ravel() for v in arrays.values()])
        return cls(layout, flat)

    def zeros_like(self):
        """A vector of zeros with the same layout, dtype and backend (for gradients)."""
        return ParamVector(self.layout, array_module(self.flat).zeros_like(self.flat))

    def copy(self):
        """An independent copy with the same layout."""
        return ParamVector(self.layout, self.flat.copy())

    def __getitem__(self, name):
        return self.views[name]

    def __contains__(self, name):
        return name in self.views

    def keys(self):
        return self.views.keys()

    def items(self):
        return self.views.items()

    def to_host_dict(self):
        """Host copies of every named array, for saving."""
        return {k: to_host(v).copy() for k, v in self.views.items()}


class Adam:
    """Adam, Algorithm 1 of Kingma & Ba (2015), on one flat vector.

    ``m`` and ``v`` are the first and second moment estimates and ``step_count`` the
    number of updates taken, ``k``.  With gradient ``g``::

        m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
        theta <- theta - lr (m / (1 - b1^k)) / (sqrt(v / (1 - b2^k)) + epsilon)

    (Kingma & Ba's ``beta_1, beta_2, epsilon``; here ``b1, b2, epsilon``, since
    ``beta_1`` and ``eps`` name the diffusion rate and the noise in this project.)
    """

    def __init__(self, size, lr=1e-3, b1=0.9, b2=0.999, epsilon=1e-8, xp=numpy, dtype=numpy.float64):
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"Adam's b1 and b2 must lie in [0, 1), got {b1}, {b2}")
        if not lr > 0 or not epsilon >= 0:
            raise ValueError(f"Adam needs lr > 0 and epsilon >= 0, got lr={lr}, epsilon={epsilon}")
        self.lr, self.b1, self.b2, self.epsilon = float(lr), float(b1), float(b2), float(epsilon)
        self.m = xp.zeros(size, dtype=dtype)                         # first moment      (P,)
        self.v = xp.zeros(size, dtype=dtype)                         # second moment     (P,)
        self.step_count = 0

    def step(self, theta, grad, lr=None):
        """Update ``theta`` (the flat parameter vector, in place) to descend ``grad``;
        ``lr`` overrides the base rate (a learning-rate schedule)."""
        xp = array_module(theta)
        b1, b2, lr = self.b1, self.b2, self.lr if lr is None else lr
        self.step_count += 1
        k = self.step_count
        self.m = b1 * self.m + (1 - b1) * grad                       # biased first moment
        self.v = b2 * self.v + (1 - b2) * (grad * grad)              # biased second moment
        m_hat = self.m / (1 - b1 ** k)                               # bias corrections
        v_hat = self.v / (1 - b2 ** k)
        theta -= lr * m_hat / (xp.sqrt(v_hat) + self.epsilon)        # in place: theta is the flat vector

    def state_dict(self):
        """Host arrays and numbers that restore this optimizer exactly."""
        return {"m": to_host(self.m).copy(), "v": to_host(self.v).copy(),
                "step_count": numpy.int64(self.step_count),
                "hyper": numpy.array([self.lr, self.b1, self.b2, self.epsilon])}

    def load_state_dict(self, state):
        """Restore from :meth:`state_dict` output (arrays moved to this optimizer's backend)."""
        xp = array_module(self.m)
        if state["m"].shape != self.m.shape:
            raise ValueError(f"optimizer state has {state['m'].shape[0]} entries, "
                             f"this model has {self.m.shape[0]}")
        self.m = xp.asarray(state["m"], dtype=self.m.dtype).copy()
        self.v = xp.asarray(state["v"], dtype=self.v.dtype).copy()
        self.step_count = int(state["step_count"])
        self.lr, self.b1, self.b2, self.epsilon = (float(value) for value in state["hyper"])


def cosine_lr(step, total_steps, lr, final_fraction=0.0, warmup=0):
    """Learning rate at ``step`` (0-based): linear warm-up, then cosine decay to ``final_fraction * lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return lr * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))
