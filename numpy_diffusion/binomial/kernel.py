"""Binomial diffusion's kernels and bound (§2.4.1, Table App.1, App. B, App. D.1.2).

The forward kernel of Table App.1, with noise rate ``pi`` in place of the table's 0.5::

    q(x_t | x_{t-1}) = T_pi(x_t | x_{t-1}; beta_t) = B(x_t; x_{t-1} (1 - beta_t) + pi beta_t)

and the reverse kernel ``p(x_{t-1} | x_t) = B(x_{t-1}; sigma(logit_p))``, over the tables of
:mod:`.schedule`.  The same names as the Gaussian wing, for the same quantities: the
pairs ``kl_forward`` / ``kl_backward`` and ``bound_forward`` / ``bound_backward``,
``entropy_terms``, ``entropy_sum``, ``bound_all_t``, ``log_pi``, ``p_sample_loop``.
``x_t`` is binary and the schedule fixed, so no gradient flows through the forward
process: ``q_sample`` and ``q_posterior`` are plain functions here, not pairs, and the
only gradient is the one with respect to the reverse kernel's logits.  Information is
in nats.

**The bound**, eq. (14) per example::

    K = - sum_{t=2..T} E_q[ KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) ]
        + H_q(X_T|X_0) - H_q(X_1|X_0) - H_p(X_T).

The sum starts at ``t = 2`` because the last reverse step is not learned:
``p(x_0|x_1)`` is the forward kernel reversed under ``pi`` (App. B.2, eq. (44); see
:func:`kernel_logit`), so its term ``log p(x_0|x_1) - log q(x_1|x_0)`` is
``log pi(x_0) - log pi(x_1)`` (eqs. (45)-(46)) and contributes no KL.

**What eq. (14) replaces.**  The exact bound keeps ``E_q log pi(x_T) + log pi(x_0) -
E_q log pi(x_1)`` where eq. (14) writes ``-H_p(X_T)``.  With ``log pi(x) = x logit(pi) +
log(1 - pi)`` per bit and ``E_q x_t = pi + (x_0 - pi) alpha_bar_t`` the two differ by
``(1 - alpha_bar_1 + alpha_bar_T) logit(pi) sum_d (x0_d - pi)`` per example
(:func:`edge_terms`): zero in expectation when the data's mean is ``pi``, and zero for
every heartbeat sequence (four ones in twenty bits, ``pi = 0.2``).  Training uses
eq. (14), as the paper does; :func:`bound_all_t` also returns the exact ``K_exact``.
"""
from typing import NamedTuple

import numpy

from ..backend import array_module, to_host
from ..nn.layers import sigmoid, softplus
from ..validation import check_array


def check_binary(name, x, D=None):
    """``x`` must be an (N, D) array of 0s and 1s.  Returns it."""
    check_array(name, x, ndim=2, shape=None if D is None else (None, D))
    if not bool(((x == 0) | (x == 1)).all()):
        raise ValueError(f"{name} must be binary (every entry 0 or 1) for binomial diffusion; "
                         f"got values such as {float(x[(x != 0) & (x != 1)][0])!r}")
    return x


def check_uniform(u, shape):
    """``u`` must be an array of ``shape`` with every entry in [0, 1).  Returns it."""
    check_array("u", u, shape=shape, finite=False)
    bad = ~((u >= 0) & (u < 1))                                        # NaN fails both tests
    if bool(bad.any()):
        raise ValueError(f"u (the frozen uniform noise) must lie in [0, 1), got {float(u[bad][0])!r}")
    return u


def _pick(table, t, x):
    """``table[t_n, x_nd]`` for binary ``x`` (N, D) and steps ``t`` (N,): a gather by ``where``."""
    xp = array_module(x)
    return xp.where(x > 0.5, table[t, 1][:, None], table[t, 0][:, None])   # (N, D)


def q_sample(x0, t, u, tables):
    """``x_t = [u < q(x_t = 1 | x_0)]`` from frozen uniform noise ``u`` in [0, 1) (N, D).

    The marginal is the closed form of :func:`.schedule.marginal_logs`.  ``x_t`` is binary, so
    nothing differentiates through it: there is no backward.
    """
    return (u < _pick(tables["rate_marginal"], t, x0)).astype(x0.dtype)   # (N, D)


def q_posterior(x0, xt, t, tables):
    """``logit_q``, the logit of ``q(x_{t-1} = 1 | x_t, x_0)`` for ``t >= 2`` (N, D).

    Bayes' rule in log-odds (derived, not printed in the paper):
    ``logit q(x_{t-1} = 1 | x_0) + log q(x_t | x_{t-1} = 1) / q(x_t | x_{t-1} = 0)``.
    """
    return _pick(tables["logit_marginal"], t - 1, x0) + _pick(tables["llr"], t, xt)   # (N, D)


def kernel_logit(xt, t, tables):
    """Logit of the forward kernel reversed under ``pi``, ``T_pi(x_{t-1} = 1 | x_t; beta_t)`` (N, D).

    The binomial kernel obeys detailed balance, ``pi(0) q(1|0) = pi(1) q(0|1)
    = pi (1 - pi) beta``, so the reversed kernel ``q(x_t|x_{t-1}) pi(x_{t-1}) /
    pi(x_t)`` is the forward kernel itself: rate ``x_t (1 - beta_t) + pi beta_t``.
    """
    return _pick(tables["logit_kernel"], t, xt)                        # (N, D)


def p_logit(z, xt, t, tables):
    """The reverse kernel's logit ``logit_p = z + logit T_pi(x_{t-1} = 1 | x_t; beta_t)``, float64.

    A network output ``z = 0`` gives the forward kernel reversed (see :func:`kernel_logit`).
    Linear in ``z`` with slope 1, so ``dz = dlogit_p``.
    """
    return z.astype(numpy.float64) + kernel_logit(xt, t, tables)       # (N, D)


class KLCache(NamedTuple):
    rate_q: object                            # (N, D) sigma(logit_q)
    rate_p: object                            # (N, D) sigma(logit_p)
    logit_diff: object                        # (N, D) logit_q - logit_p


def kl_forward(logit_q, logit_p):
    """``KL(B(sigma(logit_q)) || B(sigma(logit_p)))`` in nats, elementwise, from logits.

    ``KL = softplus(logit_p) - softplus(logit_q) - sigma(logit_q) (logit_p - logit_q)``
    (the two-state sum ``r log(r / s) + (1 - r) log((1 - r) / (1 - s))`` with
    ``log r = -softplus(-logit_q)``, and so on).  Returns ``(KL (N, D), KLCache)``.
    """
    rate_q = sigmoid(logit_q)
    KL = softplus(logit_p) - softplus(logit_q) - rate_q * (logit_p - logit_q)   # (N, D)
    return KL, KLCache(rate_q, sigmoid(logit_p), logit_q - logit_p)


def kl_backward(dKL, cache):
    """Gradients ``(dlogit_q, dlogit_p)`` of the Bernoulli KL."""
    rate_q, rate_p, logit_diff = cache
    dlogit_q = dKL * rate_q * (1 - rate_q) * logit_diff               # dKL/dl_q = r_q (1 - r_q)(l_q - l_p)
    dlogit_p = dKL * (rate_p - rate_q)                                # dKL/dl_p = r_p - r_q
    return dlogit_q, dlogit_p


def entropy_terms(x0, tables):
    """The three entropies of eq. (14) per example, nats: a dict of ``H_q_T``, ``H_q_1``, ``H_p_T`` (N,).

    ``H_q(X_T|X_0)`` and ``H_q(X_1|X_0)`` are sums of binary entropies that depend on
    each bit of ``x_0``; ``H_p(X_T) = D H(pi)`` is the same for every example.
    """
    xp = array_module(x0)
    by_bit = lambda H: xp.where(x0 > 0.5, float(H[1]), float(H[0])).sum(1)   # sum over d   (N,)
    return {"H_q_T": by_bit(tables["H_q_T"]), "H_q_1": by_bit(tables["H_q_1"]),
            "H_p_T": xp.full(x0.shape[0], x0.shape[1] * tables["H_p_T"])}


def entropy_sum(H):
    """``H_q(X_T|X_0) - H_q(X_1|X_0) - H_p(X_T)``: the last line of eq. (14)."""
    return H["H_q_T"] - H["H_q_1"] - H["H_p_T"]


def edge_terms(x0, tables):
    """Exact per-example bound less eq. (14), nats (N,): see the module docstring."""
    abar, pi = tables["alpha_bar"], tables["pi"]
    logit_pi = float(tables["log_pi_state"][1] - tables["log_pi_state"][0])
    return (1 - float(abar[1]) + float(abar[-1])) * logit_pi * (x0 - pi).sum(1)   # (N,)


class BoundCache(NamedTuple):
    kl: KLCache                               # the Bernoulli KL's cache
    weights: object                           # (N,) the examples' weights


def bound_forward(logit_p, x0, xt, t, weights, tables):
    """Training loss ``-mean(K_hat)`` (nats per sequence) from frozen ``t`` and ``x_t``, eq. (14).

    ``K_hat_n = -w_n KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) + H_q(X_T|X_0) - H_q(X_1|X_0)
    - H_p(X_T)`` stands for the sum over ``t = 2..T`` by one term, unbiased when ``t_n`` is
    drawn with probability ``1 / w_n`` (weight ``T - 1`` for ``t ~ U{2..T}``).  Why the sum
    starts at ``t = 2``, and how eq. (14) differs from the exact bound: module docstring.

    Parameters
    ----------
    logit_p : float64 ndarray of shape (N, D), the reverse kernel's logits at ``(x_t, t)``.
    x0, xt : binary ndarray of shape (N, D).
    t : int ndarray of shape (N,), values ``2..T``.
    weights : ndarray of shape (N,).

    Returns
    -------
    loss : 0-d array; cache : BoundCache.
    """
    KL, kl_cache = kl_forward(q_posterior(x0, xt, t, tables), logit_p)   # (N, D)
    K_hat = -weights * KL.sum(1) + entropy_sum(entropy_terms(x0, tables))   # eq. (14)   (N,)
    return -K_hat.mean(), BoundCache(kl_cache, weights)


def bound_backward(dloss, cache):
    """Gradient ``dlogit_p`` (N, D) of the loss."""
    N = cache.weights.shape[0]
    dKL = (dloss / N) * cache.weights[:, None]                        # dloss/dKL_nd = w_n / N  (N, 1)
    _, dlogit_p = kl_backward(dKL, cache.kl)                          # logit_q is fixed data
    return dlogit_p


def bound_all_t(predict, x0, tables, rng, *, n_eps=1, chunk=8192):
    """Exact-in-``t`` evaluation of eq. (14): all ``t = 2..T``, Monte Carlo over the noise only.

    Parameters
    ----------
    predict : callable ``(xt (M, D), t (M,)) -> logit_p (M, D)``.
    x0 : binary ndarray of shape (N, D), ``N >= 1``.
    rng : numpy.random.Generator; ``n_eps`` noise draws per example and step.
    chunk : int, rows per network call (several ``t`` share a call).

    Returns
    -------
    dict of host arrays: ``K`` (N,), eq. (14) per example in nats, averaged over the noise;
    ``K_exact`` (N,), the exact per-example bound (module docstring); ``kl_by_t`` (T + 1,),
    the mean KL term of each ``t`` (zero at ``t = 0, 1``); the entropies ``H_q_T``,
    ``H_q_1``, ``H_p_T`` (N,) of :func:`entropy_terms`.
    """
    xp, N, T = array_module(x0), x0.shape[0], tables["T"]
    if N == 0:
        raise ValueError("x0 has no rows; the bound needs at least one example (shape (N, D), N >= 1)")
    KL = numpy.zeros((T + 1, N))                                       # row t: step t's term  (T+1, N)
    per = max(1, chunk // N)                                            # steps per network call
    for _ in range(n_eps):
        for s in range(2, T + 1, per):
            t = xp.repeat(xp.arange(s, min(s + per, T + 1)), N)        # time-major    (M,)
            x0s = xp.tile(x0, (t.shape[0] // N, 1))                    # (M, D)
            xt = q_sample(x0s, t, xp.asarray(rng.random(x0s.shape)), tables)
            kl, _ = kl_forward(q_posterior(x0s, xt, t, tables), predict(xt, t))
            KL[s:s + t.shape[0] // N] += to_host(kl.sum(1)).reshape(-1, N)
    KL /= n_eps
    H = {k: to_host(v) for k, v in entropy_terms(x0, tables).items()}
    K = -KL.sum(0) + entropy_sum(H)                                    # eq. (14)      (N,)
    return {"K": K, "K_exact": K + to_host(edge_terms(x0, tables)), "kl_by_t": KL.mean(1), **H}


def log_pi(x0, tables):
    """``log pi(x_0)`` per row (N,), nats, under the noise distribution ``B(pi)``: the terms of ``L_null``."""
    by_state = tables["log_pi_state"]                                  # log(1 - pi), log pi
    return (x0 * float(by_state[1]) + (1 - x0) * float(by_state[0])).sum(1)


def p_sample_loop(predict, n, D, tables, rng, *, xp=numpy, dtype=numpy.float64):
    """Ancestral samples ``x_0`` (n, D): ``x_T ~ B(pi)``, the learned steps ``t = T..2``,
    then the fixed last step ``p(x_0|x_1) = T_pi(x_0|x_1; beta_1)`` (App. B.2, eq. (44);
    see :func:`kernel_logit`).  ``predict`` is never called at ``t = 1``."""
    x = xp.asarray(rng.random((n, D)) < tables["pi"]).astype(dtype)  # x_T ~ pi      (n, D)
    for step in range(tables["T"], 0, -1):
        t = xp.full(n, step)
        logit = predict(x, t) if step >= 2 else kernel_logit(x, t, tables)   # eq. (44) at t = 1
        x = (xp.asarray(rng.random((n, D))) < sigmoid(logit)).astype(dtype)
    return x
