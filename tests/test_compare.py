"""compare / list / show on real short runs: the table's numbers equal values computed from the CSVs."""

import json
import math
import shutil

import pandas as pd
import pytest

from flarebench import ConfigError, ResultsError, run
from flarebench.compare import SUMMARY_COLUMNS, collect_runs, compare
from flarebench.plots import experiments, save_figures
from flarebench.units import human_bits
from conftest import cli, lock_held_elsewhere, tiny


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Three real runs: uncompressed, and top-k EF with two seeds (mlp, 4 clients, 6 rounds)."""
    out = tmp_path_factory.mktemp("compare") / "results"
    for method, seed in [("none", 0), ("topk-ef", 0), ("topk-ef", 1)]:
        run(tiny(method=method, seed=seed, rounds=6, eval_every=2, samples_per_client=100, out=str(out),
                 name=f"{method}-{seed}", engine="sequential"))
    return out




def expected_from_csv(run_dir, target):
    m = pd.read_csv(run_dir / "metrics.csv")
    cfg = json.loads((run_dir / "config.json").read_text())
    evals = m.dropna(subset=["test_accuracy"])
    hit = evals[evals["test_accuracy"] >= target]
    total = int(m["cumulative_uplink_bits"].iloc[-1])
    return {
        "final_accuracy": evals["test_accuracy"].iloc[-1],
        "best_accuracy": evals["test_accuracy"].max(),
        "total_uplink_bits": total,
        "compression_ratio": 32 * cfg["num_params"] * m["clients"].sum() / total,
        "total_downlink_bits": int(m["downlink_bits"].sum()),  # dense downlink: 32 * P per participant
        "sent_density": m["nnz"].sum() / (cfg["num_params"] * m["clients"].sum()),
        "bits_to_target": None if hit.empty else int(hit["cumulative_uplink_bits"].iloc[0]),
        "rounds_to_target": None if hit.empty else int(hit["round"].iloc[0]),
    }


def check_row(row, expected):
    for key, want in expected.items():
        got = row[key]
        if want is None:
            assert pd.isna(got), (key, got)
        else:
            assert got == pytest.approx(want, rel=1e-12), (key, got, want)


def test_compare_writes_csv_and_figures_with_numbers_from_the_csvs(results, tmp_path):
    out = tmp_path / "cmp"
    res = compare([results], out)
    table = pd.read_csv(out / "runs.csv")
    assert list(table.columns) == SUMMARY_COLUMNS and len(table) == 3
    groups = pd.read_csv(out / "compare.csv")  # the seeds of topk-ef are one group: its means are the runs' means
    assert list(groups["label"]) == ["none (dense)", "topk-ef s=0.999"] and list(groups["seeds"]) == [1, 2]
    assert groups.loc[1, "final_accuracy_mean"] == pytest.approx(table.loc[1:, "final_accuracy"].mean(), rel=1e-12)
    assert list(table["run"]) == ["none-0", "topk-ef-0", "topk-ef-1"]
    none_best = pd.read_csv(results / "none-0" / "metrics.csv")["test_accuracy"].max()
    target = 0.95 * none_best  # default: 95% of the best uncompressed run
    assert table["target_accuracy"].tolist() == pytest.approx([target] * 3)
    for _, row in table.iterrows():
        check_row(row, expected_from_csv(results / row["run"], target))
    assert not pd.isna(table.loc[0, "bits_to_target"])  # the dense run reaches 95% of itself
    assert table.loc[1, "compression_ratio"] > 100  # sparsity 0.999 sends far less than dense fp32
    # figures: per group, PNG and PDF, not empty, really those formats
    names = sorted(p.name for p in res.figures)
    for stem in ["accuracy-vs-bits", "accuracy-vs-round", "loss-vs-round", "summary", "frontier"]:
        png, pdf = out / f"mnist-embedded-mlp-{stem}.png", out / f"mnist-embedded-mlp-{stem}.pdf"
        assert png.name in names and pdf.name in names
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 2000


def test_given_target_accuracy_and_the_cli_table(results, tmp_path, capsys):
    out = tmp_path / "cmp"
    code, stdout, err = cli(capsys, "compare", results / "none-0", results / "topk-ef-0", "--out", out,
                            "--target-accuracy", "0.5", "--figures", "png", "--x", "bits", "--runs")
    assert code == 0, err
    table = pd.read_csv(out / "runs.csv")
    assert list(table["run"]) == ["none-0", "topk-ef-0"] and (table["target_source"] == "given").all()
    for _, row in table.iterrows():
        check_row(row, expected_from_csv(results / row["run"], 0.5))
    assert "none-0" in stdout and "topk-ef-0" in stdout and "Mib" in stdout and "Kib" in stdout
    for run_name in ["none-0", "topk-ef-0"]:  # the printed numbers are those of the CSVs
        want = expected_from_csv(results / run_name, 0.5)
        line = next(l for l in stdout.splitlines() if l.startswith(f" {run_name} "))
        cells = [c.strip() for c in line.split("  ") if c.strip()]  # the compact (piped) table: columns apart by 2+ spaces
        assert f"{want['final_accuracy']:.4f}" in cells and f"{want['best_accuracy']:.4f}" in cells, cells
        assert human_bits(want["total_uplink_bits"]) in cells, cells
        to_target = (f"{human_bits(want['bits_to_target'])} @{want['rounds_to_target']}" if want["bits_to_target"] is not None
                     else "not reached")
        assert to_target in cells, cells
    assert sorted(p.name for p in out.iterdir()) == [
        "compare.csv", "mnist-embedded-mlp-accuracy-vs-bits.png", "mnist-embedded-mlp-frontier.png",
        "mnist-embedded-mlp-loss-vs-bits.png", "mnist-embedded-mlp-summary.png", "runs.csv",
    ]


def test_seeds_are_one_line_and_groups_stay_apart(results, tmp_path):
    records, _ = collect_runs([results])
    exps = experiments(records)
    assert [(e.legend_label, len(e.runs)) for e in exps] == [("none (dense)", 1), ("topk-ef s=0.999 (2 seeds)", 2)]
    # a run of another model is a separate group: own figures, and no uncompressed run -> no target
    other = tmp_path / "results" / "cnn-run"
    shutil.copytree(results / "topk-ef-0", other)
    meta = json.loads((other / "config.json").read_text())
    meta["config"]["model"] = "cnn"
    (other / "config.json").write_text(json.dumps(meta))
    res = compare([results, other.parent], tmp_path / "cmp", formats=["png"])
    cnn = res.table[res.table["group"] == "mnist-embedded/cnn"].iloc[0]
    assert math.isnan(cnn["target_accuracy"]) and pd.isna(cnn["bits_to_target"])
    assert any("mnist-embedded/cnn" in w and "--target-accuracy" in w for w in res.warnings)
    assert {p.name for p in res.figures} >= {"mnist-embedded-cnn-summary.png", "mnist-embedded-mlp-summary.png"}


def test_bad_input_is_one_line(results, tmp_path, capsys):
    cases = [
        (["compare", tmp_path / "missing"], "does not exist"),
        (["compare", tmp_path], "no flarebench runs"),
        (["compare", results, "--target-accuracy", "95"], "fraction in (0, 1]"),
        (["compare", results, "--x", "time"], "--x takes bits, rounds"),
        (["compare", results, "--figures", "gif"], "unknown figure format"),
        (["compare", results, "--figures", "png,gif"], "unknown figure format 'gif'"),
        (["compare", results, "--format", "png,gif"], "--format takes table, csv, markdown"),
        (["show", tmp_path], "is not a flarebench run"),
        (["list", tmp_path / "missing"], "does not exist"),
    ]
    for args, fragment in cases:
        code, _, err = cli(capsys, *args, *(["--out", tmp_path / "o"] if args[0] == "compare" else []))
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, (args, err)
    assert not (tmp_path / "o").exists()  # options are checked before compare.csv and runs.csv are written
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out in (a_file, a_file / "sub"):  # an --out that cannot be a directory: one line, checked up front
        code, _, err = cli(capsys, "compare", results, "--out", out)
        assert code == 2 and err.count("\n") == 1 and "cannot create output directory" in err, err
    with pytest.raises(ConfigError):
        save_figures([], tmp_path, x="seconds")
    with pytest.raises(ResultsError):
        collect_runs([tmp_path / "missing"])


def test_list_and_show(results, capsys):
    code, out, err = cli(capsys, "list", results)
    assert code == 0, err
    lines = [l for l in out.splitlines() if l.strip()]
    assert len(lines) == 4 and all("complete" in l and "6/6" in l for l in lines[1:])
    code, out, err = cli(capsys, "show", results / "topk-ef-1")
    final = pd.read_csv(results / "topk-ef-1" / "metrics.csv").iloc[-1]
    assert code == 0, err
    assert "complete" in out and "topk-ef" in out and repr(float(final["test_accuracy"])) in out
    assert str(int(final["cumulative_uplink_bits"])) in out


def test_list_tells_killed_runs_from_running_ones(results, tmp_path, capsys):
    run_dir = tmp_path / "runs" / "k"
    shutil.copytree(results / "topk-ef-0", run_dir)
    meta = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**meta, "status": "running"}))  # as a SIGKILLed run leaves it
    (run_dir / "checkpoint.pt").write_bytes(b"x")

    def status_shown():
        code, out, err = cli(capsys, "list", run_dir.parent)
        assert code == 0, err
        return out.splitlines()[-1]

    assert "interrupted (killed, resumable)" in status_shown()
    code, out, _ = cli(capsys, "show", run_dir)
    assert code == 0 and f"interrupted (killed, resumable: flarebench run --resume {run_dir})" in out
    with lock_held_elsewhere(run_dir):  # a live process holds its lock: it is running
        line = status_shown()
        assert line.rstrip().endswith("running") and "interrupted" not in line, line
    assert "interrupted (killed, resumable)" in status_shown()  # the probe left no lock behind


def test_show_of_a_bad_config_is_one_line(results, tmp_path, capsys):
    run_dir = tmp_path / "bad"
    shutil.copytree(results / "none-0", run_dir)
    for text in ["{}", "[1, 2]", '{"config": 3}']:
        (run_dir / "config.json").write_text(text)
        code, _, err = cli(capsys, "show", run_dir)
        assert code == 2 and err.count("\n") == 1 and "has no 'config' object" in err, (text, err)


def test_a_default_target_below_a_compressed_run_is_flagged():
    from flarebench.compare import target_warnings

    table = pd.DataFrame({"group": ["g", "g", "h", "h"], "method": ["none", "flare", "none", "flare"],
                          "uncompressed": [True, False, True, False], "best_accuracy": [0.28, 0.68, 0.95, 0.90]})
    (warning,) = target_warnings(table, {"g": 0.266, "h": 0.9025}, given=False)
    assert warning.startswith("group g: the best uncompressed run (0.2800) is below a compressed one (0.6800)")
    assert target_warnings(table, {"g": 0.5, "h": 0.5}, given=True) == []
    assert "no uncompressed run" in target_warnings(table, {"g": float("nan")}, given=False)[0]


def test_compare_warns_when_runs_side_by_side_used_different_engines_or_devices(results, tmp_path, capsys):
    """Runs of one group trained with other engines (or on other devices) differ by float rounding too: warned."""
    code, _, err = cli(capsys, "compare", results, "--out", tmp_path / "same", "--figures", "none")
    assert code == 0 and "different engines" not in err and "different devices" not in err, err
    root = tmp_path / "mixed"
    shutil.copytree(results, root)
    meta_path = root / "topk-ef-1" / "config.json"
    meta = json.loads(meta_path.read_text())
    meta["engine_resolved"] = {**meta["engine_resolved"], "engine": "vectorized"}
    meta_path.write_text(json.dumps(meta))
    code, _, err = cli(capsys, "compare", root, "--out", tmp_path / "cmp", "--figures", "none")
    (line,) = [l for l in err.splitlines() if "different" in l]
    assert code == 0 and line.startswith("flarebench: warning: group mnist-embedded/mlp: the runs used different engines "
                                         "(sequential: none-0, topk-ef-0; vectorized: topk-ef-1)"), err
    assert "differ by float rounding as well as by method" in line
    meta_path.write_text(json.dumps({**meta, "engine_resolved": json.loads((results / "none-0" / "config.json").read_text())["engine_resolved"],
                                     "device": "cuda (NVIDIA H100 80GB HBM3)"}))
    code, _, err = cli(capsys, "compare", root, "--out", tmp_path / "cmp", "--figures", "none")
    (line,) = [l for l in err.splitlines() if "different" in l]
    assert "the runs used different devices (cpu: none-0, topk-ef-0; cuda (NVIDIA H100 80GB HBM3): topk-ef-1)" in line, err
