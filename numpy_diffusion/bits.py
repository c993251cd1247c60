"""Monte Carlo estimates of the bound: the standard error that goes with every reported mean."""
import math


def standard_error(a):
    """Standard error of the mean of a host array of per-example values (NaN for fewer than two)."""
    return float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else float("nan")
