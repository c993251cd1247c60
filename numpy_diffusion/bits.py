"""How a bound is reported: nats to bits, Monte Carlo standard errors, Table 1's two columns.

Both diffusions (Gaussian and binomial) report their held-out bound the same way:
the mean of ``K`` over examples in bits, its standard error over examples, the
null model's log likelihood ``L_null`` (the data scored under the noise
distribution ``pi``, Table 1's right column) and the gain ``K - L_null`` with its
own standard error, computed per example (so ``L_null``'s spread adds nothing).
"""
import math

import numpy

LN2 = math.log(2.0)


def standard_error(a):
    """Standard error of the mean of a host array of per-example values (NaN for fewer than two)."""
    return float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else float("nan")


def table1_report(K_nats, log_pi_nats):
    """Table 1's numbers from per-example values.

    Parameters
    ----------
    K_nats : host ndarray of shape (N,), the bound per example, nats.
    log_pi_nats : host ndarray of shape (N,), ``log pi(x0)`` per example, nats.

    Returns
    -------
    dict of floats: ``K_nats``, ``K_bits``, ``K_bits_stderr``, ``L_null_bits``,
    ``K_minus_L_null_bits``, ``K_minus_L_null_bits_stderr``.
    """
    K, log_pi = numpy.asarray(K_nats, dtype=numpy.float64), numpy.asarray(log_pi_nats, dtype=numpy.float64)
    gain = (K - log_pi) / LN2                                          # bits, paired per example
    return {"K_nats": float(K.mean()), "K_bits": float(K.mean()) / LN2,
            "K_bits_stderr": standard_error(K) / LN2, "L_null_bits": float(log_pi.mean()) / LN2,
            "K_minus_L_null_bits": float(gain.mean()), "K_minus_L_null_bits_stderr": standard_error(gain)}
