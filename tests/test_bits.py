"""`flarebench bits` and the library behind it: the anchor figures, and expectations that match real bytes."""

import math

import numpy as np
import pytest

from flarebench.cli import main
from flarebench.wire.bounds import (
    bits_table,
    entropy_bits_per_entry,
    expected_bits_per_entry,
    log2_binom,
    measured_bits_per_entry,
    random_positions,
)
from flarebench.wire.codecs import POSITION_CODECS


def table(n, sparsity, measure=False):
    k, bound, rows = bits_table(n, sparsity, measure=measure)
    return k, bound, {r.codec: r for r in rows}


def test_anchor_figures_at_density_1e3():
    k, bound, rows = table(10**6, 0.999)
    assert k == 1000
    assert round(rows["elias-gamma"].expected, 1) == 18.3
    assert round(rows["elias-delta"].expected, 1) == 15.4
    assert round(rows["golomb"].expected, 2) == 11.49
    assert round(bound, 2) == 11.40  # exact log2 C(n,k)/k; the issue's ~11.41 is n H(k/n)/k:
    assert round(entropy_bits_per_entry(10**6, 1000), 2) == 11.41
    assert rows["raw32"].expected == 32 and rows["minwidth"].expected == 20 and rows["bitmap"].expected == 1000
    assert "enumerative" not in rows  # k = 1000 > ENUMERATIVE_MAX_K
    k, bound, rows = table(10**5, 0.999)  # k = 100: enumerative is one fixed width, ceil(log2 C(n, k)) bits
    assert rows["enumerative"].expected == (math.comb(10**5, 100) - 1).bit_length() / 100
    assert bound <= rows["enumerative"].expected < bound + 1 / 100


def test_anchor_figures_at_density_1e2():
    k, bound, rows = table(10**6, 0.99)
    assert round(rows["golomb"].expected, 2) == 8.11 and round(bound, 2) == 8.08


def test_log2_binom():
    assert log2_binom(10, 3) == pytest.approx(np.log2(120))
    assert log2_binom(5, 0) == 0 and log2_binom(5, 5) == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("n,k", [(10**5, 100), (10**5, 5000), (4096, 2000), (50, 1)])
def test_expected_matches_the_mean_of_real_encodings(n, k):
    """The exact expectation (from the gap distribution) agrees with the average over real random draws."""
    for name in ["elias-gamma", "elias-delta", "golomb"]:
        codec = POSITION_CODECS[name]
        draws = 200 if k < 50 else 30
        mean = np.mean([codec.nbits([random_positions(n, k, s)], (n,)) for s in range(draws)]) / k
        expected = expected_bits_per_entry(name, n, k)
        assert mean == pytest.approx(expected, rel=0.01 if k >= 100 else 0.05), name


def test_measured_is_real_bytes():
    assert measured_bits_per_entry("raw32", 1000, 10) == 32
    assert measured_bits_per_entry("bitmap", 1000, 10) == 100
    assert measured_bits_per_entry("minwidth", 1000, 10) == 10.4  # 10 x 10 bits -> 13 bytes (padding counts)


def test_cli_prints_the_anchor_numbers(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bits", "--params", "1000000", "--sparsity", "0.999"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    for anchor in ["18.28", "15.39", "11.49", "11.401", "11.408", "32.00", "20.00", "1000.00"]:
        assert anchor in out, anchor
    with pytest.raises(SystemExit):
        main(["bits", "--params", "1000000", "--sparsity", "0.99", "--no-measure"])
    out = capsys.readouterr().out
    assert "8.11" in out and "8.079" in out and "measured (seed" not in out


def test_cli_rejects_bad_input(capsys):
    for args in (["--params", "0"], ["--sparsity", "1.0"], ["--sparsity", "-0.1"]):
        with pytest.raises(SystemExit) as exc:
            main(["bits", *args])
        assert exc.value.code == 2 and "flarebench: error:" in capsys.readouterr().err
