"""``flarebench bench``: runs on CPU on a tiny config and prints the table (no timed assertions)."""

from __future__ import annotations

import pytest
import torch

from flarebench.bench import BenchReport, BenchRow, Peak, auto_regret, bench, flops_per_sample, gpu_peak
from flarebench.cli import main
from flarebench.engine import select

TINY = ["--model", "mlp", "--clients", "2", "--batch-size", "8", "--samples-per-client", "16", "--device", "cpu", "--method", "topk-ef"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(select.CACHE_ENV, str(tmp_path / "engine-choice.json"))
    monkeypatch.setattr(select, "_MEMO", {})


def test_cli_bench_prints_table(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", *TINY])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for text in ["s/round", "speed-up", "samples/s", "MFU", "sequential", "vectorized", "measured fp32 matmul", "picked"]:
        assert text in out


def test_cli_bench_bad_list(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--clients", "ten"])
    assert e.value.code == 2 and "clients must be comma-separated integers" in capsys.readouterr().err


def test_bench_library_rows():
    report = bench("mlp", [2], [8], "cpu", 1, method="flare", samples_per_client=16)
    assert [r.engine for r in report.rows] == ["sequential", "vectorized"]
    seq, vec = report.rows
    assert seq.samples == vec.samples == 32  # 2 clients x 16 samples x 1 epoch
    assert seq.flops == vec.flops > 0 and seq.mfu is not None and seq.round_s > 0
    assert seq.speedup == 1.0 and vec.same_bits and vec.max_abs_diff < 1e-5
    assert sum(r.auto_pick for r in report.rows) == 1
    assert report.peak.flops > 0 and "measured" in report.peak.source


def test_flops_per_sample_mlp():
    """FlopCounterMode on one step of the mlp (784-100-10): forward 2*MACs, backward 2*MACs for weight
    grads plus 2*MACs of the second layer's input grad (the first layer needs no input grad)."""
    from flarebench import make_config, setup

    fed = setup(make_config(engine="sequential", clients=2, samples_per_client=16)).federation
    macs1, macs2 = 784 * 100, 100 * 10
    assert flops_per_sample(fed, 8) == 2 * (macs1 + macs2) + 2 * (macs1 + macs2) + 2 * macs2


def test_gpu_peak_table():
    assert gpu_peak("NVIDIA H100 80GB HBM3") == (67.0e12, 989.4e12)
    assert gpu_peak("NVIDIA H100 PCIe") == (51.2e12, 756.0e12)
    assert gpu_peak("NVIDIA H200") == (67.0e12, 989.4e12)
    assert gpu_peak("NVIDIA A100-SXM4-80GB") == (19.5e12, 312.0e12)
    assert gpu_peak("NVIDIA GeForce GTX 1080") is None


def test_auto_regret_from_injected_rows():
    rows = [BenchRow("mlp", 10, 32, "sequential", 1.0, 0.9, 100, 1e9), BenchRow("mlp", 10, 32, "vectorized", 1.05, 0.9, 100, 1e9)]
    rows[1].auto_pick = True
    report = BenchReport(Peak("cpu", 1e9, "test"), rows, {(10, 32): {"sequential": 1.0, "vectorized": 0.9}})
    assert auto_regret(report)[(10, 32)] == pytest.approx(0.05)
    assert torch.tensor(auto_regret(report)[(10, 32)]) <= 0.10


def test_bench_compile_rows_match_the_eager_engines(tmp_path, monkeypatch):
    """``--compile``: both engines' steps under torch.compile (inductor, FLARE's penalized first step and the
    plain steps), the same round up to float rounding. A private inductor cache: torch 2.14's shared one
    (/tmp/torchinductor_USER) served kernels compiled under another ATEN_CPU_CAPABILITY that gave NaN."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    report = bench("mlp", [2], [8], "cpu", 2, method="flare", samples_per_client=16, compile=True)  # round 1: a live pull
    assert [r.engine for r in report.rows] == ["sequential", "vectorized", "sequential+compile", "vectorized+compile"]
    for row in report.rows[2:]:
        assert row.same_bits and row.max_abs_diff < 1e-5 and row.warmup_s > 0
    assert sum(r.auto_pick for r in report.rows) == 1 and not report.rows[2].auto_pick
