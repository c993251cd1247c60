"""Gaussian diffusion on images (§3.2, App. D.2.1): the image network in the Gaussian model,
and the held-out bound with the time steps stratified.

The Gaussian diffusion (:mod:`numpy_diffusion.gaussian.model`) is the same for
images as for the swiss roll; only its network differs.  :class:`ImageDiffusion`
is the Gaussian model holding an :class:`~.network.ImageNetwork`.

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


class ImageDiffusion(GaussianDiffusion):
    """:class:`GaussianDiffusion` whose network is the image network (``cfg.net`` an
    :class:`ImageNetConfig`); training, evaluation and sampling are the Gaussian model's."""

    network_class = ImageNetwork

    @classmethod
    def from_config(cls, d):
        return cls(ModelConfig.from_dict(d, net=ImageNetConfig.from_dict(d["net"])))


def image_model(net, *, beta_1=1e-3, param="paper", learn_beta=False, t_sampling="uniform"):
    """The image model: ``net`` an :class:`ImageNetConfig`; the reference code's schedule
    (``beta_t = 1 / (T - t + 1)``, ending at 1/2) with ``beta_1`` fixed (its ``step1_beta``);
    training draws ``t`` by ``t_sampling`` (:meth:`GaussianDiffusion.t_probabilities`)."""
    sched = ScheduleConfig(T=net.T, beta_1=beta_1, baseline="reference", learn=learn_beta)
    return ImageDiffusion(ModelConfig(net=net, schedule=sched, param=param, t_sampling=t_sampling))


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
