"""The binary-heartbeat model of App. D.1.2: binomial diffusion with a sigmoid MLP.

``x_t, t -> lam_p``: an MLP ``D -> 50 -> 50 -> 50`` with sigmoid units, shared
over time, then a readout learned separately for each of the ``T = 2000``
steps (the identity temporal basis); ``f_b = sigma(lam_p)``.  The readout's
output ``z`` is added to the logit of the forward kernel reversed, so a network
with ``z = 0`` (its initial state) reproduces the forward step, as the
Gaussian kernel of eqs. (64)-(65) does.  This offset is affine in each bit
``x_t,d`` with per-step coefficients: a fixed skip connection from ``x_t`` to
the logits, which the paper's plain ``sigma(readout)`` lacks (a deviation,
chosen so that training starts at ``K = L_null`` rather than far below it).

The network reads the bits as ``2 x_t - 1``; a first layer ``W (2x - 1) + b``
equals ``2 W x + (b - W 1)``, so the family of functions is the paper's, and
only the optimization is better conditioned.
"""
import math

import numpy

from .backend import array_module, to_host
from .binomial import (binomial_schedule, bound_by_t, check_binary, forward_logit,
                       neg_bound_backward, neg_bound_forward, on_backend, q_sample, sample)
from .network import NetConfig, init_network, network_backward, network_forward
from .validation import check_array, check_same_rows

LOG2 = math.log(2.0)
SIGMOID_GAIN = 4.0          # Glorot & Bengio (2010): sigmoid weights 4x the tanh ones


class BinomialDiffusion:
    """Binomial diffusion over ``D`` bits with ``T`` steps into ``B(pi)`` (§2.4.1, Table App.1).

    Parameters
    ----------
    D : int, bits per sequence.
    T : int, trajectory length, ``>= 2``.
    pi : float in (0, 1), the noise distribution's rate (the data's mean activity).
    hidden : tuple of int, MLP widths.
    activation : str, MLP unit (``'sigmoid'`` in the paper).
    """

    def __init__(self, D=20, T=2000, pi=0.2, hidden=(50, 50, 50), activation="sigmoid"):
        self.sched = binomial_schedule(T, pi)
        self.D, self.T, self.pi = int(D), self.sched["T"], self.sched["pi"]
        self.net_cfg = NetConfig(D=self.D, T=self.T, net="mlp", hidden=tuple(hidden),
                                 activation=activation, basis="identity", n_out=self.D)
        self._tables = {}

    def _sched(self, xp):
        """The schedule's tables on backend ``xp`` (moved once, then reused)."""
        if xp.__name__ not in self._tables:
            self._tables[xp.__name__] = on_backend(self.sched, xp)
        return self._tables[xp.__name__]

    def init_params(self, rng, dtype=numpy.float64):
        """Initial parameters (host arrays); the readout is zero, so ``p`` starts as the forward kernel.

        Trunk weights are Glorot's, times 4 for sigmoid units (Glorot & Bengio
        2010, whose sigmoid slope at 0 is 1/4); otherwise three sigmoid layers
        pass almost none of ``x_t``'s variation to the readout.
        """
        params = init_network(self.net_cfg, rng, dtype)
        if self.net_cfg.activation == "sigmoid":
            for name in params:
                if name.startswith("trunk.W"):
                    params[name] *= SIGMOID_GAIN
        return params

    def logits_forward(self, params, xt, t):
        """``lam_p = z(x_t, t) + logit T_pi(x_{t-1} = 1 | x_t; beta_t)``; returns ``(lam_p, cache)``."""
        dtype = params["readout.W"].dtype
        x_in = (2 * xt - 1).astype(dtype)                              # bits as -1/+1: same family
        z, cache = network_forward(params, x_in, t, self.net_cfg, None)
        return z + forward_logit(xt, t, self._sched(array_module(xt))).astype(dtype), cache

    def _check(self, x0, t=None):
        check_binary("x0", x0, self.D)
        if t is not None:
            check_array("t", t, ndim=1, shape=(x0.shape[0],))
            if not bool(((t >= 2) & (t <= self.T)).all()):
                raise ValueError(f"every t must be a step in 2..{self.T} (the learned steps)")

    def loss_and_grads_frozen(self, params, x0, t, u, weights):
        """``-K_hat`` (nats per sequence, float) and its gradients, for given ``t``, noise ``u`` (N, D) and ``weights`` (N,)."""
        self._check(x0, t)
        check_same_rows(x0=x0, t=t, u=u, weights=weights)
        sched = self._sched(array_module(x0))
        xt = q_sample(x0, t, u, sched)                                 # frozen noise
        lam_p, net_cache = self.logits_forward(params, xt, t)
        loss, cache = neg_bound_forward(lam_p, x0, xt, t, weights, sched)
        dlam = neg_bound_backward(1.0, cache).astype(lam_p.dtype)      # d(-K_hat)/d lam_p   (N, D)
        grads, _ = network_backward(dlam, net_cache)                   # d lam_p/d z = 1
        return float(loss), grads

    def loss_and_grads(self, params, x0, rng):
        """Unbiased ``-K_hat``: each example its own ``t ~ U{2..T}`` (weight ``T - 1``) and noise."""
        xp, N = array_module(x0), x0.shape[0]
        t = xp.asarray(rng.integers(2, self.T + 1, N))
        u = xp.asarray(rng.random((N, self.D)))
        return self.loss_and_grads_frozen(params, x0, t, u, xp.full(N, float(self.T - 1)))

    def evaluate(self, params, x0, rng, n_eps=1):
        """Held-out bound in bits per sequence, every ``t`` summed exactly (eq. (14)).

        Returns a dict of floats: ``K_bits``, ``K_bits_stderr``, ``L_null_bits``
        (mean ``log2 pi(x0)``), ``K_minus_L_null_bits``, and ``kl_bits_by_t``
        (a list, index 0 is ``t = 2``).
        """
        self._check(x0)
        sched = self._sched(array_module(x0))
        logit_fn = lambda xt, t: self.logits_forward(params, xt, t)[0]
        K, K_se, kl_by_t = bound_by_t(logit_fn, x0, sched, rng, n_eps)
        x0h = to_host(x0)
        log_pi = self.sched["log_pi"]
        L_null = float((x0h * log_pi[1] + (1 - x0h) * log_pi[0]).sum(1).mean()) / LOG2
        K_bits = float(K.mean()) / LOG2
        return {"K_bits": K_bits, "K_bits_stderr": K_se / LOG2, "L_null_bits": L_null,
                "K_minus_L_null_bits": K_bits - L_null,
                "kl_bits_by_t": [float(k) / LOG2 for k in kl_by_t]}

    def sample(self, params, n, rng):
        """``n`` samples ``x_0`` as a binary host array (n, D), ending with the fixed step of eq. (44)."""
        xp = array_module(params["readout.W"])
        logit_fn = lambda xt, t: self.logits_forward(params, xt, t)[0]
        x = sample(logit_fn, n, self.D, self._sched(xp), rng, xp, params["readout.W"].dtype)
        return to_host(x)

    def config(self):
        """JSON-able constructor arguments."""
        return {"kind": "binomial", "D": self.D, "T": self.T, "pi": self.pi,
                "hidden": list(self.net_cfg.hidden), "activation": self.net_cfg.activation}

    @classmethod
    def from_config(cls, d):
        """Inverse of :meth:`config`."""
        return cls(D=d["D"], T=d["T"], pi=d["pi"], hidden=tuple(d["hidden"]),
                   activation=d["activation"])
