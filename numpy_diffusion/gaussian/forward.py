"""The forward process ``q`` (§2.1, eq. 2, Table App.1): marginals and one-step posteriors.

``q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I)``, so the marginal is
``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps`` with ``eps ~ N(0, I)``.
The caller passes ``eps`` itself: the frozen noise of §2.4.1 that makes ``x_t``
a differentiable function of the schedule.

Backward functions return per-example gradients with respect to the table
entries each example read (shape (N,), keyed by table name);
:func:`numpy_diffusion.tables.scatter_by_t` sums them per time step.  The
caches are the inputs themselves, so the backward functions take them again.
"""


def q_sample(x0, t, eps, tables):
    """Sample ``x_t ~ q(x_t | x_0)`` from given noise.

    Parameters
    ----------
    x0 : ndarray of shape (N, D)
    t : int ndarray of shape (N,), values in ``1..T``
    eps : ndarray of shape (N, D), standard normal noise
    tables : dict from :func:`numpy_diffusion.tables.make_tables`

    Returns
    -------
    xt : ndarray of shape (N, D), ``sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps``.
    """
    xt = tables["sqrt_alpha_bar"][t][:, None] * x0                      # Table App.1 marginal
    xt += tables["sqrt_one_minus_alpha_bar"][t][:, None] * eps          # (N, D)
    return xt


def q_sample_backward(dxt, x0, eps):
    """Gradients of :func:`q_sample` with respect to its two table entries, per example (N,)."""
    return {"sqrt_alpha_bar": (dxt * x0).sum(axis=1),                   # dxt/dsqrt(alpha_bar) = x0
            "sqrt_one_minus_alpha_bar": (dxt * eps).sum(axis=1)}        # dxt/dsqrt(1 - alpha_bar) = eps


def q_posterior(x0, xt, t, tables):
    """The posterior ``q(x_{t-1} | x_t, x_0) = N(mu_q, exp(logvar_q) I)`` (SPEC §2).

    ``mu_q = (sqrt(alpha_bar_{t-1}) beta_t x0 + sqrt(alpha_t) (1 - alpha_bar_{t-1}) xt) / (1 - alpha_bar_t)``,
    ``logvar_q = log beta_tilde_t = log((1 - alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t))``.

    Parameters
    ----------
    x0, xt : ndarrays of shape (N, D)
    t : int ndarray of shape (N,), values in ``1..T`` (at ``t = 1`` the variance is 0)
    tables : dict from :func:`numpy_diffusion.tables.make_tables`

    Returns
    -------
    mu_q : ndarray of shape (N, D)
    logvar_q : ndarray of shape (N, 1), one variance per example.
    """
    mu_q = tables["post_coef_x0"][t][:, None] * x0                      # (N, D)
    mu_q += tables["post_coef_xt"][t][:, None] * xt
    return mu_q, tables["log_beta_tilde"][t][:, None]


def q_posterior_backward(dmu_q, dlogvar_q, x0, xt, t, tables):
    """Gradients of :func:`q_posterior`: returns ``(dxt, dcoef)``.

    ``dxt`` (N, D) is the gradient with respect to ``xt``; ``dcoef`` maps the table
    names ``post_coef_x0``, ``post_coef_xt``, ``log_beta_tilde`` to per-example (N,) gradients.
    """
    dxt = tables["post_coef_xt"][t][:, None] * dmu_q                    # dmu_q/dxt = post_coef_xt
    dcoef = {"post_coef_x0": (dmu_q * x0).sum(axis=1),                  # dmu_q/dpost_coef_x0 = x0
             "post_coef_xt": (dmu_q * xt).sum(axis=1),                  # dmu_q/dpost_coef_xt = xt
             "log_beta_tilde": dlogvar_q.sum(axis=1)}                   # dlogvar_q/dlog_beta_tilde = 1
    return dxt, dcoef
