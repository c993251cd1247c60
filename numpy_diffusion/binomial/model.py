"""The binary-heartbeat model of App. D.1.2: binomial diffusion with a sigmoid MLP.

One training step, in the order data flows::

    x0, t, u --q_sample--> xt --network--> z --p_logit--> logit_p --bound_forward--> loss
    grads <--network backward-- dz = dlogit_p <--bound_backward-- 1

``x_t, t -> z``: an MLP ``D -> 50 -> 50 -> 50`` with sigmoid units, shared over time,
then a temporal readout; ``f_b = sigma(logit_p)`` with ``logit_p = z + logit T_pi(x_{t-1}
= 1 | x_t; beta_t)``, the logit of the forward kernel reversed.  So a network with
``z = 0`` (its initial state) reproduces the forward step, as the Gaussian
``'reference'`` parameterization does.  This offset is affine in each bit ``x_t,d``
with per-step coefficients: a fixed skip connection from ``x_t`` to the logits, which
the paper's plain ``sigma(readout)`` lacks (a departure, chosen so that training starts
at ``K = L_null`` rather than far below it).

The network reads the bits as ``2 x_t - 1``; a first layer ``W (2x - 1) + b``
equals ``2 W x + (b - W 1)``, so the family of functions is the paper's, and
only the optimization is better conditioned.

Two readouts: ``basis='identity'``, the paper's readout learned separately for each
of the ``T`` steps, and ``basis='bump'``, which shares the readout over neighbouring
steps through ``J`` Gaussian bumps in ``t`` (eq. (63), as the Gaussian model does; a
departure from App. D.1.2).  With a per-step readout each step's weights see about
``N / T`` examples of a minibatch, one in four for ``N = 512``; bumps pool about
``N / J`` and train several times faster per example.  :func:`heartbeat_model` is the
model the heartbeat demo trains by default (bumps, ``J = 50``).
"""
from dataclasses import replace
from typing import NamedTuple

import numpy

from ..backend import array_module, to_device, to_host
from ..bits import LN2, table1_report
from ..nn.network import NetConfig, Network
from ..validation import check_array, check_choice, check_positive_int, check_steps
from .kernel import (bound_all_t, bound_backward, bound_forward, check_binary,
                     check_uniform, log_pi, p_logit, p_sample_loop, q_sample)
from .schedule import binomial_tables, on_backend

SIGMOID_GAIN = 4.0          # sigma'(0) = 1/4 where tanh'(0) = 1: sigmoid weights 4x the tanh ones


class PLogitCache(NamedTuple):
    net: object                               # the network's NetworkCache
    z_dtype: object                           # the network's dtype, for the gradient cast back


class BinomialDiffusion:
    """Binomial diffusion over ``D`` bits with ``T`` steps into ``B(pi)`` (§2.4.1, Table App.1).

    The defaults are the heartbeat demo's model, :func:`heartbeat_model`.

    Parameters
    ----------
    D : int, bits per sequence.
    T : int, trajectory length, ``>= 2``.
    pi : float in (0, 1), the noise distribution's rate (the data's mean activity).
    hidden : tuple of int, MLP widths.
    activation : str, MLP unit (``'sigmoid'`` in the paper).
    basis : str, ``'identity'`` (the paper's readout per step) or ``'bump'``
        (``n_bumps`` Gaussian bumps over ``t``, eq. (63)).
    n_bumps : int, ``J`` for the bump basis.
    t_sampling : str, how a minibatch draws ``t``: ``'uniform'`` (each
        example ``t ~ U{2..T}``) or ``'stratified'`` (example ``n`` of ``N``
        draws ``t`` uniformly from the ``n``-th of ``N`` equal slices of
        ``2..T``).  Both give an unbiased batch mean with weight ``T - 1``; a
        stratified draw is not marginally uniform per example, but spreads each
        batch evenly over the chain.
    """

    def __init__(self, D=20, T=2000, pi=0.2, hidden=(50, 50, 50), activation="sigmoid",
                 basis="bump", n_bumps=50, t_sampling="stratified"):
        self.host_tables = binomial_tables(T, pi)
        self.D, self.T, self.pi = check_positive_int("D", D), self.host_tables["T"], self.host_tables["pi"]
        self.net = Network(NetConfig(D=self.D, T=self.T, net="mlp", hidden=tuple(hidden),
                                     activation=activation, basis=basis, n_bumps=n_bumps, n_out=self.D))
        self.step_net = Network(replace(self.net.cfg, basis="identity"))   # see per_step_params
        self.t_sampling = check_choice("t_sampling", t_sampling, ("uniform", "stratified"))
        self._tables_on = {}

    def tables(self, xp):
        """The schedule's tables on backend ``xp`` (moved once, then reused)."""
        if xp.__name__ not in self._tables_on:
            self._tables_on[xp.__name__] = on_backend(self.host_tables, xp)
        return self._tables_on[xp.__name__]

    def init_params(self, rng, dtype=numpy.float64):
        """Initial parameters (host arrays); the readout is zero, so ``p`` starts as the forward kernel.

        Trunk weights are Glorot's, times 4 for sigmoid units (the sigmoid's slope
        at 0 is 1/4 where tanh's is 1); otherwise three sigmoid layers
        pass almost none of ``x_t``'s variation to the readout.
        """
        params = self.net.init_params(rng, dtype)
        if self.net.cfg.activation == "sigmoid":
            for name in params:
                if name.startswith("trunk.W"):
                    params[name] *= SIGMOID_GAIN
        return params

    def p_logit_forward(self, xt, t, params, *, net=None):
        """``logit_p`` (N, D) float64 of ``p(x_{t-1} = 1 | x_t)`` at binary ``xt`` (N, D), steps ``t`` (N,).

        Returns ``(logit_p, PLogitCache)``.  ``net`` replaces the network (see
        :meth:`per_step_params`).
        """
        net, dtype = net or self.net, params["readout.W"].dtype
        z, net_cache = net.forward((2 * xt - 1).astype(dtype), t, params)   # bits as -1/+1  (N, D)
        logit_p = p_logit(z, xt, t, self.tables(array_module(xt)))          # Table App.1    (N, D)
        return logit_p, PLogitCache(net_cache, dtype)

    def p_logit_backward(self, dlogit_p, cache):
        """Gradients of the parameters, a dict keyed like them (``x_t`` is binary: no ``dxt``)."""
        dz = dlogit_p.astype(cache.z_dtype)                           # dlogit_p/dz = 1
        return self.net.backward(dz, cache.net, need_dxt=False)[1]    # dz/dparams by the network

    def per_step_params(self, params):
        """The same network with its readout written per step: ``(params, step_net)``.

        A bump readout ``sum_j g_j(t) (h W_j + b_j)`` (eq. (62)) equals
        ``h W'_t + b'_t`` with ``W'_t = sum_j g_j(t) W_j``: computed once, this
        makes evaluation and sampling, where many rows share a ``t``, as cheap
        as the identity basis.  Identity-basis parameters come back unchanged.
        """
        if self.net.cfg.basis == "identity":
            return params, self.net
        W, b = params["readout.W"], params["readout.b"]                # (H, J, O), (J, O)
        G = self.net.basis(array_module(W), W.dtype)[1:]               # g(t), t = 1..T      (T, J)
        H, J, O = W.shape
        W_step = (G @ W.transpose(1, 0, 2).reshape(J, H * O)).reshape(-1, H, O).transpose(1, 0, 2)
        step = {**params, "readout.W": W_step, "readout.b": G @ b}     # (H, T, O), (T, O)
        return step, self.step_net

    def predict(self, params):
        """``(xt, t) -> logit_p`` for evaluation and sampling, through :meth:`per_step_params`."""
        step, net = self.per_step_params(params)
        return lambda xt, t: self.p_logit_forward(xt, t, step, net=net)[0]

    def _check_x0(self, x0, xp):
        """``x0`` as float64 on ``xp``, or a clear error: binary, (N, D), at least one row."""
        check_binary("x0", x0, self.D)
        if x0.shape[0] == 0:
            raise ValueError(f"x0 has no rows; give at least one example, shape (N, {self.D}) with N >= 1")
        return to_device(x0, xp).astype(xp.float64, copy=False)

    def _check_batch(self, params, x0, t, u, weights):
        """The batch on the parameters' backend, every input checked before any work."""
        xp = array_module(params["readout.W"])
        x0 = self._check_x0(x0, xp)
        check_steps("t", t, 2, self.T, shape=(x0.shape[0],))
        check_uniform(u, x0.shape)
        check_array("weights", weights, shape=x0.shape[:1])
        return (x0, to_device(t, xp), to_device(u, xp).astype(xp.float64, copy=False),
                to_device(weights, xp).astype(xp.float64, copy=False))

    def loss_and_grads(self, params, x0, t, u, weights):
        """``-mean(K_hat)`` (nats per sequence, a float, eq. (14)) and its gradients, keyed like params.

        Parameters
        ----------
        params : mapping name -> ndarray
        x0 : binary ndarray of shape (N, D)
        t : int ndarray of shape (N,), values in ``2..T``
        u : ndarray of shape (N, D), frozen uniform noise in [0, 1)
        weights : ndarray of shape (N,), ``1 / P(t_n)`` (``T - 1`` for uniform ``t``)
        """
        x0, t, u, weights = self._check_batch(params, x0, t, u, weights)
        tables = self.tables(array_module(x0))
        xt = q_sample(x0, t, u, tables)                                 # frozen noise      (N, D)
        logit_p, p_cache = self.p_logit_forward(xt, t, params)         # (N, D)
        loss, bound_cache = bound_forward(logit_p, x0, xt, t, weights, tables)   # eq. (14)
        dlogit_p = bound_backward(1.0, bound_cache)                    # (N, D)
        return float(loss), self.p_logit_backward(dlogit_p, p_cache)

    def draw_t(self, rng, N):
        """Host int array (N,) of steps in ``2..T`` (see ``t_sampling``)."""
        if self.t_sampling == "uniform":
            return rng.integers(2, self.T + 1, N)
        slot = (numpy.arange(N) + rng.random(N)) / N                   # one draw per slice of [0, 1)
        return 2 + numpy.minimum((slot * (self.T - 1)).astype(numpy.int64), self.T - 2)

    def draw(self, rng, N):
        """``(t, u, weights)`` for a batch: steps from :meth:`draw_t` (weight ``T - 1``) and
        uniform noise ``u`` (N, D); host arrays."""
        t = self.draw_t(rng, N)
        return t, rng.random((N, self.D)), numpy.full(N, float(self.T - 1))

    def loss_and_grads_random(self, params, x0, rng):
        """:meth:`loss_and_grads` with ``(t, u, weights)`` drawn from ``rng`` by :meth:`draw`."""
        return self.loss_and_grads(params, x0, *self.draw(rng, x0.shape[0]))

    def evaluate(self, params, x0, rng, n_eps=1):
        """Held-out bound, every ``t`` summed exactly (eq. (14)), Monte Carlo over ``n_eps`` noise draws.

        Returns a dict of floats and host arrays: ``K_nats``, ``K_bits`` (mean per
        sequence), ``K_bits_stderr`` (standard error over examples), ``L_null_bits``
        (mean ``log2 pi(x0)``), ``K_minus_L_null_bits`` and its stderr (paired per
        example, so the spread of ``L_null`` adds nothing), ``kl_bits_by_t`` (T + 1,)
        indexed by ``t`` (zero at ``t = 0, 1``), the means ``H_q_T_bits``, ``H_q_1_bits``,
        ``H_p_T_bits`` of eq. (14)'s entropies, ``K_per_example_nats`` (N,) and ``n_eps``.
        ``K`` is eq. (14) as the paper computes it; ``K_exact_bits`` the mean exact
        per-example bound, equal to it on average when the data's mean is ``pi``
        (see :mod:`.kernel`).
        """
        n_eps = check_positive_int("n_eps", n_eps)
        xp = array_module(params["readout.W"])
        x0 = self._check_x0(x0, xp)
        res = bound_all_t(self.predict(params), x0, self.tables(xp), rng, n_eps=n_eps)
        K = res["K"]                                                   # (N,) nats
        out = table1_report(K, to_host(log_pi(x0, self.tables(xp))))   # L_null: log pi(x0)
        out.update({"K_exact_bits": float(res["K_exact"].mean()) / LN2, "kl_bits_by_t": res["kl_by_t"] / LN2,
                    "K_per_example_nats": K, "n_eps": n_eps})
        out.update({k + "_bits": float(res[k].mean()) / LN2 for k in ("H_q_T", "H_q_1", "H_p_T")})
        return out

    def sample(self, params, n, rng):
        """``n`` samples ``x_0`` as a binary host array (n, D), ending with the fixed step of eq. (44)."""
        n = check_positive_int("n", n)
        W = params["readout.W"]
        x = p_sample_loop(self.predict(params), n, self.D, self.tables(array_module(W)), rng,
                          xp=array_module(W), dtype=W.dtype)
        return to_host(x)

    def config(self):
        """JSON-able constructor arguments."""
        cfg = self.net.cfg
        return {"kind": "binomial", "D": self.D, "T": self.T, "pi": self.pi, "hidden": list(cfg.hidden),
                "activation": cfg.activation, "basis": cfg.basis, "n_bumps": cfg.n_bumps,
                "t_sampling": self.t_sampling}

    @classmethod
    def from_config(cls, d):
        """Inverse of :meth:`config` (older configs without a basis mean the identity, without
        a ``t_sampling`` uniform draws: what those runs trained)."""
        return cls(D=d["D"], T=d["T"], pi=d["pi"], hidden=tuple(d["hidden"]),
                   activation=d["activation"], basis=d.get("basis", "identity"),
                   n_bumps=d.get("n_bumps", 50), t_sampling=d.get("t_sampling", "uniform"))


def heartbeat_model(**overrides):
    """The model the heartbeat demo trains by default: :class:`BinomialDiffusion`'s defaults.

    App. D.1.2's data and chain, ``D = 20`` bits, ``T = 2000`` steps of
    ``beta_t = 1 / (T - t + 1)`` into ``B(0.2)``, an MLP ``20 -> 50 -> 50 -> 50`` of
    sigmoid units; then this project's choices, a readout over ``J = 50`` bumps in ``t``
    and stratified ``t`` draws.  ``overrides`` replace any constructor argument; the
    paper's per-step readout is ``heartbeat_model(basis="identity", t_sampling="uniform")``.
    """
    return BinomialDiffusion(**overrides)
