"""Statistics over seeds: Student-t intervals for a mean and for a difference of means.

    from flarebench.stats import mean_interval, paired_difference, welch_difference
    mean_interval([0.91, 0.93, 0.92])            # Interval(mean=0.92, low=..., high=..., n=3)
    mean_intervals(seeds_by_rounds)              # one Interval per column (e.g. a figure's band over seeds)
    paired_difference(a, b)                      # mean of a_i - b_i with its t-interval (same seeds)
    welch_difference(a, b)                       # mean(a) - mean(b), Welch-Satterthwaite degrees of freedom

Every interval is two-sided at ``level`` (0.95 by default): ``mean +- t_{(1+level)/2, df} * s / sqrt(n)``
with the sample standard deviation ``s`` (n - 1 in the denominator). With one value there is no
interval (low = high = NaN). The t quantile is computed here (regularized incomplete beta function,
then bisection), so the package needs no scipy; tests check it against published table values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

LEVEL = 0.95  # two-sided coverage of every interval unless a caller says otherwise


@dataclass(frozen=True)
class Interval:
    """A point estimate with its two-sided interval; ``n`` values went in (``df``: the t's degrees of freedom)."""

    mean: float
    low: float
    high: float
    n: int
    df: float = math.nan

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz), for x < (a + 1) / (a + b + 2)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` > 0 degrees of freedom."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (0 < p < 1), to about 1e-12."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


def _finite(values: Sequence[float], what: str) -> list[float]:
    out = [float(v) for v in values]
    if any(not math.isfinite(v) for v in out):
        raise ValueError(f"{what} needs finite values, got {out}")
    return out


def _sd(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _interval(v: list[float], t: float) -> Interval:
    """The mean of ``v`` and ``mean +- t * s / sqrt(n)`` (``t``: the quantile for n - 1 degrees of freedom)."""
    n = len(v)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = sum(v) / n
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    half = t * _sd(v) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, float(n - 1))


def _t_for(n: int, level: float) -> float:
    return t_quantile((1.0 + level) / 2.0, n - 1) if n > 1 else math.nan


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """The mean of ``values`` (e.g. one metric over seeds) with its Student-t interval (n - 1 degrees
    of freedom); one value: no interval (NaN ends); no values: everything NaN."""
    v = _finite(values, "mean_interval")
    return _interval(v, _t_for(len(v), level))


def mean_intervals(rows: Sequence[Sequence[float]], level: float = LEVEL) -> list[Interval]:
    """:func:`mean_interval` of each column of ``rows`` (n rows, e.g. seeds; m columns, e.g. evaluated
    rounds): m intervals, one t quantile for all of them (a figure's band over seeds)."""
    rows = [_finite(r, "mean_intervals") for r in rows]
    if len({len(r) for r in rows}) > 1:
        raise ValueError(f"mean_intervals needs rows of one length, got {sorted({len(r) for r in rows})}")
    t = _t_for(len(rows), level)
    return [_interval(list(col), t) for col in zip(*rows)]


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of the differences ``a_i - b_i`` (pairs: the same seed) with its paired-t interval."""
    if len(a) != len(b):
        raise ValueError(f"paired_difference needs as many values in a as in b, got {len(a)} and {len(b)}")
    return mean_interval([x - y for x, y in zip(_finite(a, "paired_difference"), _finite(b, "paired_difference"))], level)


def welch_difference(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval:
    """``mean(a) - mean(b)`` with Welch's t interval (unequal variances; Welch-Satterthwaite degrees of
    freedom); needs two values on each side for an interval."""
    a, b = _finite(a, "welch_difference"), _finite(b, "welch_difference")
    if not a or not b:
        return Interval(math.nan, math.nan, math.nan, 0)
    diff = sum(a) / len(a) - sum(b) / len(b)
    n = len(a) + len(b)
    if len(a) < 2 or len(b) < 2:
        return Interval(diff, math.nan, math.nan, n)
    va, vb = _sd(a) ** 2 / len(a), _sd(b) ** 2 / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Interval(diff, diff, diff, n, math.inf)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile((1.0 + level) / 2.0, df) * se
    return Interval(diff, diff - half, diff + half, n, df)


def verdict(diff: Interval, higher_is_better: bool = True) -> str:
    """``better`` / ``worse`` when the interval of (method - baseline) excludes 0, else
    ``no significant difference``; ``too few seeds`` without an interval."""
    if math.isnan(diff.low) or math.isnan(diff.high):
        return "too few seeds"
    if diff.low > 0:
        return "better" if higher_is_better else "worse"
    if diff.high < 0:
        return "worse" if higher_is_better else "better"
    return "no significant difference"


__all__ = ["LEVEL", "Interval", "betainc", "t_cdf", "t_quantile", "mean_interval", "mean_intervals", "paired_difference", "welch_difference", "verdict"]
