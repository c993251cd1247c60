"""The binary-heartbeat model of App. D.1.2: binomial diffusion with a sigmoid MLP.

``x_t, t -> lam_p``: an MLP ``D -> 50 -> 50 -> 50`` with sigmoid units, shared
over time, then a readout learned separately for each of the ``T = 2000``
steps (the identity temporal basis); ``f_b = sigma(lam_p)``.  The readout's
output ``z`` is added to the logit of the forward kernel reversed, so a network
with ``z = 0`` (its initial state) reproduces the forward step, as the
Gaussian ``'reference'`` parameterization does.  This offset is affine in each bit
``x_t,d`` with per-step coefficients: a fixed skip connection from ``x_t`` to
the logits, which the paper's plain ``sigma(readout)`` lacks (a deviation,
chosen so that training starts at ``K = L_null`` rather than far below it).

The network reads the bits as ``2 x_t - 1``; a first layer ``W (2x - 1) + b``
equals ``2 W x + (b - W 1)``, so the family of functions is the paper's, and
only the optimization is better conditioned.

A second readout, ``basis='bump'``, shares the readout over neighbouring
steps through ``J`` Gaussian bumps in ``t`` (eq. (63), as the Gaussian model
does; a departure from App. D.1.2).  With a per-step readout each step's
weights see about ``N / T`` examples of a minibatch, one in four for
``N = 512``; bumps pool about ``N / J`` and train several times faster per
example (the demo's default, ``J = 50``; numbers in its docstring).
"""
import math
from dataclasses import replace

import numpy

from ..backend import array_module, to_host
from .kernel import (binomial_schedule, bound_by_t, check_binary, forward_logit,
                       neg_bound_backward, neg_bound_forward, on_backend, q_sample, sample)
from ..bits import standard_error
from ..nn.network import NetConfig, init_network, network_backward, network_forward, temporal_basis
from ..validation import check_array, check_choice, check_same_rows

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
    basis : str, ``'identity'`` (the paper's readout per step) or ``'bump'``
        (``n_bumps`` Gaussian bumps over ``t``, eq. (63): neighbouring steps
        share their readout's training signal; a departure from App. D.1.2).
    n_bumps : int, ``J`` for the bump basis.
    t_sampling : str, how a minibatch draws ``t``: ``'uniform'`` (each
        example ``t ~ U{2..T}``) or ``'stratified'`` (example ``n`` of ``N``
        draws ``t`` uniformly from the ``n``-th of ``N`` equal slices of
        ``2..T``): both unbiased with weight ``T - 1``; stratified spreads
        each batch evenly over the chain.
    """

    def __init__(self, D=20, T=2000, pi=0.2, hidden=(50, 50, 50), activation="sigmoid",
                 basis="identity", n_bumps=50, t_sampling="uniform"):
        self.sched = binomial_schedule(T, pi)
        self.D, self.T, self.pi = int(D), self.sched["T"], self.sched["pi"]
        self.net_cfg = NetConfig(D=self.D, T=self.T, net="mlp", hidden=tuple(hidden),
                                 activation=activation, basis=basis, n_bumps=n_bumps, n_out=self.D)
        self.t_sampling = check_choice("t_sampling", t_sampling, ("uniform", "stratified"))
        self._tables = {}

    def _sched(self, xp):
        """The schedule's tables on backend ``xp`` (moved once, then reused)."""
        if xp.__name__ not in self._tables:
            self._tables[xp.__name__] = on_backend(self.sched, xp)
        return self._tables[xp.__name__]

    def _basis(self, xp, dtype):
        """The readout's basis ``G`` (T + 1, J) on ``xp`` in ``dtype``; ``None`` for the identity."""
        key = (xp.__name__, numpy.dtype(dtype).name)
        if key not in self._tables:
            self._tables[key] = temporal_basis(self.net_cfg, xp, dtype)
        return self._tables[key]

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

    def logits_forward(self, params, xt, t, net_cfg=None, workspace=None):
        """``lam_p = z(x_t, t) + logit T_pi(x_{t-1} = 1 | x_t; beta_t)``; returns ``(lam_p, cache)``.

        ``net_cfg`` overrides the network's configuration (see :meth:`per_step_params`);
        ``workspace`` is passed to the network (:mod:`~numpy_diffusion.workspace`).
        """
        net_cfg = net_cfg or self.net_cfg
        dtype = params["readout.W"].dtype
        x_in = (2 * xt - 1).astype(dtype)                              # bits as -1/+1: same family
        G = None if net_cfg.basis == "identity" else self._basis(array_module(xt), dtype)
        z, cache = network_forward(params, x_in, t, net_cfg, G, workspace)
        return z + forward_logit(xt, t, self._sched(array_module(xt))).astype(dtype), cache

    def per_step_params(self, params):
        """The same network with its readout written per step: ``(params, net_cfg)``.

        A bump readout ``sum_j g_j(t) (h W_j + b_j)`` (eq. (62)) equals
        ``h W'_t + b'_t`` with ``W'_t = sum_j g_j(t) W_j``: computed once, this
        makes evaluation and sampling, where many rows share a ``t``, as cheap
        as the identity basis.  Identity-basis parameters come back unchanged.
        """
        if self.net_cfg.basis == "identity":
            return params, self.net_cfg
        W, b = params["readout.W"], params["readout.b"]                # (H, J, O), (J, O)
        G = self._basis(array_module(W), W.dtype)[1:]                  # g(t), t = 1..T      (T, J)
        H, J, O = W.shape
        W_step = (G @ W.transpose(1, 0, 2).reshape(J, H * O)).reshape(-1, H, O).transpose(1, 0, 2)
        step = {**params, "readout.W": W_step, "readout.b": G @ b}     # (H, T, O), (T, O)
        return step, replace(self.net_cfg, basis="identity")

    def _logit_fn(self, params):
        """``(xt, t) -> lam_p`` for evaluation and sampling, through :meth:`per_step_params`."""
        step, cfg = self.per_step_params(params)
        return lambda xt, t: self.logits_forward(step, xt, t, cfg)[0]

    def _check(self, x0, t=None):
        check_binary("x0", x0, self.D)
        if t is not None:
            check_array("t", t, ndim=1, shape=(x0.shape[0],))
            if not bool(((t >= 2) & (t <= self.T)).all()):
                raise ValueError(f"every t must be a step in 2..{self.T} (the learned steps)")

    def loss_and_grads(self, params, x0, t, u, weights, workspace=None):
        """``-K_hat`` (nats per sequence, float) and its gradients, for given ``t``, noise ``u`` (N, D)
        and ``weights`` (N,); ``workspace`` as in :meth:`GaussianDiffusion.loss_and_grads`."""
        self._check(x0, t)
        check_same_rows(x0=x0, t=t, u=u, weights=weights)
        sched = self._sched(array_module(x0))
        xt = q_sample(x0, t, u, sched)                                 # frozen noise
        lam_p, net_cache = self.logits_forward(params, xt, t, workspace=workspace)
        loss, cache = neg_bound_forward(lam_p, x0, xt, t, weights, sched)
        dlam = neg_bound_backward(1.0, cache).astype(lam_p.dtype)      # d(-K_hat)/d lam_p   (N, D)
        grads, _ = network_backward(dlam, net_cache, True, workspace)  # d lam_p/d z = 1
        return float(loss), grads

    def draw_t(self, rng, N):
        """Host int array (N,) of steps in ``2..T``, each marginally ``U{2..T}`` (see ``t_sampling``)."""
        if self.t_sampling == "uniform":
            return rng.integers(2, self.T + 1, N)
        slot = (numpy.arange(N) + rng.random(N)) / N                     # one draw per slice of [0, 1)
        return 2 + numpy.minimum((slot * (self.T - 1)).astype(numpy.int64), self.T - 2)

    def draw(self, rng, N):
        """``(t, u, weights)`` for a batch: steps from :meth:`draw_t` (weight ``T - 1``) and
        uniform noise ``u`` (N, D); host arrays."""
        t = self.draw_t(rng, N)
        return t, rng.random((N, self.D)), numpy.full(N, float(self.T - 1))

    def loss_and_grads_random(self, params, x0, rng):
        """Unbiased ``-K_hat``: :meth:`loss_and_grads` on a batch from :meth:`draw`."""
        xp = array_module(x0)
        return self.loss_and_grads(params, x0, *(xp.asarray(a) for a in self.draw(rng, x0.shape[0])))

    def evaluate(self, params, x0, rng, n_eps=1):
        """Held-out bound in bits per sequence, every ``t`` summed exactly (eq. (14)).

        Returns a dict of floats: ``K_bits``, ``K_bits_stderr``, ``L_null_bits``
        (mean ``log2 pi(x0)``), ``K_minus_L_null_bits`` and its standard error
        (per example, so zero spread in ``L_null`` adds nothing), ``entropy_bits``
        (the mean of eq. (14)'s last line) and ``kl_bits_by_t`` (a list, index 0 is ``t = 2``).
        """
        self._check(x0)
        sched = self._sched(array_module(x0))
        K, K_se, kl_by_t = bound_by_t(self._logit_fn(params), x0, sched, rng, n_eps)
        x0h = to_host(x0)
        log_pi = self.sched["log_pi"]
        L_null = (x0h * log_pi[1] + (1 - x0h) * log_pi[0]).sum(1)            # log pi(x0)   (N,)
        gain = (K - L_null) / LOG2                                             # (N,)
        gain_se = standard_error(gain)
        K_bits = float(K.mean()) / LOG2
        return {"K_bits": K_bits, "K_bits_stderr": K_se / LOG2, "L_null_bits": float(L_null.mean()) / LOG2,
                "K_minus_L_null_bits": float(gain.mean()), "K_minus_L_null_bits_stderr": gain_se,
                "entropy_bits": float(K.mean() + kl_by_t.sum()) / LOG2,
                "kl_bits_by_t": [float(k) / LOG2 for k in kl_by_t]}

    def sample(self, params, n, rng):
        """``n`` samples ``x_0`` as a binary host array (n, D), ending with the fixed step of eq. (44)."""
        xp = array_module(params["readout.W"])
        x = sample(self._logit_fn(params), n, self.D, self._sched(xp), rng, xp, params["readout.W"].dtype)
        return to_host(x)

    def config(self):
        """JSON-able constructor arguments."""
        return {"kind": "binomial", "D": self.D, "T": self.T, "pi": self.pi,
                "hidden": list(self.net_cfg.hidden), "activation": self.net_cfg.activation,
                "basis": self.net_cfg.basis, "n_bumps": self.net_cfg.n_bumps,
                "t_sampling": self.t_sampling}

    @classmethod
    def from_config(cls, d):
        """Inverse of :meth:`config` (older configs without a basis mean the identity)."""
        return cls(D=d["D"], T=d["T"], pi=d["pi"], hidden=tuple(d["hidden"]),
                   activation=d["activation"], basis=d.get("basis", "identity"),
                   n_bumps=d.get("n_bumps", 50), t_sampling=d.get("t_sampling", "uniform"))
