"""Binomial diffusion over binary vectors (§2.4.1, Table App.1, App. B, App. D.1.2).

Forward kernel ``q(x_t | x_{t-1}) = B(x_t; x_{t-1} (1 - beta_t) + pi beta_t)``
(Table App.1, with noise rate ``pi`` in place of the table's 0.5).  Every
rate is handled as a logit, so nothing overflows for rates near 0 or 1.
Tables are float64 host arrays of length ``T + 1`` indexed by the paper's
``t`` (row 0 unused); columns index a binary state (0 or 1).
All information quantities are in nats.
"""
import numpy

from ..backend import array_module, to_host
from ..bits import standard_error
from ..nn.layers import sigmoid, softplus
from ..validation import check_array, check_positive_int


def check_pi(pi):
    """``pi`` must be a rate strictly inside (0, 1).  Returns it as float."""
    if not isinstance(pi, (int, float, numpy.floating)) or not 0 < pi < 1:
        raise ValueError(f"pi (the noise distribution's Bernoulli rate) must lie strictly "
                         f"between 0 and 1, got {pi!r}")
    return float(pi)


def check_binary(name, x, D=None):
    """``x`` must be an (N, D) array of 0s and 1s.  Returns it."""
    check_array(name, x, ndim=2, shape=None if D is None else (None, D))
    xp = array_module(x)
    if not bool(((x == 0) | (x == 1)).all()):
        raise ValueError(f"{name} must be binary (every entry 0 or 1) for binomial diffusion; "
                         f"got values such as {float(x[(x != 0) & (x != 1)][0])!r}")
    return xp.asarray(x)


def heartbeat_beta(T):
    """The fixed schedule ``beta_t = 1 / (T - t + 1)`` of App. D.1.2; ``beta[0] = 0`` (unused).

    It erases ``x_0`` linearly: ``alpha_bar_t = (T - t) / T``, so ``beta_T = 1``
    and ``q(x_T | x_0) = pi`` exactly.  Returns a host array of shape (T + 1,).
    """
    T = check_positive_int("T", T, 2)
    t = numpy.arange(1, T + 1, dtype=numpy.float64)
    return numpy.concatenate([[0.0], 1.0 / (T - t + 1)])


def binary_entropy(lam):
    """Entropy (nats) of a Bernoulli with logit ``lam``: ``r softplus(-lam) + (1-r) softplus(lam)``."""
    return sigmoid(lam) * softplus(-lam) + sigmoid(-lam) * softplus(lam)


def marginal_logs(beta, pi):
    """``(alpha_bar, log r, log(1 - r))`` for ``r = q(x_t = 1 | x_0)``, ``t = 1..T``, columns ``x_0 = 0, 1``.

    ``r = x_0 alpha_bar_t + pi (1 - alpha_bar_t)`` (iterate the kernel's mean
    ``r -> r (1 - beta) + pi beta``); ``1 - alpha_bar`` through ``expm1``.
    """
    with numpy.errstate(divide="ignore"):                              # log 0 = -inf once beta_t = 1
        log_abar = numpy.cumsum(numpy.log1p(-beta[1:]))                # log alpha_bar_1..T   (T,)
    abar, one_m_abar = numpy.exp(log_abar), -numpy.expm1(log_abar)
    lp, l1mp = numpy.log(pi), numpy.log1p(-pi)
    log_r = numpy.stack([lp + numpy.log(one_m_abar), numpy.log(pi + abar * (1 - pi))], 1)
    log_1mr = numpy.stack([numpy.log1p(-pi * one_m_abar), numpy.log(one_m_abar) + l1mp], 1)
    return abar, log_r, log_1mr                                        # (T,), (T, 2), (T, 2)


def step_logs(beta, pi):
    """Per step ``t = 1..T``, columns ``x_t = 0, 1``: the log likelihood ratio
    ``log q(x_t | x_{t-1} = 1) / q(x_t | x_{t-1} = 0)`` and the logit of the
    forward kernel's rate ``x_t (1 - beta_t) + pi beta_t`` (Table App.1)."""
    b, lp, l1mp = beta[1:], numpy.log(pi), numpy.log1p(-pi)
    lb, stay1 = numpy.log(b), numpy.log1p(-b * (1 - pi))              # log q(x_t = 1 | x_{t-1} = 1)
    flip0 = numpy.log1p(-pi * b)                                       # log q(x_t = 0 | x_{t-1} = 0)
    llr = numpy.stack([lb + l1mp - flip0, stay1 - lp - lb], 1)          # (T, 2)
    logit_fwd = numpy.stack([lp + lb - flip0, stay1 - lb - l1mp], 1)    # (T, 2)
    return llr, logit_fwd


def binomial_schedule(T, pi, beta=None):
    """Float64 host tables of the forward process (Table App.1).

    Parameters
    ----------
    T : int, ``>= 2``.
    pi : float in (0, 1), the noise distribution's rate.
    beta : ndarray of shape (T + 1,) or None
        ``beta[t]`` in (0, 1] for ``t >= 1``; default :func:`heartbeat_beta`.

    Returns
    -------
    dict with ``T``, ``pi``, ``beta``, ``alpha_bar`` (T + 1,) and, indexed
    ``[t, state]``: ``rate_q`` / ``logit_q`` = ``q(x_t = 1 | x_0 = state)``,
    ``llr`` = ``log q(x_t = state | x_{t-1} = 1) - log q(x_t = state | x_{t-1} = 0)``,
    ``logit_fwd`` = logit of ``T_pi(x_{t-1} = 1 | x_t = state; beta_t)``;
    per-dimension entropies ``H_T``, ``H_1`` (by ``x_0``), ``H_p``; ``log_pi`` (by state).
    """
    T, pi = check_positive_int("T", T, 2), check_pi(pi)
    beta = heartbeat_beta(T) if beta is None else numpy.asarray(beta, dtype=numpy.float64)
    if beta.shape != (T + 1,) or not ((beta[1:] > 0) & (beta[1:] <= 1)).all():
        raise ValueError(f"beta must have shape ({T + 1},) with beta[1:] in (0, 1], got {beta}")
    abar, log_r, log_1mr = marginal_logs(beta, pi)
    logit_q = log_r - log_1mr                                          # (T, 2)
    llr, logit_fwd = step_logs(beta, pi)
    pad = lambda a: numpy.concatenate([numpy.zeros((1,) + a.shape[1:]), a])   # row 0 unused
    return {"T": T, "pi": pi, "beta": beta, "alpha_bar": numpy.concatenate([[1.0], abar]),
            "rate_q": numpy.concatenate([[[0.0, 1.0]], numpy.exp(log_r)]),   # row 0: x_0 itself
            "logit_q": pad(logit_q), "llr": pad(llr), "logit_fwd": pad(logit_fwd),
            "H_T": binary_entropy(logit_q[-1]), "H_1": binary_entropy(logit_q[0]),
            "H_p": float(binary_entropy(numpy.log(pi) - numpy.log1p(-pi))),
            "log_pi": numpy.array([numpy.log1p(-pi), numpy.log(pi)])}


def on_backend(sched, xp):
    """The schedule with its tables moved to backend ``xp`` (scalars unchanged)."""
    return {k: xp.asarray(v) if isinstance(v, numpy.ndarray) else v for k, v in sched.items()}


def _pick(table, t, x):
    """``table[t_n, x_nd]`` for binary ``x`` (N, D) and steps ``t`` (N,): a gather by ``where``."""
    xp = array_module(x)
    return xp.where(x > 0.5, table[t, 1][:, None], table[t, 0][:, None])   # (N, D)


def q_sample(x0, t, u, sched):
    """``x_t = [u < q(x_t = 1 | x_0)]`` from frozen uniform noise ``u`` (N, D); closed form above."""
    return (u < _pick(sched["rate_q"], t, x0)).astype(x0.dtype)      # (N, D)


def q_posterior_logit(x0, xt, t, sched):
    """Logit of ``q(x_{t-1} = 1 | x_t, x_0)`` by Bayes' rule, for ``t >= 2``:
    ``logit q(x_{t-1} = 1 | x_0) + log q(x_t | x_{t-1} = 1) / q(x_t | x_{t-1} = 0)``."""
    return _pick(sched["logit_q"], t - 1, x0) + _pick(sched["llr"], t, xt)   # (N, D)


def forward_logit(xt, t, sched):
    """Logit of the forward kernel reversed under ``pi``, ``T_pi(x_{t-1} = 1 | x_t; beta_t)``.

    The binomial kernel obeys detailed balance, ``pi(0) q(1|0) = pi(1) q(0|1)
    = pi (1 - pi) beta``, so the reversed kernel ``q(x_t|x_{t-1}) pi(x_{t-1}) /
    pi(x_t)`` is the forward kernel itself: rate ``x_t (1 - beta_t) + pi beta_t``.
    """
    return _pick(sched["logit_fwd"], t, xt)                           # (N, D)


def bernoulli_kl(lam_q, lam_p):
    """``KL(B(sigma(lam_q)) || B(sigma(lam_p)))`` in nats, elementwise, from logits:
    ``softplus(lam_p) - softplus(lam_q) - sigma(lam_q) (lam_p - lam_q)``."""
    return softplus(lam_p) - softplus(lam_q) - sigmoid(lam_q) * (lam_p - lam_q)


def entropy_terms(x0, sched):
    """``H_q(X_T|X_0) - H_q(X_1|X_0) - H_p(X_T)`` per example (N,), nats: the last line of eq. (14)."""
    xp = array_module(x0)
    H_T, H_1 = xp.asarray(sched["H_T"]), xp.asarray(sched["H_1"])
    per_dim = xp.where(x0 > 0.5, H_T[1] - H_1[1], H_T[0] - H_1[0])   # (N, D)
    return per_dim.sum(1) - x0.shape[1] * sched["H_p"]               # (N,)


def neg_bound_forward(lam_p, x0, xt, t, weights, sched):
    """Training loss ``-K_hat`` (nats per sequence), mean over the batch, eq. (14).

    Each example ``n`` stands for the sum over ``t = 2..T`` by one term,
    ``weights[n] * KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))`` (weight ``T - 1``
    for ``t ~ U{2..T}``).  Per example this is eq. (14) exactly; the exact
    per-example bound adds ``(1 - alpha_bar_1 + alpha_bar_T) logit(pi)
    sum_d (x0_d - pi)`` (the edge terms App. B.1-B.2 drop), zero in
    expectation when the data's mean is ``pi``, and zero for every heartbeat
    sequence (four ones in twenty bits, ``pi = 0.2``).

    Parameters
    ----------
    lam_p : ndarray of shape (N, D), logits of ``f_b(x_t, t)``.
    x0, xt : binary ndarray of shape (N, D).
    t : int ndarray of shape (N,), values ``2..T``.
    weights : ndarray of shape (N,).

    Returns
    -------
    loss : 0-d array; cache : ``(lam_p, lam_q, weights)``.
    """
    lam_q = q_posterior_logit(x0, xt, t, sched)                       # (N, D)
    kl = bernoulli_kl(lam_q, lam_p).sum(1)                            # eq. (14) KLs      (N,)
    loss = (weights * kl - entropy_terms(x0, sched)).mean()           # -K_hat
    return loss, (lam_p, lam_q, weights)


def neg_bound_backward(dloss, cache):
    """Gradient of the loss with respect to the logits ``lam_p`` (N, D)."""
    lam_p, lam_q, weights = cache
    dkl = (dloss / lam_p.shape[0]) * weights[:, None]                 # d loss/d KL_n = w_n / N
    return dkl * (sigmoid(lam_p) - sigmoid(lam_q))                    # d KL/d lam_p = f_b - q_post


def bound_by_t(logit_fn, x0, sched, rng, n_eps=1, rows=8192):
    """Exact-in-``t`` evaluation of eq. (14): all ``t = 2..T``, Monte Carlo over the noise only.

    Parameters
    ----------
    logit_fn : callable ``(xt (M, D), t (M,)) -> lam_p (M, D)``.
    x0 : binary ndarray of shape (N, D).
    rng : numpy.random.Generator; ``n_eps`` noise draws per example.
    rows : int, examples per network call (several ``t`` share a call).

    Returns
    -------
    K : host ndarray (N,), nats per sequence, averaged over the noise draws.
    K_stderr : float, standard error of ``K.mean()``.
    kl_by_t : host ndarray (T - 1,), mean KL in nats, index 0 is ``t = 2``.
    """
    xp, N, T = array_module(x0), x0.shape[0], sched["T"]
    kl = numpy.zeros((T - 1, N))                                       # (T-1, N)
    per = max(1, rows // N)
    for _ in range(n_eps):
        for s in range(2, T + 1, per):
            t = xp.repeat(xp.arange(s, min(s + per, T + 1)), N)        # (M,)
            x0s = xp.tile(x0, (t.shape[0] // N, 1))                    # (M, D)
            xt = q_sample(x0s, t, xp.asarray(rng.random(x0s.shape)), sched)
            k = bernoulli_kl(q_posterior_logit(x0s, xt, t, sched), logit_fn(xt, t)).sum(1)
            kl[s - 2:s - 2 + t.shape[0] // N] += to_host(k).reshape(-1, N)
    kl /= n_eps
    K = -kl.sum(0) + to_host(entropy_terms(x0, sched))                  # eq. (14)    (N,)
    return K, standard_error(K), kl.mean(1)


def sample(logit_fn, n, D, sched, rng, xp=numpy, dtype=numpy.float64):
    """Ancestral samples ``x_0`` (n, D): ``x_T ~ B(pi)``, the learned steps
    ``t = T..2``, then the fixed last step ``p(x_0|x_1) = T_pi(x_0|x_1; beta_1)``
    (App. B.2, eq. (44); see :func:`forward_logit`)."""
    T = sched["T"]
    x = xp.asarray(rng.random((n, D)) < sched["pi"]).astype(dtype)  # x_T ~ pi
    for step in range(T, 0, -1):
        t = xp.full(n, step)
        lam = logit_fn(x, t) if step >= 2 else forward_logit(x, t, sched)   # eq. (44) at t = 1
        x = (xp.asarray(rng.random((n, D))) < sigmoid(lam)).astype(dtype)
    return x
