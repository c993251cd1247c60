"""The binomial forward process's schedule and its closed-form tables (Table App.1, App. D.1.2).

``beta_t`` is fixed (the heartbeat's ``1 / (T - t + 1)`` by default); everything the
kernels and the bound need per step is computed once here, in float64, as host arrays
of length ``T + 1`` indexed by the paper's ``t`` (row 0 unused unless said), with a
second axis for a binary state (0 or 1).  Rates are carried as logits, so nothing
overflows for rates near 0 or 1.  Entropies are in nats.
"""
import numpy

from ..nn.layers import sigmoid, softplus
from ..validation import check_positive_int


def check_pi(pi):
    """``pi`` must be a rate strictly inside (0, 1).  Returns it as float."""
    if isinstance(pi, bool) or not isinstance(pi, (int, float, numpy.floating)) or not 0 < pi < 1:
        raise ValueError(f"pi (the noise distribution's Bernoulli rate) must lie strictly "
                         f"between 0 and 1, got {pi!r}")
    return float(pi)


def heartbeat_beta(T):
    """The fixed schedule ``beta_t = 1 / (T - t + 1)`` of App. D.1.2; ``beta[0] = 0`` (unused).

    It erases ``x_0`` linearly: ``alpha_bar_t = (T - t) / T``, so ``beta_T = 1``
    and ``q(x_T | x_0) = pi`` exactly.  Returns a host array of shape (T + 1,).
    """
    T = check_positive_int("T", T, 2)
    t = numpy.arange(1, T + 1, dtype=numpy.float64)
    return numpy.concatenate([[0.0], 1.0 / (T - t + 1)])


def binary_entropy(logit):
    """Entropy (nats) of a Bernoulli with logit ``logit`` and rate ``r = sigma(logit)``:
    ``r softplus(-logit) + (1 - r) softplus(logit)``."""
    return sigmoid(logit) * softplus(-logit) + sigmoid(-logit) * softplus(logit)


def marginal_logs(beta, pi):
    """``(alpha_bar, log r, log(1 - r))`` for ``r = q(x_t = 1 | x_0)``, ``t = 1..T``, columns ``x_0 = 0, 1``.

    Derived, not printed in the paper: the kernel's rate maps ``r -> r (1 - beta_t) + pi beta_t``,
    so ``r - pi`` shrinks by ``1 - beta_t`` each step and
    ``r_t = x_0 alpha_bar_t + pi (1 - alpha_bar_t)`` with ``alpha_bar_t = prod_{s<=t} (1 - beta_s)``
    (DDPM's symbol, Ho et al. 2020).  ``1 - alpha_bar`` goes through ``expm1``.
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
    reversed kernel ``T_pi(x_{t-1} = 1 | x_t; beta_t)``, whose rate is the forward
    kernel's ``x_t (1 - beta_t) + pi beta_t`` (Table App.1; detailed balance)."""
    b, lp, l1mp = beta[1:], numpy.log(pi), numpy.log1p(-pi)
    lb, stay1 = numpy.log(b), numpy.log1p(-b * (1 - pi))              # log q(x_t = 1 | x_{t-1} = 1)
    stay0 = numpy.log1p(-pi * b)                                       # log q(x_t = 0 | x_{t-1} = 0)
    llr = numpy.stack([lb + l1mp - stay0, stay1 - lp - lb], 1)          # (T, 2)
    logit_kernel = numpy.stack([lp + lb - stay0, stay1 - lb - l1mp], 1)  # (T, 2)
    return llr, logit_kernel


def binomial_tables(T, pi, beta=None):
    """Float64 host tables of the forward process (Table App.1).

    Parameters
    ----------
    T : int, ``>= 2``.
    pi : float in (0, 1), the noise distribution's rate.
    beta : ndarray of shape (T + 1,) or None
        ``beta[t]`` in (0, 1] for ``t >= 1``; default :func:`heartbeat_beta`.

    Returns
    -------
    dict with ``T``, ``pi``, ``beta``, ``alpha_bar`` (T + 1,) and, indexed ``[t, state]``:
    ``rate_marginal`` / ``logit_marginal`` = ``q(x_t = 1 | x_0 = state)`` (row 0 of the
    rate is ``x_0`` itself; row 0 of the logit is unused), ``llr`` = ``log q(x_t = state | x_{t-1} = 1) -
    log q(x_t = state | x_{t-1} = 0)``, ``logit_kernel`` = logit of
    ``T_pi(x_{t-1} = 1 | x_t = state; beta_t)``; per-dimension entropies ``H_q_T``,
    ``H_q_1`` (by ``x_0``) and ``H_p_T`` (a float); ``log_pi_state`` (log pi of each state).
    """
    T, pi = check_positive_int("T", T, 2), check_pi(pi)
    beta = heartbeat_beta(T) if beta is None else numpy.asarray(beta, dtype=numpy.float64)
    if beta.shape != (T + 1,) or not ((beta[1:] > 0) & (beta[1:] <= 1)).all():
        raise ValueError(f"beta must have shape ({T + 1},) with beta[1:] in (0, 1], "
                         f"got shape {beta.shape} with beta[1:] in [{beta[1:].min()}, {beta[1:].max()}]")
    abar, log_r, log_1mr = marginal_logs(beta, pi)
    logit_marginal = log_r - log_1mr                                   # (T, 2)
    llr, logit_kernel = step_logs(beta, pi)
    pad = lambda a: numpy.concatenate([numpy.zeros((1,) + a.shape[1:]), a])   # row 0 unused
    return {"T": T, "pi": pi, "beta": beta, "alpha_bar": numpy.concatenate([[1.0], abar]),
            "rate_marginal": numpy.concatenate([[[0.0, 1.0]], numpy.exp(log_r)]),
            "logit_marginal": pad(logit_marginal), "llr": pad(llr), "logit_kernel": pad(logit_kernel),
            "H_q_T": binary_entropy(logit_marginal[-1]), "H_q_1": binary_entropy(logit_marginal[0]),
            "H_p_T": float(binary_entropy(numpy.log(pi) - numpy.log1p(-pi))),
            "log_pi_state": numpy.array([numpy.log1p(-pi), numpy.log(pi)])}


def on_backend(tables, xp):
    """The schedule with its tables moved to backend ``xp`` (scalars unchanged)."""
    return {k: xp.asarray(v) if isinstance(v, numpy.ndarray) else v for k, v in tables.items()}
