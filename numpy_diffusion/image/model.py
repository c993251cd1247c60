"""Gaussian diffusion on images (§3.2, App. D.2.1): the image networks in the Gaussian model,
and the held-out bound with the time steps stratified.

The Gaussian diffusion (:mod:`numpy_diffusion.gaussian.model`) is the same for
images as for the swiss roll; only its network differs.  :class:`ImageDiffusion`
is the Gaussian model holding the paper's :class:`~.network.ImageNetwork` or the
time-conditioned :class:`~.unet.UNet`.

Summing all ``T - 1`` steps of eq. (14) for every held-out image costs ``T - 1``
network passes per image (999 at the paper's ``T = 1000``).
:func:`bound_stratified` instead splits ``2..T`` into ``n_strata`` runs of
consecutive steps and draws one ``t`` uniformly in each, weighted by the run's
length: an unbiased estimate of each image's bound, whose spread over images
(reported as the standard error) includes the spread over ``t``.
"""
import numpy

from ..backend import array_module, to_host
from ..bits import LN2, table1_report
from ..gaussian.bound import entropy_sum, entropy_terms, kl_forward, standard_normal_logpdf
from ..gaussian.forward import q_posterior_forward, q_sample_forward
from ..gaussian.model import GaussianDiffusion, ModelConfig
from ..gaussian.reverse import p_mean_logvar_forward
from ..gaussian.schedule import ScheduleConfig
from ..validation import check_positive_int
from .network import ImageNetConfig, ImageNetwork
from .unet import UNet, UNetConfig


NETWORKS = {"image": ImageNetwork, "unet": UNet}                # a network config's "kind" -> its class


class ImageDiffusion(GaussianDiffusion):
    """:class:`GaussianDiffusion` whose network is an image network: the paper's
    (``cfg.net`` an :class:`ImageNetConfig`) or the time-conditioned U-Net (a :class:`UNetConfig`);
    training, evaluation and sampling are the Gaussian model's."""

    def __init__(self, cfg):
        self.network_class = UNet if isinstance(cfg.net, UNetConfig) else ImageNetwork
        super().__init__(cfg)

    def config(self):
        """The model's configuration, its network's with the network's ``kind``."""
        return {**self.cfg.to_dict(), "net": self.net.config()}

    @classmethod
    def from_config(cls, d):
        """The model of a :meth:`config` dict (a network config without ``kind`` is the paper's)."""
        net = NETWORKS[d["net"].get("kind", "image")]
        return cls(ModelConfig.from_dict(d, net=net.from_config(d["net"]).cfg))


def image_model(net, *, beta_1=1e-3, param="paper", learn_beta=False, t_sampling="uniform", objective="bound",
                baseline="reference", beta_T=0.5):
    """The image model: ``net`` an :class:`ImageNetConfig` or a :class:`UNetConfig`, a fixed ``beta_1``
    and a schedule: by default the reference code's (``beta_t = 1 / (T - t + 1)``, ending at 1/2, with
    ``beta_1`` its ``step1_beta``), or ``baseline='linear'`` from ``beta_1`` to ``beta_T`` (DDPM's, with
    ``beta_T = 0.02``); training draws ``t`` by ``t_sampling`` (:meth:`GaussianDiffusion.t_probabilities`)
    and minimizes ``objective`` (:meth:`GaussianDiffusion.objective_weights`)."""
    sched = ScheduleConfig(T=net.T, beta_1=beta_1, baseline=baseline, beta_T=beta_T, learn=learn_beta)
    return ImageDiffusion(ModelConfig(net=net, schedule=sched, param=param, t_sampling=t_sampling,
                                      objective=objective))


def strata(T, n_strata):
    """Edges ``e_0 = 2 < e_1 < ... = T + 1`` splitting ``2..T`` into runs ``[e_k, e_{k+1})``
    whose lengths grow geometrically: int64 array of shape (S + 1,).

    ``S`` is at most ``n_strata``: rounding merges the shortest runs, so the first
    steps may stand alone and fewer runs come back (29 for 30 at ``T = 1000``).  With
    ``n_strata >= T - 1`` every step is a run of its own (``S = T - 1``).

    The KL terms are largest and vary most at small ``t``, where ``beta_t`` is
    smallest; short runs there take that variation out of the estimate.
    """
    if check_positive_int("n_strata", n_strata) >= T - 1:
        return numpy.arange(2, T + 2)                                             # every step alone
    return numpy.unique(numpy.geomspace(2, T + 1, n_strata + 1).round().astype(numpy.int64))


def bound_stratified(model, params, x0, rng, n_strata=50, chunk=256):
    """Held-out eq. (14) per image, ``t`` stratified (module docstring), in nats.

    Parameters
    ----------
    model : GaussianDiffusion (or :class:`ImageDiffusion`)
    params : mapping name -> ndarray
    x0 : float64 ndarray of shape (N, D), on the parameters' backend
    rng : numpy.random.Generator: the steps ``t`` of every image, then the noise ``eps``
        image by image, so the result does not depend on ``chunk``
    n_strata : int, steps drawn per image, at most (:func:`strata`; ``T - 1`` or more: every
        step once, exact in ``t``)
    chunk : int, network rows per call (images x strata); the network's caches for one
        call (about 1 GB at 1,024 rows of 16 x 16 images) set the peak memory

    Returns
    -------
    dict: ``K`` (N,) host nats per image; ``t`` (N, n_strata) and ``kl`` (N, n_strata)
    the steps drawn and their KL terms (nats, unweighted); ``edges`` the strata; and
    the entropies ``H_q_T``, ``H_q_1``, ``H_p_T`` in nats per image.
    """
    xp, (N, D), T = array_module(x0), x0.shape, model.T
    edges = strata(T, n_strata)
    S, size = edges.size - 1, numpy.diff(edges)
    tables, predict = model.tables(params), model.predict(params)
    t_all = rng.integers(edges[:-1], edges[1:], size=(N, S))                      # one t per stratum  (N, S)
    kls, m = [], max(1, chunk // S)
    for start in range(0, N, m):
        x, t = x0[start:start + m], t_all[start:start + m]
        rows = xp.repeat(x, S, axis=0)                                            # image-major  (m S, D)
        tt = xp.asarray(t.reshape(-1))
        xt, _ = q_sample_forward(rows, tt, xp.asarray(rng.standard_normal(rows.shape)), tables)
        (mu_q, logvar_q), _ = q_posterior_forward(rows, xt, tt, tables)
        (mu_p, logvar_p), _ = p_mean_logvar_forward(predict(xt, tt), xt, tt, tables, param=model.cfg.param)
        kls.append(to_host(kl_forward(mu_q, logvar_q, mu_p, logvar_p)[0].sum(axis=1)).reshape(-1, S))
    H = entropy_terms(tables, D)
    kl = numpy.concatenate(kls)                                                   # (N, S) nats
    K = entropy_sum(H) - kl @ size                                                # eq. (14), stratified
    return {"K": K, "t": t_all, "kl": kl, "edges": edges, **H}


def evaluate_stratified(model, params, x0, rng, n_strata=50, chunk=256):
    """:func:`bound_stratified` reported like Table 1: bits per image and per pixel.

    Returns a dict of floats and host arrays: ``K_bits_per_pixel`` and its standard
    error over images, ``L_null_bits_per_pixel`` (mean ``log2 pi(x0) / D``),
    ``K_minus_L_null_bits_per_pixel`` and its (paired) standard error,
    ``K_per_image_nats`` (N,), ``kl_bits_by_stratum`` (mean KL per step in each
    stratum, bits per image) with ``strata`` its edges, and ``entropy_bits_per_pixel``,
    the three entropy terms of eq. (14).
    """
    res = bound_stratified(model, params, x0, rng, n_strata, chunk)
    D, K = x0.shape[1], res["K"]
    log_pi = to_host(standard_normal_logpdf(x0))                                   # L_null's terms, Table 1
    per_pixel = 1.0 / (D * LN2)
    report = table1_report(K / D, log_pi / D)                                      # Table 1's numbers, per pixel
    out = {name.replace("bits", "bits_per_pixel"): report[name] for name in
           ("K_bits", "K_bits_stderr", "L_null_bits", "K_minus_L_null_bits", "K_minus_L_null_bits_stderr")}
    return {**out, "K_per_image_nats": K, "kl_bits_by_stratum": res["kl"].mean(axis=0) / LN2,
            "strata": res["edges"], "n_strata": int(res["edges"].size - 1),
            "entropy_bits_per_pixel": {k: res[k] * per_pixel for k in ("H_q_T", "H_q_1", "H_p_T")}}
