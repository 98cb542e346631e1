"""flarebench.stats: the t quantile against published table values, and the intervals recomputed by hand."""

import math

import pytest

from flarebench.stats import Interval, mean_interval, paired_difference, t_cdf, t_quantile, verdict, welch_difference

# two-sided 95% critical values t_{0.975, df} (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2)
T975 = {1: 12.7062047362, 2: 4.30265272975, 3: 3.18244630528, 4: 2.7764451052, 9: 2.26215716280, 10: 2.22813885196,
        30: 2.04227245630}


@pytest.mark.parametrize("df,value", sorted(T975.items()))
def test_t_quantile_matches_the_table(df, value):
    assert t_quantile(0.975, df) == pytest.approx(value, abs=1e-8)
    assert t_quantile(0.025, df) == pytest.approx(-value, abs=1e-8)
    assert t_cdf(value, df) == pytest.approx(0.975, abs=1e-10)


def test_t_quantile_tends_to_the_normal_and_refuses_bad_input():
    assert t_quantile(0.975, 1e7) == pytest.approx(1.959963985, abs=1e-6)
    assert t_quantile(0.5, 3) == pytest.approx(0.0, abs=1e-12)
    for p, df in ((0.0, 3), (1.0, 3), (0.5, 0)):
        with pytest.raises(ValueError):
            t_quantile(p, df)


def test_mean_interval_by_hand():
    v = [0.91, 0.93, 0.95]
    mean, sd = 0.93, 0.02  # sample sd of 0.91, 0.93, 0.95
    got = mean_interval(v)
    half = 4.30265272975 * sd / math.sqrt(3)
    assert (got.mean, got.low, got.high, got.n) == pytest.approx((mean, mean - half, mean + half, 3), abs=1e-12)
    one = mean_interval([0.5])
    assert one.mean == 0.5 and math.isnan(one.low) and math.isnan(one.high)
    assert math.isnan(mean_interval([]).mean)
    with pytest.raises(ValueError):
        mean_interval([0.1, math.inf])


def test_paired_and_welch_differences_and_verdicts():
    a, b = [0.95, 0.96, 0.97], [0.90, 0.92, 0.91]
    d = paired_difference(a, b)  # differences 0.05, 0.04, 0.06
    half = 4.30265272975 * 0.01 / math.sqrt(3)
    assert (d.mean, d.low, d.high) == pytest.approx((0.05, 0.05 - half, 0.05 + half), abs=1e-12)
    assert verdict(d) == "better" and verdict(d, higher_is_better=False) == "worse"
    w = welch_difference(a, b)  # equal variances 1e-4 and n: df = 4
    half = 2.7764451052 * math.sqrt(1e-4 / 3 + 1e-4 / 3)
    assert (w.mean, w.low, w.high, w.df) == pytest.approx((0.05, 0.05 - half, 0.05 + half, 4.0), abs=1e-9)
    assert verdict(paired_difference([0.9, 0.8, 0.7], [0.8, 0.9, 0.75])) == "no significant difference"
    assert verdict(Interval(0.1, math.nan, math.nan, 1)) == "too few seeds"
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])



def test_mean_intervals_are_the_columns_mean_intervals():
    from flarebench.stats import mean_intervals

    rows = [[0.1, 0.5, 0.91], [0.1, 0.6, 0.93], [0.1, 0.4, 0.95]]  # 3 seeds x 3 rounds
    got = mean_intervals(rows)
    for j, iv in enumerate(got):
        want = mean_interval([r[j] for r in rows])
        assert (iv.mean, iv.low, iv.high, iv.n) == pytest.approx((want.mean, want.low, want.high, want.n), abs=1e-15)
    assert (got[0].low, got[0].high) == pytest.approx((0.1, 0.1), abs=1e-12)  # equal seeds: no width
    assert math.isnan(mean_intervals([[0.5, 0.6]])[1].low)  # one seed: no interval
    with pytest.raises(ValueError):
        mean_intervals([[0.1, 0.2], [0.3]])
