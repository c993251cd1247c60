"""Gaussian diffusion, composed: schedule, forward process, network, reverse kernel, bound.

    x0, t, eps --q_sample--> xt --network--> z --p_mean_logvar--> (mu_p, logvar_p)
    (x0, xt) --q_posterior--> (mu_q, logvar_q);  KL + entropies --> K (eq. 14)

``loss_and_grads`` is pure: frozen ``t`` and ``eps`` in, ``(loss, grads)`` out,
grads keyed like params (network parameters, plus ``schedule.w`` when ``beta``
is learned, §2.4.1).  The bound runs in float64 whatever the network's dtype.
"""
import math
from dataclasses import dataclass, field

import numpy

from ..backend import array_module, to_device, to_host
from .bound import bound_backward, bound_exact, bound_forward, bound_xt_backward, standard_normal_logpdf
from ..bits import standard_error
from .forward import q_sample
from ..nn.network import NetConfig, init_network, network_backward, network_forward, temporal_basis
from .reverse import PARAMS, p_mean_logvar, p_sample_loop
from .schedule import ScheduleConfig, init_schedule_params, schedule_backward, schedule_forward
from .tables import add_grads, make_tables, tables_backward
from ..validation import check_array, check_choice, check_positive_int

LN2 = math.log(2.0)


@dataclass
class ModelConfig:
    """Network, schedule and reverse-kernel parameterization (``'paper'``, ``'reference'``,
    ``'bounded'``; see :mod:`reverse_process`).  The schedule defaults to ``T = net.T``."""
    net: NetConfig = field(default_factory=NetConfig)
    schedule: ScheduleConfig = None
    param: str = "bounded"

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

    def to_dict(self):
        return {"net": self.net.to_dict(), "schedule": self.schedule.to_dict(), "param": self.param}

    @classmethod
    def from_dict(cls, d):
        return cls(net=dict(d["net"]), schedule=dict(d["schedule"]), param=d["param"])


def init_params(cfg, rng, dtype=numpy.float64):
    """Initial parameters (host arrays): the network's (outputs ``z = 0`` at start, see
    :func:`network.init_network`), plus ``schedule.w`` (reproducing the baseline schedule) when ``beta`` is learned."""
    params = init_network(cfg.net, rng, dtype)
    if cfg.schedule.learn:
        params["schedule.w"] = init_schedule_params(cfg.schedule).astype(dtype)
    return params


class GaussianDiffusion:
    """The model: holds the configuration and caches (temporal basis, fixed tables); no parameters.

    ``params`` is any mapping name -> array (e.g. a :class:`ParamVector`); the backend
    and the network's dtype are those of ``params["readout.W"]``.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self._cache = {}

    def init_params(self, rng, dtype=numpy.float64):
        return init_params(self.cfg, rng, dtype)

    def config(self):
        """The configuration as a JSON-able dict (for checkpoints)."""
        return self.cfg.to_dict()

    @classmethod
    def from_config(cls, d):
        """The model of a :meth:`config` dict."""
        return cls(ModelConfig.from_dict(d))

    def _backend(self, params):
        W = params["readout.W"]
        return array_module(W), W.dtype

    def _basis(self, xp, dtype):
        key = ("G", xp.__name__, numpy.dtype(dtype).str)
        if key not in self._cache:
            self._cache[key] = temporal_basis(self.cfg.net, xp, dtype)
        return self._cache[key]

    def tables(self, params):
        """``(tables, schedule_cache)`` for these parameters (fixed tables are built once)."""
        xp, _ = self._backend(params)
        sched = self.cfg.schedule
        if sched.learn:
            beta, s_cache = schedule_forward(sched, params["schedule.w"])
            return make_tables(beta, xp), s_cache
        key = ("tables", xp.__name__)
        if key not in self._cache:
            beta, s_cache = schedule_forward(sched)
            self._cache[key] = (make_tables(beta, xp), s_cache)
        return self._cache[key]

    def predict(self, params):
        """The network as ``(xt float64 (N, D), t (N,)) -> z (N, 2 D)``."""
        xp, dtype = self._backend(params)
        G = self._basis(xp, dtype)
        return lambda xt, t: network_forward(params, xt.astype(dtype, copy=False), t, self.cfg.net, G)[0]

    def _check_x0(self, x0, xp):
        check_array("x0", x0, shape=(None, self.cfg.net.D))
        return to_device(x0, xp).astype(xp.float64, copy=False)

    def _check_batch(self, params, x0, t, eps, weights):
        xp, _ = self._backend(params)
        x0 = self._check_x0(x0, xp)
        N, T = x0.shape[0], self.cfg.net.T
        check_array("eps", eps, shape=x0.shape)
        check_array("weights", weights, shape=(N,))
        check_array("t", t, shape=(N,))
        t = to_device(t, xp)
        if t.dtype.kind not in "iu" or bool(((t < 2) | (t > T)).any()):
            raise ValueError(f"t must hold integers in 2..{T} (the learned steps), got dtype {t.dtype} "
                             f"with values in [{t.min()}, {t.max()}]")
        return x0, t, to_device(eps, xp).astype(xp.float64, copy=False), \
            to_device(weights, xp).astype(xp.float64, copy=False)

    def loss_and_grads(self, params, x0, t, eps, weights, workspace=None):
        """Loss ``-mean(K_hat)`` (nats per data point, a float) and its gradient, grads keyed like params.

        Parameters
        ----------
        params : mapping name -> ndarray
        x0 : ndarray of shape (N, D), data
        t : int ndarray of shape (N,), values in ``2..T``
        eps : ndarray of shape (N, D), frozen noise
        weights : ndarray of shape (N,), ``1 / P(t_n)`` (``T - 1`` for uniform ``t``)
        workspace : Workspace, optional, reused by the network from call to call
            (:mod:`~numpy_diffusion.workspace`); nothing returned lives in it.
        """
        x0, t, eps, weights = self._check_batch(params, x0, t, eps, weights)
        xp, dtype = self._backend(params)
        tables, s_cache = self.tables(params)
        xt = q_sample(x0, t, eps, tables)                                 # §2.4.1, frozen eps
        z, n_cache = network_forward(params, xt.astype(dtype, copy=False), t, self.cfg.net,
                                     self._basis(xp, dtype), workspace)
        loss, b_cache = bound_forward(z, x0, xt, t, eps, weights, tables, self.cfg.param)
        dz, dxt, dtables = bound_backward(1.0, b_cache)
        grads, dxt_net = network_backward(dz, n_cache, self.cfg.schedule.learn, workspace)
        if self.cfg.schedule.learn:                                       # beta through x_t too
            dtables = add_grads(dtables, bound_xt_backward(dxt + dxt_net, b_cache))
            dw = schedule_backward(tables_backward(dtables, tables), s_cache)
            grads["schedule.w"] = xp.asarray(dw, dtype=dtype)
        return float(loss), grads

    def draw(self, rng, N):
        """``(t, eps, weights)`` for a batch: ``t`` uniform on ``2..T``, weight ``T - 1``; host arrays."""
        T, D = self.cfg.net.T, self.cfg.net.D
        t = rng.integers(2, T + 1, size=N)
        return t, rng.standard_normal((N, D)), numpy.full(N, float(T - 1))

    def loss_and_grads_random(self, params, x0, rng):
        """:meth:`loss_and_grads` with ``t`` and ``eps`` drawn from ``rng``."""
        return self.loss_and_grads(params, x0, *self.draw(rng, x0.shape[0]))

    def p_mean_logvar(self, params, xt, t):
        """Reverse-kernel mean and log-variance at ``(xt (N, D), t)``, ``t`` an int or (N,) ints in 2..T."""
        xp, _ = self._backend(params)
        xt = self._check_x0(xt, xp)
        t = xp.full(xt.shape[0], t, dtype=xp.int64) if numpy.ndim(t) == 0 else to_device(t, xp)
        mu_p, logvar_p, _ = p_mean_logvar(self.predict(params)(xt, t), xt, t, self.tables(params)[0],
                                          self.cfg.param)
        return mu_p, logvar_p

    def evaluate(self, params, x0, rng, n_eps=1, chunk=8192):
        """Held-out bound: all ``t`` summed, Monte Carlo over ``eps`` (``n_eps`` draws).

        Returns a dict of floats and host arrays: ``K_nats``, ``K_bits`` (mean per data
        point), ``K_bits_stderr`` (standard error over examples), ``L_null_bits`` (mean
        ``log N(x0; 0, I)``), ``K_minus_L_null_bits`` and its stderr, ``kl_bits_by_t``
        (T + 1,), ``H_q_T_bits``, ``H_q_1_bits``, ``H_p_T_bits``, ``K_per_example_nats`` (N,).
        """
        xp, _ = self._backend(params)
        n_eps, chunk = check_positive_int("n_eps", n_eps), check_positive_int("chunk", chunk)
        x0 = self._check_x0(x0, xp)
        res = bound_exact(self.predict(params), x0, self.tables(params)[0], self.cfg.param, rng, n_eps, chunk)
        K = to_host(res["K"])                                             # (N,) nats
        log_pi = to_host(standard_normal_logpdf(x0))                     # log pi(x0), eq. (4): L_null terms
        gain = K - log_pi                                                 # paired, for its standard error
        out = {"K_nats": float(K.mean()), "K_bits": float(K.mean()) / LN2,
               "K_bits_stderr": standard_error(K) / LN2, "L_null_bits": float(log_pi.mean()) / LN2,
               "K_minus_L_null_bits": float(gain.mean()) / LN2,
               "K_minus_L_null_bits_stderr": standard_error(gain) / LN2,
               "kl_bits_by_t": to_host(res["kl_by_t"]) / LN2, "K_per_example_nats": K, "n_eps": n_eps}
        out.update({k + "_bits": res[k] / LN2 for k in ("H_q_T", "H_q_1", "H_p_T")})
        return out

    def sample(self, params, n, rng, trajectory=False):
        """``n`` samples of ``p(x_0)`` (float64, backend of params); with ``trajectory``, also
        every ``x_t`` as (T + 1, n, D), index ``t``.  See :func:`reverse_process.p_sample_loop`."""
        n = check_positive_int("n", n)
        xp, _ = self._backend(params)
        return p_sample_loop(self.predict(params), n, self.cfg.net.D, self.tables(params)[0],
                             self.cfg.param, rng, trajectory, xp)
