"""Gaussian diffusion, composed: schedule, forward process, network, reverse kernel, bound.

One training step, in the order :meth:`GaussianDiffusion.loss_and_grads` runs it::

    w --schedule--> beta --tables--> tables                    (§2.4.1; tables.py)
    x0, t, eps --q_sample--> xt                                 (forward.py)
    xt, t --network--> z                                        (nn/network.py)
    z, x0, xt --bound--> loss = -mean K_hat                     (bound.py: posterior, reverse kernel, KL, eq. 14)

and back: ``bound_backward`` gives ``dz``, the direct ``dxt`` and ``dtables``; the
network's backward gives the parameter gradients and its input gradient; with a
learned schedule, ``q_sample_backward``, ``tables_backward`` and
``schedule_backward`` carry the rest to ``w`` (:mod:`schedule` explains the route).

``loss_and_grads`` is pure: frozen ``t`` and ``eps`` in, ``(loss, grads)`` out,
grads keyed like params.  The bound runs in float64 whatever the network's dtype.
"""
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy

from ..backend import array_module, to_device, to_host
from ..bits import LN2, table1_report
from ..nn.network import NetConfig, Network
from ..validation import check_array, check_choice, check_positive_int, check_steps
from .bound import bound_all_t, bound_backward, bound_forward, standard_normal_logpdf
from .forward import q_sample_backward, q_sample_forward
from .reverse import PARAMS, p_mean_logvar_forward, p_sample_loop
from .schedule import ScheduleConfig, init_schedule_params, schedule_backward, schedule_forward
from .tables import add_grads, tables_backward, tables_forward


T_SAMPLINGS = ("uniform", "log-uniform")
OBJECTIVES = ("bound", "simple", "hybrid")
HYBRID_BOUND_WEIGHT = 0.01                    # the bound's share in the hybrid objective


@dataclass
class ModelConfig:
    """Network, schedule and reverse-kernel parameterization (``'paper'``, ``'reference'``,
    ``'bounded'``, ``'eps'``; see :mod:`reverse`).  The schedule defaults to ``T = net.T``.

    ``t_sampling`` is how a training minibatch draws its steps (:meth:`GaussianDiffusion.draw`):
    ``'uniform'`` on ``2..T``, or ``'log-uniform'``, ``P(t) ∝ 1 / t``.

    ``objective`` is what training minimizes: ``'bound'``, ``-K`` of eq. (14); or ``'simple'``,
    DDPM's simplified loss (Ho et al. 2020, eq. 14), the bound's KL terms reweighted
    (:meth:`GaussianDiffusion.objective_weights`).  Evaluation always reports the bound.

    The field defaults are a plain starting point, not the model the swiss-roll demo
    trains: that one is :func:`swiss_roll_model`.
    """
    net: NetConfig = field(default_factory=NetConfig)
    schedule: ScheduleConfig = None
    param: str = "bounded"
    t_sampling: str = "uniform"
    objective: str = "bound"

    def __post_init__(self):
        if isinstance(self.net, dict):
            self.net = NetConfig(**self.net)
        if self.schedule is None:
            self.schedule = ScheduleConfig(T=self.net.T)
        elif isinstance(self.schedule, dict):
            self.schedule = ScheduleConfig(**self.schedule)
        if self.schedule.T != self.net.T:
            raise ValueError(f"the schedule has T = {self.schedule.T} but the network T = {self.net.T}; "
                             "they must be equal")
        check_choice("parameterization", self.param, PARAMS)
        check_choice("t_sampling", self.t_sampling, T_SAMPLINGS)
        check_choice("objective", self.objective, OBJECTIVES)
        if self.objective != "bound" and self.schedule.learn:
            raise ValueError(f"objective {self.objective!r} reweights the bound's terms by fixed weights of beta; "
                             "it needs a fixed schedule (learn=False)")

    def to_dict(self):
        return {"net": self.net.to_dict(), "schedule": self.schedule.to_dict(), "param": self.param,
                "t_sampling": self.t_sampling, "objective": self.objective}

    @classmethod
    def from_dict(cls, d, net=None):
        """The configuration of a :meth:`to_dict` dict (one without ``t_sampling`` trained uniform, one
        without ``objective`` on the bound); ``net``, if given, is the network's configuration object,
        for networks other than :class:`NetConfig`."""
        return cls(net=dict(d["net"]) if net is None else net, schedule=dict(d["schedule"]), param=d["param"],
                   t_sampling=d.get("t_sampling", "uniform"), objective=d.get("objective", "bound"))


class Schedule(NamedTuple):
    tables: dict                              # name -> (T + 1,) array on the backend
    tables_cache: object                      # TablesCache, for tables_backward
    schedule_cache: object                    # DecrementsCache, BumpsCache, or None (fixed schedule)


class GaussianDiffusion:
    """The model: its configuration, network and fixed tables; it holds no parameters.

    ``params`` is any mapping name -> array (e.g. a :class:`ParamVector`'s views);
    the backend and the network's dtype are those of the parameters (:meth:`backend`).
    """

    network_class = Network                                               # what cfg.net configures

    def __init__(self, cfg):
        self.cfg = cfg
        self.D, self.T = cfg.net.D, cfg.net.T
        self.net = self.network_class(cfg.net)
        self._fixed = {}                                                  # fixed-schedule tables by backend
        self._lambda = None                                               # objective_weights(), made once

    def init_params(self, rng, dtype=numpy.float64):
        """Initial parameters (host arrays): the network's (its readout starts at zero, so
        ``z = 0``), plus ``schedule.w`` reproducing the baseline when ``beta`` is learned."""
        params = self.net.init_params(rng, dtype)
        if self.cfg.schedule.learn:
            params["schedule.w"] = init_schedule_params(self.cfg.schedule).astype(dtype)
        return params

    def config(self):
        """The configuration as a JSON-able dict (for checkpoints)."""
        return self.cfg.to_dict()

    @classmethod
    def from_config(cls, d):
        """The model of a :meth:`config` dict."""
        return cls(ModelConfig.from_dict(d))

    def backend(self, params):
        """``(xp, dtype)``: the array module and the network's dtype, those of the parameters
        (every array of a parameter set shares them)."""
        W = params[next(iter(params.keys()))]
        return array_module(W), W.dtype

    def schedule(self, params):
        """The :class:`Schedule` at these parameters: ``beta`` from :mod:`schedule`, then its
        tables (a fixed schedule's are built once per backend)."""
        xp, _ = self.backend(params)
        if self.cfg.schedule.learn:
            beta, schedule_cache = schedule_forward(self.cfg.schedule, params["schedule.w"])
            return Schedule(*tables_forward(beta, xp=xp), schedule_cache)
        if xp.__name__ not in self._fixed:
            beta, schedule_cache = schedule_forward(self.cfg.schedule)
            self._fixed[xp.__name__] = Schedule(*tables_forward(beta, xp=xp), schedule_cache)
        return self._fixed[xp.__name__]

    def tables(self, params):
        """The schedule's tables (:func:`~numpy_diffusion.gaussian.tables.tables_forward`) at these parameters."""
        return self.schedule(params).tables

    def predict(self, params):
        """The network as ``(xt float64 (N, D), t (N,)) -> z (N, 2 D)``."""
        _, dtype = self.backend(params)
        return lambda xt, t: self.net.forward(xt.astype(dtype, copy=False), t, params)[0]

    def _check_x0(self, x0, xp, name="x0"):
        check_array(name, x0, shape=(None, self.D))
        if x0.shape[0] == 0:
            raise ValueError(f"{name} is empty (shape {tuple(x0.shape)}); give at least one row")
        return to_device(x0, xp).astype(xp.float64, copy=False)

    def _check_batch(self, params, x0, t, eps, weights):
        xp, _ = self.backend(params)
        x0 = self._check_x0(x0, xp)
        N = x0.shape[0]
        check_array("eps", eps, shape=x0.shape)
        check_array("weights", weights, shape=(N,))
        t = to_device(check_steps("t", t, 2, self.T, shape=(N,)), xp)
        return x0, t, to_device(eps, xp).astype(xp.float64, copy=False), \
            to_device(weights, xp).astype(xp.float64, copy=False)

    def loss_and_grads(self, params, x0, t, eps, weights):
        """The training objective (:meth:`objective_weights`; for the bound ``-mean(K_hat)``, nats per
        data point, a float) and its gradient, grads keyed like params.

        Parameters
        ----------
        params : mapping name -> ndarray
        x0 : ndarray of shape (N, D), data
        t : int ndarray of shape (N,), values in ``2..T``
        eps : ndarray of shape (N, D), frozen noise
        weights : ndarray of shape (N,), ``lambda_t / P(t_n)`` (:meth:`draw`): ``T - 1`` for the
            bound with uniform ``t``, where the loss is ``-mean(K_hat)``; other objectives reweight
            the KL terms, and their loss is not ``-K``
        """
        x0, t, eps, weights = self._check_batch(params, x0, t, eps, weights)
        xp, dtype = self.backend(params)
        learn = self.cfg.schedule.learn
        tables, tables_cache, schedule_cache = self.schedule(params)          # §2.4.1
        xt, q_cache = q_sample_forward(x0, t, eps, tables)                    # frozen eps
        z, net_cache = self.net.forward(xt.astype(dtype, copy=False), t, params)
        loss, b_cache = bound_forward(z, x0, xt, t, weights, tables, param=self.cfg.param)
        dz, dxt, dtables = bound_backward(1.0, b_cache)
        dxt_net, grads = self.net.backward(dz, net_cache, need_dxt=learn)
        if learn:                                                             # beta through x_t too
            dtables = add_grads(dtables, q_sample_backward(dxt + dxt_net, q_cache))
            dbeta = tables_backward(dtables, tables_cache)
            grads["schedule.w"] = xp.asarray(schedule_backward(dbeta, schedule_cache), dtype=dtype)
        return float(loss), grads

    def t_probabilities(self):
        """``P(t)`` of the training draw (``cfg.t_sampling``): a host array (T + 1,), zero at ``t = 0, 1``.

        The bound sums ``T - 1`` KL terms; a minibatch estimates the sum by
        ``KL_t / P(t)`` at drawn steps (``weights`` in :func:`~.bound.bound_forward`),
        unbiased, and so is its gradient, for any ``P`` positive on ``2..T`` that does
        not depend on the parameters.  Uniform ``P`` weighs every step alike.  The terms
        are far from alike: on dead leaves they fall roughly as ``1 / t`` (the
        bound_by_t.png that ``demos/dead_leaves.py`` writes; half the sum lies below
        ``t = 50`` of 1,000), where a uniform draw puts 4.9 % of a minibatch.
        ``'log-uniform'``, ``P(t) ∝ 1 / t``, puts 54 % there: the same objective, its
        estimate less variable where the terms are ``∝ 1 / t`` (measured through the
        bound it reaches, not the gradient variance itself).
        """
        P = numpy.zeros(self.T + 1)
        if self.cfg.t_sampling == "uniform":
            P[2:] = 1.0
        else:
            P[2:] = 1.0 / numpy.arange(2, self.T + 1)
        return P / P.sum()

    def objective_weights(self):
        """``lambda_t``, the weight of each KL term in the training objective: a host array (T + 1,).

        The objective is ``sum_t lambda_t E_q[KL_t] - H`` (``H`` the entropies of eq. 14).  For
        ``'bound'``, ``lambda_t = 1``: ``-K`` itself.  For ``'simple'`` (Ho et al. 2020), with a
        fixed variance ``Sigma_t = beta_t`` and the ``'eps'`` mean, ``KL_t = w_t |eps - eps_theta|^2
        + const`` per example, ``w_t = beta_t^2 / (2 Sigma_t alpha_t (1 - alpha_bar_t))`` (DDPM's
        eq. 12; :mod:`reverse`), and DDPM trains on ``|eps - eps_theta|^2`` averaged over ``t``:
        ``lambda_t = 1 / ((T - 1) w_t)``, ``w_t = beta_t / (2 alpha_t (1 - alpha_bar_t))``.  These
        weights are fixed numbers, so with a learned variance or another mean the objective is
        still the bound's terms reweighted: relative to the bound it stresses large ``t`` (on a
        linear schedule from ``1e-5`` to ``0.02`` at ``T = 1000``, ``1 / w_t`` grows from 2.7 at
        ``t = 2`` to about 100 from ``t = 100`` on).  It is biased as an estimate of ``-K``; evaluation reports ``K``.
        ``'hybrid'`` adds the bound with weight :data:`HYBRID_BOUND_WEIGHT` (after Nichol & Dhariwal
        2021's ``L_simple + lambda L_vlb``): ``lambda_t = 1 / ((T - 1) w_t) + 0.01``, the bound's
        weight where ``t`` is small (``1 / ((T - 1) w_t) < 0.01`` up to ``t`` of about 10 on that
        schedule), the simplified loss's above.
        """
        if self._lambda is None:
            lam = numpy.zeros(self.T + 1)
            if self.cfg.objective == "bound":
                lam[2:] = 1.0
            else:
                tab = tables_forward(schedule_forward(self.cfg.schedule)[0])[0]
                w = tab["beta"][2:] / (2 * tab["alpha"][2:] * tab["one_minus_alpha_bar"][2:])   # DDPM (12), Sigma = beta
                lam[2:] = 1.0 / ((self.T - 1) * w)
                if self.cfg.objective == "hybrid":
                    lam[2:] += HYBRID_BOUND_WEIGHT
            self._lambda = lam
        return self._lambda

    def draw(self, rng, N):
        """``(t, eps, weights)`` for a batch, host arrays: ``t`` (N,) from :meth:`t_probabilities`
        (``2..T``), ``eps`` (N, D) standard normal, ``weights = lambda_t / P(t)``
        (:meth:`objective_weights`; for the bound and uniform ``t``, ``T - 1``)."""
        if self.cfg.t_sampling == "uniform":                                  # the random stream runs
            t = rng.integers(2, self.T + 1, size=N)                           # have always drawn
            weights = numpy.full(N, float(self.T - 1))
        else:
            P = self.t_probabilities()
            t = rng.choice(self.T + 1, size=N, p=P)
            weights = 1.0 / P[t]
        eps = rng.standard_normal((N, self.D))
        return t, eps, (weights if self.cfg.objective == "bound" else weights * self.objective_weights()[t])

    def loss_and_grads_random(self, params, x0, rng):
        """:meth:`loss_and_grads` with ``t`` and ``eps`` drawn from ``rng``."""
        return self.loss_and_grads(params, x0, *self.draw(rng, x0.shape[0]))

    def p_mean_logvar(self, params, xt, t):
        """Reverse-kernel mean and log-variance at ``(xt (N, D), t)``, ``t`` an int or (N,) ints in 2..T."""
        xp, _ = self.backend(params)
        xt = self._check_x0(xt, xp, "x_t")
        if numpy.ndim(t) == 0:
            t = numpy.full(xt.shape[0], check_steps("t", t, 2, self.T), dtype=numpy.int64)
        else:
            check_steps("t", t, 2, self.T, shape=(xt.shape[0],))
        t = to_device(t, xp)
        (mu_p, logvar_p), _ = p_mean_logvar_forward(self.predict(params)(xt, t), xt, t, self.tables(params),
                                                    param=self.cfg.param)
        return mu_p, logvar_p

    def evaluate(self, params, x0, rng, n_eps=1, chunk=8192):
        """Held-out bound: all ``t`` summed, Monte Carlo over ``eps`` (``n_eps`` draws).

        ``K`` is eq. (14) as the paper computes it; ``K_exact`` the exact per-example
        bound, equal to it on average over unit-variance data (see :mod:`bound`).

        Returns a dict of floats and host arrays: from
        :func:`~numpy_diffusion.bits.table1_report`, ``K_nats``, ``K_bits``, ``K_bits_stderr``,
        ``L_null_bits`` (mean ``log2 pi(x0)``), ``K_minus_L_null_bits`` and its stderr; and
        ``K_exact_bits``, ``kl_bits_by_t`` (T + 1,), ``H_q_T_bits``, ``H_q_1_bits``, ``H_p_T_bits``,
        ``K_per_example_nats`` (N,), ``n_eps``.
        """
        xp, _ = self.backend(params)
        n_eps, chunk = check_positive_int("n_eps", n_eps), check_positive_int("chunk", chunk)
        x0 = self._check_x0(x0, xp)
        res = bound_all_t(self.predict(params), x0, self.tables(params), rng, param=self.cfg.param, n_eps=n_eps,
                          chunk=chunk)
        K = to_host(res["K"])                                                 # (N,) nats
        out = table1_report(K, to_host(standard_normal_logpdf(x0)))          # L_null: log pi(x0), Table 1
        out.update({"K_exact_bits": float(to_host(res["K_exact"]).mean()) / LN2,
                    "kl_bits_by_t": to_host(res["kl_by_t"]) / LN2, "K_per_example_nats": K, "n_eps": n_eps})
        out.update({k + "_bits": res[k] / LN2 for k in ("H_q_T", "H_q_1", "H_p_T")})
        return out

    def sample(self, params, n, rng, *, trajectory=False):
        """``n`` samples of ``p(x_0)`` (float64, backend of params); with ``trajectory``, also
        every ``x_t`` as (T + 1, n, D), index ``t``.  See :func:`reverse.p_sample_loop`."""
        n = check_positive_int("n", n)
        xp, _ = self.backend(params)
        return p_sample_loop(self.predict(params), n, self.D, self.tables(params), rng, param=self.cfg.param,
                             trajectory=trajectory, xp=xp)


def swiss_roll_model(*, net="mlp", param="bounded", learn_beta=True, beta_1=1e-7, basis=None, n_bumps=10,
                     fourier=128, fourier_scale=10.0):
    """The swiss-roll model (§3.1.1) as the demo trains it by default; keywords change one choice.

    The default: a 2 -> (x, sin xB, cos xB: 128 fixed random Fourier frequencies, ``B ~ N(0, 10^2)``)
    -> 128 -> 128 tanh MLP; a readout over 10 Gaussian bumps in ``t`` (eqs. 62-63); ``T = 40``;
    ``beta_1 = 1e-7``; a schedule linear in log SNR from ``beta_1`` to ``log_snr_T = -4`` whose
    steps are learned with both ends fixed (``'decrements'``, §2.4.1); the ``'bounded'``
    variance with the reference code's mean.  ``net='rbf'`` is the paper's network
    (16 normalized RBF units, App. D.1.1), with one readout per step unless ``basis`` says.
    """
    if net == "rbf":
        net_cfg = NetConfig(D=2, T=40, net="rbf", hidden=(16,), basis=basis or "identity", n_bumps=n_bumps)
    else:
        net_cfg = NetConfig(D=2, T=40, net=net, hidden=(128, 128), activation="tanh", basis=basis or "bump",
                            n_bumps=n_bumps, fourier=fourier, fourier_scale=fourier_scale)
    sched = ScheduleConfig(T=40, beta_1=beta_1, baseline="logsnr", log_snr_T=-4.0, learn=learn_beta,
                           learned_form="decrements")
    return GaussianDiffusion(ModelConfig(net=net_cfg, schedule=sched, param=param))
