"""Statistics of clinical agreement: Pearson (with a Fisher-z 95% CI), Spearman, MAE, Bland-Altman.

p-values come from :mod:`scipy.stats` (two-sided). Inputs are paired 1D samples; NaN or a
constant sample (where a correlation is undefined) raise :class:`~sono3d.errors.InputError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sono3d.errors import InputError

__all__ = [
    "BlandAltman",
    "Pearson",
    "Spearman",
    "bland_altman",
    "mae",
    "pearson",
    "spearman",
]


def _paired(x: Any, y: Any, min_n: int = 1) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size:
        raise InputError(f"paired samples differ in length: {x.size} vs {y.size}")
    if x.size < min_n:
        raise InputError(f"need at least {min_n} paired values, got {x.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InputError("samples contain NaN or infinite values")
    return x, y


def _correlation_inputs(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _paired(x, y, min_n=3)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise InputError("a sample is constant, so its correlation is undefined")
    return x, y


@dataclass(frozen=True)
class Pearson:
    """Pearson correlation: ``r``, its confidence interval ``ci`` (lower, upper), p-value, ``n``."""

    r: float
    ci: tuple[float, float]
    p: float
    n: int
    confidence: float = 0.95


@dataclass(frozen=True)
class Spearman:
    """Spearman rank correlation ``rho``, its two-sided p-value and ``n``."""

    rho: float
    p: float
    n: int


def pearson(x: Any, y: Any, confidence: float = 0.95) -> Pearson:
    """Pearson r with a Fisher-z confidence interval and scipy's two-sided p-value.

    The interval is ``tanh(atanh(r) -+ z_{(1+c)/2} / sqrt(n - 3))``; for ``n = 3`` it is the
    whole ``(-1, 1)``. Needs ``n >= 3`` non-constant paired values.
    """
    from scipy import stats

    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must lie in (0, 1), got {confidence}")
    x, y = _correlation_inputs(x, y)
    res = stats.pearsonr(x, y)
    r = float(np.clip(res.statistic, -1.0, 1.0))
    n = int(x.size)
    if n > 3:
        z = math.atanh(r) if abs(r) < 1.0 else math.copysign(math.inf, r)
        half = float(stats.norm.ppf(0.5 + confidence / 2.0)) / math.sqrt(n - 3)
        ci = (math.tanh(z - half), math.tanh(z + half))
    else:
        ci = (-1.0, 1.0)
    return Pearson(r=r, ci=(float(ci[0]), float(ci[1])), p=float(res.pvalue), n=n, confidence=confidence)


def spearman(x: Any, y: Any) -> Spearman:
    """Spearman rank correlation and scipy's two-sided p-value (``n >= 3``, non-constant)."""
    from scipy import stats

    x, y = _correlation_inputs(x, y)
    res = stats.spearmanr(x, y)
    return Spearman(rho=float(res.statistic), p=float(res.pvalue), n=int(x.size))


def mae(pred: Any, truth: Any) -> float:
    """Mean absolute error ``mean |pred - truth|`` (in the inputs' units)."""
    p, t = _paired(pred, truth)
    return float(np.abs(p - t).mean())


@dataclass(frozen=True)
class BlandAltman:
    """Bland-Altman agreement of method ``a`` against method ``b``.

    Attributes
    ----------
    bias : float
        Mean difference ``mean(a - b)``.
    sd : float
        Sample standard deviation of the differences (``ddof=1``).
    loa : (float, float)
        Limits of agreement ``bias -+ 1.96 sd``.
    mean, diff : ndarray, shape (n,)
        Per-pair ``(a + b) / 2`` and ``a - b``: the plot's x and y.
    """

    bias: float
    sd: float
    loa: tuple[float, float]
    mean: np.ndarray
    diff: np.ndarray

    @property
    def n(self) -> int:
        return int(self.diff.size)


def bland_altman(a: Any, b: Any) -> BlandAltman:
    """Bias and 95% limits of agreement between paired measurements (``n >= 2``)."""
    a, b = _paired(a, b, min_n=2)
    diff = a - b
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1))
    return BlandAltman(bias=bias, sd=sd, loa=(bias - 1.96 * sd, bias + 1.96 * sd), mean=(a + b) / 2.0, diff=diff)
